#!/bin/bash
# build-rootfs.sh PACKAGES_FILE OUT_TREE — the guest's base root tree, from Debian packages.
#
# mmdebstrap (variant essential + the packages listed in PACKAGES_FILE) into a directory, using
# this machine's own apt sources; nothing is mounted by us. The agent is not part of the base tree:
# guest/build.sh copies it in as /sbin/nv-guest-agent and runs `mkfs.ext4 -d` over the tree, so
# changing the agent does not rebuild this. Runs as root (mmdebstrap's root mode). Only failures
# are printed; the log is kept next to the tree as OUT_TREE.log.
set -euo pipefail

die() { echo "build-rootfs: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || die "usage: build-rootfs.sh PACKAGES_FILE OUT_TREE"
packages_file=$1
out=$2
[[ $(id -u) -eq 0 ]] || die "must run as root (mmdebstrap root mode, device nodes, ownership)"
command -v mmdebstrap >/dev/null || die "mmdebstrap missing: apt-get install mmdebstrap"
hooks=/usr/share/mmdebstrap/hooks/merged-usr
[[ -d $hooks ]] || die "$hooks missing (mmdebstrap too old?)"

# One package per line, '#' comments allowed.
packages=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$packages_file" | grep -v '^$' | paste -sd,)
[[ -n $packages ]] || die "no packages in $packages_file"

# The machine's apt sources: deb822 files and one-line lists, whichever exist.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
do
  [[ -s $f ]] && sources+=("$f")
done
[[ ${#sources[@]} -gt 0 ]] || die "no apt sources in /etc/apt (sources.list, sources.list.d/)"

tmp=$out.tmp
rm -rf "$tmp" "$out"
log=$out.log

# Excluded paths: documentation, manuals and translations are dead weight in a sandbox
# (copyright files stay). The customize hooks:
#  - create the unprivileged user `nv` (uid/gid 1000) the agent runs programs as;
#  - make /etc/hostname, /etc/hosts point at the names the agent sets at reseed;
#  - drop apt lists and caches (the image has no network and never installs anything).
if ! mmdebstrap --quiet --mode=root --variant=essential --include="$packages" \
    --hook-dir="$hooks" \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='echo "nv:x:1000:1000:NeuroVisor sandbox:/tmp:/bin/sh" >> "$1/etc/passwd"' \
    --customize-hook='echo "nv:x:1000:" >> "$1/etc/group"' \
    --customize-hook='echo "nv:*:19000:0:99999:7:::" >> "$1/etc/shadow"' \
    --customize-hook='echo nv-guest > "$1/etc/hostname"' \
    --customize-hook='printf "127.0.0.1 localhost\n::1 localhost\n" > "$1/etc/hosts"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tmp" "${sources[@]}" >"$log" 2>&1; then
  echo "build-rootfs: mmdebstrap failed; last lines of $log:" >&2
  tail -n 30 "$log" >&2
  rm -rf "$tmp"
  exit 1
fi
for p in /usr/bin/python3 /usr/bin/bash /usr/bin/node /usr/bin/mount; do
  [[ -e $tmp$p ]] || die "$p missing from the tree; see $log"
done
mv "$tmp" "$out"
