#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 from Debian bookworm's `kubernetes` source
# package (1.20.5+really1.20.2, full upstream tree with vendor/), offline, with Debian's Go 1.19, and caches them in
#   ${THESEUS_CACHE:-$HOME/.cache/theseus}/kubernetes-v1.20.2/bin
# Reuses the cached binaries when present (a second run takes a second). The first run installs Debian packages
# (needs root or sudo), enables deb-src, and compiles for about 5-7 minutes on 2 cores.
# After a successful build the sources and Go build cache (about 2 GB) are removed unless --keep-build is given.
#
# Usage: scripts/build-kubernetes.sh [--force] [--keep-build]
#   --force       rebuild even when the binaries are cached
#   --keep-build  keep the unpacked sources and the Go build cache (faster rebuilds, about 2 GB)
set -euo pipefail

K8S_VERSION=v1.20.2
CACHE_ROOT="${THESEUS_CACHE:-$HOME/.cache/theseus}"
OUT_DIR="$CACHE_ROOT/kubernetes-$K8S_VERSION"
BIN_DIR="$OUT_DIR/bin"
SRC_ROOT="$OUT_DIR/src"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)
APT_PACKAGES=(dpkg-dev golang-1.19-go etcd-server golang-github-modern-go-reflect2-dev make rsync)
GO_BIN=/usr/lib/go-1.19/bin
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

step() { printf '\n==> [build-kubernetes] %s\n' "$*" >&2; }
die() {
  printf '\nbuild-kubernetes: ERROR: %s\n' "$1" >&2
  [[ $# -gt 1 ]] && printf 'build-kubernetes: what to do: %s\n' "$2" >&2
  exit 1
}
trap 'die "command failed at line $LINENO: $BASH_COMMAND" "read the output above; rerun with --force for a clean rebuild"' ERR

FORCE=0
KEEP_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --keep-build) KEEP_BUILD=1 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" "run $0 --help" ;;
  esac
done

binaries_ok() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -x "$BIN_DIR/$c" ]] || return 1
    "$BIN_DIR/$c" --version 2>/dev/null | grep -q "$K8S_VERSION" || return 1
  done
  command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] || return 1
}

if [[ $FORCE -eq 0 ]] && binaries_ok; then
  step "reusing cached binaries in $BIN_DIR ($(printf '%s ' "${COMPONENTS[@]}"))"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "installing Debian packages needs root" "run this script as root or install sudo"
  SUDO=(sudo)
fi

# --- 1. deb-src and packages --------------------------------------------------------------------------------------
if ! apt-get source --print-uris kubernetes >/dev/null 2>&1; then
  step "enabling deb-src for bookworm (/etc/apt/sources.list.d/theseus-deb-src.sources)"
  "${SUDO[@]}" tee /etc/apt/sources.list.d/theseus-deb-src.sources >/dev/null <<'EOF'
# Added by theseus scripts/build-kubernetes.sh: the kubernetes source package is fetched with `apt-get source`.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  step "apt-get update"
  "${SUDO[@]}" apt-get update -q || die "apt-get update failed" "check network access to deb.debian.org"
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  step "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed" "run 'apt-get update' and retry; these packages are in Debian bookworm main"
fi
[[ -x $GO_BIN/go ]] || die "Go 1.19 not found at $GO_BIN/go" "apt-get install golang-1.19-go"
[[ -d $REFLECT2_SRC ]] || die "reflect2 v1.0.2 sources not found at $REFLECT2_SRC" \
  "apt-get install golang-github-modern-go-reflect2-dev"

# --- 2. source ---------------------------------------------------------------------------------------------------
mkdir -p "$SRC_ROOT" "$BIN_DIR"
SRC_DIR=$(find "$SRC_ROOT" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
if [[ -z $SRC_DIR || ! -f $SRC_DIR/.theseus-patched || $FORCE -eq 1 ]]; then
  step "fetching the kubernetes source package with apt-get source (about 30 MB download, 600 MB unpacked)"
  rm -rf "${SRC_ROOT:?}"/*
  (cd "$SRC_ROOT" && apt-get source -q kubernetes) || die "apt-get source kubernetes failed" \
    "check that deb-src is enabled (/etc/apt/sources.list.d/theseus-deb-src.sources) and run apt-get update"
  SRC_DIR=$(find "$SRC_ROOT" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [[ -n $SRC_DIR && -f $SRC_DIR/go.mod && -d $SRC_DIR/vendor ]] \
    || die "unexpected source layout under $SRC_ROOT (no go.mod or vendor/)" "remove $SRC_ROOT and retry"

  step "patching: reflect2 v1.0.1 -> v1.0.2 (v1.0.1 crashes at run time with Go >= 1.18)"
  rm -rf "$SRC_DIR/vendor/github.com/modern-go/reflect2"
  mkdir -p "$SRC_DIR/vendor/github.com/modern-go/reflect2"
  # Only the package's Go files and licence belong in vendor/ (no tests, no debian packaging bits).
  find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name 'LICENSE' \) ! -name '*_test.go' \
    -exec cp {} "$SRC_DIR/vendor/github.com/modern-go/reflect2/" \;
  # go.mod pins it with a replace directive (`reflect2 => reflect2 v1.0.1`); modules.txt mirrors go.mod.
  sed -i 's#\(github.com/modern-go/reflect2\) v1\.0\.1#\1 v1.0.2#g' "$SRC_DIR/go.mod" "$SRC_DIR/vendor/modules.txt"
  ! grep -q 'modern-go/reflect2 v1.0.1' "$SRC_DIR/go.mod" "$SRC_DIR/vendor/modules.txt" \
    || die "could not update reflect2 to v1.0.2 in go.mod and vendor/modules.txt" "remove $SRC_ROOT and retry"

  step "patching: reorder vendor/modules.txt for Go >= 1.17"
  node "$SCRIPT_DIR/reorder-modules-txt.mjs" "$SRC_DIR/vendor/modules.txt" \
    || die "could not reorder vendor/modules.txt" "check that node (>= 20) is on PATH"
  touch "$SRC_DIR/.theseus-patched"
fi

# --- 3. build ----------------------------------------------------------------------------------------------------
export PATH="$GO_BIN:$PATH" GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on CGO_ENABLED=0 GOTOOLCHAIN=local
export GOCACHE="$OUT_DIR/gocache" GOPATH="$OUT_DIR/gopath"
cd "$SRC_DIR"
if [[ ! -s pkg/generated/openapi/zz_generated.openapi.go ]]; then
  step "generating pkg/generated/openapi (make gen_openapi, offline; 1-3 minutes)"
  make gen_openapi || die "make gen_openapi failed" "read the output above; the log of a clean rerun: $0 --force"
fi
for c in "${COMPONENTS[@]}"; do
  step "compiling $c (several minutes on 2 cores; started $(date -u +%H:%M:%S))"
  go build -trimpath -o "$BIN_DIR/$c.tmp" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=20 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    "./cmd/$c" || die "go build ./cmd/$c failed" "read the compiler output above"
  mv "$BIN_DIR/$c.tmp" "$BIN_DIR/$c"
done

binaries_ok || die "built binaries do not report $K8S_VERSION" "rerun with --force"
if [[ $KEEP_BUILD -eq 0 ]]; then
  step "removing the sources and the Go build cache (keep them with --keep-build)"
  cd "$OUT_DIR"
  chmod -R u+w "$OUT_DIR/gocache" "$OUT_DIR/gopath" "$SRC_ROOT" 2>/dev/null || true
  rm -rf "${OUT_DIR:?}/gocache" "${OUT_DIR:?}/gopath" "${SRC_ROOT:?}"
fi
step "done: $(printf '%s ' "${COMPONENTS[@]}")in $BIN_DIR; etcd: $(command -v etcd)"
