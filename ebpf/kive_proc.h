/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Process details captured in the kernel at the moment of a trapped access,
 * so that they are right even for a process that exits right after (a
 * `cat`): the executable's path and the working directory (walked dentry
 * by dentry up to the task's own root, so a container process gets its
 * in-container paths), the command line (from the task's memory), the
 * login uid, and the parent's comm and executable. Only ever runs on a hit.
 */
#ifndef KIVE_PROC_H
#define KIVE_PROC_H

#define KIVE_PATH_DEPTH 24
#define KIVE_SCRATCH_LEN (2 * KIVE_PATH_LEN)
/* kive_path()'s result: the length, or'ed with this when the path was cut */
#define KIVE_PATH_CUT 0x10000
#define KIVE_MNT_INTERNAL 0x4000 /* vfsmount.mnt_flags: a kernel-internal mount */

struct kive_scratch {
	char buf[KIVE_SCRATCH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kive_scratch);
} scratch SEC(".maps");

/* State of one path walk, shared with the bpf_loop() callback. */
struct kive_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	struct kive_scratch *s;
	__u32 off;
	__u32 done; /* the walk reached a root: the path is whole */
};

/* One step up: a component, or a mount boundary. 1 = stop. */
static long kive_walk_step(__u32 i, void *data)
{
	struct kive_walk *w = data;
	/* plain locals: CO-RE reads must not see the (local) walk struct */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	struct dentry *parent;
	const unsigned char *name;
	__u32 len, off;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->done = 1;
		return 1;
	}
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt) {
			w->done = 1;
			return 1; /* the global root */
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vfsmnt = (void *)up + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	len = BPF_CORE_READ(dentry, d_name.len);
	name = BPF_CORE_READ(dentry, d_name.name);
	off = w->off;
	if (len + 1 > off)
		return 1; /* too long: not done, the path is cut */
	len &= KIVE_PATH_LEN - 1;
	off -= len;
	bpf_probe_read_kernel(&w->s->buf[off & (KIVE_PATH_LEN - 1)], len, name);
	off -= 1;
	w->s->buf[off & (KIVE_PATH_LEN - 1)] = '/';
	w->off = off;
	w->dentry = parent;
	/*
	 * A dentry that is its own parent and not a mount root has no
	 * parent: a pseudo file (memfd: "/memfd:name") or a disconnected one.
	 * Its name is the whole path.
	 */
	if (parent == dentry) {
		w->done = 1;
		return 1;
	}
	return 0;
}

/*
 * Writes the path of (dentry, vfsmnt) as seen from the root (root_dentry,
 * root_mnt) into out (KIVE_PATH_LEN bytes, NUL-terminated); returns the
 * length written with the NUL, or 0. Components are prepended from the end
 * of a per-CPU scratch buffer; mount boundaries are crossed through
 * struct mount. bpf_loop() keeps the verifier's work to one step. A path
 * deeper than KIVE_PATH_DEPTH or longer than the buffer keeps its last
 * components and has KIVE_PATH_CUT or'ed into the result.
 */
static __noinline long kive_path(struct dentry *dentry, struct vfsmount *vfsmnt,
				 struct dentry *root_dentry, struct vfsmount *root_mnt,
				 char *out)
{
	__u32 zero = 0;
	struct kive_walk w = {};
	long n;

	w.s = bpf_map_lookup_elem(&scratch, &zero);
	if (!w.s || !dentry || !vfsmnt)
		return 0;
	w.dentry = dentry;
	w.vfsmnt = vfsmnt;
	w.mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	w.root_dentry = root_dentry;
	w.root_mnt = root_mnt;
	w.off = KIVE_PATH_LEN - 1;
	w.s->buf[KIVE_PATH_LEN - 1] = 0;
	bpf_loop(KIVE_PATH_DEPTH, kive_walk_step, &w, 0);
	if (w.off == KIVE_PATH_LEN - 1) {
		w.off -= 1;
		w.s->buf[w.off & (KIVE_PATH_LEN - 1)] = '/';
	}
	n = bpf_probe_read_kernel_str(out, KIVE_PATH_LEN, &w.s->buf[w.off & (KIVE_PATH_LEN - 1)]);
	if (n <= 0)
		return 0;
	return w.done ? n : n | KIVE_PATH_CUT;
}

/* The length part of a kive_path() result; sets cut_flag in *flags if cut. */
static __always_inline __u16 kive_path_len(long n, __u32 *flags, __u32 cut_flag)
{
	if (n <= 0)
		return 0;
	if (n & KIVE_PATH_CUT)
		*flags |= cut_flag;
	return n & (KIVE_PATH_CUT - 1);
}

/*
 * Whether an executable is a memfd (a pseudo file on the kernel's
 * internal shmem mount, named "memfd:...") or a deleted file (no link
 * left). Either way its path names nothing one can look at.
 */
static __always_inline __u32 kive_exe_kind(struct file *exe)
{
	char name[6] = {};
	const unsigned char *dname = BPF_CORE_READ(exe, f_path.dentry, d_name.name);
	int mnt_flags = BPF_CORE_READ(exe, f_path.mnt, mnt_flags);
	unsigned int nlink = BPF_CORE_READ(exe, f_inode, __i_nlink);

	bpf_probe_read_kernel(name, sizeof(name), dname);
	if ((mnt_flags & KIVE_MNT_INTERNAL) && name[0] == 'm' && name[1] == 'e' &&
	    name[2] == 'm' && name[3] == 'f' && name[4] == 'd' && name[5] == ':')
		return KIVE_EV_F_EXE_MEMFD;
	if (nlink == 0)
		return KIVE_EV_F_EXE_DELETED;
	return 0;
}

/*
 * The parent's comm and executable path, the path as seen from the parent's
 * own root. A parent without an mm (a kernel thread) or that is exiting
 * (no fs) leaves pexe empty.
 */
static __always_inline void kive_fill_parent(struct kive_event *e, struct task_struct *parent,
					     __u32 *flags)
{
	struct file *exe = BPF_CORE_READ(parent, mm, exe_file);
	struct fs_struct *fs = BPF_CORE_READ(parent, fs);
	long n;

	e->pexe_len = 0;
	e->pexe[0] = 0;
	BPF_CORE_READ_STR_INTO(&e->pcomm, parent, comm);
	if (!exe || !fs)
		return;
	n = kive_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt),
		      BPF_CORE_READ(fs, root.dentry), BPF_CORE_READ(fs, root.mnt), e->pexe);
	e->pexe_len = kive_path_len(n, flags, KIVE_EV_F_PEXE_TRUNC);
}

/*
 * Fills the process part of an event for the current task; returns its
 * KIVE_EV_F_* flags.
 */
static __always_inline __u32 kive_fill_process(struct kive_event *e, struct task_struct *task)
{
	struct dentry *root_dentry = BPF_CORE_READ(task, fs, root.dentry);
	struct vfsmount *root_mnt = BPF_CORE_READ(task, fs, root.mnt);
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	unsigned long args_len = arg_end - arg_start;
	__u32 flags = 0;
	long n;

	e->exe_len = 0;
	e->cwd_len = 0;
	e->args_len = 0;
	e->exe[0] = 0;
	e->cwd[0] = 0;
	e->args[0] = 0;
	if (exe) {
		n = kive_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt),
			      root_dentry, root_mnt, e->exe);
		e->exe_len = kive_path_len(n, &flags, KIVE_EV_F_EXE_TRUNC);
		flags |= kive_exe_kind(exe);
	}
	n = kive_path(BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt),
		      root_dentry, root_mnt, e->cwd);
	e->cwd_len = kive_path_len(n, &flags, KIVE_EV_F_CWD_TRUNC);
	if (arg_start && arg_end > arg_start) {
		/* the last byte stays free: at most KIVE_ARGS_LEN - 1 bytes */
		if (args_len > KIVE_ARGS_LEN - 1) {
			args_len = KIVE_ARGS_LEN - 1;
			flags |= KIVE_EV_F_ARGS_TRUNC;
		}
		args_len &= KIVE_ARGS_LEN - 1;
		if (!bpf_probe_read_user(e->args, args_len, (void *)arg_start))
			e->args_len = args_len;
	}
	if (bpf_core_field_exists(task->loginuid))
		e->loginuid = BPF_CORE_READ(task, loginuid.val);
	else
		e->loginuid = (__u32)-1;
	kive_fill_parent(e, BPF_CORE_READ(task, real_parent), &flags);
	return flags;
}

#endif /* KIVE_PROC_H */
