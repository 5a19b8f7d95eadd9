#!/usr/bin/env bash
# tools/setup.sh — install what NeuroVisor needs from Debian, configure, build, build the guest.
# Idempotent and quick when nothing changed. Run as root (apt-get) on Debian 12.
#   NV_BUILD_DIR   build directory (default: <repo>/build)
#   NV_SANITIZE    address | undefined (passed to CMake)
#   NV_SKIP_APT=1  do not touch packages (they must be there)
#   NV_QUIET=1     print nothing but errors (./nv run --quiet)
# Logs of the configure and build steps go to <build>/logs/, never into the source tree.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NV_BUILD_DIR:-$ROOT/build}

# One package per line, with why we need it.
PACKAGES=(
  cmake ninja-build g++ pkg-config          # the build
  libzmq3-dev cppzmq-dev                    # the bus (ZeroMQ, with CURVE)
  capnproto libcapnp-dev                    # messages (Cap'n Proto compiler and library)
  libcurl4-openssl-dev rapidjson-dev        # llm-gateway HTTP and JSON; Firecracker API
  libseccomp-dev libcap-dev                 # seccomp allow-lists, capability drops
  libbpf-dev bpftool clang llvm libelf-dev zlib1g-dev   # eBPF programs and skeletons
  clang-format                              # the style test: the tree follows .clang-format
  libclang-rt-14-dev                        # libFuzzer + ASan/UBSan runtimes for tests/fuzz
  prometheus-cpp-dev                        # /metrics and Pushgateway
  libsqlite3-dev                            # sandbox registries on disk (executor, pool)
  libldns-dev                               # DNS messages of the sandboxes' resolver (issue 16)
  ldnsutils dnsmasq-base                    # dns tests: drill (a real client), dnsmasq upstream
  libnftables-dev                           # guest egress policy: nftables tables per VM (issue 16)
  libgtest-dev libgmock-dev libbenchmark-dev   # tests and nv-bench
  prometheus                                # promtool, to check /metrics in tests
  python3                                   # the scripted model server used by tests
  qemu-system-x86                           # the microVM monitor (KVM or TCG)
  mmdebstrap e2fsprogs                      # guest root filesystem, built without mounts
  linux-source-6.1 make bc flex bison libssl-dev cpio xz-utils file   # the minimal guest kernel
  iproute2 procps curl                      # network namespaces in tests, ps, curl
  systemd                                   # systemd-analyze checks the units in deploy/
  podman runc podman-compose                # deploy tests: systemd and compose in containers
  libcpp-httplib-dev libsodium-dev          # nv-api: HTTP/1.1 server (+TLS); API key hashes
  libhttp-parser-dev                        # guest inference endpoint: HTTP parser, static .a
  nodejs npm                                # the official MCP TypeScript SDK client in tests
  python3-pip python3-setuptools            # api_test: the Python SDK installs with pip
)

say() { [[ ${NV_QUIET:-0} == 1 ]] || printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Packages whose command may come from elsewhere: NodeSource's nodejs bundles npm and conflicts
# with Debian's npm package, so npm counts as present when the command is there.
declare -A PROVIDED_BY_COMMAND=([npm]=npm)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    if [[ -n ${PROVIDED_BY_COMMAND[$p]:-} ]] && command -v "${PROVIDED_BY_COMMAND[$p]}" >/dev/null; then
      continue
    fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && { say "Debian packages: all ${#PACKAGES[@]} present"; return; }
  [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}); run as root or install them"
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: check the apt sources"
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/nv-apt.log 2>&1; then
    tail -20 /tmp/nv-apt.log >&2
    for p in "${missing[@]}"; do
      apt-cache show "$p" >/dev/null 2>&1 || echo "[setup] package not found: $p" >&2
    done
    die "apt-get install failed (log: /tmp/nv-apt.log)"
  fi
}

if [[ ${NV_SKIP_APT:-0} != 1 ]]; then install_packages; fi

LOGS=$BUILD/logs
mkdir -p "$LOGS"
if [[ ! -f $BUILD/build.ninja ]]; then
  say "configuring $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    ${NV_SANITIZE:+-DNV_SANITIZE=$NV_SANITIZE} >"$LOGS/configure.log" 2>&1 \
    || { cat "$LOGS/configure.log" >&2; die "cmake configure failed"; }
fi
say "building (ninja, $(nproc) jobs)"
if ! cmake --build "$BUILD" -j"$(nproc)" >"$LOGS/build.log" 2>&1; then
  grep -E 'error|FAILED' -A5 "$LOGS/build.log" | head -60 >&2
  die "build failed (full log: $LOGS/build.log)"
fi

if [[ -x $ROOT/guest/build.sh && -x $BUILD/bin/nv-guest-agent ]]; then
  say "guest kernel and image (cached by input hash)"
  if [[ ${NV_QUIET:-0} == 1 ]]; then
    "$ROOT/guest/build.sh" "$BUILD/guest" "$BUILD/bin/nv-guest-agent" >"$LOGS/guest.log" 2>&1 \
      || { tail -30 "$LOGS/guest.log" >&2; die "guest build failed (log: $LOGS/guest.log)"; }
  else
    "$ROOT/guest/build.sh" "$BUILD/guest" "$BUILD/bin/nv-guest-agent"
  fi
fi
say "ready: binaries in $BUILD/bin"
