#!/usr/bin/env bash
# The kive plugin in a real Falco, the way Falco users run it:
#
#   make test-falco FALCO=/path/to/falco      (CI: ../shared/tools/falco/falco)
#
# Fails (never skips) when it cannot run: no FALCO, not executable, no jq,
# not root (live mode arms eBPF traps). Every check asserts what it names and
# prints `ok <name>` or `FAIL <name>: <why>`; the script exits non-zero on the
# first failure. Falco runs from the repository root with the repository's
# own falco.yaml; only the plugin's path (the build's libkive.so) and, for
# live mode, the policy files (decoys in a temporary directory, never a fixed
# path) are overridden.
set -euo pipefail
die() { echo "test-falco: $*" >&2; exit 1; }
FALCO=${FALCO:-}
# relative to where make (or the caller) runs, before the cd below
[ -z "$FALCO" ] || FALCO=$(realpath -m "$FALCO")
cd "$(dirname "$0")/.."

[ -n "$FALCO" ] || die "FALCO is not set: make test-falco FALCO=/path/to/falco"
[ -f "$FALCO" ] && [ -x "$FALCO" ] || die "FALCO=$FALCO is not an executable file"
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
[ "$(id -u)" = 0 ] || die "live mode arms eBPF traps: run as root"
"$FALCO" --version >/dev/null 2>&1 || die "$FALCO --version fails (missing libraries? see its setup.sh)"

CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-target}
$CARGO build --release -p kive --lib >&2
SO=$(realpath "$TARGET/release/libkive.so")
[ -f "$SO" ] || die "no $SO after the build"

TMP=$(mktemp -d /tmp/kive-test-falco.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL $CHECK: $*" >&2; exit 1; }
ok() { echo "ok $CHECK"; }
# always called in a subshell ($(...) or &): exec makes the subshell Falco
# itself, so that $! is Falco's pid and stop_falco/cleanup stop Falco, not a
# wrapper that would leave it running
falco() { exec "$FALCO" -c falco.yaml -o "plugins[0].library_path=$SO" -o log_stderr=true "$@"; }
# deadline loop: until "cmd" succeeds or $1 seconds pass
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------
CHECK=plugin_info
out=$(falco --plugin-info kive 2>&1) || fail "exit $?: $out"
grep -q '^Name: kive$' <<<"$out" || fail "no 'Name: kive' in: $out"
grep -q "Event Sourcing (ID=999, source='kive')" <<<"$out" || fail "no event sourcing capability: $out"
grep -q 'Field Extraction' <<<"$out" || fail "no extraction capability: $out"
grep -q 'Async Events' <<<"$out" || fail "no async events capability: $out"
grep -q '"asyncEvents"' <<<"$out" || fail "the init_config schema lacks asyncEvents: $out"
ok

CHECK=list_fields
out=$(falco --list=kive 2>&1) || fail "exit $?: $out"
for f in kive.path kive.policy.name kive.process.pid kive.container.id kive.container.shortid kive.alert; do
  grep -qE "^$f( |$)" <<<"$out" || fail "$f not listed in --list=kive"
done
ok

CHECK=validate_rules
for r in rules/*.yaml; do
  out=$(falco -V "$r" -o json_output=true 2>/dev/null) || fail "-V $r: exit $?: $out"
  jq -e '.falco_load_results | length > 0 and all(.successful and (.errors | length == 0) and (.warnings | length == 0))' \
    <<<"$(grep '^{' <<<"$out")" >/dev/null || fail "-V $r: $out"
done
ok

# ---------------------------------------------------------------------------
# replay: "file<TAB>rule<TAB>key=value;key=value" per expected alert, in order
CHECK=replay
# rule alerts only: falco.yaml turns metrics on, and Falco then also
# prints its "Falco internal: metrics snapshot" (source internal)
rule_alerts() { grep '^{' | jq -c 'select(.source != "internal")' || true; }
expect_replay() { # rule_matching file expectations...
  local matching=$1 file=$2; shift 2
  local out n i
  out=$(falco -r rules/kive_rules.yaml --disable-source=syscall -o "plugins[0].open_params=$file" \
    -o "rule_matching=$matching" 2>"$TMP/replay.err" | rule_alerts)
  n=$(grep -c . <<<"$out" || true)
  [ "$n" = $# ] || fail "$file: $n alerts, expected $#:\n$out\n$(cat "$TMP/replay.err")"
  i=0
  for e in "$@"; do
    local line rule kv
    line=$(sed -n "$((i + 1))p" <<<"$out")
    rule=${e%%	*}; kv=${e#*	}
    jq -e --arg r "$rule" '.rule == $r and .source == "kive"' <<<"$line" >/dev/null \
      || fail "$file alert $((i + 1)): expected rule '$rule' (source kive): $line"
    IFS=';' read -ra pairs <<<"$kv"
    for p in "${pairs[@]}"; do
      jq -e --arg k "${p%%=*}" --arg v "${p#*=}" '.output_fields | has($k) and (.[$k] | tostring) == $v' <<<"$line" >/dev/null \
        || fail "$file alert $((i + 1)): output_fields[${p%%=*}] is not '${p#*=}': $line"
    done
    i=$((i + 1))
  done
}
T=$'\t'
# the rules are mutually exclusive: the same alerts under first and all
for matching in first all; do
expect_replay $matching test_files/kive_alerts.jsonl \
  "Kive trap accessed${T}kive.path=/secret.txt;kive.policy.name=kive-sample-policy;kive.pod.name=nginx-pod;kive.pod.namespace=default;kive.access=read;kive.node.name=kive-worker" \
  "Kive trap accessed from outside its owner${T}kive.path=/root/.aws/credentials;kive.policy.name=decoy-aws-credentials;kive.accessor.pod.name=toolbox-5c8d7f9b4-qq7lm;kive.accessor.host=false;kive.owner=pod" \
  "Kive trap written${T}kive.path=/tmp/kive-secret.txt"
expect_replay $matching test_files/kive_run_host.jsonl \
  "Kive trap accessed (high)${T}kive.process.comm=cat;kive.policy.name=host-decoy;kive.access=read;kive.metadata[severity]=high" \
  "Kive trap accessed (high)${T}kive.process.comm=head;kive.access=read" \
  "Kive trap read by a shell${T}kive.process.comm=sh" \
  "Kive trap read by a shell${T}kive.process.comm=bash" \
  "Kive trap written${T}kive.process.comm=bash;kive.access=write,append" \
  "Kive trap accessed (high)${T}kive.process.comm=python3"
expect_replay $matching test_files/kive_policy_rules.jsonl \
  "Kive policy rule hit (severity 7-10)${T}kive.policy.severity=8;kive.policy.tags=MITRE,T1552;kive.policy.name=ksp-secrets" \
  "Kive policy rule hit${T}kive.policy.severity=3;kive.policy.message=config read" \
  "Kive trap written${T}kive.process.comm=bash" \
  "Kive trap read by a shell${T}kive.process.comm=sh"
done
ok

# the suggested output fields (append_output in falco.yaml) are appended
# once, never printed twice
CHECK=suggested_output_once
line=$(falco -r rules/kive_rules.yaml --disable-source=syscall -o "plugins[0].open_params=test_files/kive_alerts.jsonl" 2>/dev/null | rule_alerts | head -1)
out=$(jq -r .output <<<"$line")
for v in /secret.txt kive-sample-policy; do
  [ "$(grep -o -- "$v" <<<"$out" | grep -c .)" = 1 ] || fail "'$v' not exactly once in: $out"
done
jq -e '.output_fields["kive.process.pid"] == 176928' <<<"$line" >/dev/null || fail "suggested kive.process.pid not in output_fields: $line"
ok

# ---------------------------------------------------------------------------
# live: the repository's falco.yaml, its example policy with the decoy moved
# into $TMP, and a second decoy that marks "everything before it was seen".
policy() { # decoy-path policy-name
  sed -e "s|/tmp/kive-secret.txt|$1|" -e "s|name: host-decoy|name: $2|" examples/host-policy.yaml
}
start_falco() { # log-prefix extra-args...
  local name=$1; shift
  # Falco's stdout is block-buffered when it is not a terminal: alerts go
  # to a file output (written per alert) instead
  falco "$@" -o stdout_output.enabled=false -o file_output.enabled=true \
    -o file_output.keep_alive=false -o "file_output.filename=$TMP/$name.out" \
    >"$TMP/$name.stdout" 2>"$TMP/$name.err" &
  PIDS+=($!)
  wait_for 60 grep -qs 'kive: live on the' "$TMP/$name.err" \
    || fail "falco did not arm the traps within 60s: $(cat "$TMP/$name.err")"
}
alerts() { # log-prefix jq-filter
  grep -s '^{' "$TMP/$1.out" | jq -c "select(.source != \"internal\") | select($2)" 2>/dev/null || true
}
stop_falco() {
  local p=${PIDS[-1]}
  kill -TERM "$p"; wait "$p" || true
  unset 'PIDS[-1]'
}

CHECK=live
policy "$TMP/decoy" live-decoy >"$TMP/live.yaml"
policy "$TMP/marker" live-marker >"$TMP/marker.yaml"
start_falco live -r rules/kive_rules.yaml --disable-source=syscall \
  -o "plugins[0].init_config.policyFiles[0]=$TMP/live.yaml" \
  -o "plugins[0].init_config.policyFiles[1]=$TMP/marker.yaml"
cat "$TMP/decoy" >/dev/null
wait_for 30 grep -qs '"live-decoy"' "$TMP/live.out" || fail "no alert for the decoy within 30s: $(cat "$TMP/live.out")"
# the marker's alert comes after any duplicate of the decoy's (one ring, in order)
cat "$TMP/marker" >/dev/null
wait_for 30 grep -qs '"live-marker"' "$TMP/live.out" || fail "no alert for the marker within 30s"
stop_falco
got=$(alerts live '.output_fields["kive.policy.name"] == "live-decoy"')
[ "$(grep -c . <<<"$got")" = 1 ] || fail "expected exactly one alert for the decoy, got: $got"
jq -e --arg p "$TMP/decoy" '
  .source == "kive" and .rule == "Kive trap accessed (high)" and .priority == "Error"
  and .output_fields["kive.path"] == $p and .output_fields["kive.process.comm"] == "cat"
  and .output_fields["kive.access"] == "read" and .output_fields["kive.metadata[severity]"] == "high"
  and (.output_fields["kive.process.tgid"] | type == "number")' <<<"$got" >/dev/null \
  || fail "unexpected alert: $got"
ok

# the artifacts of make package, unpacked as falcoctl installs them (the
# plugin tarball into a plugins directory, the rules tarball into a rules
# directory): Falco loads that .so with those rules, and a replay through
# them alerts
CHECK=package
SO="$SO" DIST="$TMP/dist" ./scripts/package.sh >"$TMP/package.log" 2>&1 \
  || fail "make package: $(cat "$TMP/package.log")"
./scripts/check-package.sh "$TMP/dist" >"$TMP/check-package.log" 2>&1 \
  || fail "$(cat "$TMP/check-package.log")"
mkdir "$TMP/plugins" "$TMP/rules.d"
tar -C "$TMP/plugins" -xzf "$TMP"/dist/kive-*-linux-*.tar.gz
tar -C "$TMP/rules.d" -xzf "$TMP"/dist/kive-rules-*.tar.gz
packaged() { "$FALCO" -c falco.yaml -o "plugins[0].library_path=$TMP/plugins/libkive.so" -o log_stderr=true "$@"; }
out=$(packaged -V "$TMP/rules.d/kive_rules.yaml" -o json_output=true 2>/dev/null) || fail "-V of the packaged rules: $out"
jq -e '.falco_load_results | length > 0 and all(.successful and (.warnings | length == 0))' \
  <<<"$(grep '^{' <<<"$out")" >/dev/null || fail "-V of the packaged rules: $out"
got=$(packaged -r "$TMP/rules.d/kive_rules.yaml" --disable-source=syscall \
  -o "plugins[0].open_params=test_files/kive_alerts.jsonl" 2>"$TMP/package.err" | rule_alerts)
[ "$(grep -c . <<<"$got")" = 3 ] || fail "replay with the packaged .so and rules: $got $(cat "$TMP/package.err")"
ok

# deploy/helm: the `falco:` section of each values file, as the chart writes
# it into falco.yaml, loads in Falco (--dry-run: config, plugin init with its
# init_config, rules) with the packaged .so and rules at the paths falcoctl
# gives them. What the chart's own defaults add is added here too: an
# output (stdout), and, driver off, --disable-source syscall. The driver-on
# overlay replaces top-level keys of the base section (Helm replaces lists),
# and runs on nodriver, the only engine of this build.
CHECK=helm_values
falco_section() { # values file: its top-level `falco:` map, dedented
  awk '/^[^ #]/ {f = ($0 ~ /^falco:/); next} f' "$1" | sed 's/^  //'
}
merge_top() { # base overlay: the overlay's top-level keys replace the base's
  local keys
  keys=$(grep -oE '^[a-z_]+:' "$2" | tr -d : | paste -sd'|')
  awk -v k="^($keys):" '/^[^ #]/ {skip = ($0 ~ k)} !skip' "$1"
  cat "$2"
}
falco_section deploy/helm/values-kive.yaml >"$TMP/helm-off.yaml"
falco_section deploy/helm/values-kive-driver.yaml >"$TMP/helm-driver.yaml"
merge_top "$TMP/helm-off.yaml" "$TMP/helm-driver.yaml" >"$TMP/helm-on.yaml"
mkdir "$TMP/empty.d"
helm_dry_run() { # name config extra-args...
  local name=$1 cfg=$2; shift 2
  "$FALCO" -c "$cfg" --dry-run -o log_stderr=true -o stdout_output.enabled=true \
    -o "plugins[0].library_path=$TMP/plugins/libkive.so" "$@" >"$TMP/$name.log" 2>&1 \
    || fail "$name: falco --dry-run: $(cat "$TMP/$name.log")"
  grep -q "Loading plugin 'kive'" "$TMP/$name.log" || fail "$name: kive not loaded: $(cat "$TMP/$name.log")"
  ! grep -qi 'error' "$TMP/$name.log" || fail "$name: $(cat "$TMP/$name.log")"
}
grep -q '^rules_files:' "$TMP/helm-off.yaml" && grep -q '^load_plugins: \[kive\]' "$TMP/helm-off.yaml" \
  || fail "no rules_files/load_plugins in values-kive.yaml's falco section: $(cat "$TMP/helm-off.yaml")"
grep -q 'asyncEvents: true' "$TMP/helm-on.yaml" || fail "the driver overlay did not apply: $(cat "$TMP/helm-on.yaml")"
helm_dry_run helm-off "$TMP/helm-off.yaml" --disable-source=syscall \
  -o "rules_files[0]=$TMP/rules.d/kive_rules.yaml" -o "rules_files[1]=$TMP/empty.d"
grep -q 'kive_rules.yaml | schema validation: ok' "$TMP/helm-off.log" || fail "helm-off: rules: $(cat "$TMP/helm-off.log")"
helm_dry_run helm-on "$TMP/helm-on.yaml" -o engine.kind=nodriver \
  -o "rules_files[0]=$TMP/rules.d/kive_rules.yaml" -o "rules_files[1]=$TMP/rules.d/kive_syscall_rules.yaml" \
  -o "rules_files[2]=$TMP/empty.d"
grep -q 'kive_syscall_rules.yaml | schema validation: ok' "$TMP/helm-on.log" || fail "helm-on: rules: $(cat "$TMP/helm-on.log")"
ok

# async: asyncEvents on, both sources enabled (the syscall source with
# engine.kind: nodriver) with both rules files, under rule_matching: all (so
# that a rule matching twice would show). Two accesses to the decoy:
# - a bash that Falco's thread table knows (started before Falco, so its
#   /proc scan saw it), child of a sh, reading the decoy with a builtin
#   redirection: "Kive trap accessed by a child of a shell" fires in the
#   syscall source with the thread's proc.* fields;
# - a cat started afterwards (unknown to a nodriver Falco): "Kive trap
#   accessed by a process Falco tracks" fires with its thread id.
# Each access also gives exactly one alert of the kive source.
CHECK=async_live
policy "$TMP/adecoy" async-decoy >"$TMP/async.yaml"
mkfifo "$TMP/go"
sh -c 'bash -c "echo \$\$ >$1/reader.pid; read _ <$1/go; read _ <$1/adecoy"; :' sh "$TMP" &
PIDS+=($!)
wait_for 10 test -s "$TMP/reader.pid" || fail "the reader shell did not start"
reader=$(cat "$TMP/reader.pid")
PIDS+=("$reader")
start_falco async -r rules/kive_rules.yaml -r rules/kive_syscall_rules.yaml \
  -o "plugins[0].init_config.policyFiles[0]=$TMP/async.yaml" \
  -o plugins[0].init_config.asyncEvents=true -o rule_matching=all
# Falco opens the kive source first (whose plugin object also starts, then
# drops, an async capture), then the syscall source: wait for the
# registration that follows the syscall source's opening
syscall_async_ready() {
  awk '/Opening .syscall. source/ {s = 1} s && /alerts also go into the syscall source/ {f = 1}
       END {exit !f}' "$TMP/async.err"
}
wait_for 60 syscall_async_ready \
  || fail "the syscall inspector did not start kive's async events: $(cat "$TMP/async.err")"
# (a reader that died would leave the fifo without one: bounded)
timeout 10 sh -c 'echo go >"$1"' sh "$TMP/go" || fail "the reader shell is not reading its fifo"
cat "$TMP/adecoy" >/dev/null &
catpid=$!
wait "$catpid"
syscall_alert() { # pid
  alerts async ".source == \"syscall\" and .output_fields[\"thread.tid\"] == $1"
}
has_syscall_alerts() { [ -n "$(syscall_alert "$reader")" ] && [ -n "$(syscall_alert "$catpid")" ]; }
wait_for 30 has_syscall_alerts \
  || fail "no syscall-source alert for each access within 30s: $(cat "$TMP/async.out")"
stop_falco
grep -q 'Runtime error\|Error:' "$TMP/async.err" && fail "falco reported an error: $(cat "$TMP/async.err")"
for p in "$reader" "$catpid"; do
  got=$(syscall_alert "$p")
  [ "$(grep -c . <<<"$got")" = 1 ] || fail "expected one syscall-source alert for thread $p, got: $got"
  got=$(alerts async ".source == \"kive\" and .output_fields[\"kive.process.pid\"] == $p")
  [ "$(grep -c . <<<"$got")" = 1 ] || fail "expected one kive-source alert for pid $p, got: $got"
done
[ "$(alerts async '.source == "syscall"' | grep -c .)" = 2 ] \
  || fail "expected exactly two syscall-source alerts: $(alerts async '.source == "syscall"')"
jq -e --arg p "$TMP/adecoy" --argjson pid "$reader" '
  .rule == "Kive trap accessed by a child of a shell" and .priority == "Error"
  and .output_fields["kive.path"] == $p and .output_fields["kive.policy.name"] == "async-decoy"
  and .output_fields["kive.access"] == "read"
  and .output_fields["proc.pid"] == $pid and .output_fields["proc.name"] == "bash"
  and .output_fields["proc.pname"] == "sh" and .output_fields["user.name"] == "root"
  and (.output_fields["proc.cmdline"] | startswith("bash -c "))' <<<"$(syscall_alert "$reader")" >/dev/null \
  || fail "unexpected syscall-source alert for the shell's child: $(syscall_alert "$reader")"
jq -e --arg p "$TMP/adecoy" '
  .rule == "Kive trap accessed by a process Falco tracks" and .priority == "Warning"
  and .output_fields["kive.path"] == $p and .output_fields["kive.policy.name"] == "async-decoy"
  and .output_fields["kive.access"] == "read"' <<<"$(syscall_alert "$catpid")" >/dev/null \
  || fail "unexpected syscall-source alert for cat: $(syscall_alert "$catpid")"
ok

# ---------------------------------------------------------------------------
# webhook: open_params is an http:// listen address (port 0: the plugin
# picks one and logs it); curl POSTs a KiveAlert as kivebpf's callback
# does, and the shipped rule fires with the alert's output fields; a body
# that is not an alert gets 400 and no alert.
CHECK=webhook
command -v curl >/dev/null || fail "curl is needed"
falco -r rules/kive_rules.yaml --disable-source=syscall \
  -o "plugins[0].open_params=http://127.0.0.1:0/kive" \
  -o stdout_output.enabled=false -o file_output.enabled=true \
  -o file_output.keep_alive=false -o "file_output.filename=$TMP/webhook.out" \
  >"$TMP/webhook.stdout" 2>"$TMP/webhook.err" &
PIDS+=($!)
wait_for 60 grep -qs 'kive: webhook source listening on' "$TMP/webhook.err" \
  || fail "the webhook did not listen within 60s: $(cat "$TMP/webhook.err")"
url=$(grep -o 'listening on http://[^ ]*' "$TMP/webhook.err" | head -1 | sed 's/^listening on //')
code=$(curl -sS -o "$TMP/webhook.bad" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary '{"hello":"world"}' "$url") || fail "curl $url: exit $?"
[ "$code" = 400 ] || fail "a non-alert body got $code, not 400: $(cat "$TMP/webhook.bad")"
grep -q 'kive-alert-version' "$TMP/webhook.bad" || fail "the 400 does not name the field: $(cat "$TMP/webhook.bad")"
code=$(curl -sS -o "$TMP/webhook.resp" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary @test_files/seed_sample_alert.json "$url") || fail "curl $url: exit $?"
[ "$code" = 200 ] || fail "POST of a KiveAlert got $code: $(cat "$TMP/webhook.resp")"
wait_for 30 grep -qs '"kive-sample-policy"' "$TMP/webhook.out" \
  || fail "no alert for the POSTed KiveAlert within 30s: $(cat "$TMP/webhook.err")"
stop_falco
got=$(alerts webhook 'true')
[ "$(grep -c . <<<"$got")" = 1 ] || fail "expected exactly one alert, got: $got"
jq -e '
  .source == "kive" and .rule == "Kive trap accessed"
  and .output_fields["kive.path"] == "/secret.txt"
  and .output_fields["kive.policy.name"] == "kive-sample-policy"
  and .output_fields["kive.pod.name"] == "nginx-pod"
  and .output_fields["kive.pod.namespace"] == "default"
  and .output_fields["kive.node.name"] == "kive-worker"
  and .output_fields["kive.process.pid"] == 176928
  and .output_fields["kive.access"] == "read"' <<<"$got" >/dev/null \
  || fail "unexpected alert: $got"
ok
