//! A cheap look at what a path in a root leads to now, for rescans: the
//! path's directory is resolved inside the root once (the same
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` as [`Root::resolve`],
//! shared by every trap in that directory), then the last component is
//! looked up with one `fstatat` in it (no symlink followed; a mount over the
//! file is crossed, as an open would). Nothing is opened per file.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use super::resolve::{io_err, ResolveError, Root};

/// What the name of a file led to when it was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameStat {
    /// Userspace `st_dev`.
    pub st_dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Link count.
    pub nlink: u64,
    /// Status change time (any change to the inode: links, mode, writes,
    /// an overlay copy-up), seconds and nanoseconds.
    pub ctime: (i64, u64),
    /// Whether it is a regular file (a symlink is not).
    pub regular: bool,
}

/// `path`'s directory and last component (`None` when the last component
/// is empty, `.` or `..`: such a path is never looked at this way).
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", trimmed),
    };
    (!name.is_empty() && name != "." && name != "..").then_some((dir, name))
}

impl Root {
    /// Opens directory `dir` inside the root (`O_PATH`, the resolution of
    /// [`Root::resolve`]): absolute links and `..` stay inside the root.
    pub fn open_parent(&self, dir: &str) -> Result<OwnedFd, ResolveError> {
        rustix::fs::openat2(
            self.fd(),
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| ResolveError::Io {
            op: "resolving the directory",
            path: dir.to_string(),
            root: self.path().to_path_buf(),
            source: io_err(e),
        })
    }
}

/// Looks up `name` (one component, from [`split_parent`]) in directory
/// `dir` without following a symlink.
pub fn name_stat(dir: &OwnedFd, name: &str) -> io::Result<NameStat> {
    if name.contains('/') || split_parent(name).is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not one component"),
        ));
    }
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err)?;
    Ok(NameStat {
        st_dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        ctime: (st.st_ctime, st.st_ctime_nsec),
        regular: FileType::from_raw_mode(st.st_mode) == FileType::RegularFile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn paths_split_into_directory_and_one_component() {
        assert_eq!(split_parent("/etc/shadow"), Some(("/etc", "shadow")));
        assert_eq!(split_parent("/shadow"), Some(("/", "shadow")));
        assert_eq!(split_parent("/a/b/"), Some(("/a", "b")));
        assert_eq!(split_parent("/a/.."), None);
        assert_eq!(split_parent("/a/."), None);
        assert_eq!(split_parent("/"), None);
    }

    #[test]
    fn a_name_is_looked_at_inside_the_root_and_never_followed() {
        let d = tempfile::tempdir().expect("temp dir");
        let inner = d.path().join("root");
        std::fs::create_dir_all(inner.join("etc")).expect("mkdir");
        std::fs::write(inner.join("etc/f"), "x").expect("write");
        // an absolute link to the directory: stays inside the root
        symlink("/etc", inner.join("up")).expect("symlink");
        symlink("f", inner.join("etc/l")).expect("symlink");
        let root = Root::open(&inner).expect("root");
        let dir = root.open_parent("/up").expect("the root's own /etc");
        let st = name_stat(&dir, "f").expect("stat");
        let md = std::fs::metadata(inner.join("etc/f")).expect("stat");
        assert_eq!((st.st_dev, st.ino, st.nlink), (md.dev(), md.ino(), 1));
        assert!(st.regular);
        assert_eq!(st.ctime, (md.ctime(), md.ctime_nsec() as u64));
        let link = name_stat(&dir, "l").expect("the link itself");
        assert!(!link.regular, "a symlink is not followed");
        assert_ne!(link.ino, st.ino);
        for bad in ["..", ".", "a/b", ""] {
            assert!(name_stat(&dir, bad).is_err(), "{bad:?} refused");
        }
        std::fs::hard_link(inner.join("etc/f"), inner.join("etc/g")).expect("link");
        assert_eq!(name_stat(&dir, "f").expect("stat").nlink, 2);
        assert_eq!(
            name_stat(&dir, "missing").expect_err("absent").kind(),
            io::ErrorKind::NotFound
        );
    }
}
