#!/usr/bin/env bash
# Checks what scripts/package.sh made (make package-check; CI): every file
# named as falcosecurity names its plugin artifacts, each tarball holding
# exactly its file at its root (the .so stripped of debug info, the rules
# byte for byte rules/kive_rules.yaml and kive_syscall_rules.yaml), the OCI configs carrying what the
# unpacked .so and the rules say (plugin API version, engine version, the
# kive dependency), the registry entry the .so's id and sources, and the
# checksums. Prints `ok <name>` per check; fails on the first mismatch.
#
#   scripts/check-package.sh DIST
set -euo pipefail
die() { echo "check-package: $*" >&2; exit 1; }
[ $# = 1 ] || die "usage: $0 DIST"
DIST=$(realpath -e "$1")
cd "$(dirname "$0")/.."
for t in python3 jq tar sha256sum readelf; do
  command -v "$t" >/dev/null || die "$t is needed"
done
CHECK=
fail() { echo "FAIL package/$CHECK: $*" >&2; exit 1; }
ok() { echo "ok package/$CHECK"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

CHECK=files
shopt -s nullglob
plugins=("$DIST"/kive-*-linux-*.tar.gz)
[ ${#plugins[@]} = 1 ] || fail "expected one kive-<version>-linux-<arch>.tar.gz, found: ${plugins[*]:-none}"
base=$(basename "${plugins[0]}" .tar.gz)
[[ $base =~ ^kive-([0-9]+\.[0-9]+\.[0-9]+)-linux-(x86_64|aarch64)$ ]] || fail "plugin tarball name $base"
version=${BASH_REMATCH[1]}
want=("$base.tar.gz" "$base.config.json" "kive-rules-$version.tar.gz"
  "kive-rules-$version.config.json" registry.yaml SHA256SUMS)
got=$(cd "$DIST" && ls -A | sort)
[ "$got" = "$(printf '%s\n' "${want[@]}" | sort)" ] || fail "dist holds: $got"
ok

CHECK=sha256sums
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || fail "checksums do not match"
[ "$(wc -l <"$DIST/SHA256SUMS")" = 5 ] || fail "SHA256SUMS does not list the five artifacts"
ok

CHECK=plugin_tarball
[ "$(tar -tzf "$DIST/$base.tar.gz")" = libkive.so ] || fail "not exactly libkive.so at the root: $(tar -tzf "$DIST/$base.tar.gz")"
tar -C "$TMP" -xzf "$DIST/$base.tar.gz"
[ -f "$TMP/libkive.so" ] && [ -x "$TMP/libkive.so" ] || fail "libkive.so is not an executable regular file"
readelf -S "$TMP/libkive.so" | grep -q '\.debug_info' && fail "libkive.so keeps its debug info"
meta=$(python3 - "$TMP/libkive.so" <<'PY'
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
def text(sym):
    f = getattr(lib, sym)
    f.restype = ctypes.c_char_p
    return f().decode()
f = lib.plugin_get_id
f.restype = ctypes.c_uint32
print(json.dumps({"name": text("plugin_get_name"), "version": text("plugin_get_version"),
                  "api": text("plugin_get_required_api_version"), "id": f(),
                  "source": text("plugin_get_event_source"),
                  "extract_sources": json.loads(text("plugin_get_extract_event_sources"))}))
PY
) || fail "the unpacked libkive.so does not load"
jq -e --arg v "$version" '.name == "kive" and .version == $v' <<<"$meta" >/dev/null \
  || fail "the unpacked .so says $meta, the tarball's name $version"
ok

CHECK=plugin_config
jq -e --argjson m "$meta" '
  . == {name: "kive", version: $m.version,
        requirements: [{name: "plugin_api_version", version: $m.api}]}' \
  "$DIST/$base.config.json" >/dev/null || fail "$(cat "$DIST/$base.config.json") vs the .so's $meta"
ok

CHECK=rules_tarball
[ "$(tar -tzf "$DIST/kive-rules-$version.tar.gz")" = $'kive_rules.yaml\nkive_syscall_rules.yaml' ] \
  || fail "not exactly kive_rules.yaml and kive_syscall_rules.yaml at the root: $(tar -tzf "$DIST/kive-rules-$version.tar.gz")"
tar -C "$TMP" -xzf "$DIST/kive-rules-$version.tar.gz"
for r in kive_rules.yaml kive_syscall_rules.yaml; do
  cmp -s "$TMP/$r" "rules/$r" || fail "$r differs from rules/$r"
done
ok

CHECK=rules_config
engine=$(awk '/^- required_engine_version:/ {print $3}' rules/kive_rules.yaml)
jq -e --arg v "$version" --arg e "$engine" '
  .name == "kive-rules" and .version == $v
  and .requirements == [{name: "engine_version_semver", version: $e}]
  and (.dependencies | length == 1) and .dependencies[0].name == "kive"
  and (.dependencies[0].version | test("^[0-9]+\\.[0-9]+\\.[0-9]+$"))' \
  "$DIST/kive-rules-$version.config.json" >/dev/null \
  || fail "$(cat "$DIST/kive-rules-$version.config.json") (engine $engine, version $version)"
dep=$(jq -r '.dependencies[0].version' "$DIST/kive-rules-$version.config.json")
grep -A3 '^- required_plugin_versions:' rules/kive_rules.yaml | grep -q "version: $dep\$" \
  || fail "dependency kive $dep is not the rules' required_plugin_versions"
ok

CHECK=registry
# the entry's values, as `key: value` lines (JSON strings or plain words)
reg() { grep -E "^[ -]+$1: " "$DIST/registry.yaml" | head -1 | sed -E "s/^[ -]+$1: //"; }
[ "$(reg name)" = '"kive"' ] || fail "name: $(reg name)"
[ "$(reg id)" = "$(jq .id <<<"$meta")" ] || fail "id $(reg id), the .so's $(jq .id <<<"$meta")"
[ "$(reg source)" = "$(jq .source <<<"$meta")" ] || fail "source $(reg source)"
[ "$(reg sources)" = "$(jq -c .extract_sources <<<"$meta")" ] || fail "extraction sources $(reg sources)"
[ "$(reg license)" = Apache-2.0 ] || fail "license $(reg license)"
grep -q '^plugins:$' "$DIST/registry.yaml" || fail "no plugins: list"
ok
