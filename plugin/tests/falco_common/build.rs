//! Where the Falco plugin tests get what they load: `libkive.so` built for
//! the test's own profile (or `KIVE_SO`), and the repository's test files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `test_files/<name>` of the repository.
pub fn test_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../test_files")
        .join(name)
}

/// The cargo profile to build `libkive.so` with, when the profile
/// directory alone does not say it (target/release serves both `release`
/// and `bench`; building the other one would rebuild the shared
/// dependencies each time).
pub static PROFILE: OnceLock<&'static str> = OnceLock::new();

/// `cargo`, as a test runs it: without the variables cargo sets for *this*
/// package's tests (OUT_DIR, CARGO_MANIFEST_DIR, CARGO_PKG_*, ...); some
/// dependencies' builds track such variables (ring tracks OUT_DIR and
/// CARGO_MANIFEST_DIR), so passing them on would rebuild those crates each
/// time.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k == "OUT_DIR"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_TARGET_TMPDIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Builds `libkive.so` for the profile this test was built with and
/// returns its path: target/<profile>/libkive.so, next to the test binary's
/// `deps/` directory.
///
/// Cargo compiles the cdylib of a package whose integration tests run, but
/// only into `deps/` under a hashed name and without guaranteeing it is
/// fresh or copied to target/<profile>/, so the test runs `cargo build
/// --lib` itself (once per test binary; a no-op when up to date). The
/// outer `cargo test` holds no build lock while tests run.
///
/// `KIVE_SO=<path>` loads that library instead, unbuilt (a bench comparing
/// two builds of kive in one session; the Debian VM suite, whose guest has
/// no cargo, passes the host's).
pub fn built_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        if let Some(so) = std::env::var_os("KIVE_SO") {
            let so = PathBuf::from(so);
            assert!(so.is_file(), "KIVE_SO={} is no file", so.display());
            return so;
        }
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile dir name");
        let mut cmd = cargo();
        cmd.args(["build", "--lib", "-p", "kive", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir);
        match (PROFILE.get(), profile) {
            (Some(p), _) => {
                cmd.args(["--profile", p]);
            }
            (None, "debug") => {}
            (None, "release") => {
                cmd.arg("--release");
            }
            (None, other) => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().expect("running cargo build --lib");
        assert!(status.success(), "cargo build --lib failed: {status}");
        let so = profile_dir.join("libkive.so");
        assert!(so.exists(), "{} was not built", so.display());
        so
    })
}
