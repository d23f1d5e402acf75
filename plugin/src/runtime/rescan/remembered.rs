//! What the rescan remembers of each armed entry's last look (pure): the
//! name's inode, link count and status time, in 32 bytes. A node of
//! 100,000 entries holds one per entry from its first rescan on: as a
//! look's full [`NameStat`] (48 bytes, 56 with the id) it cost 7.3 MiB, as
//! a [`Stamp`] in a map by id 5.2 MB (40-byte buckets); each entry of the
//! trap table now holds its own ([`Remembered`], 32 bytes: 3.2 MB).

use crate::node::stamp::NameStat;

/// A look at a regular file, remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    st_dev: u64,
    ino: u64,
    ctime_s: i64,
    ctime_ns: u32,
    nlink: u32,
}

impl Stamp {
    /// The stamp of a look; `None` when it is not a regular file (such a
    /// look is never unchanged: nothing to remember) or holds what no
    /// kernel gives (nanoseconds past a second, a link count past `u32`):
    /// the next look then resolves the entry in full.
    pub(crate) fn of(s: &NameStat) -> Option<Self> {
        s.regular.then_some(())?;
        let ctime_ns = u32::try_from(s.ctime.1).ok().filter(|&ns| ns < NS_PER_S)?;
        Some(Self {
            st_dev: s.st_dev,
            ino: s.ino,
            ctime_s: s.ctime.0,
            ctime_ns,
            nlink: u32::try_from(s.nlink).ok()?,
        })
    }

    /// The inode the look found (`st_dev`, inode number).
    pub(crate) fn file(&self) -> (u64, u64) {
        (self.st_dev, self.ino)
    }
}

/// Nanoseconds in a second: a stamp's nanoseconds are always fewer, so
/// this value marks "no stamp" in [`Remembered`].
const NS_PER_S: u32 = 1_000_000_000;

/// A stamp or none, in a stamp's size (an `Option<Stamp>` takes 40 bytes):
/// "none" is a stamp with nanoseconds no look gives ([`Stamp::of`] refuses
/// them). The default is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remembered(Stamp);

impl Default for Remembered {
    fn default() -> Self {
        Self(Stamp {
            st_dev: 0,
            ino: 0,
            ctime_s: 0,
            ctime_ns: NS_PER_S,
            nlink: 0,
        })
    }
}

impl Remembered {
    /// The stamp remembered, if any.
    pub(crate) fn get(&self) -> Option<Stamp> {
        (self.0.ctime_ns < NS_PER_S).then_some(self.0)
    }

    /// Remembers `stamp`, or forgets (none).
    pub(crate) fn set(&mut self, stamp: Option<Stamp>) {
        *self = stamp.map_or_else(Self::default, Self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look() -> NameStat {
        NameStat {
            st_dev: 8,
            ino: 42,
            nlink: 1,
            ctime: (100, 999_999_999),
            regular: true,
        }
    }

    #[test]
    fn a_stamp_tells_looks_apart_as_the_full_look_did() {
        let s = look();
        assert_eq!(Stamp::of(&s), Stamp::of(&s), "the same look");
        for (what, other) in [
            ("another device", NameStat { st_dev: 9, ..s }),
            ("another inode", NameStat { ino: 43, ..s }),
            ("another link count", NameStat { nlink: 2, ..s }),
            (
                "another second",
                NameStat {
                    ctime: (101, 999_999_999),
                    ..s
                },
            ),
            (
                "another nanosecond",
                NameStat {
                    ctime: (100, 0),
                    ..s
                },
            ),
        ] {
            assert_ne!(Stamp::of(&s), Stamp::of(&other), "{what}");
            assert!(Stamp::of(&other).is_some(), "{what}: remembered");
        }
        assert_eq!(Stamp::of(&s).map(|t| t.file()), Some((8, 42)));
    }

    #[test]
    fn what_is_never_unchanged_is_not_remembered() {
        let s = look();
        assert_eq!(
            Stamp::of(&NameStat {
                regular: false,
                ..s
            }),
            None,
            "a symlink"
        );
        assert_eq!(
            Stamp::of(&NameStat {
                nlink: u64::from(u32::MAX) + 1,
                ..s
            }),
            None,
            "a link count no kernel gives"
        );
        assert_eq!(
            Stamp::of(&NameStat {
                ctime: (100, u64::from(u32::MAX) + 1),
                ..s
            }),
            None,
            "nanoseconds no kernel gives"
        );
    }

    #[test]
    fn a_stamp_stays_small() {
        let size = std::mem::size_of::<Stamp>();
        assert!(
            size <= 32,
            "a rescan stamp grew to {size} B (bound 32 B: one per armed entry)"
        );
        let size = std::mem::size_of::<Remembered>();
        assert!(
            size <= 32,
            "a remembered stamp grew to {size} B (bound 32 B: one in each trap table entry)"
        );
    }

    #[test]
    fn a_remembered_stamp_is_the_stamp_set_or_none() {
        let mut r = Remembered::default();
        assert_eq!(r.get(), None, "nothing remembered at first");
        let s = Stamp::of(&look());
        r.set(s);
        assert_eq!(r.get(), s, "the stamp set");
        assert!(r.get().is_some());
        let later = Stamp::of(&NameStat {
            ctime: (0, 0),
            st_dev: 0,
            ino: 0,
            nlink: 0,
            regular: true,
        });
        r.set(later);
        assert_eq!(r.get(), later, "a stamp of all zeroes is a stamp, not none");
        r.set(None);
        assert_eq!(r.get(), None, "forgotten");
        assert_eq!(
            Stamp::of(&NameStat {
                ctime: (100, 1_000_000_000),
                ..look()
            }),
            None,
            "a second's worth of nanoseconds: never a stamp, so never taken for none"
        );
    }
}
