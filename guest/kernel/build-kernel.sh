#!/bin/bash
# build-kernel.sh FRAGMENT OUT_VMLINUX WORK_DIR — build the NeuroVisor guest kernel.
#
# `make tinyconfig` from Debian's linux-source-6.1 tarball, plus the reviewed fragment
# (nv-guest.config), then `make vmlinux`. The result is an ELF vmlinux with the PVH note that
# QEMU (`-kernel vmlinux`) and Firecracker boot directly. Called by guest/build.sh, which decides
# whether a build is needed (content hash) and holds the lock; this script only builds.
# The full make log is kept in WORK_DIR/kernel.log; only failures are printed.
set -euo pipefail

die() { echo "build-kernel: $*" >&2; exit 1; }

[[ $# -eq 3 ]] || die "usage: build-kernel.sh FRAGMENT OUT_VMLINUX WORK_DIR"
fragment=$(realpath "$1")
out=$2
work=$3
tarball=/usr/src/linux-source-6.1.tar.xz
[[ -f $tarball ]] || die "$tarball missing: apt-get install linux-source-6.1"
for tool in make gcc flex bison bc; do
  command -v "$tool" >/dev/null || die "'$tool' missing: apt-get install build-essential flex bison bc"
done
[[ -f /usr/include/libelf.h ]] || die "libelf headers missing: apt-get install libelf-dev"

rm -rf "$work"
mkdir -p "$work"
log=$work/kernel.log
src=$work/linux-source-6.1

fail() {
  echo "build-kernel: $1 failed; last lines of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}

tar -C "$work" -xJf "$tarball" || die "extracting $tarball failed"
jobs=$(nproc)
(
  cd "$src"
  make tinyconfig
  # merge_config.sh -m: merge only; olddefconfig then resolves dependencies.
  scripts/kconfig/merge_config.sh -m .config "$fragment"
  make olddefconfig
) >"$log" 2>&1 || fail "configuring the kernel"

# Every option of the fragment must have survived dependency resolution.
missing=0
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    grep -qx -- "$line" "$src/.config" || {
      echo "build-kernel: $line requested but .config has:" \
        "$(grep -E "(^|# )${BASH_REMATCH[1]}[= ]" "$src/.config" || echo 'nothing')" >&2
      missing=1
    }
  elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    # Asked off: neither built in nor a module (a select from another option would turn it on).
    if grep -qE "^${BASH_REMATCH[1]}=[ym]" "$src/.config"; then
      echo "build-kernel: ${BASH_REMATCH[1]} requested off but .config has:" \
        "$(grep -E "^${BASH_REMATCH[1]}=" "$src/.config")" >&2
      missing=1
    fi
  fi
done <"$fragment"
[[ $missing -eq 0 ]] || die "the fragment does not apply cleanly (see above)"

(cd "$src" && make -j"$jobs" vmlinux) >>"$log" 2>&1 || fail "make vmlinux"

# Symbols are of no use in the guest; strip keeps the PVH ELF note.
mkdir -p "$(dirname "$out")"
strip -o "$out.tmp" "$src/vmlinux" || die "strip $src/vmlinux failed"
mv -f "$out.tmp" "$out"
cp "$src/.config" "$out.config"
rm -rf "$src"
