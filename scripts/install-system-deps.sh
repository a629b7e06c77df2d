#!/usr/bin/env bash
# Makes this machine ready for the tests and the demo, doing only what is missing, so a second run costs a second:
# the Debian packages they use, and the local clusters' control plane (built once from Debian's kubernetes source by
# scripts/build-kubernetes.sh, about 1 minute of apt plus 5-9 minutes of compiling on 2 cores, cached in ~/.cache/theseus).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(ca-certificates openssl)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

scripts/build-kubernetes.sh
echo "system dependencies: ok"
