//! Pure parts of the fanotify tier: the `MAY_*` mask and open flags of an
//! access (from the syscall the task waits in), and the `struct kive_event`
//! bytes the eBPF tiers would have written for it.

use crate::trap::wire::{
    offsets, Action, Hook, RawEvent, COMM_LEN, EVENT_SIZE, EVENT_VERSION, PATH_LEN,
};

/// `MAY_EXEC`.
pub const MAY_EXEC: u32 = 0x1;
/// `MAY_WRITE`.
pub const MAY_WRITE: u32 = 0x2;
/// `MAY_READ`.
pub const MAY_READ: u32 = 0x4;
/// `MAY_APPEND`.
pub const MAY_APPEND: u32 = 0x8;
/// `MAY_OPEN`.
pub const MAY_OPEN: u32 = 0x20;

const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_NOCTTY: u32 = 0o400;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const O_LARGEFILE: u32 = 0o100000;

/// The mask the eBPF tiers report for an open with `flags`.
pub fn open_mask(flags: u32) -> u32 {
    let acc = match flags & O_ACCMODE {
        O_WRONLY => MAY_WRITE,
        O_RDWR => MAY_READ | MAY_WRITE,
        _ => MAY_READ,
    };
    let append = if flags & O_APPEND != 0 { MAY_APPEND } else { 0 };
    MAY_OPEN | acc | append
}

/// The file's `f_flags` as the kernel keeps them after the open: creation
/// flags dropped, `O_LARGEFILE` forced (64-bit).
pub fn file_flags(open_flags: u32) -> u32 {
    (open_flags & !(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) | O_LARGEFILE
}

/// The open syscalls, by number on this architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenCall {
    /// Flags are this argument.
    Flags(usize),
    /// `creat`: `O_CREAT|O_WRONLY|O_TRUNC`.
    Creat,
    /// `openat2`: flags are the first u64 of the `struct open_how` at this
    /// argument.
    How(usize),
}

/// Which open syscall `nr` is.
pub fn open_call(nr: u64) -> Option<OpenCall> {
    #[cfg(target_arch = "x86_64")]
    let call = match nr {
        2 => OpenCall::Flags(1),   // open
        85 => OpenCall::Creat,     // creat
        257 => OpenCall::Flags(2), // openat
        304 => OpenCall::Flags(2), // open_by_handle_at
        437 => OpenCall::How(2),   // openat2
        _ => return None,
    };
    #[cfg(target_arch = "aarch64")]
    let call = match nr {
        56 => OpenCall::Flags(2),  // openat
        265 => OpenCall::Flags(2), // open_by_handle_at
        437 => OpenCall::How(2),   // openat2
        _ => return None,
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let call = {
        let _ = nr;
        return None;
    };
    Some(call)
}

/// The open flags of the syscall a task waits in; `how` reads the flags of
/// an `openat2` `struct open_how` at an address of the task.
pub fn open_flags(
    syscall: Option<(u64, [u64; 6])>,
    how: impl FnOnce(u64) -> Option<u64>,
) -> Option<u32> {
    let (nr, args) = syscall?;
    match open_call(nr)? {
        OpenCall::Flags(i) => args.get(i).map(|&f| f as u32),
        OpenCall::Creat => Some(O_CREAT | O_WRONLY | O_TRUNC),
        OpenCall::How(i) => how(*args.get(i)?).map(|f| f as u32),
    }
}

/// The `KIVE_EV_F_*` bits of a capture read from `/proc`: what was cut at
/// the event's limits, and executables that name no file (memfd, deleted).
pub fn capture_flags(exe: &str, cwd: &str, parent_exe: &str, args: &[u8]) -> u32 {
    use crate::alert::ProcessFlags as F;
    let cut = |s: &str| s.len() >= PATH_LEN;
    let mut f = 0;
    if cut(exe) {
        f |= F::BINARY_TRUNCATED;
    }
    if cut(cwd) {
        f |= F::CWD_TRUNCATED;
    }
    if cut(parent_exe) {
        f |= F::PARENT_BINARY_TRUNCATED;
    }
    if args.len() > crate::trap::wire::ARGS_LEN {
        f |= F::ARGUMENTS_TRUNCATED;
    }
    if exe.starts_with("/memfd:") {
        f |= F::BINARY_MEMFD;
    } else if exe.ends_with(" (deleted)") {
        f |= F::BINARY_DELETED;
    }
    f
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

/// Copies `s` into a NUL-terminated field of `cap` bytes; returns the
/// length written with the NUL (what the kernel's `*_len` fields hold).
fn put_str(b: &mut [u8], at: usize, cap: usize, s: &[u8]) -> u16 {
    let n = s.len().min(cap - 1);
    put(b, at, &s[..n]);
    (n + 1) as u16
}

/// The `struct kive_event` bytes of an event (what [`RawEvent::decode`]
/// reads back). `args` is the raw NUL-separated argv.
pub fn encode(ev: &RawEvent, args: &[u8]) -> Vec<u8> {
    use offsets::*;
    let mut b = vec![0u8; EVENT_SIZE];
    put(&mut b, TS_BOOT_NS, &ev.ts_boot_ns.to_le_bytes());
    put(&mut b, INO, &ev.key.ino.to_le_bytes());
    put(&mut b, CGROUP_ID, &ev.cgroup_id.to_le_bytes());
    put(&mut b, DEV, &ev.key.dev.to_le_bytes());
    put(&mut b, PID, &ev.pid.to_le_bytes());
    put(&mut b, TGID, &ev.tgid.to_le_bytes());
    put(&mut b, PPID, &ev.ppid.to_le_bytes());
    put(&mut b, UID, &ev.uid.to_le_bytes());
    put(&mut b, GID, &ev.gid.to_le_bytes());
    put(&mut b, MASK, &ev.mask.to_le_bytes());
    put(&mut b, FLAGS, &ev.flags.to_le_bytes());
    put(&mut b, MNT_NS, &ev.mnt_ns.to_le_bytes());
    put(&mut b, TRAP_ID, &ev.trap_id.to_le_bytes());
    put(&mut b, VERSION, &EVENT_VERSION.to_le_bytes());
    b[HOOK] = match ev.hook {
        Hook::LsmFileOpen => 1,
        Hook::FentryFileOpen => 2,
        Hook::FmodRetFileOpen => 3,
        Hook::TpSysExit => 4,
        Hook::TpOpenat => 5,
        Hook::TpExec => 6,
        Hook::LsmInodeRename => 7,
        Hook::LsmInodeLink => 8,
        Hook::LsmInodeUnlink => 9,
        Hook::FentryInodeRename => 11,
        Hook::FentryInodeLink => 12,
        Hook::FentryInodeUnlink => 13,
        Hook::FanotifyPerm => 15,
        // not a kernel hook: never encoded (decodes as an error)
        Hook::Rescan => 0,
    };
    b[ACTION] = match ev.action {
        Action::Audit => 0,
        Action::Block => 1,
    };
    put(&mut b, NS_PID, &ev.ns_pid.to_le_bytes());
    let pflags = (ev.process_flags & crate::trap::wire::EV_FLAGS_MASK)
        | (ev.limited << crate::trap::wire::EV_LIMITED_SHIFT);
    put(&mut b, PFLAGS, &pflags.to_le_bytes());
    let comm = ev.comm().as_bytes();
    put(&mut b, COMM, &comm[..comm.len().min(COMM_LEN - 1)]);
    put(
        &mut b,
        LOGINUID,
        &ev.loginuid.unwrap_or(u32::MAX).to_le_bytes(),
    );
    let pcomm = ev.parent_comm().as_bytes();
    put(&mut b, PCOMM, &pcomm[..pcomm.len().min(COMM_LEN - 1)]);
    let exe_len = put_str(&mut b, EXE, PATH_LEN, ev.exe().as_bytes());
    let cwd_len = put_str(&mut b, CWD, PATH_LEN, ev.cwd().as_bytes());
    let pexe_len = put_str(&mut b, PEXE, PATH_LEN, ev.parent_exe().as_bytes());
    let args_n = args.len().min(crate::trap::wire::ARGS_LEN);
    put(&mut b, offsets::ARGS, &args[..args_n]);
    put(&mut b, EXE_LEN, &exe_len.to_le_bytes());
    put(&mut b, CWD_LEN, &cwd_len.to_le_bytes());
    put(&mut b, PEXE_LEN, &pexe_len.to_le_bytes());
    put(&mut b, offsets::ARGS_LEN, &(args_n as u16).to_le_bytes());
    put(&mut b, START_NS, &ev.start_ns.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::{Args, EventText, Texts, TrapKey};

    #[test]
    fn masks_match_the_ebpf_tiers() {
        assert_eq!(open_mask(0), MAY_OPEN | MAY_READ);
        assert_eq!(
            open_mask(O_WRONLY | O_CREAT | O_TRUNC),
            MAY_OPEN | MAY_WRITE
        );
        assert_eq!(
            open_mask(O_WRONLY | O_CREAT | O_APPEND),
            MAY_OPEN | MAY_WRITE | MAY_APPEND
        );
        assert_eq!(open_mask(O_RDWR), MAY_OPEN | MAY_READ | MAY_WRITE);
        assert_eq!(
            file_flags(O_WRONLY | O_CREAT | O_TRUNC),
            O_WRONLY | O_LARGEFILE
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn open_flags_from_each_open_syscall() {
        let args = |i: usize, v: u64| {
            let mut a = [0u64; 6];
            a[i] = v;
            a
        };
        let none = |_| None;
        assert_eq!(open_flags(Some((257, args(2, 0o1101))), none), Some(0o1101));
        assert_eq!(open_flags(Some((2, args(1, 0o2))), none), Some(0o2));
        assert_eq!(
            open_flags(Some((85, [0; 6])), none),
            Some(O_CREAT | O_WRONLY | O_TRUNC)
        );
        assert_eq!(
            open_flags(Some((437, args(2, 0x1000))), |addr| (addr == 0x1000)
                .then_some(0o2002)),
            Some(0o2002)
        );
        assert_eq!(open_flags(Some((0, [0; 6])), none), None, "read(2)");
        assert_eq!(open_flags(None, none), None);
    }

    #[test]
    fn capture_flags_mark_cut_fields_and_fileless_executables() {
        use crate::alert::ProcessFlags as F;
        assert_eq!(capture_flags("/bin/cat", "/", "/bin/sh", b"cat\0"), 0);
        let long = "x".repeat(PATH_LEN);
        assert_eq!(
            capture_flags(&long, &long, &long, &[b'a'; 300]),
            F::BINARY_TRUNCATED
                | F::CWD_TRUNCATED
                | F::PARENT_BINARY_TRUNCATED
                | F::ARGUMENTS_TRUNCATED
        );
        assert_eq!(
            capture_flags("/memfd:x (deleted)", "/", "", b""),
            F::BINARY_MEMFD
        );
        assert_eq!(
            capture_flags("/tmp/evil (deleted)", "/", "", b""),
            F::BINARY_DELETED
        );
    }

    #[test]
    fn encoded_events_decode_back() {
        let ev = RawEvent {
            ts_boot_ns: 5,
            key: TrapKey {
                dev: 0x0fe0_0001,
                ino: 99,
            },
            cgroup_id: 7,
            pid: 11,
            tgid: 10,
            ppid: 1,
            ns_pid: 3,
            uid: 1000,
            gid: 100,
            mask: MAY_OPEN | MAY_READ,
            flags: O_LARGEFILE,
            mnt_ns: 4_026_531_841,
            trap_id: 42,
            hook: Hook::FanotifyPerm,
            action: Action::Block,
            text: EventText::new(Texts {
                comm: "a-very-long-command-name",
                parent_comm: "bash",
                parent_exe: "/bin/bash",
                exe: "/usr/bin/cat",
                cwd: "/",
                args: Args::from_parts(&["cat", "/secret"]).borrowed(),
            }),
            loginuid: None,
            process_flags: 0x20,
            limited: 0,
            tamper: None,
            start_ns: 123_456,
        };
        let back = RawEvent::decode(&encode(&ev, b"cat\0/secret\0")).expect("decodes");
        assert_eq!(back.comm(), "a-very-long-com", "cut to 15 bytes + NUL");
        assert_eq!(
            RawEvent {
                text: EventText::new(Texts {
                    comm: ev.comm(),
                    ..back.text.texts()
                }),
                ..back.clone()
            },
            ev
        );
        let long = "x".repeat(1000);
        let ev2 = RawEvent {
            text: EventText::new(Texts {
                exe: &long,
                ..ev.text.texts()
            }),
            ..ev.clone()
        };
        let back = RawEvent::decode(&encode(&ev2, &[b'a'; 600])).expect("decodes");
        assert_eq!(back.exe().len(), PATH_LEN - 1);
        assert_eq!(back.args(), ["a".repeat(crate::trap::wire::ARGS_LEN)]);
    }
}
