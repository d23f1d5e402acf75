// SPDX-License-Identifier: GPL-2.0
/*
 * kive's kernel side: one hash lookup per file open against the armed
 * (device, inode) keys; a hit becomes a struct kive_event in a ring buffer.
 *
 * Three tiers of hooks; user space autoloads only the programs of one tier:
 *   lsm         lsm/file_open                          observe + block
 *   trampoline  fmod_ret/security_file_open            observe + block
 *               (fentry/security_file_open if fmod_ret is refused: observe)
 *   tracepoint  tp_btf/sys_exit (open, openat, openat2, creat,
 *               open_by_handle_at; x86_64 and ia32 compat numbers) and
 *               tp_btf/sched_process_exec               observe
 *   tracepoint-classic  the same on classic syscall tracepoints (fallback;
 *               ftrace's per-syscall events skip ia32 compat syscalls)
 *
 * Every hit passes a flood limit per (trap, process) before it may take
 * space in the ring: one process cannot push out another's events.
 *
 * The lsm tier adds lsm/inode_{rename,link,unlink}, the trampoline tiers
 * fentry/security_inode_{rename,link,unlink}: a trapped file's names
 * changing is reported as it happens (tamper events).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "kive.h"

char LICENSE[] SEC("license") = "GPL";

#define MAY_EXEC 0x1
#define MAY_WRITE 0x2
#define MAY_READ 0x4
#define MAY_APPEND 0x8
#define MAY_OPEN 0x20

#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_PATH 0x4000
#define O_APPEND 02000
#define __FMODE_EXEC 0x20
#define EPERM 1

/* x86_64 syscall numbers of the calls that open files. */
#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPENAT 257
#define NR_OPEN_BY_HANDLE_AT 304
#define NR_OPENAT2 437
/* The same calls from an ia32 (compat) task: int 0x80, sysenter. */
#define NR32_OPEN 5
#define NR32_CREAT 8
#define NR32_OPENAT 295
#define NR32_OPEN_BY_HANDLE_AT 342
#define NR32_OPENAT2 437
#define X32_SYSCALL_BIT 0x40000000
#define TS_COMPAT 0x0002 /* thread_info.status: in an ia32 syscall */

/* Set by user space before load. */
const volatile __u32 self_tgid = 0;    /* the loader's pid, in its own pid namespace */
const volatile __u64 self_ns_dev = 0;  /* the loader's pid namespace (kernel dev, inode); */
const volatile __u64 self_ns_ino = 0;  /* 0 = compare host tgids */
const volatile __u64 wakeup_bytes = 0; /* wake the reader past this fill; 0 = every event */
/* flood limit per (trap, process), a GCRA: one event per limit_interval_ns
 * on average, bursts of limit_tolerance_ns / limit_interval_ns + 1; 0 = off */
const volatile __u64 limit_interval_ns = 0;
const volatile __u64 limit_tolerance_ns = 0;
/* Never read: keeps struct kive_event in the BTF so user space can check its layout. */
const volatile struct kive_event kive_event_layout = {};

/* Trapped inodes. Not preallocated: kernel memory follows the keys armed,
 * max_entries (set at load from maxTraps) is only the cap; a key past it
 * is refused (E2BIG) and the runtime counts and logs the refusal. Only user
 * space updates it, the programs only look up. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct kive_key);
	__type(value, struct kive_trap);
} traps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

/* Flood limiter state; LRU: an idle (trap, process) is forgotten first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kive_limit_key);
	__type(value, struct kive_limit);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KIVE_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct kive_source_key);
	__type(value, __u8);
} sources SEC(".maps");

#include "kive_proc.h"

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct kive_trap *lookup(struct file *file, struct kive_key *key)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);

	if (!inode)
		return 0;
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key->pad = 0;
	key->ino = BPF_CORE_READ(inode, i_ino);
	return bpf_map_lookup_elem(&traps, key);
}

static __always_inline __u32 access_mask(__u32 f_mode, __u32 f_flags)
{
	__u32 mask = MAY_OPEN;

	if (f_flags & __FMODE_EXEC)
		return MAY_OPEN | MAY_EXEC;
	if (f_mode & FMODE_READ)
		mask |= MAY_READ;
	if (f_mode & FMODE_WRITE)
		mask |= MAY_WRITE;
	if (f_flags & O_APPEND)
		mask |= MAY_APPEND;
	return mask;
}

/*
 * Whether the current task is the loader. The loader may live in its own
 * pid namespace (Falco in a container): its pid is compared in that
 * namespace; a task of any other namespace is never the loader.
 */
static __always_inline bool is_self(void)
{
	struct bpf_pidns_info ns = {};

	if (!self_ns_ino)
		return (bpf_get_current_pid_tgid() >> 32) == self_tgid;
	if (bpf_get_ns_current_pid_tgid(self_ns_dev, self_ns_ino, &ns, sizeof(ns)))
		return false;
	return ns.tgid == self_tgid;
}

/*
 * The flood limit (a generic cell rate algorithm per (trap, process)):
 * a burst passes, then one event per limit_interval_ns; the rest are
 * counted (stats and per process) and the count rides in the next event
 * that passes. Returns false to drop the event; *carried is the count to
 * report with it. Updates race between CPUs: the limit is approximate,
 * the count is exact (atomic).
 */
static __always_inline bool limit_pass(__u32 trap_id, __u32 tgid, struct kive_limit **state,
				       __u32 *carried)
{
	struct kive_limit_key k = { .trap_id = trap_id, .tgid = tgid };
	struct kive_limit *st;
	__u64 now, tat;
	__u32 n;

	*state = 0;
	*carried = 0;
	if (!limit_interval_ns)
		return true;
	now = bpf_ktime_get_ns();
	st = bpf_map_lookup_elem(&limits, &k);
	if (!st) {
		struct kive_limit fresh = { .tat = now + limit_interval_ns };

		bpf_map_update_elem(&limits, &k, &fresh, BPF_ANY);
		return true;
	}
	tat = st->tat;
	if (tat < now)
		tat = now;
	if (tat - now > limit_tolerance_ns) {
		__sync_fetch_and_add(&st->limited, 1);
		count(KIVE_STAT_LIMITED);
		return false;
	}
	st->tat = tat + limit_interval_ns;
	n = st->limited;
	if (n)
		__sync_fetch_and_add(&st->limited, (__u32)0 - n);
	*state = st;
	*carried = n;
	return true;
}

/*
 * overlayfs opens the backing real file a second time (6.1: with the
 * overlay's path but the real inode). That open is not the user's.
 */
static __always_inline bool is_backing_open(struct file *file)
{
	return BPF_CORE_READ(file, f_path.dentry, d_inode) != BPF_CORE_READ(file, f_inode);
}

/*
 * to_dir/to: the file's new directory and name on a rename or link (tamper
 * events); NULL on an access.
 */
static __always_inline void emit_named(const struct kive_key *key, const struct kive_trap *trap,
				       __u32 mask, __u32 f_flags, __u8 hook, __u8 action,
				       struct inode *to_dir, struct dentry *to)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 ugid = bpf_get_current_uid_gid();
	struct kive_event *e;
	struct kive_limit *st;
	struct pid *tp;
	unsigned int level;
	__u64 flags = 0;
	__u32 carried;

	count(KIVE_STAT_HITS);
	if (action == KIVE_ACTION_BLOCK)
		count(KIVE_STAT_BLOCKED);
	/* a blocked open is enforced whether or not it is reported */
	if (!limit_pass(trap->trap_id, pid_tgid >> 32, &st, &carried))
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(KIVE_STAT_DROPS);
		/* the held-back count waits for the next event that fits */
		if (st && carried)
			__sync_fetch_and_add(&st->limited, carried);
		return;
	}
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->ino = key->ino;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->dev = key->dev;
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)ugid;
	e->gid = ugid >> 32;
	e->mask = mask;
	e->flags = f_flags;
	e->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	e->trap_id = trap->trap_id;
	e->version = KIVE_EVENT_VERSION;
	e->hook = hook;
	e->action = action;
	tp = BPF_CORE_READ(task, group_leader, thread_pid);
	level = BPF_CORE_READ(tp, level);
	e->ns_pid = 0;
	bpf_probe_read_kernel(&e->ns_pid, sizeof(e->ns_pid), &tp->numbers[level & 31].nr);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (carried > KIVE_EV_LIMITED_MAX)
		carried = KIVE_EV_LIMITED_MAX;
	e->pflags = kive_fill_process(e, task) | (carried << KIVE_EV_LIMITED_SHIFT);
	e->new_dir_ino = 0;
	e->new_name_len = 0;
	e->new_name[0] = 0;
	if (to_dir && to) {
		long n = bpf_probe_read_kernel_str(e->new_name, sizeof(e->new_name),
						   BPF_CORE_READ(to, d_name.name));

		e->new_dir_ino = BPF_CORE_READ(to_dir, i_ino);
		e->new_name_len = n > 0 ? (__u16)n : 0;
	}

	e->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);

	/*
	 * Wake-up: flags 0 is the ring buffer's own rule, the reader is woken
	 * for a record only when it has consumed everything before it (it
	 * caught up and may sleep): the first event after a quiet spell is
	 * read at once, and while the reader is behind (a flood) it is never
	 * woken again, it is reading anyway. Past wakeup_bytes it is woken
	 * whatever it did, so a reader that missed a wake-up never lets the
	 * ring fill. (A reader that is away, Falco evaluating a batch, is
	 * waiting on nothing: user space's spare reader drains the ring then.)
	 */
	if (wakeup_bytes && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < wakeup_bytes)
		flags = 0;
	else
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void emit(const struct kive_key *key, const struct kive_trap *trap,
				 __u32 mask, __u32 f_flags, __u8 hook, __u8 action)
{
	emit_named(key, trap, mask, f_flags, hook, action, 0, 0);
}

/*
 * Rule conditions (scope, KIVE_TRAP_F_* of kive.h): called after a trap
 * hit. `src` is the task whose executable is the access's source (the
 * current task, or the parent after an exec on the tracepoint tier).
 * Returns true when the access satisfies the rule and passes silently.
 */
static __always_inline bool kive_source_listed(__u32 trap_id, struct task_struct *src)
{
	struct file *exe = BPF_CORE_READ(src, mm, exe_file);
	struct kive_source_key k = {};

	if (!exe)
		return false;
	k.trap_id = trap_id;
	k.dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	k.ino = BPF_CORE_READ(exe, f_inode, i_ino);
	return bpf_map_lookup_elem(&sources, &k) != 0;
}

static __always_inline bool kive_rule_passes(const struct kive_trap *trap, struct file *file,
					     __u32 mask, struct task_struct *src)
{
	__u32 f = trap->flags;
	bool listed = false, ok = true;

	if (!(f & KIVE_TRAP_F_CONDITIONS))
		return false;
	if ((f & KIVE_TRAP_F_EXEC_ONLY) && !(mask & MAY_EXEC))
		return true;
	if (f & (KIVE_TRAP_F_SOURCES | KIVE_TRAP_F_SOURCES_ALLOW))
		listed = kive_source_listed(trap->trap_id, src);
	if ((f & KIVE_TRAP_F_SOURCES) && !listed)
		return true;
	if ((f & KIVE_TRAP_F_SOURCES_ALLOW) && !listed)
		return false;
	if (!(f & (KIVE_TRAP_F_READ_ONLY | KIVE_TRAP_F_OWNER_ONLY)))
		return (f & KIVE_TRAP_F_SOURCES_ALLOW) != 0;
	if ((f & KIVE_TRAP_F_READ_ONLY) && (mask & (MAY_WRITE | MAY_APPEND)))
		ok = false;
	if (f & KIVE_TRAP_F_OWNER_ONLY) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		__u32 fsuid = BPF_CORE_READ(task, cred, fsuid.val);

		if (fsuid != BPF_CORE_READ(file, f_inode, i_uid.val))
			ok = false;
	}
	return ok;
}

/* Shared by the LSM and trampoline hooks; returns 0 or -EPERM. */
static __always_inline int on_file_open(struct file *file, __u8 hook, bool can_block)
{
	struct kive_key key;
	struct kive_trap *trap;
	__u32 f_mode, f_flags;
	__u8 action = KIVE_ACTION_AUDIT;

	trap = lookup(file, &key);
	if (!trap)
		return 0;
	if (is_self() || is_backing_open(file))
		return 0;
	f_mode = BPF_CORE_READ(file, f_mode);
	f_flags = BPF_CORE_READ(file, f_flags);
	if (kive_rule_passes(trap, file, access_mask(f_mode, f_flags),
			     (struct task_struct *)bpf_get_current_task()))
		return 0;
	if (can_block && (trap->flags & KIVE_TRAP_F_BLOCK))
		action = KIVE_ACTION_BLOCK;
	emit(&key, trap, access_mask(f_mode, f_flags), f_flags, hook, action);
	return action == KIVE_ACTION_BLOCK ? -EPERM : 0;
}

SEC("lsm/file_open")
int BPF_PROG(kive_lsm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	return on_file_open(file, KIVE_HOOK_LSM_FILE_OPEN, true);
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(kive_fmod_ret_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	return on_file_open(file, KIVE_HOOK_FMOD_RET_FILE_OPEN, true);
}

SEC("fentry/security_file_open")
int BPF_PROG(kive_fentry_file_open, struct file *file)
{
	on_file_open(file, KIVE_HOOK_FENTRY_FILE_OPEN, false);
	return 0;
}

/*
 * Tamper hooks (lsm and trampoline tiers): a rename, link or unlink of a
 * trapped inode. They run only on those calls, never on an open. Nothing is
 * blocked: the event names the process; user space arms the path again.
 */
static __always_inline void on_tamper(struct dentry *dentry, __u8 hook, struct inode *to_dir,
				      struct dentry *to)
{
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	struct kive_key key;
	struct kive_trap *trap;

	if (!inode)
		return;
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.pad = 0;
	key.ino = BPF_CORE_READ(inode, i_ino);
	trap = bpf_map_lookup_elem(&traps, &key);
	if (!trap || is_self())
		return;
	emit_named(&key, trap, 0, 0, hook, KIVE_ACTION_AUDIT, to_dir, to);
}

/* The renamed file (with its new name), and the file a rename moves
 * something over. */
static __always_inline void on_rename(struct dentry *old_dentry, struct inode *new_dir,
				      struct dentry *new_dentry, __u8 rename, __u8 replace)
{
	on_tamper(old_dentry, rename, new_dir, new_dentry);
	on_tamper(new_dentry, replace, 0, 0);
}

/* The linked file, with the name the link gives it. */
static __always_inline void on_link(struct dentry *old_dentry, struct inode *dir,
				    struct dentry *new_dentry, __u8 hook)
{
	on_tamper(old_dentry, hook, dir, new_dentry);
}

SEC("lsm/inode_rename")
int BPF_PROG(kive_lsm_inode_rename, struct inode *old_dir, struct dentry *old_dentry,
	     struct inode *new_dir, struct dentry *new_dentry, int ret)
{
	if (!ret)
		on_rename(old_dentry, new_dir, new_dentry, KIVE_HOOK_LSM_INODE_RENAME,
			  KIVE_HOOK_LSM_INODE_REPLACE);
	return ret;
}

SEC("lsm/inode_link")
int BPF_PROG(kive_lsm_inode_link, struct dentry *old_dentry, struct inode *dir,
	     struct dentry *new_dentry, int ret)
{
	if (!ret)
		on_link(old_dentry, dir, new_dentry, KIVE_HOOK_LSM_INODE_LINK);
	return ret;
}

SEC("lsm/inode_unlink")
int BPF_PROG(kive_lsm_inode_unlink, struct inode *dir, struct dentry *dentry, int ret)
{
	if (!ret)
		on_tamper(dentry, KIVE_HOOK_LSM_INODE_UNLINK, 0, 0);
	return ret;
}

SEC("fentry/security_inode_rename")
int BPF_PROG(kive_fentry_inode_rename, struct inode *old_dir, struct dentry *old_dentry,
	     struct inode *new_dir, struct dentry *new_dentry)
{
	on_rename(old_dentry, new_dir, new_dentry, KIVE_HOOK_FENTRY_INODE_RENAME,
		  KIVE_HOOK_FENTRY_INODE_REPLACE);
	return 0;
}

SEC("fentry/security_inode_link")
int BPF_PROG(kive_fentry_inode_link, struct dentry *old_dentry, struct inode *dir,
	     struct dentry *new_dentry)
{
	on_link(old_dentry, dir, new_dentry, KIVE_HOOK_FENTRY_INODE_LINK);
	return 0;
}

SEC("fentry/security_inode_unlink")
int BPF_PROG(kive_fentry_inode_unlink, struct inode *dir, struct dentry *dentry)
{
	on_tamper(dentry, KIVE_HOOK_FENTRY_INODE_UNLINK, 0, 0);
	return 0;
}

/*
 * Tracepoint tier. sys_exit runs after EVERY syscall of every task, so the
 * path that ends in "not an open" or "not a trapped file" must stay short:
 * direct (BTF) loads instead of bpf_probe_read_kernel() helper calls
 * wherever the verifier knows the pointer's type, and nothing but the map
 * lookup before we know the file is trapped.
 */

/*
 * The trap key of the file behind a new fd, by direct loads (a
 * bpf_rdonly_cast()ed pointer: PROBE_MEM loads, no helper call). Same key
 * and same result as lookup().
 */
static __always_inline struct kive_trap *tp_lookup_cast(struct file *file_ptr,
							 struct kive_key *key)
{
	struct file *file = bpf_core_cast(file_ptr, struct file);
	struct inode *inode = file->f_inode;

	if (!inode)
		return 0;
	key->dev = inode->i_sb->s_dev;
	key->pad = 0;
	key->ino = inode->i_ino;
	return bpf_map_lookup_elem(&traps, key);
}

/*
 * The file in slot fd of an fd array, or 0. To the verifier fdt->fd (a
 * pointer to pointers) is a scalar. With bpf_rdonly_cast (kernel >= 6.2)
 * the slot is typed as a struct whose first member is a struct file *
 * (struct kiocb's ki_filp, checked to be at offset 0) so that reading it is
 * a plain load; older kernels (Debian's 6.1) use one probe read. Both tests
 * are constants for the verifier: the other branch is dead code.
 */
static __always_inline struct file *tp_fd_file(struct file **fds, long fd)
{
	struct file *file = 0;

	if (bpf_ksym_exists(bpf_rdonly_cast) && bpf_core_field_offset(struct kiocb, ki_filp) == 0)
		return bpf_core_cast(&fds[fd], struct kiocb)->ki_filp;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return 0;
	return file;
}

/* Tracepoint tier: after a successful open, find the new fd's file. */
static __always_inline void on_fd_opened(long fd, __u8 hook)
{
	/* trusted BTF pointer: task->files->fdt->fd are plain loads */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct kive_key key;
	struct kive_trap *trap;
	struct file *file;
	__u32 f_mode, f_flags;

	/* the slot must lie inside the table (a racing close/dup2 aside) */
	if (fd < 0 || fd >= fdt->max_fds)
		return;
	file = tp_fd_file(fdt->fd, fd);
	if (!file)
		return;
	/*
	 * bpf_rdonly_cast makes the walk to the inode plain loads too; older
	 * kernels get the probe-read walk of lookup().
	 */
	if (bpf_ksym_exists(bpf_rdonly_cast))
		trap = tp_lookup_cast(file, &key);
	else
		trap = lookup(file, &key);
	if (!trap)
		return;
	/* a trapped file: the rare path, cost no longer matters */
	f_mode = BPF_CORE_READ(file, f_mode);
	if ((f_mode & FMODE_PATH) || is_self())
		return;
	f_flags = BPF_CORE_READ(file, f_flags);
	if (kive_rule_passes(trap, file, access_mask(f_mode, f_flags),
			     (struct task_struct *)bpf_get_current_task()))
		return;
	emit(&key, trap, access_mask(f_mode, f_flags), f_flags, hook, KIVE_ACTION_AUDIT);
}

static __always_inline bool is_open_nr64(long nr)
{
	return nr == NR_OPENAT || nr == NR_OPEN || nr == NR_OPENAT2 || nr == NR_CREAT ||
	       nr == NR_OPEN_BY_HANDLE_AT;
}

static __always_inline bool is_open_nr32(long nr)
{
	return nr == NR32_OPENAT || nr == NR32_OPEN || nr == NR32_OPENAT2 || nr == NR32_CREAT ||
	       nr == NR32_OPEN_BY_HANDLE_AT;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kive_tp_sys_exit, struct pt_regs *regs, long ret)
{
	long nr;
	bool compat;

	if (ret < 0)
		return 0;
	/*
	 * regs is a trusted BTF pointer here: a plain load, not a helper
	 * call. x32 calls carry X32_SYSCALL_BIT on the x86_64 numbers.
	 */
	nr = regs->orig_ax & ~(long)X32_SYSCALL_BIT;
	if (!is_open_nr64(nr) && !is_open_nr32(nr))
		return 0;
	/*
	 * ia32 numbers collide with x86_64's (5 is fstat, 8 lseek, 295
	 * preadv): only the task's compat state says which table it used.
	 */
	compat = bpf_get_current_task_btf()->thread_info.status & TS_COMPAT;
	if (compat ? !is_open_nr32(nr) : !is_open_nr64(nr))
		return 0;
	on_fd_opened(ret, KIVE_HOOK_TP_SYS_EXIT);
	return 0;
}

static __always_inline void on_exec(struct linux_binprm *bprm)
{
	struct file *file = BPF_CORE_READ(bprm, file);
	struct kive_key key;
	struct kive_trap *trap;

	if (!file)
		return;
	trap = lookup(file, &key);
	if (!trap || is_self())
		return;
	/* after the exec the source is approximated by the parent's executable */
	if (kive_rule_passes(trap, file, MAY_OPEN | MAY_EXEC,
			     BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), real_parent)))
		return;
	emit(&key, trap, MAY_OPEN | MAY_EXEC, BPF_CORE_READ(file, f_flags), KIVE_HOOK_TP_EXEC,
	     KIVE_ACTION_AUDIT);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(kive_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	on_exec(bprm);
	return 0;
}

/* Classic tracepoints: the fallback when tp_btf is not available. */
SEC("tracepoint/syscalls/sys_exit_openat")
int kive_tpc_openat(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_fd_opened(ctx->ret, KIVE_HOOK_TP_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int kive_tpc_openat2(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_fd_opened(ctx->ret, KIVE_HOOK_TP_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int kive_tpc_open(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_fd_opened(ctx->ret, KIVE_HOOK_TP_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int kive_tpc_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_fd_opened(ctx->ret, KIVE_HOOK_TP_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_creat")
int kive_tpc_creat(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_fd_opened(ctx->ret, KIVE_HOOK_TP_OPENAT);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int kive_tpc_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *file = BPF_CORE_READ(task, mm, exe_file);
	struct kive_key key;
	struct kive_trap *trap;

	if (!file)
		return 0;
	trap = lookup(file, &key);
	if (!trap || is_self())
		return 0;
	if (kive_rule_passes(trap, file, MAY_OPEN | MAY_EXEC, BPF_CORE_READ(task, real_parent)))
		return 0;
	emit(&key, trap, MAY_OPEN | MAY_EXEC, BPF_CORE_READ(file, f_flags), KIVE_HOOK_TP_EXEC,
	     KIVE_ACTION_AUDIT);
	return 0;
}
