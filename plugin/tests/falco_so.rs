//! The built libkive.so needs nothing beyond glibc (libbpf, libelf and
//! zlib are linked in): the stock falcosecurity/falco image has no
//! libelf.so.1 or libz.so.1. Reads the NEEDED entries of its dynamic
//! section with binutils' readelf.

mod falco_common;

use std::process::Command;

use falco_common::built_so;

/// The glibc (and its GCC runtime) libraries every Linux system has.
const GLIBC: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

#[test]
fn libkive_so_needs_only_glibc() {
    let so = built_so();
    let out = Command::new("readelf")
        .arg("-d")
        .arg(so)
        .output()
        .unwrap_or_else(|e| panic!("running readelf (binutils) on {}: {e}", so.display()));
    assert!(
        out.status.success(),
        "readelf -d {}: {:?}",
        so.display(),
        out
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        needed.contains(&"libc.so.6"),
        "no NEEDED entries read: {text}"
    );
    let foreign: Vec<&&str> = needed.iter().filter(|n| !GLIBC.contains(n)).collect();
    assert!(
        foreign.is_empty(),
        "libkive.so needs {foreign:?} beyond glibc (all NEEDED: {needed:?})"
    );
}
