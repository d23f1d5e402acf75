/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The structures shared by the kernel side (kive.bpf.c) and user space
 * (plugin/src/trap/wire.rs). Every field has a fixed size and explicit
 * padding; the Rust side asserts the same sizes and offsets in its tests.
 */
#ifndef KIVE_H
#define KIVE_H

#define KIVE_COMM_LEN 16
#define KIVE_PATH_LEN 256
#define KIVE_ARGS_LEN 256
#define KIVE_NAME_LEN 256 /* NAME_MAX + NUL */
#define KIVE_EVENT_VERSION 5

/* Which program saw the access (kive_event.hook). */
enum kive_hook {
	KIVE_HOOK_LSM_FILE_OPEN = 1,
	KIVE_HOOK_FENTRY_FILE_OPEN = 2,
	KIVE_HOOK_FMOD_RET_FILE_OPEN = 3,
	KIVE_HOOK_TP_SYS_EXIT = 4,
	KIVE_HOOK_TP_OPENAT = 5,
	KIVE_HOOK_TP_EXEC = 6,
	/* tamper: a trapped file's names changed (lsm and trampoline tiers) */
	KIVE_HOOK_LSM_INODE_RENAME = 7,   /* the trapped file was renamed */
	KIVE_HOOK_LSM_INODE_LINK = 8,     /* a hard link to it was made */
	KIVE_HOOK_LSM_INODE_UNLINK = 9,   /* one of its names was removed */
	KIVE_HOOK_LSM_INODE_REPLACE = 10, /* a rename is moving a file over it */
	KIVE_HOOK_FENTRY_INODE_RENAME = 11,
	KIVE_HOOK_FENTRY_INODE_LINK = 12,
	KIVE_HOOK_FENTRY_INODE_UNLINK = 13,
	KIVE_HOOK_FENTRY_INODE_REPLACE = 14,
};

/* What the kernel did with the access (kive_event.action). */
enum kive_action {
	KIVE_ACTION_AUDIT = 0,
	KIVE_ACTION_BLOCK = 1,
};

/* kive_trap.flags */
#define KIVE_TRAP_F_BLOCK 1u
/*
 * Rule conditions (KubeArmor-style), decided in the kernel on a hit: an
 * access that satisfies them passes silently (no event, never blocked).
 */
#define KIVE_TRAP_F_EXEC_ONLY 2u      /* only executions count (process rules) */
#define KIVE_TRAP_F_READ_ONLY 4u      /* reads pass; writes/appends count */
#define KIVE_TRAP_F_OWNER_ONLY 8u     /* the file owner's (fsuid == i_uid) accesses pass */
#define KIVE_TRAP_F_SOURCES 16u       /* only accesses from listed executables count */
#define KIVE_TRAP_F_SOURCES_ALLOW 32u /* listed executables pass; others count */
#define KIVE_TRAP_F_CONDITIONS 62u    /* all of the above */

/* Key of the sources map: an executable listed for a trap (fromSource). */
struct kive_source_key {
	__u32 trap_id;
	__u32 dev; /* kernel encoding, as in kive_key */
	__u64 ino;
};

/* Per-CPU counters (stats map indices). */
enum kive_stat {
	KIVE_STAT_HITS = 0,
	KIVE_STAT_DROPS = 1,
	KIVE_STAT_BLOCKED = 2,
	KIVE_STAT_LIMITED = 3, /* held back by the per-(trap, process) flood limit */
	KIVE_STAT_MAX = 4,
};

/*
 * kive_event.pflags: what the captured process details are worth.
 * Bits 0-7 are flags; bits 8-31 count the events of this (trap, process)
 * that the flood limit held back since the previous one that passed
 * (saturating at KIVE_EV_LIMITED_MAX).
 */
#define KIVE_EV_F_EXE_TRUNC 0x01u   /* exe path cut at the capture's limits */
#define KIVE_EV_F_CWD_TRUNC 0x02u   /* cwd path cut */
#define KIVE_EV_F_PEXE_TRUNC 0x04u  /* parent exe path cut */
#define KIVE_EV_F_ARGS_TRUNC 0x08u  /* argv longer than KIVE_ARGS_LEN - 1 */
#define KIVE_EV_F_EXE_MEMFD 0x10u   /* the executable is a memfd */
#define KIVE_EV_F_EXE_DELETED 0x20u /* the executable is unlinked */
#define KIVE_EV_LIMITED_SHIFT 8
#define KIVE_EV_LIMITED_MAX 0xffffffu

/* Flood limiter (per trap and process) state. */
struct kive_limit_key {
	__u32 trap_id;
	__u32 tgid;
};

struct kive_limit {
	__u64 tat;     /* GCRA: theoretical arrival time of the next event (ns) */
	__u32 limited; /* held back since the last one that passed */
	__u32 pad;
};

/*
 * Trap map key: the file's identity in the kernel's encoding.
 * dev is sb->s_dev (MAJOR << 20 | MINOR), not userspace st_dev.
 */
struct kive_key {
	__u32 dev;
	__u32 pad; /* always zero */
	__u64 ino;
};

/* Trap map value. */
struct kive_trap {
	__u32 trap_id;
	__u32 flags; /* KIVE_TRAP_F_* */
};

/* One access to a trapped file, as written to the ring buffer. */
struct kive_event {
	__u64 ts_boot_ns; /* bpf_ktime_get_boot_ns() at the access */
	__u64 ino;
	__u64 cgroup_id;  /* cgroup v2 id of the accessing task */
	__u32 dev;        /* kernel encoding */
	__u32 pid;        /* host thread id */
	__u32 tgid;       /* host process id */
	__u32 ppid;       /* host tgid of the real parent */
	__u32 uid;
	__u32 gid;
	__u32 mask;       /* MAY_* bits */
	__u32 flags;      /* open flags (f_flags) */
	__u32 mnt_ns;     /* mount namespace inode number */
	__u32 trap_id;
	__u16 version;    /* KIVE_EVENT_VERSION */
	__u8 hook;        /* enum kive_hook */
	__u8 action;      /* enum kive_action */
	__u32 ns_pid;     /* tgid inside the task's pid namespace */
	char comm[KIVE_COMM_LEN];
	/* process details, captured at the access (kive_proc.h) */
	__u32 loginuid;   /* (u32)-1 when unset */
	__u16 exe_len;    /* bytes of exe, with its NUL; 0 = unknown */
	__u16 cwd_len;    /* bytes of cwd, with its NUL; 0 = unknown */
	__u16 args_len;   /* bytes of args (NUL-separated argv) */
	__u16 pexe_len;   /* bytes of pexe, with its NUL; 0 = unknown */
	__u32 pflags;     /* KIVE_EV_F_* | limited count << KIVE_EV_LIMITED_SHIFT */
	char pcomm[KIVE_COMM_LEN]; /* the parent's comm */
	char exe[KIVE_PATH_LEN];   /* executable, as seen from the task's root */
	char cwd[KIVE_PATH_LEN];   /* working directory, as seen from the task's root */
	char args[KIVE_ARGS_LEN];  /* argv, NUL-separated, possibly truncated */
	char pexe[KIVE_PATH_LEN];  /* the parent's executable, as seen from its root */
	/*
	 * tamper events (version 4): the name a rename or link gives the file
	 * and the inode of the directory it is in (same device as the file);
	 * new_name_len 0 (and new_dir_ino 0) on every other event
	 */
	__u64 new_dir_ino;
	__u16 new_name_len; /* bytes of new_name, with its NUL */
	__u16 pad2[3];
	char new_name[KIVE_NAME_LEN];
	/*
	 * the start time of the task's thread group (start_boottime, ns): with
	 * tgid, who the process is (a reused pid has another start time)
	 */
	__u64 start_ns;
};

#endif /* KIVE_H */
