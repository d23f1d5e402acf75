//! Compiles `ebpf/kive.bpf.c` with clang and generates its libbpf-rs skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let ebpf =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../ebpf");
    let src = ebpf.join("kive.bpf.c");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("kive.skel.rs");
    SkeletonBuilder::new()
        .source(&src)
        .clang_args([
            "-D__TARGET_ARCH_x86".into(),
            "-Wall".into(),
            format!("-I{}", ebpf.display()),
        ])
        .build_and_generate(&out)
        .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    // every source and header of ebpf/ (a new header must rebuild too)
    println!("cargo:rerun-if-changed={}", ebpf.display());
    for entry in std::fs::read_dir(&ebpf)
        .expect("ebpf/ is readable")
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
}
