#!/bin/bash
# Start-up mistakes get a clear, fast answer (issue 12):
#   - a stray word after a service's options (`nv-orchestrator task`) exits 2 naming the word,
#     instead of starting a daemon that ignores it; the same for the launcher's commands;
#   - nv-metrics-exporter on a port another program holds exits 2 at once, naming the address
#     and the option that changes it (--listen, env NV_LISTEN), for IPv4 and IPv6 listeners.
set -euo pipefail
BIN=${NV_BIN_DIR:?set by ctest}
rt=$(mktemp -d /tmp/nv-startup-XXXXXX)
holder4= holder6=
trap 'rm -rf "$rt"; kill $holder4 $holder6 2>/dev/null || true' EXIT
export NV_RUNTIME_DIR=$rt
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_exit2 WORD CMD...: exit 2 within 10 s, stderr names WORD.
expect_exit2() {
  local word=$1; shift
  local err rc=0
  err=$(timeout 10 "$@" 2>&1 >/dev/null) || rc=$?
  [[ $rc == 2 ]] || fail "$* exited $rc, not 2: $err"
  grep -qF -- "$word" <<<"$err" || fail "$* did not name '$word': $err"
  echo "ok: $* -> exit 2: $(grep -F -- "$word" <<<"$err" | head -n1 | cut -c1-150)"
}
for svc in orchestrator metrics-exporter llm-gateway vm-pool-manager sandbox-executor ebpf-sentinel; do
  [[ -x $BIN/nv-$svc ]] || continue
  expect_exit2 "unexpected argument 'task'" "$BIN/nv-$svc" task
done
expect_exit2 "unexpected argument 'start'" "$BIN/nv-vm-pool-manager" --warm 1 start now
expect_exit2 "unexpected argument 'now'" "$BIN/nv" status now
expect_exit2 "unexpected argument 'all'" "$BIN/nv" down all
# A roles file that cannot bind roles (finding 9): exit 2 naming the line, before serving.
printf 'uid:0 * *\nuid:65534 exec -\n' >"$rt/roles"
expect_exit2 "roles:2: uid 65534 (nobody) cannot hold a role" "$BIN/nv-orchestrator" --roles "$rt/roles"
expect_exit2 "cannot read roles file" "$BIN/nv-orchestrator" --roles "$rt/no-such-roles"

# Ports held by another program: a listener of python's on an ephemeral loopback port.
hold() { python3 -c 'import socket,sys,time
s=socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1],0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)' "$1"; }
exec 3< <(hold 127.0.0.1); holder4=$!; read -r port4 <&3
exec 4< <(hold ::1); holder6=$!; read -r port6 <&4
for listen in "127.0.0.1:$port4" "[::1]:$port6"; do
  t0=$SECONDS
  expect_exit2 "$listen) is already in use" "$BIN/nv-metrics-exporter" --listen "$listen"
  err=$("$BIN/nv-metrics-exporter" --listen "$listen" 2>&1 >/dev/null || true)
  grep -qF -- "--listen (env NV_LISTEN)" <<<"$err" || fail "no hint at --listen / NV_LISTEN: $err"
  (( SECONDS - t0 < 10 )) || fail "the port error took $((SECONDS - t0)) s"
done
echo PASS
