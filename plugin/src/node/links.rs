//! A pinned file's names: its link count and the name its pin leads to
//! now (how the rescan sees a trapped file renamed, linked or unlinked), and
//! the path a kernel tamper event's new name is at.

use std::io;
use std::os::fd::OwnedFd;

use super::resolve::{io_err, PinnedFile};
use crate::trap::dev::kernel_dev;

/// A pinned file's hard-link count and the name its pin leads to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// `st_nlink`: 0 once every name of the file is gone.
    pub nlink: u64,
    /// The file's current name as this process sees it (`/proc/self/fd`),
    /// `None` once the name it was opened by is unlinked. A boxed `str`:
    /// 16 bytes in each armed entry, not a `String`'s 24.
    pub name: Option<Box<str>>,
}

impl PinnedFile {
    /// The file's links now (fstat of the pin, readlink of its fd).
    pub fn links_now(&self) -> io::Result<Links> {
        links_of(&self.pin)
    }

    /// The file's link count now (one fstat of the pin).
    pub fn nlink_now(&self) -> io::Result<u64> {
        Ok(rustix::fs::fstat(&self.pin).map_err(io_err)?.st_nlink)
    }
}

impl PinnedFile {
    /// The pin itself, to look at the file without holding the table
    /// ([`new_path_of`]).
    pub fn shared_pin(&self) -> std::sync::Arc<OwnedFd> {
        std::sync::Arc::clone(&self.pin)
    }
}

/// The path a rename or link gave a pinned file, from what the kernel's
/// tamper hook captured: its new last component `name`, in the directory
/// of inode `dir_ino` on the file's device `dev` (kernel encoding). The
/// directory is the one the pin's name is in (one readlink of the pin, one
/// stat of that directory; the dentry cache answers both): after a rename
/// that directory is the new one, during it or after a link in the same
/// directory it is the old one. `None` when that directory is not
/// `dir_ino` (a link made elsewhere): the name alone is then all that is
/// known.
pub fn new_path_of(pin: &OwnedFd, dev: u32, name: &str, dir_ino: u64) -> Option<String> {
    if name.is_empty() || name.contains('/') || dir_ino == 0 {
        return None;
    }
    let now = super::procread::fd_link(pin).ok()?;
    let dir = now.parent()?;
    let st = rustix::fs::stat(dir).ok()?;
    (kernel_dev(st.st_dev) == dev && st.st_ino == dir_ino)
        .then(|| dir.join(name).to_string_lossy().into_owned())
}

pub(super) fn links_of(fd: &OwnedFd) -> io::Result<Links> {
    let st = rustix::fs::fstat(fd).map_err(io_err)?;
    Ok(Links {
        nlink: st.st_nlink,
        name: name_of(fd),
    })
}

/// The name an fd leads to now (readlink of `/proc/self/fd/N`), `None`
/// once it is unlinked.
pub(super) fn name_of(fd: &OwnedFd) -> Option<Box<str>> {
    super::procread::fd_link(fd)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(" (deleted)"))
        .map(String::into_boxed_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Root;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn links_follow_renames_and_unlinks() {
        let d = tmp();
        let f = d.path().join("f");
        std::fs::write(&f, "x").expect("write");
        let root = Root::open(d.path()).expect("open root");
        let p = root.resolve("/f").expect("resolve");
        assert_eq!(p.seen.nlink, 1);
        assert_eq!(p.seen.name.as_deref(), f.to_str());
        std::fs::rename(&f, d.path().join("g")).expect("rename");
        let now = p.links_now().expect("links");
        assert_eq!(now.nlink, 1);
        assert_eq!(now.name.as_deref(), d.path().join("g").to_str());
        std::fs::hard_link(d.path().join("g"), d.path().join("h")).expect("link");
        assert_eq!(p.links_now().expect("links").nlink, 2);
        std::fs::remove_file(d.path().join("g")).expect("rm");
        std::fs::remove_file(d.path().join("h")).expect("rm");
        let gone = p.links_now().expect("links");
        assert_eq!((gone.nlink, gone.name), (0, None));
    }

    #[test]
    fn a_new_name_is_placed_in_the_directory_the_kernel_named() {
        let dir = tmp();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(dir.path().join("f"), "x").expect("write");
        let root = Root::open(dir.path()).expect("root");
        let pinned = root.resolve("/f").expect("resolves");
        let pin = pinned.shared_pin();
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        let top = ino(dir.path());
        let dev = pinned.key.dev;
        // a link in the same directory: the pin's name is still there
        std::fs::hard_link(dir.path().join("f"), dir.path().join("g")).expect("link");
        assert_eq!(
            new_path_of(&pin, dev, "g", top),
            Some(dir.path().join("g").to_string_lossy().into_owned())
        );
        // renamed into another directory: that directory, found by its inode
        std::fs::rename(dir.path().join("f"), sub.join("h")).expect("rename");
        assert_eq!(
            new_path_of(&pin, dev, "h", ino(&sub)),
            Some(sub.join("h").to_string_lossy().into_owned())
        );
        // a directory the pin is not in, a name with a slash, another device
        assert_eq!(new_path_of(&pin, dev, "g", top), None);
        assert_eq!(new_path_of(&pin, dev, "a/b", ino(&sub)), None);
        assert_eq!(new_path_of(&pin, dev ^ 1, "h", ino(&sub)), None);
    }
}
