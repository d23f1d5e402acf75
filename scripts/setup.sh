#!/usr/bin/env bash
# Installs what kive needs to build and run, and does the mounts the eBPF
# engine uses. Idempotent: installs only what is missing, mounts only what
# is not mounted. Runs as root (eBPF needs CAP_BPF + CAP_SYS_ADMIN).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "setup: kive loads eBPF programs: run as root" >&2
  exit 1
fi

# build: clang for the BPF C, libelf/zlib/pkg-config for libbpf-sys, libbpf
# headers (bpf_helpers.h), autotools/flex/bison/gawk for the vendored libelf
# libbpf-sys links into libkive.so (so that it needs only glibc); tools: bpftool; tests: util-linux (unshare,
# nsenter), iproute2-free; make package / test-falco: jq, python3 (ctypes
# reads the built .so's plugin info), binutils (strip, readelf). The VM tests
# (vmtest/run.sh) install their own.
PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config libbpf-dev bpftool make gcc util-linux
  autoconf automake autopoint libtool flex bison gawk jq python3 binutils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

mount_if_missing() { # fstype dir
  mkdir -p "$2"
  mountpoint -q "$2" || mount -t "$1" "$1" "$2"
}
mount_if_missing bpf /sys/fs/bpf
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing securityfs /sys/kernel/security
