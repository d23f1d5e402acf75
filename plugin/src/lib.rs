//! kive: a Falco plugin that turns chosen files inside chosen Kubernetes pods
//! (or on the node itself) into tripwires, with an eBPF inode trap.
#![warn(missing_docs)]

pub mod alert;
pub mod node;
pub mod policy;
pub mod runtime;
pub mod trap;

/// The libbpf-rs skeleton generated from `ebpf/kive.bpf.c` by `build.rs`.
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod skel {
    include!(concat!(env!("OUT_DIR"), "/kive.skel.rs"));
}
