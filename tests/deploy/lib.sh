# tests/deploy/lib.sh — shared by the deploy tests (sourced): logging, the base image, podman.
# Needs root, podman + runc, mmdebstrap (tools/setup.sh installs them).
set -euo pipefail
SRC=${NV_SOURCE_DIR:?NV_SOURCE_DIR is set by ctest}
BUILD=${NV_BUILD_DIR:?NV_BUILD_DIR is set by ctest}
T0=$SECONDS
step() { printf '[%s +%3ds] %s\n' "${TEST_NAME:-deploy}" $((SECONDS - T0)) "$*"; }
fail() { printf '[%s] FAIL: %s\n' "${TEST_NAME:-deploy}" "$*" >&2; exit 1; }

# Podman as this machine allows it (../shared facts): the runc runtime (crun refuses hybrid
# cgroups) and rlimits no higher than ours (root here lacks CAP_SYS_RESOURCE).
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)

[[ $(id -u) -eq 0 ]] || fail "the deploy tests need root (mmdebstrap, privileged containers)"
for tool in podman runc mmdebstrap; do
  command -v $tool >/dev/null || fail "$tool missing: tools/setup.sh installs it"
done
for f in vmlinux rootfs.ext4; do
  [[ -e $BUILD/guest/$f ]] || fail "$BUILD/guest/$f missing: run ./nv setup"
done

# The NeuroVisor binaries whose runtime packages the images get.
nv_binaries() { ls "$BUILD"/bin/nv "$BUILD"/bin/nv-* | grep -v -e nv-guest-agent -e nv-guest-ctl; }

# A free TCP port on 127.0.0.1 (the kernel's choice).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to $1 seconds for the command in "$@" (after $1) to succeed.
wait_for() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 1
  done
}
