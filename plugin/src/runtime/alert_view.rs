//! One alert of one event, borrowed (what the Falco source encodes its
//! payload from, without building the alert), and the process strings an
//! alert computes from the event (shared by both ways of making one).

use std::borrow::Cow;

use crate::alert::flags::marked;
use crate::alert::{AccessorMetadata, KiveAlert, ProcessFlags};
use crate::node::procfs::ProcessDetails;
use crate::policy::CompiledTrap;
use crate::trap::{ArgsRef, RawEvent};

use super::enrich::{build_alert, NodeContext};
use super::table::Owner;

/// One alert of one event, borrowed: everything [`build_alert`] reads,
/// plus what the runtime adds per hit. The Falco source encodes its
/// payload straight from this view (no alert built); callbacks, JSON
/// output and tests build the alert with [`AlertView::alert`].
#[derive(Debug, Clone, Copy)]
pub struct AlertView<'a> {
    /// The kernel event (a rename's new path already placed).
    pub raw: &'a RawEvent,
    /// The trap of the entry hit.
    pub trap: &'a CompiledTrap,
    /// The entry's owner.
    pub owner: &'a Owner,
    /// What every alert of this node shares.
    pub node: &'a NodeContext,
    /// `/proc`'s details, filling what the kernel did not capture.
    pub details: &'a ProcessDetails,
    /// Who opened the file.
    pub accessor: Option<&'a AccessorMetadata>,
    /// Hits the trap's rate limit held back before this one.
    pub rate_limited: Option<u64>,
    /// The key is the trapped inode, renamed or linked away from its path.
    pub away: bool,
}

impl AlertView<'_> {
    /// `metadata.suppressed`: the kernel's flood limit and the trap's
    /// rate limit added up.
    pub fn suppressed(&self) -> Option<u64> {
        let kernel = (self.raw.limited > 0).then_some(u64::from(self.raw.limited));
        match self.rate_limited {
            Some(n) => Some(kernel.unwrap_or(0).saturating_add(n)),
            None => kernel,
        }
    }

    /// `metadata.armed_as`: the trap's path when the key left it.
    pub fn armed_as(&self) -> &str {
        if self.away {
            &self.trap.path
        } else {
            ""
        }
    }

    /// The alert.
    pub fn alert(&self) -> KiveAlert {
        let mut a = build_alert(
            self.raw,
            self.trap,
            self.owner,
            self.node,
            self.details,
            self.accessor,
        );
        a.metadata.suppressed = self.suppressed();
        a.metadata.armed_as = self.armed_as().to_string();
        a
    }
}

/// An alert's process strings: captured in the kernel at the access,
/// `/proc` only as a fallback; a value the kernel cut is marked.
pub struct ProcessStrings<'a> {
    /// `process.binary`.
    pub binary: Cow<'a, str>,
    /// `process.cwd`.
    pub cwd: Cow<'a, str>,
    /// `process.arguments`.
    pub arguments: Arguments<'a>,
    /// `process.parent-binary`.
    pub parent_binary: Cow<'a, str>,
}

impl<'a> ProcessStrings<'a> {
    /// Of one event and the `/proc` details read for it.
    pub fn of(raw: &'a RawEvent, details: &'a ProcessDetails) -> Self {
        let flags = ProcessFlags(raw.process_flags);
        let kernel_or_proc = |kernel: &'a str, proc: &'a str, bit: u32| {
            if kernel.is_empty() {
                marked(proc, false)
            } else {
                marked(kernel, flags.has(bit))
            }
        };
        Self {
            binary: kernel_or_proc(raw.exe(), &details.binary, ProcessFlags::BINARY_TRUNCATED),
            cwd: kernel_or_proc(raw.cwd(), &details.cwd, ProcessFlags::CWD_TRUNCATED),
            arguments: if raw.args().is_empty() {
                Arguments::Proc(&details.arguments)
            } else {
                Arguments::Kernel(raw.args())
            },
            parent_binary: marked(
                raw.parent_exe(),
                flags.has(ProcessFlags::PARENT_BINARY_TRUNCATED),
            ),
        }
    }
}

/// `process.arguments` as captured, not yet joined.
#[derive(Debug, Clone, Copy)]
pub enum Arguments<'a> {
    /// The kernel's argv (a NUL between arguments).
    Kernel(ArgsRef<'a>),
    /// `/proc`'s, already joined with spaces.
    Proc(&'a str),
}

impl<'a> Arguments<'a> {
    /// Joined with spaces (borrowed when there is nothing to join).
    pub fn joined(self) -> Cow<'a, str> {
        match self {
            Self::Kernel(args) => args.joined().unwrap_or_default(),
            Self::Proc(text) => Cow::Borrowed(text),
        }
    }

    /// The text as kept, and whether a NUL separates its arguments (each
    /// reads as a space).
    pub fn as_kept(self) -> (&'a str, bool) {
        match self {
            Self::Kernel(args) => (args.as_nul_separated(), true),
            Self::Proc(text) => (text, false),
        }
    }
}
