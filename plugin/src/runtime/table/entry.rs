//! What the table holds: one entry per (trap, owner), whose file it
//! watches (the host's or a pod container's) and whether it is armed.

use std::sync::Arc;

use crate::node::{PinnedFile, Root};
use crate::policy::pods::Labels;
use crate::policy::CompiledTrap;
use crate::runtime::rescan::remembered::Remembered;
use crate::trap::TrapKey;

/// The pod and container whose file a trap entry watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerOwner {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid.
    pub pod_uid: String,
    /// Pod IP (first).
    pub ip: String,
    /// Pod labels (the pod view's map, shared).
    pub labels: Labels,
    /// Container name.
    pub container: String,
    /// `runtime://<id>`.
    pub container_id: String,
    /// Container image.
    pub image: String,
    /// Pod service account.
    pub service_account: String,
    /// Owning workload (kind, name).
    pub workload: Option<(String, String)>,
    /// Labels of the pod's namespace (the namespace store's map, shared).
    pub namespace_labels: Labels,
}

/// Whose file a trap entry watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The node's own filesystem.
    Host,
    /// A container of a pod on this node.
    Container(Arc<ContainerOwner>),
}

impl Owner {
    /// `host` or `pod`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Container(_) => "pod",
        }
    }

    /// The container id (`runtime://id`), empty for the host.
    pub fn container_id(&self) -> &str {
        match self {
            Self::Host => "",
            Self::Container(c) => &c.container_id,
        }
    }
}

/// Armed (key in the kernel, file pinned) or pending (retried).
#[derive(Debug)]
pub enum EntryState {
    /// The key is in the trap map; the file is held open with O_PATH.
    Armed(PinnedFile),
    /// Not armed; the reason is logged once.
    Pending {
        /// Why it is not armed.
        reason: String,
        /// Whether the reason was already logged.
        reported: bool,
    },
}

/// An inode that was armed as the trap's path and has left it (renamed,
/// linked elsewhere, the path swapped to another file): it stays armed while
/// it has a link anywhere.
#[derive(Debug)]
pub struct Followed {
    /// The inode, pinned.
    pub pin: PinnedFile,
    /// It left without being touched (a directory or symlink above it
    /// changed, as the kubelet's atomic writer does): its later changes are
    /// not tampering with the trap.
    pub quiet: bool,
}

/// The inodes an entry follows away from its path: none for nearly every
/// entry, so the list is boxed (8 bytes in each entry, not a vector's 24)
/// and reads as a slice.
#[derive(Debug, Default)]
#[expect(
    clippy::box_collection,
    reason = "the box is for the entry's size: 8 bytes in each of a node's 100,000 entries, not a vector's 24"
)]
pub struct FollowedList(Option<Box<Vec<Followed>>>);

impl FollowedList {
    /// Adds a followed inode.
    pub fn push(&mut self, followed: Followed) {
        self.0.get_or_insert_with(Box::default).push(followed);
    }

    /// Keeps the followed inodes `keep` says (the box goes with the last).
    pub fn retain(&mut self, keep: impl FnMut(&Followed) -> bool) {
        if let Some(list) = &mut self.0 {
            list.retain(keep);
            if list.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl std::ops::Deref for FollowedList {
    type Target = [Followed];

    fn deref(&self) -> &[Followed] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl std::ops::DerefMut for FollowedList {
    fn deref_mut(&mut self) -> &mut [Followed] {
        self.0
            .as_deref_mut()
            .map_or_else(Default::default, Vec::as_mut_slice)
    }
}

impl<'a> IntoIterator for &'a mut FollowedList {
    type Item = &'a mut Followed;
    type IntoIter = std::slice::IterMut<'a, Followed>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

/// One trap applied to one owner.
#[derive(Debug)]
pub struct Entry {
    /// Trap id written to the kernel map.
    pub id: u32,
    /// The trap.
    pub trap: Arc<CompiledTrap>,
    /// Whose file.
    pub owner: Owner,
    /// The root the path is resolved in (`None` until the container runs).
    pub root: Option<Arc<Root>>,
    /// Armed or pending.
    pub state: EntryState,
    /// Inodes armed as this path before, still linked somewhere.
    pub followed: FollowedList,
    /// The overlay layer's file behind the file at the path (upper copy,
    /// else topmost lower), armed too: reading it directly from the node
    /// bypasses the overlay inode. The overlay key stays the primary.
    /// Boxed: most entries have none, and every entry of a node's
    /// 100,000 pays for the field's size in the table.
    pub backing: Option<Box<PinnedFile>>,
    /// What the rescan's last look at the name saw, while the entry is
    /// armed on that inode (none at first): kept here rather than in a
    /// map by id, it goes with the entry and costs no bucket.
    pub(crate) stamp: Remembered,
}

impl Entry {
    /// The armed key of the file now at the trap's path, if armed.
    pub fn key(&self) -> Option<TrapKey> {
        match &self.state {
            EntryState::Armed(p) => Some(p.key),
            EntryState::Pending { .. } => None,
        }
    }

    /// Whether `key` is one of this entry's followed inodes (no longer at
    /// the trap's path).
    pub fn follows(&self, key: TrapKey) -> bool {
        self.key() != Some(key) && self.followed.iter().any(|f| f.pin.key == key)
    }

    pub(super) fn holds(&self, key: TrapKey) -> bool {
        self.key() == Some(key)
            || self.followed.iter().any(|f| f.pin.key == key)
            || self.backing.as_ref().is_some_and(|b| b.key == key)
    }
}
