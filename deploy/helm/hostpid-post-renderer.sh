#!/usr/bin/env bash
# Helm post-renderer for the falcosecurity/falco chart: adds `hostPID: true`
# to the Falco DaemonSet's pod, which the chart has no value for (kive finds
# a pod's processes through its cgroup's cgroup.procs and /proc/<pid>/root:
# node pids). Reads the rendered manifests on stdin, writes them on stdout.
#
#   helm install ... --post-renderer deploy/helm/hostpid-post-renderer.sh
#
# Needs kubectl (its built-in kustomize). Checked by hand with kubectl 1.32
# on a DaemonSet manifest; not run against the chart here (no helm).
set -euo pipefail
command -v kubectl >/dev/null || { echo "hostpid-post-renderer: kubectl is needed" >&2; exit 1; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cat >"$d/all.yaml"
cat >"$d/kustomization.yaml" <<'K'
resources: [all.yaml]
patches:
  - target: {kind: DaemonSet}
    patch: |-
      - op: add
        path: /spec/template/spec/hostPID
        value: true
K
kubectl kustomize "$d"
