//! What a rescan's look at a trapped inode means (pure): whether its names
//! were tampered with, and whether it stays armed.
//!
//! The inode is the tripwire; the path was only how it was found. An inode
//! that leaves the trap's path stays armed while it has a link anywhere; the
//! path is armed again on whatever is there (a fresh decoy for a `create`
//! trap).

use crate::node::resolve::Links;
use crate::trap::{Tamper, TamperKind};

/// What the trap's path leads to now, compared with a pinned inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtPath {
    /// The same inode.
    Same,
    /// Another file.
    Other,
    /// Nothing (or a decoy kive has just created in its place).
    Missing,
}

/// The verdict on one pinned inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// A change to the file's names to report.
    pub tamper: Option<Tamper>,
    /// Keep the inode armed (it still has a link).
    pub keep: bool,
    /// The inode left the path untouched (a directory or symlink above it
    /// changed): its later changes are not reported.
    pub quiet: bool,
}

/// Judges the inode the trap's path led to until now (`armed_as` is the
/// trap's path), from its links when armed (`before`) and now.
pub fn judge_primary(armed_as: &str, before: &Links, now: &Links, at_path: AtPath) -> Verdict {
    let tamper = |kind, new_path: Option<&str>| {
        Some(Tamper {
            kind,
            old_path: armed_as.to_string(),
            new_path: new_path.unwrap_or_default().to_string(),
            new_name: String::new(),
            new_dir_ino: 0,
        })
    };
    let keep = now.nlink > 0;
    match at_path {
        AtPath::Same => Verdict {
            tamper: if now.nlink > before.nlink {
                tamper(TamperKind::Link, None)
            } else if now.nlink < before.nlink {
                tamper(TamperKind::Unlink, None)
            } else {
                None
            },
            keep: true,
            quiet: false,
        },
        _ if !keep => Verdict {
            tamper: tamper(
                if at_path == AtPath::Missing {
                    TamperKind::Unlink
                } else {
                    TamperKind::Replace
                },
                None,
            ),
            keep: false,
            quiet: false,
        },
        // same name, same links: the path was swapped above the file
        _ if now.name.is_some() && now.name == before.name && now.nlink == before.nlink => {
            Verdict {
                tamper: None,
                keep: true,
                quiet: true,
            }
        }
        // its own name now holds another file: something was moved over it
        _ if at_path == AtPath::Other && now.name.is_none() => Verdict {
            tamper: tamper(TamperKind::Replace, None),
            keep: true,
            quiet: false,
        },
        _ => Verdict {
            tamper: tamper(TamperKind::Rename, now.name.as_deref()),
            keep: true,
            quiet: false,
        },
    }
}

/// Judges an inode already followed away from the trap's path.
pub fn judge_followed(before: &Links, now: &Links, quiet: bool) -> Verdict {
    let keep = now.nlink > 0;
    let old_path = before.name.as_deref().unwrap_or_default().to_string();
    let kind = if !keep || now.nlink < before.nlink {
        Some(TamperKind::Unlink)
    } else if now.nlink > before.nlink {
        Some(TamperKind::Link)
    } else if now.name != before.name {
        Some(TamperKind::Rename)
    } else {
        None
    };
    Verdict {
        tamper: kind.filter(|_| !quiet).map(|kind| Tamper {
            kind,
            old_path,
            new_path: if kind == TamperKind::Rename {
                now.name.as_deref().unwrap_or_default().to_string()
            } else {
                String::new()
            },
            new_name: String::new(),
            new_dir_ino: 0,
        }),
        keep,
        quiet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(nlink: u64, name: Option<&str>) -> Links {
        Links {
            nlink,
            name: name.map(Box::from),
        }
    }

    const TRAP: &str = "/d/secret";

    fn kind(v: &Verdict) -> Option<TamperKind> {
        v.tamper.as_ref().map(|t| t.kind)
    }

    #[test]
    fn an_untouched_file_is_kept_silently() {
        let l = links(1, Some(TRAP));
        let v = judge_primary(TRAP, &l, &l, AtPath::Same);
        assert_eq!((v.tamper, v.keep), (None, true));
    }

    #[test]
    fn a_moved_file_is_a_rename_to_its_new_name_and_stays_armed() {
        let v = judge_primary(
            TRAP,
            &links(1, Some(TRAP)),
            &links(1, Some("/d/moved")),
            AtPath::Missing,
        );
        let t = v.tamper.expect("reported");
        assert_eq!(t.kind, TamperKind::Rename);
        assert_eq!(
            (t.old_path.as_str(), t.new_path.as_str()),
            (TRAP, "/d/moved")
        );
        assert!(v.keep && !v.quiet);
    }

    #[test]
    fn link_then_unlink_of_the_trapped_name_is_a_rename_to_an_unknown_name() {
        // ln secret x; rm secret: the pin's own name is gone, a link is left
        let v = judge_primary(
            TRAP,
            &links(1, Some(TRAP)),
            &links(1, None),
            AtPath::Missing,
        );
        assert_eq!(kind(&v), Some(TamperKind::Rename));
        assert_eq!(v.tamper.expect("reported").new_path, "");
        assert!(v.keep);
    }

    #[test]
    fn a_new_link_and_a_removed_link_are_reported_in_place() {
        let one = links(1, Some(TRAP));
        let two = links(2, Some(TRAP));
        assert_eq!(
            kind(&judge_primary(TRAP, &one, &two, AtPath::Same)),
            Some(TamperKind::Link)
        );
        assert_eq!(
            kind(&judge_primary(TRAP, &two, &one, AtPath::Same)),
            Some(TamperKind::Unlink)
        );
    }

    #[test]
    fn a_deleted_or_overwritten_file_is_let_go() {
        let before = links(1, Some(TRAP));
        let v = judge_primary(TRAP, &before, &links(0, None), AtPath::Missing);
        assert_eq!((kind(&v), v.keep), (Some(TamperKind::Unlink), false));
        let v = judge_primary(TRAP, &before, &links(0, None), AtPath::Other);
        assert_eq!((kind(&v), v.keep), (Some(TamperKind::Replace), false));
    }

    #[test]
    fn a_file_moved_over_a_trapped_file_still_linked_elsewhere_is_a_replace() {
        let v = judge_primary(TRAP, &links(2, Some(TRAP)), &links(1, None), AtPath::Other);
        assert_eq!((kind(&v), v.keep), (Some(TamperKind::Replace), true));
    }

    #[test]
    fn a_path_swapped_above_the_file_is_no_tampering() {
        // the kubelet's atomic writer: ..data now leads to ..v2/token
        let l = links(1, Some("/vol/..v1/token"));
        let v = judge_primary("/vol/token", &l, &l, AtPath::Other);
        assert_eq!((v.tamper, v.keep, v.quiet), (None, true, true));
    }

    #[test]
    fn a_followed_file_reports_its_next_changes_unless_quiet() {
        let at = links(1, Some("/d/moved"));
        let v = judge_followed(&at, &links(1, Some("/d/again")), false);
        let t = v.tamper.expect("reported");
        assert_eq!(
            (t.kind, t.old_path.as_str(), t.new_path.as_str()),
            (TamperKind::Rename, "/d/moved", "/d/again")
        );
        let v = judge_followed(&at, &links(0, None), false);
        assert_eq!((kind(&v), v.keep), (Some(TamperKind::Unlink), false));
        let v = judge_followed(&at, &links(0, None), true);
        assert_eq!((v.tamper, v.keep), (None, false), "quiet: let go silently");
        let v = judge_followed(&at, &at, false);
        assert_eq!((v.tamper, v.keep), (None, true));
    }
}
