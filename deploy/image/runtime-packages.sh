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
{
  for lib in $libs; do
    # With merged /usr a library may be registered under /lib, /usr/lib or its real path.
    owner=""
    for p in "$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")"; do
      owner=$(dpkg-query -S "$p" 2>/dev/null | head -n1 | cut -d: -f1) && [[ -n $owner ]] && break
    done
    [[ -n $owner ]] || { echo "runtime-packages.sh: no Debian package owns $lib" >&2; exit 1; }
    echo "$owner"
  done
  echo qemu-system-x86
  echo ca-certificates
} | sort -u
