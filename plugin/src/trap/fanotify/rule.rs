//! Rule conditions on the fanotify tier (`KIVE_TRAP_F_*`), decided in user
//! space while the opener waits in its open: the same decision the BPF
//! tiers make in the kernel (`kive_rule_passes` in `kive.bpf.c`).
//!
//! What this tier knows: the open's mode from the opener's syscall
//! arguments (`/proc/<tid>/syscall`, `open_how` for `openat2`), its fsuid
//! from `/proc/<tid>/status`, its executable's inode from
//! `/proc/<tid>/exe`, and the file's owner from the event's fd. An open whose
//! mode cannot be read (io_uring, a kernel-internal open) counts as a write
//! for `readOnly`: the rule applies rather than letting a write through.

use std::path::Path;

use super::record::{MAY_APPEND, MAY_EXEC, MAY_WRITE};
use crate::trap::dev::kernel_dev;
use crate::trap::wire::{
    TrapKey, TRAP_F_CONDITIONS, TRAP_F_EXEC_ONLY, TRAP_F_OWNER_ONLY, TRAP_F_READ_ONLY,
    TRAP_F_SOURCES, TRAP_F_SOURCES_ALLOW,
};

/// What the decision may ask about the access (each read only if needed).
pub trait Access {
    /// Whether the opener's executable is a listed source of the trap.
    fn listed(&mut self) -> bool;
    /// Whether the opener's fsuid is the file owner's uid.
    fn owner(&mut self) -> bool;
}

/// Whether the access satisfies the rule and passes silently. `mask` holds
/// `MAY_*` bits; `mode_known` is false when the open's mode is unknown.
pub fn rule_passes(flags: u32, mask: u32, mode_known: bool, access: &mut impl Access) -> bool {
    if flags & TRAP_F_CONDITIONS == 0 {
        return false;
    }
    if flags & TRAP_F_EXEC_ONLY != 0 && mask & MAY_EXEC == 0 {
        return true;
    }
    let sourced = flags & (TRAP_F_SOURCES | TRAP_F_SOURCES_ALLOW) != 0;
    let listed = sourced && access.listed();
    if flags & TRAP_F_SOURCES != 0 && !listed {
        return true;
    }
    if flags & TRAP_F_SOURCES_ALLOW != 0 && !listed {
        return false;
    }
    if flags & (TRAP_F_READ_ONLY | TRAP_F_OWNER_ONLY) == 0 {
        return flags & TRAP_F_SOURCES_ALLOW != 0;
    }
    if flags & TRAP_F_READ_ONLY != 0 && (!mode_known || mask & (MAY_WRITE | MAY_APPEND) != 0) {
        return false;
    }
    flags & TRAP_F_OWNER_ONLY == 0 || access.owner()
}

/// The fsuid (fourth `Uid:` field) of a `/proc/<tid>/status` text.
pub fn fsuid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// A waiting opener, read from `/proc` on demand.
pub struct Opener<'a> {
    /// `/proc`.
    pub proc_root: &'a Path,
    /// The opener's thread id.
    pub tid: u32,
    /// The trap hit.
    pub trap_id: u32,
    /// The file's owner uid.
    pub file_uid: u32,
    /// Whether (trap id, executable key) is listed.
    pub is_listed: &'a dyn Fn(u32, TrapKey) -> bool,
}

impl Access for Opener<'_> {
    fn listed(&mut self) -> bool {
        let exe = self.proc_root.join(self.tid.to_string()).join("exe");
        // the executable's inode, whatever its name (a kernel thread or an
        // exited task has none: not a listed source)
        std::fs::metadata(exe).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            let key = TrapKey {
                dev: kernel_dev(m.dev()),
                ino: m.ino(),
            };
            (self.is_listed)(self.trap_id, key)
        })
    }

    fn owner(&mut self) -> bool {
        let status = self.proc_root.join(self.tid.to_string()).join("status");
        std::fs::read_to_string(status)
            .ok()
            .and_then(|s| fsuid(&s))
            .is_some_and(|u| u == self.file_uid)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{MAY_OPEN, MAY_READ};
    use super::*;

    struct Fixed {
        listed: bool,
        owner: bool,
    }

    impl Access for Fixed {
        fn listed(&mut self) -> bool {
            self.listed
        }
        fn owner(&mut self) -> bool {
            self.owner
        }
    }

    const READ: u32 = MAY_OPEN | MAY_READ;
    const WRITE: u32 = MAY_OPEN | MAY_WRITE;

    fn passes(flags: u32, mask: u32, listed: bool, owner: bool) -> bool {
        rule_passes(flags, mask, true, &mut Fixed { listed, owner })
    }

    #[test]
    fn without_conditions_every_access_is_reported() {
        assert!(!passes(0, READ, true, true));
    }

    #[test]
    fn read_only_passes_reads_and_reports_writes_and_unknown_modes() {
        assert!(passes(TRAP_F_READ_ONLY, READ, false, false));
        assert!(!passes(TRAP_F_READ_ONLY, WRITE, false, false));
        assert!(!passes(
            TRAP_F_READ_ONLY,
            MAY_OPEN | MAY_APPEND,
            false,
            false
        ));
        let mut a = Fixed {
            listed: false,
            owner: false,
        };
        assert!(
            !rule_passes(TRAP_F_READ_ONLY, MAY_OPEN, false, &mut a),
            "a mode kive cannot read counts as a write"
        );
    }

    #[test]
    fn owner_only_passes_the_owner() {
        assert!(passes(TRAP_F_OWNER_ONLY, WRITE, false, true));
        assert!(!passes(TRAP_F_OWNER_ONLY, READ, false, false));
        assert!(!passes(
            TRAP_F_OWNER_ONLY | TRAP_F_READ_ONLY,
            WRITE,
            false,
            true
        ));
    }

    #[test]
    fn sources_scope_the_rule_and_allow_lets_only_them_through() {
        // Block/Audit + fromSource: the rule is about the listed sources only
        assert!(passes(TRAP_F_SOURCES, READ, false, false));
        assert!(!passes(TRAP_F_SOURCES, READ, true, false));
        assert!(passes(TRAP_F_SOURCES | TRAP_F_READ_ONLY, READ, true, false));
        // Allow + fromSource: only the sources pass
        assert!(passes(TRAP_F_SOURCES_ALLOW, READ, true, false));
        assert!(!passes(TRAP_F_SOURCES_ALLOW, READ, false, true));
        assert!(!passes(
            TRAP_F_SOURCES_ALLOW | TRAP_F_READ_ONLY,
            WRITE,
            true,
            false
        ));
    }

    #[test]
    fn process_rules_pass_every_open_that_is_not_an_execution() {
        assert!(passes(TRAP_F_EXEC_ONLY, READ, false, false));
        assert!(!passes(TRAP_F_EXEC_ONLY, MAY_OPEN | MAY_EXEC, false, false));
        assert!(passes(
            TRAP_F_EXEC_ONLY | TRAP_F_SOURCES_ALLOW,
            MAY_OPEN | MAY_EXEC,
            true,
            false
        ));
    }

    #[test]
    fn fsuid_is_the_fourth_uid() {
        let status = "Name:\tcat\nUid:\t1000\t1000\t1000\t1001\nGid:\t0\t0\t0\t0\n";
        assert_eq!(fsuid(status), Some(1001));
        assert_eq!(fsuid("Uid:\t1\n"), None);
        assert_eq!(fsuid(""), None);
    }
}
