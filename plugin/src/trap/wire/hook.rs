//! The program that saw an event (`enum kive_hook`), what the kernel did
//! (`enum kive_action`), and for a tamper event what was done to the file's
//! names.

/// The program that saw an access (`enum kive_hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `lsm/file_open`.
    LsmFileOpen,
    /// `fentry/security_file_open`.
    FentryFileOpen,
    /// `fmod_ret/security_file_open`.
    FmodRetFileOpen,
    /// `tp_btf/sys_exit` after an open syscall.
    TpSysExit,
    /// A classic `syscalls/sys_exit_open*` tracepoint.
    TpOpenat,
    /// `sched_process_exec` (the trapped file was executed).
    TpExec,
    /// `lsm/inode_rename` (a trapped file renamed, or moved over).
    LsmInodeRename,
    /// `lsm/inode_link`.
    LsmInodeLink,
    /// `lsm/inode_unlink`.
    LsmInodeUnlink,
    /// `fentry/security_inode_rename`.
    FentryInodeRename,
    /// `fentry/security_inode_link`.
    FentryInodeLink,
    /// `fentry/security_inode_unlink`.
    FentryInodeUnlink,
    /// Not a kernel hook: kive's periodic re-resolution of the trap paths
    /// saw a trapped file renamed, linked, unlinked or replaced.
    Rescan,
    /// A fanotify permission event (`FAN_OPEN_PERM` / `FAN_OPEN_EXEC_PERM`).
    /// Userspace only: the eBPF programs never write it.
    FanotifyPerm,
}

impl Hook {
    /// The `enum kive_hook` number.
    pub fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::LsmFileOpen,
            2 => Self::FentryFileOpen,
            3 => Self::FmodRetFileOpen,
            4 => Self::TpSysExit,
            5 => Self::TpOpenat,
            6 => Self::TpExec,
            7 | 10 => Self::LsmInodeRename,
            8 => Self::LsmInodeLink,
            9 => Self::LsmInodeUnlink,
            11 | 14 => Self::FentryInodeRename,
            12 => Self::FentryInodeLink,
            13 => Self::FentryInodeUnlink,
            15 => Self::FanotifyPerm,
            _ => return None,
        })
    }

    /// What a tamper hook number says was done to the file (`None` for
    /// an access).
    pub(super) fn tamper_of_raw(v: u8) -> Option<TamperKind> {
        Some(match v {
            7 | 11 => TamperKind::Rename,
            8 | 12 => TamperKind::Link,
            9 | 13 => TamperKind::Unlink,
            10 | 14 => TamperKind::Replace,
            _ => return None,
        })
    }

    /// The name shown in alerts and in `kive.hook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LsmFileOpen => "lsm/file_open",
            Self::FentryFileOpen => "fentry/security_file_open",
            Self::FmodRetFileOpen => "fmod_ret/security_file_open",
            Self::TpSysExit => "tp_btf/sys_exit",
            Self::TpOpenat => "tracepoint/sys_exit_open",
            Self::TpExec => "sched_process_exec",
            Self::LsmInodeRename => "lsm/inode_rename",
            Self::LsmInodeLink => "lsm/inode_link",
            Self::LsmInodeUnlink => "lsm/inode_unlink",
            Self::FentryInodeRename => "fentry/security_inode_rename",
            Self::FentryInodeLink => "fentry/security_inode_link",
            Self::FentryInodeUnlink => "fentry/security_inode_unlink",
            Self::Rescan => "rescan",
            Self::FanotifyPerm => "fanotify/open_perm",
        }
    }

    /// Parses [`Hook::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::LsmFileOpen,
            Self::FentryFileOpen,
            Self::FmodRetFileOpen,
            Self::TpSysExit,
            Self::TpOpenat,
            Self::TpExec,
            Self::LsmInodeRename,
            Self::LsmInodeLink,
            Self::LsmInodeUnlink,
            Self::FentryInodeRename,
            Self::FentryInodeLink,
            Self::FentryInodeUnlink,
            Self::Rescan,
            Self::FanotifyPerm,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }
}

/// What the kernel did with the access (`enum kive_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Reported only.
    Audit,
    /// Denied with EPERM.
    Block,
}

impl Action {
    /// `audit` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Block => "block",
        }
    }
}

/// What was done to a trapped file's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TamperKind {
    /// Moved to another name (or linked elsewhere, then unlinked here).
    Rename,
    /// Given another name (a hard link).
    Link,
    /// A name removed.
    Unlink,
    /// Another file put at the trap's path, the trapped file gone.
    Replace,
}

impl TamperKind {
    /// `rename`, `link`, `unlink` or `replace`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rename => "rename",
            Self::Link => "link",
            Self::Unlink => "unlink",
            Self::Replace => "replace",
        }
    }
}

/// A change to a trapped file's names (not an access to its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    /// What was done.
    pub kind: TamperKind,
    /// The name the file had (empty if unknown).
    pub old_path: String,
    /// The name it has now (empty if unknown or none).
    pub new_path: String,
    /// The kernel's tamper hooks: the last component of the name a rename
    /// or link gives the file (empty otherwise).
    pub new_name: String,
    /// The kernel's tamper hooks: the inode of the directory holding
    /// `new_name`, on the file's device (0 when unknown).
    pub new_dir_ino: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_round_trip() {
        for raw in 1..=15u8 {
            let h = Hook::from_raw(raw).expect("known hook");
            assert_eq!(Hook::parse(h.as_str()), Some(h));
        }
    }
}
