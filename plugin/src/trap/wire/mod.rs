//! The wire structs shared with `ebpf/kive.h`: trap keys and values written
//! to the trap map, and events read from the ring buffer. Pure code: encoded
//! and decoded with explicit little-endian offsets, never by casting.
//! [`hook`]: which program saw an event and what it says was done;
//! [`event`]: the ring-buffer record; [`text`]: its texts in one string;
//! [`args`]: its argv.

mod args;
mod event;
mod hook;
mod text;

pub use args::{Args, ArgsRef};
pub use event::{offsets, DecodeError, RawEvent};
pub use hook::{Action, Hook, Tamper, TamperKind};
pub use text::{EventText, Texts};

/// Size of `struct kive_key`.
pub const KEY_SIZE: usize = 16;
/// Size of `struct kive_trap`.
pub const TRAP_SIZE: usize = 8;
/// Size of `struct kive_event`.
pub const EVENT_SIZE: usize = 1424;
/// `KIVE_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// `KIVE_PATH_LEN`.
pub const PATH_LEN: usize = 256;
/// `KIVE_ARGS_LEN`.
pub const ARGS_LEN: usize = 256;
/// `KIVE_NAME_LEN`: a file name and its NUL.
pub const NAME_LEN: usize = 256;
/// `KIVE_EVENT_VERSION`: the event layout this build decodes.
pub const EVENT_VERSION: u16 = 5;
/// `KIVE_TRAP_F_BLOCK`.
pub const TRAP_F_BLOCK: u32 = 1;
/// `kive_event.pflags`: the `KIVE_EV_F_*` flag bits.
pub const EV_FLAGS_MASK: u32 = 0xff;
/// `KIVE_EV_LIMITED_SHIFT`: the held-back count above the flag bits.
pub const EV_LIMITED_SHIFT: u32 = 8;
/// `KIVE_TRAP_F_EXEC_ONLY`: only executions of the file count.
pub const TRAP_F_EXEC_ONLY: u32 = 2;
/// `KIVE_TRAP_F_READ_ONLY`: reads pass silently.
pub const TRAP_F_READ_ONLY: u32 = 4;
/// `KIVE_TRAP_F_OWNER_ONLY`: the file owner's accesses pass silently.
pub const TRAP_F_OWNER_ONLY: u32 = 8;
/// `KIVE_TRAP_F_SOURCES`: only accesses from listed executables count.
pub const TRAP_F_SOURCES: u32 = 16;
/// `KIVE_TRAP_F_SOURCES_ALLOW`: listed executables pass silently.
pub const TRAP_F_SOURCES_ALLOW: u32 = 32;
/// `KIVE_TRAP_F_CONDITIONS`: every condition bit.
pub const TRAP_F_CONDITIONS: u32 = 62;
/// Size of `struct kive_source_key`.
pub const SOURCE_KEY_SIZE: usize = 16;

/// `struct kive_source_key`: executable `key` listed for trap `trap_id`.
pub fn source_key_bytes(trap_id: u32, key: TrapKey) -> [u8; SOURCE_KEY_SIZE] {
    let mut b = [0u8; SOURCE_KEY_SIZE];
    b[0..4].copy_from_slice(&trap_id.to_le_bytes());
    b[4..8].copy_from_slice(&key.dev.to_le_bytes());
    b[8..16].copy_from_slice(&key.ino.to_le_bytes());
    b
}

/// A file's identity as the kernel sees it: `(sb->s_dev, i_ino)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrapKey {
    /// Device in the kernel's encoding (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
}

impl TrapKey {
    /// The key as `struct kive_key` bytes, padding zeroed.
    pub fn to_bytes(self) -> [u8; KEY_SIZE] {
        let mut b = [0u8; KEY_SIZE];
        b[0..4].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b
    }
}

/// The value stored under a key: which trap, and what to do on access.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrapValue {
    /// Engine-wide trap id, echoed in every event.
    pub trap_id: u32,
    /// Deny the open (tiers that can block) instead of only reporting it.
    pub block: bool,
    /// Rule conditions decided in the kernel (`TRAP_F_CONDITIONS` bits).
    pub conditions: u32,
}

impl TrapValue {
    /// The value as `struct kive_trap` bytes.
    pub fn to_bytes(self) -> [u8; TRAP_SIZE] {
        let mut b = [0u8; TRAP_SIZE];
        b[0..4].copy_from_slice(&self.trap_id.to_le_bytes());
        let flags =
            (self.conditions & TRAP_F_CONDITIONS) | if self.block { TRAP_F_BLOCK } else { 0 };
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_bytes_have_zero_padding() {
        let k = TrapKey {
            dev: 0x0fe0_0001,
            ino: 0x0102_0304_0506_0708,
        };
        assert_eq!(
            k.to_bytes(),
            [0x01, 0x00, 0xe0, 0x0f, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        let v = TrapValue {
            trap_id: 3,
            block: true,
            conditions: 0,
        };
        assert_eq!(v.to_bytes(), [3, 0, 0, 0, 1, 0, 0, 0]);
        let v = TrapValue {
            trap_id: 3,
            block: false,
            conditions: TRAP_F_READ_ONLY | TRAP_F_OWNER_ONLY | 0x100,
        };
        assert_eq!(
            v.to_bytes(),
            [3, 0, 0, 0, 12, 0, 0, 0],
            "unknown bits dropped"
        );
        assert_eq!(
            source_key_bytes(
                7,
                TrapKey {
                    dev: 0x0fe0_0001,
                    ino: 9
                }
            ),
            [7, 0, 0, 0, 0x01, 0x00, 0xe0, 0x0f, 9, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
