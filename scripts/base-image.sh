#!/usr/bin/env bash
# natsim-base:<suite>: a minimal Debian root filesystem built with debootstrap from the Debian
# mirror this machine's apt already uses (read from its sources, never hard-coded), imported
# into Docker. `make image` uses it when no base image can be pulled.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")
tag="natsim-base:$suite"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "natsim image: $tag exists"
  exit 0
fi
mirror=$(python3 scripts/apt_mirror.py "$suite")
if ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "natsim image: debootstrap is needed: sudo apt-get install debootstrap" >&2; exit 3
  fi
  echo "natsim image: installing debootstrap"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } \
    > /tmp/natsim-apt.log 2>&1 || { tail -n 20 /tmp/natsim-apt.log >&2
    echo "natsim image: apt-get install debootstrap failed" >&2; exit 3; }
fi
rootfs=$(mktemp -d /tmp/natsim-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "natsim image: debootstrap $suite from $mirror (a few minutes, once)"
debootstrap --variant=minbase --include=python3,python3-venv,iproute2,procps,curl \
  "$suite" "$rootfs" "$mirror" > /tmp/natsim-debootstrap.log 2>&1 || {
  tail -n 30 /tmp/natsim-debootstrap.log >&2; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "natsim image: built $tag"
