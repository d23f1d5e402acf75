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

/// What `readelf <args>` prints for the built libkive.so.
fn readelf(args: &[&str]) -> String {
    let so = built_so();
    let out = Command::new("readelf")
        .args(args)
        .arg(so)
        .output()
        .unwrap_or_else(|e| panic!("running readelf (binutils) on {}: {e}", so.display()));
    assert!(
        out.status.success(),
        "readelf {args:?} {}: {out:?}",
        so.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn libkive_so_needs_only_glibc() {
    let text = readelf(&["-d"]);
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

/// kive's allocator (mimalloc, its `#[global_allocator]`) serves kive's Rust
/// code only: the .so defines none of the C allocation functions, so Falco's
/// `malloc` stays glibc's when Falco loads it, and exports none of
/// mimalloc's own functions either.
#[test]
fn libkive_so_leaves_the_hosts_malloc_alone() {
    let text = readelf(&["--dyn-syms", "-W"]);
    // `Num: Value Size Type Bind Vis Ndx Name [(version)]`: the name without
    // its version; defined = section index not UND
    let name = |l: &str| {
        l.split_whitespace()
            .nth(7)
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
    };
    let defined: Vec<String> = text
        .lines()
        .filter(|l| l.contains(" FUNC ") && !l.contains(" UND "))
        .filter_map(name)
        .collect();
    assert!(
        defined.iter().any(|n| n.starts_with("plugin_")),
        "no defined plugin_* function read: {text}"
    );
    const C_ALLOC: [&str; 8] = [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "malloc_usable_size",
    ];
    let overriding: Vec<&String> = defined
        .iter()
        .filter(|n| C_ALLOC.contains(&n.as_str()))
        .collect();
    assert!(
        overriding.is_empty(),
        "libkive.so defines {overriding:?}: it would replace Falco's malloc"
    );
    let mi: Vec<&String> = defined.iter().filter(|n| n.starts_with("mi_")).collect();
    assert!(mi.is_empty(), "libkive.so exports mimalloc's {mi:?}");
    // and it does use malloc from glibc (libbpf's C code): undefined there
    assert!(
        text.lines()
            .any(|l| l.contains(" UND ") && name(l).as_deref() == Some("malloc")),
        "libkive.so takes malloc from glibc: {text}"
    );
}
