#!/usr/bin/env bash
# kube-apiserver and kube-controller-manager for the rehearsal's control plane, built from the Go module proxy
# into a cache outside the repository (default ~/.cache/control-plane/bin). Measured on 2 shared cores:
# see README ("Rehearsal: the control plane"). etcd comes from Debian (`apt-get install etcd-server`).
#   bash scripts/build_control_plane.sh            build what is missing
# `go install k8s.io/kubernetes/cmd/...@vX` is refused (its go.mod replaces the staging modules with local
# paths), so a tiny module requires k8s.io/kubernetes and replaces each staging module with its published tag.
set -euo pipefail
KUBE_VERSION="${KUBE_VERSION:-v1.34.3}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
CACHE="${CONTROL_PLANE_CACHE:-$HOME/.cache/control-plane}"
MOD="$CACHE/src/cpbuild-$KUBE_VERSION"
BIN="$CACHE/bin"
mkdir -p "$MOD" "$BIN"
for d in /usr/local/go/bin; do [ -d "$d" ] && [[ ":$PATH:" != *":$d:"* ]] && PATH="$PATH:$d"; done
command -v go >/dev/null || { echo "need Go (apt-get install golang-go, or go.dev/dl)" >&2; exit 1; }

STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client
csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
sample-apiserver sample-cli-plugin sample-controller"

if [ ! -f "$MOD/go.sum" ]; then
  {
    echo "module cpbuild"; echo; echo "go 1.26"; echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"; echo
    for s in $STAGING; do echo "replace k8s.io/$s => k8s.io/$s $STAGING_VERSION"; done
  } > "$MOD/go.mod"
  cat > "$MOD/main.go" <<'GO'
// Package main only records the dependencies of the two commands the rehearsal builds.
package main

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {}
GO
  (cd "$MOD" && GOFLAGS=-mod=mod go mod tidy)
fi

for cmd in kube-apiserver kube-controller-manager; do
  if [ -x "$BIN/$cmd" ] && "$BIN/$cmd" --version 2>/dev/null | grep -q "$KUBE_VERSION"; then
    echo "$cmd: cached ($BIN/$cmd)"; continue
  fi
  start=$(date +%s)
  (cd "$MOD" && GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
     -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  echo "$cmd: built in $(( $(date +%s) - start ))s -> $BIN/$cmd"
done
