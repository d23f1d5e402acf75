//! Checks that need the reference directory beside the repo (`../shared`):
//! the kivebpf peer's own sample policies must be accepted unchanged.
//!
//! Not part of `make test` (a user's clone has no `../shared`): run by
//! `make test-shared SHARED=../shared`, which sets `KIVE_SHARED_DIR` and
//! runs this test target (`test = false` in Cargo.toml keeps it out of
//! `cargo test`). Without the variable, or with a
//! directory that lacks the samples, the test fails with a message.

use std::path::PathBuf;

/// The directory named by `KIVE_SHARED_DIR`; panics when it is unset or
/// not a directory.
fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("KIVE_SHARED_DIR").unwrap_or_else(|| {
        panic!("KIVE_SHARED_DIR is not set: run `make test-shared SHARED=<dir>`")
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.is_dir(),
        "KIVE_SHARED_DIR={} is not a directory",
        dir.display()
    );
    dir
}

#[test]
fn every_kivebpf_peer_sample_policy_is_accepted_unchanged() {
    let dir = shared_dir().join("peer/kivebpf-samples");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the peer samples must be at {}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let c = kive::policy::load_str(&path.display().to_string(), &text);
        assert!(c.errors.is_empty(), "{}: {:?}", path.display(), c.errors);
        assert!(!c.traps.is_empty(), "{}: no trap", path.display());
        n += 1;
    }
    assert_eq!(n, 9, "{} holds nine samples", dir.display());
}
