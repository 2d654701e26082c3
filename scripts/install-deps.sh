#!/usr/bin/env bash
# Installs every Debian package that building, testing and benchmarking ringblk needs.
# Idempotent: packages already present are skipped by apt-get.
set -euo pipefail
pkgs=(
  build-essential meson ninja-build pkg-config python3
  libglib2.0-dev libjson-glib-dev liburing-dev libaio-dev
  clang libclang-rt-14-dev           # sanitizer runtime for clang, libFuzzer
  fio qemu-utils qemu-system-common  # references: fio, qemu-img, qemu-storage-daemon
  libnbd-bin python3-libnbd nbdkit   # NBD clients and a reference server
  strace util-linux gnuplot-nox       # syscall counts, prlimit, charts
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
