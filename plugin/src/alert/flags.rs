//! kive: what the kernel's capture of a process is worth (`process.flags`):
//! paths cut at the capture's limits, and executables that name no file
//! one could look at (a memfd, a deleted file). Pure.

use std::borrow::Cow;

/// `process.flags` as bits: the same bits as the kernel's `KIVE_EV_F_*`
/// (ebpf/kive.h), so an event's flags are taken over as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProcessFlags(pub u32);

impl ProcessFlags {
    /// `process.binary` was cut at the capture's limits (256 bytes, 24 levels).
    pub const BINARY_TRUNCATED: u32 = 0x01;
    /// `process.cwd` was cut.
    pub const CWD_TRUNCATED: u32 = 0x02;
    /// `process.parent-binary` was cut.
    pub const PARENT_BINARY_TRUNCATED: u32 = 0x04;
    /// `process.arguments` was cut (argv longer than 255 bytes).
    pub const ARGUMENTS_TRUNCATED: u32 = 0x08;
    /// The executable is a memfd (`memfd_create` + `fexecve`): no file on disk.
    pub const BINARY_MEMFD: u32 = 0x10;
    /// The executable was deleted (unlinked) after it was started.
    pub const BINARY_DELETED: u32 = 0x20;

    /// Every flag with its name in `process.flags`.
    pub const NAMES: [(u32, &'static str); 6] = [
        (Self::BINARY_TRUNCATED, "binary-truncated"),
        (Self::CWD_TRUNCATED, "cwd-truncated"),
        (Self::PARENT_BINARY_TRUNCATED, "parent-binary-truncated"),
        (Self::ARGUMENTS_TRUNCATED, "arguments-truncated"),
        (Self::BINARY_MEMFD, "binary-memfd"),
        (Self::BINARY_DELETED, "binary-deleted"),
    ];

    /// Whether `bit` is set.
    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// The names of the set flags, in [`ProcessFlags::NAMES`] order
    /// (unknown bits are left out).
    pub fn names(self) -> Vec<String> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, n)| (*n).to_string())
            .collect()
    }

    /// The known flags only: what `from_names(&names())` gives.
    pub fn known(self) -> Self {
        Self(
            Self::NAMES
                .iter()
                .fold(0, |acc, (bit, _)| acc | (self.0 & bit)),
        )
    }

    /// The flags of a list of names (unknown names are ignored).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let bits = names
            .iter()
            .filter_map(|n| Self::NAMES.iter().find(|(_, s)| *s == n.as_ref()))
            .fold(0, |acc, (bit, _)| acc | bit);
        Self(bits)
    }
}

/// What a cut path starts with in an alert: the kernel kept its last
/// components only, so it must never read as a whole path
/// (`/<250 x A>/usr/bin/cat` is shown as `.../usr/bin/cat`).
pub const CUT_MARK: &str = "...";

/// `path`, marked with [`CUT_MARK`] when `cut`.
pub fn mark_cut(path: &str, cut: bool) -> String {
    marked(path, cut).into_owned()
}

/// [`mark_cut`], borrowed when there is nothing to mark.
pub fn marked(path: &str, cut: bool) -> Cow<'_, str> {
    if cut && !path.is_empty() {
        Cow::Owned(format!("{CUT_MARK}{path}"))
    } else {
        Cow::Borrowed(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_bits_are_left_out() {
        let f = ProcessFlags(ProcessFlags::BINARY_TRUNCATED | ProcessFlags::BINARY_MEMFD | 0x80);
        assert_eq!(f.names(), ["binary-truncated", "binary-memfd"]);
        assert_eq!(
            ProcessFlags::from_names(&f.names()),
            ProcessFlags(ProcessFlags::BINARY_TRUNCATED | ProcessFlags::BINARY_MEMFD)
        );
        assert_eq!(ProcessFlags::from_names(&["nonsense"]), ProcessFlags(0));
        assert!(ProcessFlags(0).names().is_empty());
    }

    #[test]
    fn a_cut_path_never_reads_as_a_whole_one() {
        assert_eq!(mark_cut("/usr/bin/cat", true), ".../usr/bin/cat");
        assert_eq!(mark_cut("/usr/bin/cat", false), "/usr/bin/cat");
        assert_eq!(mark_cut("", true), "");
    }
}
