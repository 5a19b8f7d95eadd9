#!/bin/bash
# deploy/image/build-base.sh [--systemd] [--with PKG,...] BINARY... — a Debian 12 base image for
# NeuroVisor, built from Debian packages alone (mmdebstrap --variant=minbase, this machine's apt
# sources, then `podman import`): no container registry is needed. Prints the image name.
#   --systemd      include systemd, systemd-sysv and dbus, to run /sbin/init as PID 1
#   --with PKGS    more packages (comma-separated), e.g. cmake for `./nv install`, python3
#   BINARY...      NeuroVisor binaries whose runtime packages go in (runtime-packages.sh)
# Cached: the image is named localhost/neurovisor-base:HASH, HASH over the package list, this
# script and the apt sources; an existing image of that name is reused (~40 s to build).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "build-base.sh: $*" >&2; exit 1; }

extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --systemd) extra+=(systemd systemd-sysv dbus); shift ;;
    --with) IFS=, read -ra more <<<"$2"; extra+=("${more[@]}"); shift 2 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || die "usage: build-base.sh [--systemd] [--with PKG,...] BINARY..."
for tool in mmdebstrap podman flock sha256sum; do
  command -v $tool >/dev/null || die "$tool missing (apt-get install mmdebstrap podman runc)"
done
[[ $(id -u) -eq 0 ]] || die "must run as root (mmdebstrap root mode, podman import)"

packages=$( { "$here/runtime-packages.sh" "$@"; printf '%s\n' "${extra[@]}"; } | sort -u |
            paste -sd,)
hash=$( { echo "$packages"; cat "${BASH_SOURCE[0]}";
          cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
              /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | sha256sum | cut -c1-16)
image=localhost/neurovisor-base:$hash

cache=${NV_IMAGE_CACHE:-/var/tmp/neurovisor-images}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # one build at a time; a second caller then finds the image
if podman image exists "$image"; then echo "$image"; exit 0; fi

sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
do
  [[ -s $f ]] && sources+=("$f")
done
[[ ${#sources[@]} -gt 0 ]] || die "no apt sources in /etc/apt"
tar=$cache/base-$hash.tar
log=$cache/base-$hash.log
t0=$SECONDS
echo "build-base.sh: building $image (mmdebstrap minbase + ${packages//,/ })" >&2
# The merged-/usr hook keeps usrmerge (and perl) out; docs, man pages and locales are dropped.
if ! mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1"/etc/machine-id; touch "$1"/etc/machine-id' \
    bookworm "$tar" "${sources[@]}" >"$log" 2>&1 9>&-; then
  tail -n 30 "$log" >&2
  die "mmdebstrap failed (log: $log)"
fi
podman import --quiet "$tar" "$image" >/dev/null || die "podman import failed"
rm -f "$tar"
echo "build-base.sh: $image built in $((SECONDS - t0)) s" >&2
echo "$image"
