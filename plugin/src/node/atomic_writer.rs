//! The one symlink a trap path's last component may be: the kubelet's
//! AtomicWriter layout of projected volumes (secrets, config maps,
//! service-account tokens). In a volume directory `<name>` is a symlink to
//! `..data/<name>`, `..data` a symlink to `..<timestamp>`, and that is a
//! directory in the same directory holding the real `<name>`; an update
//! writes a new `..<timestamp>` and swaps `..data`.
//!
//! Any other symlink there is refused, whoever owns it: following it could
//! redirect a trap (and, with `action: block`, a denial) to another file.
//! The layout itself is resolved inside its directory, with no symlink
//! followed on the way (`..<timestamp>` and the file are opened by name,
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), so it can
//! never lead out of that directory, whatever the links say.

use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// `..data`, the atomic writer's switch.
pub const DATA: &str = "..data";

/// The `..<timestamp>` directory that `<name>` leads to, when `name_link`
/// (the target of `<name>`) and `data_link` (the target of `..data` in the
/// same directory) are the atomic writer's: exactly `..data/<name>` and
/// `..<something>` without a `/`. `None` for anything else.
pub fn version_dir<'a>(name: &str, name_link: &str, data_link: &'a str) -> Option<&'a str> {
    let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
    if !plain(name) || name == DATA || name_link.strip_prefix("..data/") != Some(name) {
        return None;
    }
    let version = data_link.strip_prefix("..")?;
    (plain(version) && !version.starts_with('.') && data_link != DATA).then_some(data_link)
}

/// Opens (`O_PATH`) the file `<name>` of the atomic-writer layout in
/// `dir`: `Ok(None)` when the links there are not that layout.
pub fn open(dir: &OwnedFd, name: &str) -> rustix::io::Result<Option<OwnedFd>> {
    let name_link = rustix::fs::readlinkat(dir, name, Vec::new())?;
    let data_link = match rustix::fs::readlinkat(dir, DATA, Vec::new()) {
        Ok(l) => l,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (Ok(name_link), Ok(data_link)) = (name_link.to_str(), data_link.to_str()) else {
        return Ok(None);
    };
    let Some(version) = version_dir(name, name_link, data_link) else {
        return Ok(None);
    };
    const INSIDE: ResolveFlags = ResolveFlags::BENEATH
        .union(ResolveFlags::NO_SYMLINKS)
        .union(ResolveFlags::NO_MAGICLINKS)
        .union(ResolveFlags::NO_XDEV);
    let at = |dir: &OwnedFd, name: &str, flags: OFlags| {
        rustix::fs::openat2(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
            Mode::empty(),
            INSIDE,
        )
    };
    let versioned = at(dir, version, OFlags::DIRECTORY)?;
    let file = at(&versioned, name, OFlags::empty())?;
    // O_PATH | O_NOFOLLOW opens a link itself: the file must not be one
    let st = rustix::fs::fstat(&file)?;
    let link = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink;
    Ok((!link).then_some(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ResolveError, Root};
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::Path;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    /// `dir/<name> -> ..data/<name>`, `dir/..data -> <data>`, and a real
    /// `dir/..v1/<name>`.
    fn atomic_layout(dir: &Path, data: &str) {
        std::fs::create_dir(dir.join("..v1")).expect("mkdir");
        std::fs::write(dir.join("..v1/token"), "one").expect("write");
        symlink(data, dir.join("..data")).expect("symlink");
        symlink("..data/token", dir.join("token")).expect("symlink");
    }

    #[test]
    fn the_atomic_writer_layout_is_resolved_inside_its_directory() {
        let d = tmp();
        atomic_layout(d.path(), "..v1");
        let root = Root::open("/").expect("open /");
        let path = d.path().join("token");
        let p = root
            .resolve(path.to_str().expect("utf-8"))
            .expect("the layout");
        let real = d.path().join("..v1/token");
        assert_eq!(p.key.ino, std::fs::metadata(&real).expect("stat").ino());
    }

    #[test]
    fn a_fake_atomic_writer_layout_never_leads_out_of_its_directory() {
        let outside = tmp();
        std::fs::write(outside.path().join("token"), "node").expect("write");
        let out = outside.path().to_str().expect("utf-8");
        // ..data out of the directory, up a level, or ..v1/token a link
        let d = tmp();
        atomic_layout(d.path(), out);
        let d2 = tmp();
        atomic_layout(d2.path(), "..v1");
        std::fs::remove_file(d2.path().join("..v1/token")).expect("rm");
        symlink(outside.path().join("token"), d2.path().join("..v1/token")).expect("symlink");
        let d3 = tmp();
        std::fs::create_dir(d3.path().join("in")).expect("mkdir");
        symlink(outside.path(), d3.path().join("in/..up")).expect("symlink");
        symlink("..data/token", d3.path().join("in/token")).expect("symlink");
        symlink("..up", d3.path().join("in/..data")).expect("symlink");
        let root = Root::open("/").expect("open /");
        for path in [
            d.path().join("token"),
            d2.path().join("token"),
            d3.path().join("in/token"),
        ] {
            let e = root
                .resolve(path.to_str().expect("utf-8"))
                .expect_err("refused");
            assert!(matches!(e, ResolveError::Symlink { .. }), "{path:?}: {e}");
        }
    }

    #[test]
    fn only_the_exact_layout_is_recognised() {
        let v = "..2026_12_01_10_00_00.123456789";
        assert_eq!(version_dir("token", "..data/token", v), Some(v));
        for (name, link, data, why) in [
            ("token", "/etc/hostname", v, "a link anywhere else"),
            ("token", "..data/other", v, "another name"),
            ("token", "..data/token/x", v, "deeper"),
            ("token", "../..data/token", v, "another directory"),
            (
                "token",
                "..data/token",
                "/etc",
                "..data out of the directory",
            ),
            ("token", "..data/token", "../..v1", "..data up a level"),
            ("token", "..data/token", "..v1/..", "..data with a slash"),
            ("token", "..data/token", "..", "..data to the parent"),
            ("token", "..data/token", "...", "..data to a dot name"),
            ("token", "..data/token", "..data", "..data to itself"),
            ("token", "..data/token", "v1", "not a ..version"),
            ("..data", "..data/..data", v, "the switch itself"),
            ("", "..data/", v, "no name"),
        ] {
            assert_eq!(version_dir(name, link, data), None, "{why}");
        }
    }
}
