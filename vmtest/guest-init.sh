#!/bin/sh
# /init of the vmtest initramfs (busybox ash, PID 1 in the guest).
# Mounts what kive needs, runs the scenarios and prints machine-readable lines
# on the serial console (see vmtest/run.sh for the protocol), then powers off.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# Keep kernel chatter off the console so it cannot split our lines; the
# kernel log is dumped in its own section at the end instead.
echo 1 >/proc/sys/kernel/printk

. /vmtest/config

echo "KIVE-VM-BOOTED kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm) btf=$(test -e /sys/kernel/btf/vmlinux && echo yes || echo no)"

result() { # name ok detail...
    n=$1
    o=$2
    shift 2
    echo "KIVE-VM-RESULT name=$n ok=$o detail=$*"
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

# Untrapped file, created before kive starts.
echo free >/tmp/free.txt

# start_kive TIER: start kive in the background; sets KPID, KOUT, KERR.
# Returns 0 once stderr shows "armed=", 1 if kive died or never got there.
start_kive() {
    KOUT=/tmp/kive-$1.out
    KERR=/tmp/kive-$1.err
    kive run --policy /vmtest/policy-vm.yaml --tier "$1" --format json >"$KOUT" 2>"$KERR" &
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

# wait_alert PATTERN: wait up to 20 s for a stdout line containing PATTERN.
wait_alert() {
    i=0
    while [ $i -lt 100 ]; do
        grep -q "$1" "$KOUT" && return 0
        usleep 200000
        i=$((i + 1))
    done
    return 1
}

# The tier named on the "armed=" startup line.
active_tier() {
    grep 'armed=' "$KERR" | head -n1 | grep -o 'tier=[a-z_-]*' | head -n1 | cut -d= -f2
}

run_tier() {
    t=$1
    t0=$(now)
    if ! start_kive "$t"; then
        result "$t.start" 0 "kive did not arm (still running: $(kill -0 $KPID 2>/dev/null && echo yes || echo no))"
        stop_kive
        dump "$t.stdout" "$KOUT"
        dump "$t.stderr" "$KERR"
        return
    fi
    got=$(active_tier)
    armed=$(grep 'armed=' "$KERR" | head -n1 | grep -o 'armed=[0-9]*')
    if [ "$got" = "$t" ]; then ok=1; else ok=0; fi
    result "$t.start" $ok "tier=$got $armed after $(now) (started $t0)"

    # A blocked trap: the open must fail with EPERM.
    msg=$(cat /tmp/blocked.txt 2>&1)
    rc=$?
    case "$msg" in
    *"Operation not permitted"*) [ $rc != 0 ] && ok=1 || ok=0 ;;
    *) ok=0 ;;
    esac
    result "$t.block-eperm" $ok "rc=$rc msg=$msg"

    # An audited trap: the open succeeds.
    msg=$(cat /tmp/audited.txt 2>&1)
    rc=$?
    [ $rc = 0 ] && ok=1 || ok=0
    result "$t.audit-open" $ok "rc=$rc msg=$msg"

    # An untrapped file: opens normally (its "no alert" is checked on the host).
    msg=$(cat /tmp/free.txt 2>&1)
    rc=$?
    [ $rc = 0 ] && [ "$msg" = free ] && ok=1 || ok=0
    result "$t.free-open" $ok "rc=$rc msg=$msg"

    # Alerts arrive asynchronously through the ring buffer.
    wait_alert blocked.txt && wait_alert audited.txt && ok=1 || ok=0
    result "$t.alerts-seen" $ok "alert lines=$(grep -c . "$KOUT")"
    # Give a wrong alert for free.txt the time to show up too.
    sleep 1

    stop_kive
    [ "$KRC" = 0 ] && ok=1 || ok=0
    result "$t.exit" $ok "exit=$KRC on SIGINT"
    dump "$t.stdout" "$KOUT"
    dump "$t.stderr" "$KERR"
}

run_tier lsm
run_tier trampoline

# Without --tier, kive must pick the best tier that loads: lsm on this kernel.
if start_kive auto; then
    got=$(active_tier)
    [ "$got" = lsm ] && ok=1 || ok=0
    result auto.start $ok "tier=$got"
    msg=$(cat /tmp/blocked.txt 2>&1)
    rc=$?
    case "$msg" in *"Operation not permitted"*) ok=1 ;; *) ok=0 ;; esac
    result auto.block-eperm $ok "rc=$rc msg=$msg"
else
    result auto.start 0 "kive did not arm"
fi
stop_kive
result auto.exit "$([ "$KRC" = 0 ] && echo 1 || echo 0)" "exit=$KRC on SIGINT"
dump auto.stderr "$KERR"

finish
