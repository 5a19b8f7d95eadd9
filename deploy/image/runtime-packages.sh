#!/bin/bash
# deploy/image/runtime-packages.sh BINARY... — the Debian packages a host (or an image) needs to
# run these NeuroVisor binaries: the owners of every shared library they load (ldd → dpkg -S),
# plus what they execute: qemu-system-x86 (the VMM), ca-certificates (HTTPS to a model server).
# One package per line, sorted. Used by deploy/image/build-base.sh and deploy/Containerfile, so
# an image never lacks a library (nv-bench needs libbenchmark, the exporter libcivetweb, ...).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: runtime-packages.sh BINARY..." >&2; exit 2; }
libs=$(for b in "$@"; do
         # Static binaries (the guest agent) have no "=>" lines.
         ldd "$b" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $3}' || true
       done | sort -u)
# One dpkg-query over every spelling of every library: with merged /usr a library may be
# registered under /lib, /usr/lib or its real path.
variants() { echo "$1" "/usr$1" "${1#/usr}" "$(readlink -f "$1")"; }
owners=$(for lib in $libs; do variants "$lib"; done | tr ' ' '\n' | sort -u |
         xargs -r dpkg-query -S 2>/dev/null || true)
{
  for lib in $libs; do
    owner=""
    for p in $(variants "$lib"); do
      # Lines are "package:arch: path".
      owner=$(awk -v p="$p" '{ split($0, a, ": ") }
                             a[2] == p { sub(/:.*/, "", a[1]); print a[1]; exit }' <<<"$owners")
      [[ -n $owner ]] && break
    done
    [[ -n $owner ]] || { echo "runtime-packages.sh: no Debian package owns $lib" >&2; exit 1; }
    echo "$owner"
  done
  echo qemu-system-x86
  echo ca-certificates
} | sort -u
