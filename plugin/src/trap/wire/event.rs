//! One ring-buffer record (`struct kive_event`), decoded.

use thiserror::Error;

use super::args::ArgsRef;
use super::hook::{Action, Hook, Tamper};
use super::text::{c_str, EventText, Fields};
use super::{
    TrapKey, ARGS_LEN, COMM_LEN, EVENT_SIZE, EVENT_VERSION, EV_FLAGS_MASK, EV_LIMITED_SHIFT,
    NAME_LEN, PATH_LEN,
};

/// Byte offsets of the fields of `struct kive_event` (checked against the
/// skeleton's generated type in tests).
pub mod offsets {
    #![allow(missing_docs)]
    pub const TS_BOOT_NS: usize = 0;
    pub const INO: usize = 8;
    pub const CGROUP_ID: usize = 16;
    pub const DEV: usize = 24;
    pub const PID: usize = 28;
    pub const TGID: usize = 32;
    pub const PPID: usize = 36;
    pub const UID: usize = 40;
    pub const GID: usize = 44;
    pub const MASK: usize = 48;
    pub const FLAGS: usize = 52;
    pub const MNT_NS: usize = 56;
    pub const TRAP_ID: usize = 60;
    pub const VERSION: usize = 64;
    pub const HOOK: usize = 66;
    pub const ACTION: usize = 67;
    pub const NS_PID: usize = 68;
    pub const COMM: usize = 72;
    pub const LOGINUID: usize = 88;
    pub const EXE_LEN: usize = 92;
    pub const CWD_LEN: usize = 94;
    pub const ARGS_LEN: usize = 96;
    pub const PEXE_LEN: usize = 98;
    pub const PFLAGS: usize = 100;
    pub const PCOMM: usize = 104;
    pub const EXE: usize = 120;
    pub const CWD: usize = 376;
    pub const ARGS: usize = 632;
    pub const PEXE: usize = 888;
    pub const NEW_DIR_INO: usize = 1144;
    pub const NEW_NAME_LEN: usize = 1152;
    pub const NEW_NAME: usize = 1160;
    pub const START_NS: usize = 1416;
}

/// One access to a trapped file, decoded from `struct kive_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// `CLOCK_BOOTTIME` nanoseconds at the access.
    pub ts_boot_ns: u64,
    /// The file's key.
    pub key: TrapKey,
    /// cgroup v2 id of the accessing task.
    pub cgroup_id: u64,
    /// Host thread id.
    pub pid: u32,
    /// Host process id.
    pub tgid: u32,
    /// Host process id of the parent.
    pub ppid: u32,
    /// Process id inside its own pid namespace.
    pub ns_pid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// `MAY_*` bits.
    pub mask: u32,
    /// Open flags (`f_flags`).
    pub flags: u32,
    /// Mount namespace inode.
    pub mnt_ns: u32,
    /// Trap id from the map value.
    pub trap_id: u32,
    /// Program that fired.
    pub hook: Hook,
    /// What the kernel did.
    pub action: Action,
    /// comm, parent comm, parent exe, exe, cwd and argv in one string
    /// (read them with [`RawEvent::comm`] and its siblings).
    pub text: EventText,
    /// Login uid (`None` when unset).
    pub loginuid: Option<u32>,
    /// `KIVE_EV_F_*`: cut paths and argv, memfd or deleted executable
    /// (the bits of [`crate::alert::ProcessFlags`]).
    pub process_flags: u32,
    /// Events of this trap and process the kernel's flood limit held back
    /// since the previous one that passed.
    pub limited: u32,
    /// Set when the event is a change to the file's names, not an access.
    pub tamper: Option<Tamper>,
    /// When the process (thread group) started, ns since boot (0 =
    /// unknown): with `tgid`, which process this is (a reused pid has
    /// another start time).
    pub start_ns: u64,
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Record shorter than `struct kive_event`.
    #[error("event record is {0} bytes, expected {EVENT_SIZE}")]
    Short(usize),
    /// Produced by another layout version.
    #[error("event layout version {0}, this build decodes {EVENT_VERSION}")]
    Version(u16),
    /// Unknown hook number.
    #[error("unknown hook {0}")]
    Hook(u8),
    /// Unknown action number.
    #[error("unknown action {0}")]
    Action(u8),
}

/// A record of the expected size (the length checked once: every field at a
/// constant offset is then read without a bounds check at run time).
type Record = [u8; EVENT_SIZE];

// Readers of a record's fields: never panic (a field past the end reads as
// zero or empty, which the constant offsets never are).
#[inline(always)]
fn bytes_at<const N: usize>(b: &Record, o: usize) -> [u8; N] {
    b.get(o..o.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}
#[inline(always)]
fn u16_at(b: &Record, o: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, o))
}
#[inline(always)]
fn u32_at(b: &Record, o: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, o))
}
#[inline(always)]
fn u64_at(b: &Record, o: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, o))
}
fn field(b: &Record, o: usize, len: usize) -> &[u8] {
    b.get(o..o.saturating_add(len)).unwrap_or_default()
}

impl RawEvent {
    /// Decodes one ring-buffer record.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        use offsets::*;
        let Some(b) = b.first_chunk::<EVENT_SIZE>() else {
            return Err(DecodeError::Short(b.len()));
        };
        let version = u16_at(b, VERSION);
        if version != EVENT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let [hook] = bytes_at::<1>(b, HOOK);
        let hook = Hook::from_raw(hook).ok_or(DecodeError::Hook(hook))?;
        let action = match bytes_at::<1>(b, ACTION)[0] {
            0 => Action::Audit,
            1 => Action::Block,
            other => return Err(DecodeError::Action(other)),
        };
        let len_at = |o: usize, max: usize| usize::from(u16_at(b, o)).min(max);
        let exe_len = len_at(EXE_LEN, PATH_LEN);
        let cwd_len = len_at(CWD_LEN, PATH_LEN);
        let args_len = len_at(ARGS_LEN, self::ARGS_LEN);
        let pexe_len = len_at(PEXE_LEN, PATH_LEN);
        let new_name_len = len_at(offsets::NEW_NAME_LEN, NAME_LEN);
        let loginuid = u32_at(b, LOGINUID);
        let pflags = u32_at(b, PFLAGS);
        Ok(Self {
            ts_boot_ns: u64_at(b, TS_BOOT_NS),
            key: TrapKey {
                dev: u32_at(b, DEV),
                ino: u64_at(b, INO),
            },
            cgroup_id: u64_at(b, CGROUP_ID),
            pid: u32_at(b, PID),
            tgid: u32_at(b, TGID),
            ppid: u32_at(b, PPID),
            ns_pid: u32_at(b, NS_PID),
            uid: u32_at(b, UID),
            gid: u32_at(b, GID),
            mask: u32_at(b, MASK),
            flags: u32_at(b, FLAGS),
            mnt_ns: u32_at(b, MNT_NS),
            trap_id: u32_at(b, TRAP_ID),
            hook,
            action,
            text: EventText::decode(Fields {
                comm: field(b, COMM, COMM_LEN),
                parent_comm: field(b, PCOMM, COMM_LEN),
                parent_exe: field(b, PEXE, pexe_len),
                exe: field(b, EXE, exe_len),
                cwd: field(b, CWD, cwd_len),
                args: field(b, offsets::ARGS, args_len),
            }),
            loginuid: (loginuid != u32::MAX).then_some(loginuid),
            process_flags: pflags & EV_FLAGS_MASK,
            limited: pflags >> EV_LIMITED_SHIFT,
            // paths are filled in from the trap (old) and the new name's
            // directory (new, `node::resolve::PinnedFile::new_path`)
            tamper: Hook::tamper_of_raw(bytes_at::<1>(b, HOOK)[0]).map(|kind| Tamper {
                kind,
                old_path: String::new(),
                new_path: String::new(),
                new_name: c_str(field(b, NEW_NAME, new_name_len)),
                new_dir_ino: u64_at(b, NEW_DIR_INO),
            }),
            start_ns: u64_at(b, START_NS),
        })
    }

    /// `task->comm`.
    pub fn comm(&self) -> &str {
        self.text.comm()
    }

    /// The parent's comm.
    pub fn parent_comm(&self) -> &str {
        self.text.parent_comm()
    }

    /// The parent's executable path as the parent sees it (empty if not
    /// captured).
    pub fn parent_exe(&self) -> &str {
        self.text.parent_exe()
    }

    /// Executable path as the process sees it (empty if not captured).
    pub fn exe(&self) -> &str {
        self.text.exe()
    }

    /// Working directory as the process sees it (empty if not captured).
    pub fn cwd(&self) -> &str {
        self.text.cwd()
    }

    /// argv, possibly truncated (empty if not captured).
    pub fn args(&self) -> ArgsRef<'_> {
        self.text.args()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::wire::{Args, TamperKind, TrapKey, KEY_SIZE, TRAP_SIZE};

    /// A record as the kernel writes it, byte by byte.
    const RECORD_HEAD: [u8; offsets::EXE] = [
        0x00, 0xe4, 0x0b, 0x54, 0x02, 0x00, 0x00, 0x00, // ts_boot_ns = 10_000_000_000
        0x54, 0x0c, 0xf8, 0x00, 0x00, 0x00, 0x00, 0x00, // ino = 16256084
        0x39, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // cgroup_id = 12345
        0x00, 0x00, 0xe0, 0x0f, // dev = 0x0fe00000 (254:0)
        0x20, 0xb3, 0x02, 0x00, // pid = 176928
        0x20, 0xb3, 0x02, 0x00, // tgid = 176928
        0x01, 0x00, 0x00, 0x00, // ppid = 1
        0xfe, 0xff, 0x00, 0x00, // uid = 65534
        0xe8, 0x03, 0x00, 0x00, // gid = 1000
        0x24, 0x00, 0x00, 0x00, // mask = 36
        0x00, 0x80, 0x00, 0x00, // flags = O_LARGEFILE
        0x00, 0x00, 0x00, 0xf0, // mnt_ns = 0xf0000000
        0x07, 0x00, 0x00, 0x00, // trap_id = 7
        0x05, 0x00, // version
        0x04, // hook = tp_btf/sys_exit
        0x00, // action = audit
        0x2a, 0x00, 0x00, 0x00, // ns_pid = 42
        b'c', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // comm
        0xe8, 0x03, 0x00, 0x00, // loginuid = 1000
        0x0d, 0x00, // exe_len = 13 ("/usr/bin/cat" + NUL)
        0x06, 0x00, // cwd_len = 6 ("/root" + NUL)
        0x10, 0x00, // args_len = 16 ("cat\0/secret.txt\0")
        0x0a, 0x00, // pexe_len = 10 ("/bin/bash" + NUL)
        0x21, 0x05, 0x00, 0x00, // pflags = exe cut | exe deleted, 5 held back
        b'b', b'a', b's', b'h', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // pcomm
    ];

    /// The literal header above, followed by the four string fields.
    fn record() -> Vec<u8> {
        let mut r = RECORD_HEAD.to_vec();
        let mut field = |s: &[u8], len: usize| {
            let mut f = vec![0u8; len];
            f[..s.len()].copy_from_slice(s);
            r.extend_from_slice(&f);
        };
        field(b"/usr/bin/cat\0", PATH_LEN);
        field(b"/root\0", PATH_LEN);
        field(b"cat\0/secret.txt\0", ARGS_LEN);
        field(b"/bin/bash\0", PATH_LEN);
        // new_dir_ino, new_name_len and padding, new_name: an access has none
        field(b"", 8 + 8 + NAME_LEN);
        // start_ns: unset
        field(b"", 8);
        assert_eq!(r.len(), EVENT_SIZE);
        r
    }

    #[test]
    fn decodes_a_literal_record() {
        let e = RawEvent::decode(&record()).expect("the literal record decodes");
        assert_eq!(e.ts_boot_ns, 10_000_000_000);
        assert_eq!(
            e.key,
            TrapKey {
                dev: 0x0fe0_0000,
                ino: 16_256_084
            }
        );
        assert_eq!(e.cgroup_id, 12345);
        assert_eq!((e.pid, e.tgid, e.ppid, e.ns_pid), (176_928, 176_928, 1, 42));
        assert_eq!((e.uid, e.gid), (65534, 1000));
        assert_eq!(e.mask, 36);
        assert_eq!(e.flags, 0x8000);
        assert_eq!(e.mnt_ns, 0xf000_0000);
        assert_eq!(e.trap_id, 7);
        assert_eq!(e.hook, Hook::TpSysExit);
        assert_eq!(e.action, Action::Audit);
        assert_eq!(e.comm(), "cat");
        assert_eq!(e.parent_comm(), "bash");
        assert_eq!(e.parent_exe(), "/bin/bash");
        assert_eq!(e.loginuid, Some(1000));
        assert_eq!(e.exe(), "/usr/bin/cat");
        assert_eq!(e.cwd(), "/root");
        assert_eq!(e.args(), ["cat", "/secret.txt"]);
        assert_eq!(e.process_flags, 0x21);
        assert_eq!(e.limited, 5);
        assert_eq!(e.start_ns, 0, "not set in this record");
        let mut r = record();
        r[offsets::START_NS..offsets::START_NS + 8].copy_from_slice(&77u64.to_le_bytes());
        assert_eq!(RawEvent::decode(&r).expect("decodes").start_ns, 77);
    }

    #[test]
    fn unset_loginuid_and_uncaptured_strings() {
        let mut r = record();
        r[offsets::LOGINUID..offsets::LOGINUID + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        r[offsets::EXE_LEN] = 0;
        r[offsets::ARGS_LEN] = 0;
        r[offsets::PEXE_LEN] = 0;
        let e = RawEvent::decode(&r).expect("decodes");
        assert_eq!(e.loginuid, None);
        assert_eq!(e.exe(), "");
        assert!(e.args().is_empty());
        assert_eq!(e.parent_exe(), "");
        assert_eq!(
            Args::from_raw(b"a\0b"),
            ["a", "b"],
            "a cut-short last argument is kept"
        );
    }

    #[test]
    fn rejects_short_records_other_versions_and_unknown_enums() {
        let rec = record();
        assert_eq!(RawEvent::decode(&rec[..40]), Err(DecodeError::Short(40)));
        let mut r = rec.clone();
        r[offsets::VERSION] = 1;
        assert_eq!(RawEvent::decode(&r), Err(DecodeError::Version(1)));
        let mut r = rec.clone();
        r[offsets::HOOK] = 99;
        assert_eq!(RawEvent::decode(&r), Err(DecodeError::Hook(99)));
        let mut r = rec;
        r[offsets::ACTION] = 5;
        assert_eq!(RawEvent::decode(&r), Err(DecodeError::Action(5)));
    }

    #[test]
    fn tamper_hooks_decode_to_what_was_done() {
        let plain = RawEvent::decode(&record()).expect("decodes");
        assert_eq!(plain.tamper, None, "an access");
        for (raw, hook, kind) in [
            (7, Hook::LsmInodeRename, TamperKind::Rename),
            (8, Hook::LsmInodeLink, TamperKind::Link),
            (9, Hook::LsmInodeUnlink, TamperKind::Unlink),
            (10, Hook::LsmInodeRename, TamperKind::Replace),
            (11, Hook::FentryInodeRename, TamperKind::Rename),
            (14, Hook::FentryInodeRename, TamperKind::Replace),
        ] {
            let mut r = record();
            r[offsets::HOOK] = raw;
            let e = RawEvent::decode(&r).expect("decodes");
            assert_eq!(e.hook, hook, "hook {raw}");
            assert_eq!(e.tamper.map(|t| t.kind), Some(kind), "hook {raw}");
        }
    }

    #[test]
    fn a_rename_carries_the_new_name_and_its_directory() {
        let mut r = record();
        r[offsets::HOOK] = 7;
        r[offsets::NEW_DIR_INO..offsets::NEW_DIR_INO + 8].copy_from_slice(&4242u64.to_le_bytes());
        r[offsets::NEW_NAME_LEN..offsets::NEW_NAME_LEN + 2].copy_from_slice(&9u16.to_le_bytes());
        r[offsets::NEW_NAME..offsets::NEW_NAME + 9].copy_from_slice(b"moved.txt");
        let t = RawEvent::decode(&r)
            .expect("decodes")
            .tamper
            .expect("a tamper");
        assert_eq!((t.new_name.as_str(), t.new_dir_ino), ("moved.txt", 4242));
        // a length past the field is cut at the field, never read past it
        r[offsets::NEW_NAME_LEN..offsets::NEW_NAME_LEN + 2]
            .copy_from_slice(&u16::MAX.to_le_bytes());
        let t = RawEvent::decode(&r)
            .expect("decodes")
            .tamper
            .expect("a tamper");
        assert_eq!(t.new_name, "moved.txt");
    }

    #[test]
    fn comm_without_terminator_uses_all_sixteen_bytes() {
        let mut r = record();
        r[offsets::COMM..offsets::COMM + COMM_LEN].copy_from_slice(b"0123456789abcdef");
        assert_eq!(
            RawEvent::decode(&r).expect("decodes").comm(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn strings_decode_as_a_lossy_conversion_would_valid_or_not() {
        for bytes in [
            &b"/usr/bin/cat"[..],
            "/tmp/caf\u{e9}/\u{1f600}".as_bytes(),
            b"\xff\xfe/bad\xc3",
            b"",
        ] {
            let want = String::from_utf8_lossy(bytes).into_owned();
            let mut text = String::new();
            super::super::text::push_text(&mut text, bytes);
            assert_eq!(text, want, "{bytes:?}");
            let mut field = bytes.to_vec();
            field.extend_from_slice(b"\0garbage after the terminator");
            assert_eq!(c_str(&field), want, "{bytes:?} NUL-terminated");
        }
        assert_eq!(
            Args::from_raw(b"cat\0/etc/\xffsecret\0\0last\0"),
            ["cat", "/etc/\u{fffd}secret", "", "last"],
            "every argument kept, an empty one too, invalid bytes replaced"
        );
        assert!(Args::from_raw(b"\0").is_empty());
    }

    /// The offsets used here are the ones clang laid out for `kive.h`
    /// (the skeleton's types come from the object's BTF).
    #[test]
    fn layout_matches_the_c_header() {
        use crate::skel::types::{kive_event as E, kive_key as K, kive_trap as T};
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<E>(), EVENT_SIZE);
        assert_eq!(size_of::<K>(), KEY_SIZE);
        assert_eq!(size_of::<T>(), TRAP_SIZE);
        let pairs = [
            (offset_of!(E, ts_boot_ns), offsets::TS_BOOT_NS),
            (offset_of!(E, ino), offsets::INO),
            (offset_of!(E, cgroup_id), offsets::CGROUP_ID),
            (offset_of!(E, dev), offsets::DEV),
            (offset_of!(E, pid), offsets::PID),
            (offset_of!(E, tgid), offsets::TGID),
            (offset_of!(E, ppid), offsets::PPID),
            (offset_of!(E, uid), offsets::UID),
            (offset_of!(E, gid), offsets::GID),
            (offset_of!(E, mask), offsets::MASK),
            (offset_of!(E, flags), offsets::FLAGS),
            (offset_of!(E, mnt_ns), offsets::MNT_NS),
            (offset_of!(E, trap_id), offsets::TRAP_ID),
            (offset_of!(E, version), offsets::VERSION),
            (offset_of!(E, hook), offsets::HOOK),
            (offset_of!(E, action), offsets::ACTION),
            (offset_of!(E, ns_pid), offsets::NS_PID),
            (offset_of!(E, comm), offsets::COMM),
            (offset_of!(E, loginuid), offsets::LOGINUID),
            (offset_of!(E, exe_len), offsets::EXE_LEN),
            (offset_of!(E, cwd_len), offsets::CWD_LEN),
            (offset_of!(E, args_len), offsets::ARGS_LEN),
            (offset_of!(E, pexe_len), offsets::PEXE_LEN),
            (offset_of!(E, pflags), offsets::PFLAGS),
            (offset_of!(E, pcomm), offsets::PCOMM),
            (offset_of!(E, exe), offsets::EXE),
            (offset_of!(E, cwd), offsets::CWD),
            (offset_of!(E, args), offsets::ARGS),
            (offset_of!(E, pexe), offsets::PEXE),
            (offset_of!(E, new_dir_ino), offsets::NEW_DIR_INO),
            (offset_of!(E, new_name_len), offsets::NEW_NAME_LEN),
            (offset_of!(E, new_name), offsets::NEW_NAME),
            (offset_of!(E, start_ns), offsets::START_NS),
        ];
        for (i, (c, rust)) in pairs.into_iter().enumerate() {
            assert_eq!(c, rust, "field #{i} of struct kive_event");
        }
        assert_eq!(offset_of!(K, ino), 8);
        assert_eq!(offset_of!(T, flags), 4);
    }
}
