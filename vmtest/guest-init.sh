#!/bin/sh
# /init of the vmtest initramfs (busybox ash, PID 1 in the guest).
# Mounts what kive needs, runs the scenarios and prints machine-readable lines
# on the serial console (see vmtest/run.sh for the protocol), then powers off.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# what the initramfs put under /tmp (kive at the path cargo built it at, when
# the checkout lives under /tmp) must survive the tmpfs mounted over it
if [ -n "$(ls -A /tmp 2>/dev/null)" ]; then
    mkdir -p /.initramfs-tmp
    cp -a /tmp/. /.initramfs-tmp/
fi
mount -t tmpfs tmpfs /tmp
if [ -d /.initramfs-tmp ]; then
    cp -a /.initramfs-tmp/. /tmp/
    rm -rf /.initramfs-tmp
fi
mount -t tmpfs tmpfs /run
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# Keep kernel chatter off the console so it cannot split our lines; the
# kernel log is dumped in its own section at the end instead.
echo 1 >/proc/sys/kernel/printk
dmesg -c >/dev/null
hostname kive-vm

# shellcheck source=/dev/null
. /vmtest/config

echo "KIVE-VM-BOOTED kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm) btf=$(test -e /sys/kernel/btf/vmlinux && echo yes || echo no)"

result() { # name ok detail...
    local name=$1 ok=$2
    shift 2
    # One line per result: fold a multi-line detail (command output).
    echo "KIVE-VM-RESULT name=$name ok=$ok detail=$(printf '%s' "$*" | tr '\n' ' ')"
}

# dump NAME FILE: print FILE between markers for the host to parse.
dump() {
    echo "KIVE-VM-BEGIN name=$1"
    cat "$2"
    echo "KIVE-VM-END name=$1"
}

now() { cut -d' ' -f1 /proc/uptime; }

finish() {
    dmesg >/tmp/dmesg.txt
    dump dmesg /tmp/dmesg.txt
    echo "KIVE-VM-DONE uptime=$(now)"
    sync
    poweroff -f
    # If poweroff failed, exiting PID 1 panics; panic=-1 + -no-reboot end qemu.
    exit 1
}

if [ "$MODE" = boot ]; then
    out=$(/bin/kive --help 2>&1)
    rc=$?
    echo "$out" | head -n 5
    if [ $rc = 0 ]; then result boot.exec 1 "kive --help ran"; else result boot.exec 0 "kive --help exited $rc"; fi
    finish
fi

# Suite mode: the kernel test binaries built on the host, one at a time,
# each with --test-threads=1 (they share the kernel and the cgroup tree).
# KIVE_TEST_TIME_SCALE stretches the windows in which the tests watch for
# events that must NOT come (the guest is emulated, tens of times slower);
# every wait for something that must come already has a generous deadline.
if [ "$MODE" = suite ]; then
    # every module a test needs is loaded, or the suite reports why: a test
    # that then lacks it fails (none skips)
    for m in overlay fuse; do
        insmod "/vmtest/$m.ko" || result "suite.$m" 0 "insmod $m.ko failed"
    done
    [ -c /dev/fuse ] || result suite.fuse 0 "no /dev/fuse after insmod fuse.ko"
    # the test API server and callback receivers listen on 127.0.0.1
    ip link set lo up
    # the Falco plugin tests load the host's libkive.so (no cargo here)
    [ -n "$LIBKIVE" ] && export KIVE_SO="$LIBKIVE"
    for t in /vmtest/tests/*; do
        name=$(basename "$t")
        t0=$(now)
        (cd /tmp && KIVE_TEST_TIME_SCALE=10 RUST_BACKTRACE=1 "$t" --test-threads=1) >/tmp/suite.out 2>&1
        rc=$?
        dump "suite.$name" /tmp/suite.out
        [ $rc = 0 ] && ok=1 || ok=0
        result "suite.$name" "$ok" "exit=$rc from uptime $t0 to $(now)"
    done
    finish
fi

# Untrapped file, created before kive starts.
echo free >/tmp/free.txt

# start_kive TIER POLICY NAME [ARGS]: start kive in the background; sets KPID,
# KOUT, KERR. Returns 0 once stderr shows "armed=", 1 if kive died or never
# got there.
start_kive() {
    KOUT=/tmp/kive-$3.out
    KERR=/tmp/kive-$3.err
    # shellcheck disable=SC2086
    kive run --policy "$2" --tier "$1" --format json $4 >"$KOUT" 2>"$KERR" &
    KPID=$!
    # Loading and verifying BPF under TCG is slow: allow up to 120 s.
    i=0
    while [ $i -lt 600 ]; do
        grep -q 'armed=' "$KERR" && return 0
        kill -0 $KPID 2>/dev/null || return 1
        usleep 200000
        i=$((i + 1))
    done
    return 1
}

# stop_kive: SIGINT, wait up to 30 s, then SIGKILL. Sets KRC.
stop_kive() {
    kill -INT $KPID 2>/dev/null
    i=0
    while kill -0 $KPID 2>/dev/null && [ $i -lt 150 ]; do
        usleep 200000
        i=$((i + 1))
    done
    if kill -0 $KPID 2>/dev/null; then
        kill -KILL $KPID
        wait $KPID
        KRC=killed
    else
        wait $KPID
        KRC=$?
    fi
}

# wait_lines FILE PATTERN COUNT: wait up to 20 s for COUNT lines of FILE
# with PATTERN.
wait_lines() {
    i=0
    while [ $i -lt 100 ]; do
        [ "$(grep -c "$2" "$1")" -ge "$3" ] && return 0
        usleep 200000
        i=$((i + 1))
    done
    return 1
}

# wait_log PATTERN COUNT: COUNT lines of kive's stderr with PATTERN.
wait_log() { wait_lines "$KERR" "$1" "$2"; }

# wait_alerts PATTERN COUNT: COUNT alert lines (stdout) with PATTERN.
wait_alerts() { wait_lines "$KOUT" "$1" "$2"; }

# The tier named on the "armed=" startup line (stderr may carry ANSI colours).
active_tier() {
    grep 'armed=' "$KERR" | head -n1 | grep -o 'tier=[a-z_-]*' | head -n1 | cut -d= -f2
}

# try CMD...: run CMD in a child shell that execs it, so its pid is known
# (the alert's process.pid must equal it). Sets RC, MSG, PID.
try() {
    MSG=$(sh -c 'echo $$ >/tmp/try.pid; exec "$@"' sh "$@" 2>&1)
    RC=$?
    PID=$(cat /tmp/try.pid)
}

# expect_eperm NAME CMD...: CMD must fail with "Operation not permitted".
expect_eperm() {
    local n=$1 ok
    shift
    try "$@"
    case "$MSG" in
    *"Operation not permitted"*) [ $RC != 0 ] && ok=1 || ok=0 ;;
    *) ok=0 ;;
    esac
    result "$n" "$ok" "pid=$PID rc=$RC msg=$MSG"
}

# expect_ok NAME WANT CMD...: CMD must succeed and print WANT.
expect_ok() {
    local n=$1 want=$2 ok
    shift 2
    try "$@"
    [ $RC = 0 ] && [ "$MSG" = "$want" ] && ok=1 || ok=0
    result "$n" "$ok" "pid=$PID rc=$RC msg=$MSG"
}

# start_or_report TIER POLICY NAME [ARGS]: start kive and report NAME.start.
start_or_report() {
    t0=$(now)
    if ! start_kive "$1" "$2" "$3" "$4"; then
        result "$3.start" 0 "kive did not arm (still running: $(kill -0 $KPID 2>/dev/null && echo yes || echo no))"
        stop_kive
        dump "$3.stdout" "$KOUT"
        dump "$3.stderr" "$KERR"
        return 1
    fi
    got=$(active_tier)
    armed=$(grep 'armed=' "$KERR" | head -n1 | grep -o 'armed=[0-9]*')
    [ "$got" = "$1" ] || [ "$1" = auto ] && ok=1 || ok=0
    result "$3.start" "$ok" "tier=$got $armed at uptime $(now) (started at $t0)"
}

# stop_and_dump NAME: stop kive, report NAME.exit, dump its output.
stop_and_dump() {
    stop_kive
    [ "$KRC" = 0 ] && ok=1 || ok=0
    result "$1.exit" "$ok" "exit=$KRC on SIGINT"
    dump "$1.stdout" "$KOUT"
    dump "$1.stderr" "$KERR"
}

# Plain files on the guest's tmpfs: block, audit, and an untrapped file.
run_tier() {
    t=$1
    start_or_report "$t" /vmtest/policy-vm.yaml "$t" || return
    expect_eperm "$t.block-eperm" cat /tmp/blocked.txt
    expect_ok "$t.audit-open" "" cat /tmp/audited.txt
    expect_ok "$t.free-open" free cat /tmp/free.txt
    # Alerts arrive asynchronously through the ring buffer.
    wait_alerts blocked.txt 1 && wait_alerts audited.txt 1 && ok=1 || ok=0
    result "$t.alerts-seen" "$ok" "alert lines=$(grep -c . "$KOUT")"
    # Give a wrong alert (free.txt, a duplicate) the time to show up too.
    sleep 1
    stop_and_dump "$t"
}

# Traps seen through overlayfs, the way a container sees its image files:
# the opens run as an unprivileged user, the file is in the lower layer and
# gets copied up by a write. On the LSM/trampoline tiers, 6.1 opens the
# backing (real) file a second time, with the mounter's credentials: the host
# checks there is exactly one alert per open, with the opener's pid and uid.
run_overlay() {
    t=$1
    n=$t.ovl
    umount /tmp/ovl/merged 2>/dev/null
    rm -rf /tmp/ovl
    mkdir -p /tmp/ovl/lower /tmp/ovl/upper /tmp/ovl/work /tmp/ovl/merged
    echo secret >/tmp/ovl/lower/secret.txt
    echo blocked >/tmp/ovl/lower/blocked.txt
    echo peek >/tmp/ovl/lower/peek.txt
    chmod 0666 /tmp/ovl/lower/secret.txt /tmp/ovl/lower/blocked.txt /tmp/ovl/lower/peek.txt
    if ! mount -t overlay overlay -o lowerdir=/tmp/ovl/lower,upperdir=/tmp/ovl/upper,workdir=/tmp/ovl/work /tmp/ovl/merged; then
        result "$n.start" 0 "overlay mount failed"
        return
    fi
    start_or_report "$t" /vmtest/policy-overlay.yaml "$n" || return
    # su execs the shell, which execs the command: the pid stays the same.
    # A trap on a real lower-layer file: a direct open alerts, an open
    # through the overlay (whose backing open is of that same real file) not.
    expect_ok "$n.read-real" peek su -s /bin/sh nobody -c 'exec cat /tmp/ovl/lower/peek.txt'
    expect_ok "$n.read-backing" peek su -s /bin/sh nobody -c 'exec cat /tmp/ovl/merged/peek.txt'
    expect_ok "$n.read-lower" secret su -s /bin/sh nobody -c 'exec cat /tmp/ovl/merged/secret.txt'
    # Opening for append copies the file up to the upper layer.
    expect_ok "$n.append" "" su -s /bin/sh nobody -c 'echo more >>/tmp/ovl/merged/secret.txt'
    [ -f /tmp/ovl/upper/secret.txt ] && ok=1 || ok=0
    result "$n.copied-up" "$ok" "upper/secret.txt exists=$ok"
    expect_ok "$n.read-upper" "secret
more" su -s /bin/sh nobody -c 'exec cat /tmp/ovl/merged/secret.txt'
    expect_eperm "$n.block-eperm" su -s /bin/sh nobody -c 'exec cat /tmp/ovl/merged/blocked.txt'
    wait_alerts secret.txt 3 && wait_alerts peek.txt 1 && wait_alerts blocked.txt 1 && ok=1 || ok=0
    result "$n.alerts-seen" "$ok" "alert lines=$(grep -c . "$KOUT")"
    sleep 1
    stop_and_dump "$n"
    umount /tmp/ovl/merged
}

# A trapped file renamed, then linked: the kernel's tamper hooks report each
# with the process that did it and the new name; the rescan (every 300 ms)
# sees each change too and must not report it again: the guest waits for
# its log line saying so before the next step. The moved file stays trapped.
run_tamper() {
    t=$1
    n=$t.tamper
    rm -rf /tmp/tamper
    mkdir -p /tmp/tamper
    echo decoy >/tmp/tamper/secret.txt
    start_or_report "$t" /vmtest/policy-tamper.yaml "$n" "--rescan-ms 300" || return
    expect_ok "$n.rename" "" mv /tmp/tamper/secret.txt /tmp/tamper/moved.txt
    wait_log "already reported by the kernel" 1 && ok=1 || ok=0
    result "$n.rescan-quiet-rename" "$ok" "$(grep -c 'already reported' "$KERR") rescan lines"
    expect_ok "$n.link" "" ln /tmp/tamper/moved.txt /tmp/tamper/linked.txt
    wait_log "already reported by the kernel" 2 && ok=1 || ok=0
    result "$n.rescan-quiet-link" "$ok" "$(grep -c 'already reported' "$KERR") rescan lines"
    expect_ok "$n.read-moved" decoy cat /tmp/tamper/moved.txt
    wait_alerts secret.txt 3 && ok=1 || ok=0
    result "$n.alerts-seen" "$ok" "alert lines=$(grep -c . "$KOUT")"
    stop_and_dump "$n"
}

# KubeArmor rules enforced in the kernel (policy-kubearmor.yaml): Block;
# Allow + fromSource, where the source is an executable's inode (a hard link
# to it is the same source, another binary renamed to its name is not; the
# busybox copies are named busybox-* so that they run their first argument as
# the applet); readOnly, where a read passes and a write is refused.
run_kubearmor() {
    t=$1
    n=$t.ka
    rm -rf /tmp/ka
    mkdir -p /tmp/ka
    echo blocked >/tmp/ka/blocked.txt
    echo allowed >/tmp/ka/allowed.txt
    echo conf >/tmp/ka/conf.txt
    cp /bin/busybox /tmp/ka/busybox-reader
    ln /tmp/ka/busybox-reader /tmp/ka/busybox-alias
    start_or_report "$t" /vmtest/policy-kubearmor.yaml "$n" || return
    expect_eperm "$n.block-eperm" cat /tmp/ka/blocked.txt
    expect_ok "$n.allow-source" allowed /tmp/ka/busybox-reader cat /tmp/ka/allowed.txt
    expect_ok "$n.allow-alias" allowed /tmp/ka/busybox-alias cat /tmp/ka/allowed.txt
    expect_eperm "$n.allow-other" cat /tmp/ka/allowed.txt
    cp /bin/busybox /tmp/ka/impostor
    mv /tmp/ka/impostor /tmp/ka/busybox-reader
    expect_eperm "$n.allow-impostor" /tmp/ka/busybox-reader cat /tmp/ka/allowed.txt
    expect_ok "$n.readonly-read" conf cat /tmp/ka/conf.txt
    expect_eperm "$n.readonly-write" sh -c 'echo more >>/tmp/ka/conf.txt'
    expect_ok "$n.readonly-intact" conf cat /tmp/ka/conf.txt
    wait_alerts blocked.txt 1 && wait_alerts allowed.txt 2 && wait_alerts conf.txt 1 && ok=1 || ok=0
    result "$n.alerts-seen" "$ok" "alert lines=$(grep -c . "$KOUT")"
    sleep 1
    stop_and_dump "$n"
}

run_tier lsm
run_tier trampoline
run_kubearmor lsm
run_kubearmor trampoline
run_tamper lsm
run_tamper trampoline

# The overlay scenario needs overlayfs, a module in Debian's kernel.
if insmod /vmtest/overlay.ko; then
    run_overlay lsm
    run_overlay trampoline
else
    result overlay.module 0 "insmod overlay.ko failed"
fi

# With --tier auto kive must pick the best tier that loads: lsm on this kernel.
if start_or_report auto /vmtest/policy-vm.yaml auto; then
    expect_eperm auto.block-eperm cat /tmp/blocked.txt
    wait_alerts blocked.txt 1
    stop_and_dump auto
fi

finish
