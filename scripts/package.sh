#!/usr/bin/env bash
# make package: the kive plugin and its rules as falcosecurity ships its own
# plugins (falcosecurity/plugins' `make release/<plugin>`), into $DIST
# (default dist/):
#
#   kive-<version>-linux-<arch>.tar.gz        libkive.so (stripped) at its root
#   kive-rules-<version>.tar.gz               kive_rules.yaml (and the async
#                                             events' kive_syscall_rules.yaml)
#                                             at its root
#   kive-<version>-linux-<arch>.config.json   the plugin artifact's OCI config
#                                             (falcoctl: name, version,
#                                             requirement plugin_api_version)
#   kive-rules-<version>.config.json          the rules artifact's OCI config
#                                             (requirement engine_version_semver,
#                                             dependency on the kive plugin)
#   registry.yaml                             the plugin's entry in the style of
#                                             falcosecurity/plugins' registry.yaml
#   SHA256SUMS
#
# Everything is read from its source: name, version, required plugin API,
# source id and name, extraction sources, description and contact from the
# built libkive.so (its plugin_get_* symbols, through python3's ctypes); the
# architecture from its ELF header; the engine version and the plugin
# dependency from rules/kive_rules.yaml. SO=<path> packages that .so instead
# of building one (cargo build --release); KIVE_REPO_URL (the repository's
# web address) fills the registry entry's url and rules_url. Fails, never
# guesses, when one of them is missing.
set -euo pipefail
die() { echo "package: $*" >&2; exit 1; }
[ -z "${SO:-}" ] || SO=$(realpath -e "$SO")
[ -z "${DIST:-}" ] || DIST=$(realpath -m "$DIST")
cd "$(dirname "$0")/.."
DIST=${DIST:-$PWD/dist}
RULES=rules/kive_rules.yaml
for t in python3 jq tar gzip strip sha256sum; do
  command -v "$t" >/dev/null || die "$t is needed"
done

if [ -z "${SO:-}" ]; then
  ${CARGO:-cargo} build --release -p kive --lib >&2
  SO=$(realpath -e "${CARGO_TARGET_DIR:-target}/release/libkive.so")
fi

# the plugin's own description of itself
meta=$(python3 - "$SO" <<'PY'
import ctypes, json, struct, sys
path = sys.argv[1]
with open(path, "rb") as f:
    head = f.read(20)
if head[:4] != b"\x7fELF":
    sys.exit(f"{path}: not an ELF file")
machine = struct.unpack_from("<H", head, 18)[0]
arch = {62: ("x86_64", "linux/amd64"), 183: ("aarch64", "linux/arm64")}.get(machine)
if arch is None:
    sys.exit(f"{path}: ELF machine {machine} is neither x86_64 nor aarch64")
lib = ctypes.CDLL(path)
def text(sym):
    f = getattr(lib, sym)
    f.restype = ctypes.c_char_p
    return f().decode()
def number(sym):
    f = getattr(lib, sym)
    f.restype = ctypes.c_uint32
    return f()
print(json.dumps({
    "name": text("plugin_get_name"),
    "version": text("plugin_get_version"),
    "api": text("plugin_get_required_api_version"),
    "description": text("plugin_get_description"),
    "contact": text("plugin_get_contact"),
    "id": number("plugin_get_id"),
    "source": text("plugin_get_event_source"),
    "extract_sources": json.loads(text("plugin_get_extract_event_sources")),
    "arch": arch[0],
    "platform": arch[1],
}))
PY
) || die "cannot read the plugin's metadata from $SO"
get() { jq -r ".$1" <<<"$meta"; }
name=$(get name) version=$(get version) api=$(get api) arch=$(get arch)
[ "$name" = kive ] || die "$SO is plugin '$name', not kive"
semver='^[0-9]+\.[0-9]+\.[0-9]+$'
[[ $version =~ $semver ]] || die "plugin version '$version' is not semver"
[[ $api =~ $semver ]] || die "required plugin API '$api' is not semver"

# the rules' requirements (the keys falcoctl reads from a rulesfile)
engine=$(awk '/^- required_engine_version:/ {print $3}' "$RULES")
[[ $engine =~ $semver ]] || die "$RULES: required_engine_version '$engine' is not semver"
dep=$(awk '/^- required_plugin_versions:/ {p = 1; next}
           p && /^- / {exit}
           p && /- name:/ {n = $3}
           p && /version:/ && n == "kive" {print $2; exit}' "$RULES")
[[ $dep =~ $semver ]] || die "$RULES: no required_plugin_versions entry for kive"
ver_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
ver_le "$dep" "$version" || die "$RULES requires kive $dep, the plugin is $version"

plugin_base=$name-$version-linux-$arch
rules_base=$name-rules-$version
mkdir -p "$DIST"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/plugin" "$stage/rules"
strip --strip-debug -o "$stage/plugin/libkive.so" "$SO"
cp "$RULES" "$stage/rules/kive_rules.yaml"
cp rules/kive_syscall_rules.yaml "$stage/rules/kive_syscall_rules.yaml"
# reproducible archives: fixed owner, order and time (the last commit's, or
# SOURCE_DATE_EPOCH)
mtime=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
pack() { # dir archive: the dir's files at the archive's root, no ./ prefix
  local files
  mapfile -t files < <(cd "$1" && ls -A)
  tar -C "$1" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    --mode=u+rwX,go+rX,go-w -cf - "${files[@]}" | gzip -9n >"$2"
}
pack "$stage/plugin" "$DIST/$plugin_base.tar.gz"
pack "$stage/rules" "$DIST/$rules_base.tar.gz"

jq -n --arg n "$name" --arg v "$version" --arg api "$api" \
  '{name: $n, version: $v, requirements: [{name: "plugin_api_version", version: $api}]}' \
  >"$DIST/$plugin_base.config.json"
jq -n --arg n "$name-rules" --arg v "$version" --arg p "$name" --arg dep "$dep" --arg e "$engine" \
  '{name: $n, version: $v, dependencies: [{name: $p, version: $dep}],
    requirements: [{name: "engine_version_semver", version: $e}]}' \
  >"$DIST/$rules_base.config.json"

# registry.yaml entry (falcosecurity/plugins' schema); its values are JSON
# strings, which YAML reads as they are
{
  echo "# The kive plugin's entry in the style of falcosecurity/plugins' registry.yaml."
  echo "# Source id $(get id) is the id the registry reserves for development: registering"
  echo "# kive there means requesting an id of its own (and rebuilding with it)."
  echo "# url/rules_url: set KIVE_REPO_URL=https://github.com/<owner>/kive for make package."
  echo "plugins:"
  echo "  - name: $(jq '.name' <<<"$meta")"
  echo "    description: $(jq '.description' <<<"$meta")"
  echo "    authors: $(jq '.contact' <<<"$meta")"
  echo "    contact: $(jq '.contact' <<<"$meta")"
  echo "    keywords: [filesystem, tripwire, decoy, honeytoken, ebpf, kubernetes]"
  if [ -n "${KIVE_REPO_URL:-}" ]; then
    echo "    url: $(jq -n --arg u "$KIVE_REPO_URL" '$u')"
    echo "    rules_url: $(jq -n --arg u "$KIVE_REPO_URL/tree/main/rules" '$u')"
  fi
  echo "    license: Apache-2.0"
  echo "    capabilities:"
  echo "      sourcing:"
  echo "        supported: true"
  echo "        id: $(get id)"
  echo "        source: $(jq '.source' <<<"$meta")"
  echo "      extraction:"
  echo "        supported: true"
  echo "        sources: $(jq -c '.extract_sources' <<<"$meta")"
} >"$DIST/registry.yaml"

(cd "$DIST" && sha256sum "$plugin_base.tar.gz" "$rules_base.tar.gz" \
  "$plugin_base.config.json" "$rules_base.config.json" registry.yaml >SHA256SUMS)
echo "package: $DIST/$plugin_base.tar.gz (plugin API $api, $(get platform))"
echo "package: $DIST/$rules_base.tar.gz (engine $engine, needs kive $dep)"
