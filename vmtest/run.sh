#!/usr/bin/env bash
# vmtest/run.sh — boot Debian's own 6.1 kernel under qemu (TCG) with a tiny
# busybox initramfs, run kive's tier scenarios inside it and print the guest's
# serial console on stdout.
#
# Why: the development/CI kernel refuses BPF programs that need trampolines
# (lsm/*, fentry/*, fmod_ret/*), Debian's 6.1 kernel accepts them, so this is
# where the LSM and trampoline tiers (and blocking) are tested for real.
#
# Usage:
#   vmtest/run.sh [--kive PATH] [--boot-only] [--test-bin PATH]...
#     --kive PATH   the kive binary to test (default: build it with
#                   `cargo build --release -p kive --bin kive`)
#     --boot-only   only prove that the VM boots and runs the binary
#                   (`PATH --help`); no kive scenarios
#     --lib PATH    (suite mode) the built libkive.so, copied to the same
#                   path in the guest; the tests get it as KIVE_SO
#     --test-bin PATH  a libtest binary built on the host (e.g.
#                   target/debug/deps/engine_kernel-<hash>), repeatable:
#                   instead of the scenarios, the guest runs each one with
#                   `--test-threads=1` and prints its output in a section
#                   `suite.<name>` (name without the hash) plus a
#                   KIVE-VM-RESULT line `suite.<name>` (ok = exit 0)
#
# Environment:
#   KIVE_VMTEST_CACHE       cache dir (default: <target dir>/vmtest-cache)
#   KIVE_VMTEST_TIMEOUT     seconds before qemu is killed (default 300)
#   KIVE_VMTEST_KERNEL_PKG  Debian kernel package (default: what
#                           linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64)
#   KIVE_VMTEST_SMP         guest vCPUs (default 2)
#   KIVE_VMTEST_MEM         guest RAM in MiB (default 1024 + twice the initramfs)
#
# Output protocol (guest → stdout, lines may end in \r because of the serial
# line discipline):
#   KIVE-VM-BOOTED kernel=... lsm=...
#   KIVE-VM-RESULT name=<scenario> ok=<0|1> detail=<free text>
#   KIVE-VM-BEGIN name=<section> ... KIVE-VM-END name=<section>   (raw dumps)
#   KIVE-VM-DONE
# The script exits 0 when the guest reached KIVE-VM-DONE (whatever the
# scenario results: judging them is the caller's job), non-zero otherwise.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(cd "$script_dir/.." && pwd)

kive_bin=""
lib_so=""
mode=full
test_bins=()
while [ $# -gt 0 ]; do
    case "$1" in
    --kive)
        kive_bin=${2:?--kive needs a path}
        shift 2
        ;;
    --kive=*)
        kive_bin=${1#--kive=}
        shift
        ;;
    --boot-only)
        mode=boot
        shift
        ;;
    --lib)
        lib_so=${2:?--lib needs a path}
        shift 2
        ;;
    --test-bin)
        test_bins+=("${2:?--test-bin needs a path}")
        mode=suite
        shift 2
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d'
        exit 0
        ;;
    *)
        echo "vmtest: unknown argument: $1" >&2
        exit 2
        ;;
    esac
done

log() { echo "vmtest: $*" >&2; }
die() {
    echo "vmtest: ERROR: $*" >&2
    exit 1
}

timeout_s=${KIVE_VMTEST_TIMEOUT:-300}
smp=${KIVE_VMTEST_SMP:-2}

# The cache lives under cargo's target dir so it is never committed.
if [ -n "${KIVE_VMTEST_CACHE:-}" ]; then
    cache=$KIVE_VMTEST_CACHE
else
    target_dir=${CARGO_TARGET_DIR:-$root_dir/target}
    case "$target_dir" in /*) ;; *) target_dir=$root_dir/$target_dir ;; esac
    cache=$target_dir/vmtest-cache
fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# Keep the cache out of git even if target/ is not ignored.
[ -f "$cache/.gitignore" ] || echo '*' >"$cache/.gitignore"

# ---------------------------------------------------------------- host tools
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or password-less sudo) to run: $*"
    fi
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq >&2 || die "apt-get update failed"
        apt_updated=1
    fi
}

# Install host packages (only tools: qemu and cpio) when their command is missing.
ensure_cmd() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    log "installing $pkg (for $cmd)"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2; then
        apt_update_once
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2 ||
            die "could not install $pkg"
    fi
    command -v "$cmd" >/dev/null 2>&1 || die "$pkg installed but $cmd still missing"
}

command -v apt-get >/dev/null 2>&1 || command -v qemu-system-x86_64 >/dev/null 2>&1 ||
    die "neither qemu-system-x86_64 nor apt-get is available"

# Serialise cache setup between concurrent runs (e.g. two cargo test processes).
exec 9>"$cache/.lock"
flock -w 900 9 || die "timed out waiting for $cache/.lock"

ensure_cmd qemu-system-x86_64 qemu-system-x86
ensure_cmd cpio cpio

# ------------------------------------------------- guest packages (not installed)
# The kernel and busybox are fetched with `apt-get download` and unpacked with
# `dpkg-deb -x` into the cache: the host's /boot and bootloader are untouched.
apt_cache_show() { apt-cache show "$1" >/dev/null 2>&1; }

resolve_kernel_pkg() {
    if [ -n "${KIVE_VMTEST_KERNEL_PKG:-}" ]; then
        echo "$KIVE_VMTEST_KERNEL_PKG"
        return
    fi
    apt_cache_show linux-image-amd64 || apt_update_once
    # The meta package depends on exactly one versioned image package.
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# fetch_extract PKG → prints the directory PKG's .deb was unpacked into.
fetch_extract() {
    local pkg=$1 ver dir deb
    apt_cache_show "$pkg" || apt_update_once
    ver=$(apt-cache policy "$pkg" | awk '$1 == "Candidate:" { print $2 }')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        die "no installable candidate for $pkg"
    fi
    # Epochs contain ':' which is awkward in paths.
    dir=$cache/pkg/$pkg-${ver//:/_}
    if [ ! -f "$dir/.done" ]; then
        local debdir=$cache/debs/$pkg-${ver//:/_}
        mkdir -p "$debdir"
        deb=$(find "$debdir" -maxdepth 1 -name '*.deb' | head -n1)
        if [ -z "$deb" ]; then
            log "downloading $pkg=$ver"
            (cd "$debdir" && apt-get download -q "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
            deb=$(find "$debdir" -maxdepth 1 -name '*.deb' | head -n1)
            [ -n "$deb" ] || die "downloaded $pkg but found no .deb in $debdir"
        fi
        log "unpacking $(basename "$deb")"
        rm -rf "$dir"
        mkdir -p "$dir"
        dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
        touch "$dir/.done"
    fi
    echo "$dir"
}

if [ -n "${KIVE_VMTEST_KERNEL:-}" ]; then
    # Escape hatch: a bzImage given directly (its config file next to it, if any).
    vmlinuz=$KIVE_VMTEST_KERNEL
    kconfig=${KIVE_VMTEST_KCONFIG:-}
else
    kernel_pkg=$(resolve_kernel_pkg)
    [ -n "$kernel_pkg" ] || die "could not resolve linux-image-amd64 to a kernel package"
    kdir=$(fetch_extract "$kernel_pkg")
    vmlinuz=$(find "$kdir/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
    kconfig=$(find "$kdir/boot" -maxdepth 1 -name 'config-*' | head -n1)
fi
[ -f "$vmlinuz" ] || die "no kernel image found (looked for vmlinuz-* from $kernel_pkg)"

# Everything the guest needs must be built in (=y): the initramfs has no
# modules. Checked here so a future Debian config change fails loudly.
if [ -n "$kconfig" ] && [ -f "$kconfig" ]; then
    for opt in BLK_DEV_INITRD DEVTMPFS TMPFS SERIAL_8250 SERIAL_8250_CONSOLE \
        BPF_SYSCALL BPF_JIT DEBUG_INFO_BTF BPF_LSM SECURITYFS FUNCTION_TRACER \
        DYNAMIC_FTRACE_WITH_DIRECT_CALLS CGROUPS; do
        grep -qx "CONFIG_$opt=y" "$kconfig" || die "kernel config lacks CONFIG_$opt=y ($kconfig)"
    done
    # BPF LSM only runs if "bpf" is in the default LSM list (we pass no lsm=).
    grep -q '^CONFIG_LSM=".*bpf' "$kconfig" || die "\"bpf\" is not in CONFIG_LSM of $kconfig"
fi

bbdir=$(fetch_extract busybox-static)
busybox=$bbdir/bin/busybox
[ -x "$busybox" ] || die "busybox-static did not provide bin/busybox"

# Cache setup is done; qemu runs may overlap.
flock -u 9

# ------------------------------------------------------------- kive binary
if [ -z "$kive_bin" ]; then
    log "building kive (release)"
    (cd "$root_dir" && cargo build --release -p kive --bin kive >&2) || die "cargo build failed"
    kive_bin=$(cd "$root_dir" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/kive
fi
[ -x "$kive_bin" ] || die "kive binary not found or not executable: $kive_bin"

# ------------------------------------------------------------- initramfs
work=$(mktemp -d "$cache/run.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
stage=$work/root
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,vmtest}

cp "$busybox" "$stage/bin/busybox"
# One symlink per applet (bin/sh, bin/cat, sbin/poweroff, ...).
"$busybox" --list-full | while read -r applet; do
    [ -e "$stage/$applet" ] || [ -L "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done

# The binary, without debug info (keeps the archive small: the guest kernel
# unpacks it under TCG), plus every shared library and the dynamic loader.
# copy_libs BIN: every shared library of BIN and the dynamic loader, at the
# same paths in the guest.
copy_libs() {
    local bin=$1 ldd_out
    if ldd_out=$(ldd "$bin" 2>&1); then
        # Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
        # or "/lib64/ld-linux-x86-64.so.2 (0x...)"; copy each path, following
        # symlinks, to the same path in the guest.
        echo "$ldd_out" | grep -oE '(/[^ ]+) \(0x' | sed 's/ (0x$//' | while read -r lib; do
            mkdir -p "$stage$(dirname "$lib")"
            [ -e "$stage$lib" ] || cp -L "$lib" "$stage$lib"
        done
    else
        case "$ldd_out" in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) die "ldd $bin failed: $ldd_out" ;;
        esac
    fi
}
strip --strip-debug -o "$stage/bin/kive" "$kive_bin" 2>/dev/null || cp "$kive_bin" "$stage/bin/kive"
chmod 0755 "$stage/bin/kive"
copy_libs "$kive_bin"

# The kernel test binaries (suite mode), stripped, named without cargo's
# hash. Their emulated containers chroot into an overlay whose /usr is the
# guest's: busybox must also be a real file there (/usr/bin/busybox), as
# the applet links point at /bin/busybox, which is usr/bin/busybox in the
# container's lower layer.
if [ "$mode" = suite ]; then
    mkdir -p "$stage/vmtest/tests"
    # the kube client loads the system's CA certificates (even for http)
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$stage/etc/ssl/certs"
        cp /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/"
    fi
    # tests that start kive find it at the path cargo built it at
    mkdir -p "$stage$(dirname "$kive_bin")"
    cp "$stage/bin/kive" "$stage$kive_bin"
    cp "$busybox" "$stage/usr/bin/busybox"
    # and every applet under /usr/bin (the container runs /usr/bin/sleep)
    "$busybox" --list | while read -r applet; do
        [ -e "$stage/usr/bin/$applet" ] || [ -L "$stage/usr/bin/$applet" ] || ln -s /bin/busybox "$stage/usr/bin/$applet"
    done
    if [ -n "$lib_so" ]; then
        [ -f "$lib_so" ] || die "libkive.so not found: $lib_so"
        mkdir -p "$stage$(dirname "$lib_so")"
        strip --strip-debug -o "$stage$lib_so" "$lib_so" 2>/dev/null || cp "$lib_so" "$stage$lib_so"
        copy_libs "$lib_so"
    fi
    for t in "${test_bins[@]}"; do
        [ -x "$t" ] || die "test binary not found or not executable: $t"
        name=$(basename "$t")
        name=${name%-*}
        strip --strip-debug -o "$stage/vmtest/tests/$name" "$t" 2>/dev/null || cp "$t" "$stage/vmtest/tests/$name"
        chmod 0755 "$stage/vmtest/tests/$name"
        copy_libs "$t"
    done
fi

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"

cp "$script_dir/guest-init.sh" "$stage/init"
chmod 0755 "$stage/init"
cp "$script_dir"/policy-*.yaml "$stage/vmtest/"
# overlayfs and FUSE are modules in Debian's config (CONFIG_OVERLAY_FS=m,
# CONFIG_FUSE_FS=m, no dependencies); the overlay scenario and the suite
# insmod them. Everything else is built in.
# copy_module NAME PATH-UNDER-kernel/: the module, decompressed, as
# /vmtest/NAME.ko in the guest.
copy_module() {
    local name=$1 ko
    ko=$(find "$kdir/lib/modules" -path "*/kernel/$2/$name.ko*" | head -n1)
    [ -n "$ko" ] || die "$name.ko not found in $kdir"
    case "$ko" in
    *.ko) cp "$ko" "$stage/vmtest/$name.ko" ;;
    *.ko.xz) xz -dc "$ko" >"$stage/vmtest/$name.ko" ;;
    *.ko.zst) zstd -dcq "$ko" >"$stage/vmtest/$name.ko" ;;
    *) die "unexpected module file $ko" ;;
    esac
}
if [ -n "${kdir:-}" ]; then
    copy_module overlay fs/overlayfs
    copy_module fuse fs/fuse
fi
printf 'MODE=%s\nLIBKIVE=%s\n' "$mode" "$lib_so" >"$stage/vmtest/config"

initrd=$work/initramfs.cpio
# Uncompressed newc: decompressing under TCG would cost more than qemu
# reading a larger file from the page cache.
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$initrd"
# The guest unpacks the archive into RAM and keeps the archive itself until
# it is unpacked: give it twice the archive's size on top of 1 GiB (a short
# guest fails with "Initramfs unpacking failed: write error", caught below).
initrd_mib=$(($(stat -c %s "$initrd") / 1048576))
mem_mib=${KIVE_VMTEST_MEM:-$((1024 + 2 * initrd_mib))}
log "initramfs ${initrd_mib} MiB, guest ${mem_mib} MiB, kernel $(basename "$vmlinuz"), timeout ${timeout_s}s"

# ------------------------------------------------------------------- boot
# -nodefaults: no VGA, NIC or floppy; the only device we need is the serial
# port, wired to our stdout. panic=-1 + -no-reboot: a guest panic (or /init
# exiting) ends qemu at once instead of hanging until the timeout.
# mitigations=off: the guest has nothing to protect and TCG pays for them.
# this run's console (runs of other checkouts may overlap); the last one
# is also kept as $cache/last-console.log
console_log=$work/console.log
start=$(date +%s)
set +e
# --foreground: qemu stays in this script's process group, so whoever
# kills the group (the tests' deadline) kills qemu too
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 \
    -nodefaults -display none -no-reboot \
    -machine pc -accel tcg -smp "$smp" -m "$mem_mib" \
    -serial stdio \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet mitigations=off rdinit=/init" \
    </dev/null 2>&1 | tee "$console_log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - start))
cp "$console_log" "$cache/last-console.log"
log "qemu exited with $rc after ${elapsed}s (console saved in $cache/last-console.log)"

if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    die "qemu killed after ${timeout_s}s timeout"
fi
grep -q 'Initramfs unpacking failed' "$console_log" &&
    die "the guest could not unpack the initramfs (${initrd_mib} MiB into ${mem_mib} MiB: set KIVE_VMTEST_MEM)"
grep -q '^KIVE-VM-DONE' "$console_log" || die "guest did not reach KIVE-VM-DONE (qemu rc $rc)"
echo "KIVE-VM-HOST elapsed=${elapsed}s"
