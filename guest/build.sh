#!/bin/bash
# guest/build.sh OUT_DIR AGENT_BINARY — build the guest kernel and root filesystem, cached.
#
# Outputs (stable names, symlinks into content-addressed files):
#   OUT_DIR/vmlinux        minimal kernel, PVH-bootable (`qemu -kernel`, Firecracker)
#   OUT_DIR/rootfs.ext4    read-only root: Debian (python3, bash, nodejs) + the agent as
#                          /sbin/nv-guest-agent (boot with init=/sbin/nv-guest-agent)
#   OUT_DIR/manifest.json  the input hashes, paths and the kernel command line to use
#
# Each stage is rebuilt only when its inputs changed:
#   kernel      hash(nv-guest.config, build-kernel.sh, linux-source version, gcc version) ~4 min
#   base tree   hash(packages.txt, build-rootfs.sh, the apt sources)                    ~20 s+
#   rootfs.ext4 hash(base hash, agent binary, this script)                               ~1 s
# So a changed agent only re-runs mkfs. A lock file serialises concurrent runs. Needs root (for
# mmdebstrap) only when the base tree has to be built. Quiet unless something is built or fails.
set -euo pipefail

die() { echo "guest/build.sh: $*" >&2; exit 1; }
note() { echo "guest/build.sh: $*" >&2; }

[[ $# -eq 2 ]] || die "usage: guest/build.sh OUT_DIR AGENT_BINARY"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || die "cannot create $1"
out=$(cd "$1" && pwd)
agent=$2
[[ -f $agent && -x $agent ]] || die "agent binary '$agent' missing: build it first" \
  "(cmake --build BUILD --target nv-guest-agent)"
# The agent is PID 1 on a root without a loader policy of ours: it must be static.
if file -b "$agent" 2>/dev/null | grep -q 'dynamically linked'; then
  die "$agent is dynamically linked; nv-guest-agent must be static"
fi
for tool in sha256sum mkfs.ext4 flock strip; do
  command -v "$tool" >/dev/null || die "'$tool' missing (apt-get install coreutils e2fsprogs" \
    "util-linux binutils)"
done

exec 9>"$out/.lock"
if ! flock -n 9; then
  note "another build holds $out/.lock; waiting for it"
  flock 9
fi

sha() { sha256sum | cut -c1-16; }

# ---- kernel ------------------------------------------------------------------------------------
fragment=$here/kernel/nv-guest.config
ksrc_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) ||
  die "linux-source-6.1 is not installed: apt-get install linux-source-6.1"
kernel_hash=$( { cat "$fragment" "$here/kernel/build-kernel.sh"; echo "$ksrc_version";
                 gcc --version | head -n1; } | sha)
kernel=$out/kernel/vmlinux-$kernel_hash
if [[ ! -f $kernel ]]; then
  note "building the guest kernel $kernel_hash (linux-source $ksrc_version; a few minutes)"
  t0=$SECONDS
  "$here/kernel/build-kernel.sh" "$fragment" "$kernel" "$out/kernel/work-$kernel_hash" ||
    die "kernel build failed (log: $out/kernel/work-$kernel_hash/kernel.log)"
  rm -rf "$out/kernel/work-$kernel_hash"
  note "kernel built in $((SECONDS - t0)) s"
fi

# ---- base tree -----------------------------------------------------------------------------------
packages=$here/image/packages.txt
base_hash=$( { cat "$packages" "$here/image/build-rootfs.sh";
               cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                   /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | sha)
base=$out/rootfs/base-$base_hash
if [[ ! -d $base ]]; then
  [[ $(id -u) -eq 0 ]] || die "building the root filesystem needs root (mmdebstrap); run as root"
  note "building the guest root tree $base_hash (mmdebstrap from this machine's apt sources)"
  t0=$SECONDS
  mkdir -p "$out/rootfs"
  "$here/image/build-rootfs.sh" "$packages" "$base" || die "root tree build failed"
  note "root tree built in $((SECONDS - t0)) s"
fi

# ---- final image -------------------------------------------------------------------------------
agent_sha=$(sha256sum "$agent" | cut -d' ' -f1)
image_hash=$( { echo "$base_hash"; echo "$agent_sha"; cat "${BASH_SOURCE[0]}"; } | sha)
image=$out/rootfs/rootfs-$image_hash.ext4
if [[ ! -f $image ]]; then
  # The agent goes into the base tree (replacing any previous one); debug info stays behind.
  install -d -m 0755 "$base/usr/sbin"
  strip -o "$base/usr/sbin/nv-guest-agent" "$agent" || die "strip $agent failed"
  chmod 0755 "$base/usr/sbin/nv-guest-agent"
  # The run user's home: the agent mounts a tmpfs owned by uid 1000 here at boot (system.cc).
  install -d -m 0755 "$base/home/agent"
  bytes=$(du -sb "$base" | cut -f1)
  # Room for metadata (inodes, directories): +15% and 32 MiB, rounded to MiB.
  mib=$(( (bytes + bytes * 15 / 100) / 1048576 + 32 ))
  # No journal: the root is mounted read-only; no reserved blocks: nobody writes to it.
  rm -f "$image.tmp"
  mkfs.ext4 -q -F -L nv-root -m 0 -O ^has_journal -E root_owner=0:0 -d "$base" \
    "$image.tmp" "${mib}M" >"$out/rootfs/mkfs.log" 2>&1 ||
    { cat "$out/rootfs/mkfs.log" >&2; die "mkfs.ext4 -d $base failed"; }
  mv -f "$image.tmp" "$image"
  note "root filesystem $image_hash: $(du -h --apparent-size "$image" | cut -f1) ($mib MiB)"
fi

# ---- stable names, manifest, clean-up ------------------------------------------------------------
ln -sfn "kernel/vmlinux-$kernel_hash" "$out/vmlinux"
ln -sfn "rootfs/rootfs-$image_hash.ext4" "$out/rootfs.ext4"
# Earlier versions are not needed (running VMs keep their open files).
find "$out/kernel" -maxdepth 1 -name 'vmlinux-*' ! -name "vmlinux-$kernel_hash*" -delete
find "$out/rootfs" -maxdepth 1 -name 'rootfs-*.ext4' ! -name "rootfs-$image_hash.ext4" -delete
for d in "$out"/rootfs/base-*; do
  [[ -d $d && $d != "$base" ]] && rm -rf "$d" "$d.log"
done

cat >"$out/manifest.json.tmp" <<EOF
{
  "kernel": {"hash": "$kernel_hash", "path": "kernel/vmlinux-$kernel_hash",
             "linux_source": "$ksrc_version"},
  "rootfs_base": {"hash": "$base_hash"},
  "rootfs": {"hash": "$image_hash", "path": "rootfs/rootfs-$image_hash.ext4",
             "bytes": $(stat -c %s "$image")},
  "agent": {"sha256": "$agent_sha"},
  "init": "/sbin/nv-guest-agent",
  "agent_port": {"virtio_serial_name": "nv.agent", "vsock_port": 6000},
  "cmdline": "console=ttyS0 root=/dev/vda ro rootfstype=ext4 init=/sbin/nv-guest-agent reboot=t panic=-1 quiet"
}
EOF
mv -f "$out/manifest.json.tmp" "$out/manifest.json"
