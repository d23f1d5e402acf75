//! Resolution inside a root on real directories: keys, symlinks, `..`,
//! magic links, decoy creation.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use super::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn resolves_a_file_to_its_kernel_key() {
    let d = tmp();
    std::fs::write(d.path().join("f"), "x").expect("write");
    let root = Root::open(d.path()).expect("open root");
    let p = root.resolve("/f").expect("resolve");
    let md = std::fs::metadata(d.path().join("f")).expect("stat");
    assert_eq!(p.key.ino, md.ino());
    assert_eq!(p.key.dev, kernel_dev(md.dev()));
    // one statx gives the key, the links and the mount at once
    assert_eq!(p.st_dev, md.dev(), "userspace st_dev as fstat gives it");
    assert_eq!(p.seen.nlink, md.nlink(), "link count");
    assert_eq!(
        p.seen.name.as_deref(),
        Some(d.path().join("f").to_str().expect("utf-8 tempdir")),
        "the name the pin leads to"
    );
    assert_eq!(
        p.mnt_id(),
        Some(crate::node::mounts::mount_id(&p.pin).expect("statx mount id")),
        "the mount id read with the key (no statx of its own in backing)"
    );
}

#[test]
fn absolute_symlinks_and_dotdot_stay_inside_the_root() {
    let d = tmp();
    let inner = d.path().join("root");
    std::fs::create_dir_all(inner.join("etc")).expect("mkdir");
    std::fs::write(inner.join("etc/passwd"), "container passwd").expect("write");
    // directory links on the way (the last component is never a link)
    symlink("/etc", inner.join("link")).expect("symlink");
    symlink("../../../../../../etc", inner.join("up")).expect("symlink");
    let root = Root::open(&inner).expect("open root");
    let want = std::fs::metadata(inner.join("etc/passwd"))
        .expect("stat")
        .ino();
    let host = std::fs::metadata("/etc/passwd").expect("host passwd").ino();
    assert_ne!(want, host);
    for path in [
        "/link/passwd",
        "/up/passwd",
        "/../../etc/passwd",
        "/etc/../../etc/passwd",
    ] {
        let p = root.resolve(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            p.key.ino, want,
            "{path} must resolve to the root's own file"
        );
    }
}

#[test]
fn magic_links_are_refused() {
    let d = tmp();
    symlink("/proc/self/root/etc/passwd", d.path().join("m")).expect("symlink");
    let root = Root::open(d.path()).expect("open root");
    // inside the root /proc/self does not exist: not found, never the host file
    assert!(root.resolve("/m").is_err());
    let host_root = Root::open("/").expect("open /");
    let e = host_root
        .resolve("/proc/self/root/etc/passwd")
        .expect_err("magic link through /proc/self/root is refused");
    assert!(matches!(e, ResolveError::Io { .. }), "{e}");
}

#[test]
fn create_sets_the_mode_despite_umask_and_never_truncates() {
    let d = tmp();
    let root = Root::open(d.path()).expect("open root");
    assert!(root.create_if_missing("/decoy", 0o604).expect("create"));
    let md = std::fs::metadata(d.path().join("decoy")).expect("stat");
    assert_eq!(md.permissions().mode() & 0o7777, 0o604);
    std::fs::write(d.path().join("decoy"), "keep me").expect("write");
    assert!(!root.create_if_missing("/decoy", 0o600).expect("exists"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("decoy")).expect("read"),
        "keep me"
    );
    assert_eq!(
        std::fs::metadata(d.path().join("decoy"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777,
        0o604,
        "an existing file keeps its mode"
    );
}

#[test]
fn create_never_follows_a_symlink_to_the_host() {
    let d = tmp();
    let host_target = d.path().join("host-file");
    let inner = d.path().join("root");
    std::fs::create_dir(&inner).expect("mkdir");
    symlink(&host_target, inner.join("decoy")).expect("symlink");
    let root = Root::open(&inner).expect("open root");
    // the name exists (as a symlink): nothing is created, nothing followed
    assert!(!root.create_if_missing("/decoy", 0o644).expect("create"));
    assert!(
        !host_target.exists(),
        "the symlink target outside the root was not created"
    );
}

#[test]
fn a_link_is_never_followed_whoever_planted_it() {
    let d = tmp();
    let target = d.path().join("target");
    std::fs::write(&target, "node file").expect("write");
    symlink(&target, d.path().join("decoy")).expect("symlink");
    let root = Root::open(d.path()).expect("open root");
    for (owner, why) in [
        (65534, "a user's link"),
        (0, "root's link in root's directory"),
    ] {
        std::os::unix::fs::lchown(d.path().join("decoy"), Some(owner), Some(owner))
            .expect("lchown");
        let e = root.resolve("/decoy").expect_err(why);
        assert!(matches!(e, ResolveError::Symlink { .. }), "{why}: {e}");
        assert!(e.to_string().contains("/decoy"), "{e}");
    }
}

#[test]
fn directories_are_not_trappable() {
    let d = tmp();
    std::fs::create_dir(d.path().join("dir")).expect("mkdir");
    let root = Root::open(d.path()).expect("open root");
    assert!(matches!(
        root.resolve("/dir"),
        Err(ResolveError::NotAFile { .. })
    ));
    assert!(matches!(
        root.resolve("/nope"),
        Err(ResolveError::NotFound { .. })
    ));
}

#[test]
fn a_mount_id_the_kernel_did_not_give_stays_unknown() {
    let dir = tmp();
    let path = dir.path().join("f");
    std::fs::write(&path, "x").expect("write");
    for given in [None, Some(0), Some(7), Some(u64::MAX - 1)] {
        let fd: OwnedFd = std::fs::File::open(&path).expect("open").into();
        let st = FileStat {
            mnt_id: given,
            ..file_stat(&fd).expect("stat")
        };
        assert_eq!(
            PinnedFile::of(fd, &st).mnt_id(),
            given,
            "the mount id read back is the one statx gave (or none)"
        );
    }
}
