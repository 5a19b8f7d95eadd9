#!/bin/bash
# NeuroVisor under real systemd: a Debian 12 image built from Debian packages alone
# (deploy/image/build-base.sh: mmdebstrap + podman import), systemd as PID 1 in a privileged
# podman container, NeuroVisor installed in it with `./nv install` from this build tree (bind
# mounted at the same path), `systemctl start neurovisor.target`, then inside the container:
#   1. every unit is active and `systemd-analyze security` (online, the real unit) scores them;
#   2. nv-exec runs python in a microVM (QEMU, TCG here) leased from the pool manager;
#   3. nv-submit runs an agent task against the scripted model server (tests/fixtures/fake_llm.py
#      on the container's own loopback: the container has no network at all, --network none);
#   4. SIGKILL of nv-sandbox-executor: systemd restarts it (Restart=on-failure) and nv-exec
#      works again.
TEST_NAME=deploy_systemd
source "$(dirname "$0")/lib.sh"

step "base image (systemd + NeuroVisor's runtime packages + cmake for ./nv install)"
image=$("$SRC/deploy/image/build-base.sh" --systemd --with cmake,python3,curl,procps $(nv_binaries))
name=nv-deploy-systemd-$$
cleanup() {
  if [[ ${KEEP:-0} != 1 ]]; then "${PODMAN[@]}" rm -f -t 5 "$name" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
step "container $name from $image"
"${PODMAN[@]}" run -d --name "$name" --privileged --systemd=always --network none \
  "${ULIMITS[@]}" -v /sys/fs/cgroup:/sys/fs/cgroup -v "$SRC:$SRC" -v "$BUILD:$BUILD" \
  "$image" /sbin/init >/dev/null
inside() { "${PODMAN[@]}" exec "$name" "$@"; }
state() { inside systemctl is-system-running 2>/dev/null | grep -qE '^(running|degraded)$'; }
wait_for 90 state || fail "systemd did not come up: $(inside systemctl is-system-running 2>&1)"
step "systemd is $(inside systemctl is-system-running 2>/dev/null)" \
  "(PID 1: $(inside cat /proc/1/comm))"

step "./nv install"
inside bash -c "cd '$SRC' && NV_BUILD_DIR='$BUILD' ./nv install" || fail "./nv install failed"
inside id neurovisor >/dev/null || fail "user neurovisor was not created"
inside getent group nv-vmchan >/dev/null || fail "group nv-vmchan was not created"
[[ $(inside stat -c '%U:%G %a' /run/neurovisor) == "neurovisor:neurovisor 770" ]] ||
  fail "/run/neurovisor: $(inside stat -c '%U:%G %a' /run/neurovisor)"

step "model server: fake_llm.py on the container's loopback, the gateway pointed at it"
inside mkdir -p /etc/neurovisor
script=$SRC/tests/fixtures/agent_e2e_nonce.json
inside bash -c "python3 '$SRC/tests/fixtures/fake_llm.py' --script '$script' \
  --port 18434 --quiet >/tmp/fake_llm.log 2>&1 &"
inside bash -c 'printf "OLLAMA_HOST=http://127.0.0.1:18434\n" > /etc/neurovisor/llm-gateway.env'
# One size tier (a drop-in, as an operator would configure it): under TCG each tier's template
# takes a cold boot and a warm-up, so the default three would triple the start-up here.
inside mkdir -p /etc/systemd/system/nv-vm-pool-manager.service.d
inside bash -c 'printf "[Service]\nEnvironment=NV_SIZE=small\n" \
  > /etc/systemd/system/nv-vm-pool-manager.service.d/size.conf && systemctl daemon-reload'
wait_for 20 inside curl -sf http://127.0.0.1:18434/api/tags || fail "fake_llm did not start"

step "systemctl start neurovisor.target"
inside systemctl start neurovisor.target
units=$(inside systemctl list-dependencies --plain --no-legend neurovisor.target |
        grep -o 'nv-[a-z-]*\.service' | sort -u)
[[ $(wc -w <<<"$units") -ge 6 ]] || fail "neurovisor.target wants only: $units"
all_active() { for u in $units; do inside systemctl is-active -q "$u" || return 1; done; }
# Under TCG (no KVM here) the pool manager boots and snapshots a template per tier first.
registered() { local s; s=$(inside nv status) && for w in exec vm-pool-manager ebpf-sentinel llm api \
                 metrics-exporter; do grep -q "^$w " <<<"$s" || return 1; done; }
if ! wait_for 240 all_active || ! wait_for 240 registered; then
  for u in $units; do inside systemctl status --no-pager -n 15 "$u" || true; done
  fail "the units did not all come up"
fi
inside nv status
for u in $units; do
  score=$(inside systemd-analyze security "$u" 2>/dev/null | tail -n1 | sed 's/.*: //')
  printf '  %-28s %s\n' "$u" "$score"
done

step "nv-exec python in a microVM"
out=$(inside timeout 300 nv-exec --timeout 60 python -c \
      'import platform; print(6*7, platform.node())') ||
  fail "nv-exec failed: $out"
grep -q '^42 ' <<<"$out" || fail "nv-exec printed '$out'"
echo "  nv-exec: $out"

step "nv-api: a key from nv-keygen --api (as root), then HTTP on 127.0.0.1:8420"
key=$(inside nv-keygen --api --tenant deploy 2>/dev/null) || fail "nv-keygen --api failed"
inside curl -sf 127.0.0.1:8420/healthz >/dev/null || fail "nv-api /healthz did not answer"
out=$(inside curl -s -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      -d '{"language":"python","code":"print(6*7)"}' 127.0.0.1:8420/v1/exec)
grep -q '"stdout":"42\\n"' <<<"$out" || fail "nv-api /v1/exec answered '$out'"
echo "  nv-api: ${out:0:100}"

step "agent task through the llm-gateway and a microVM"
nonce=$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
want=$(printf '%s' "$nonce" | sha256sum | cut -d' ' -f1)
out=$(inside timeout 400 nv-submit --quiet --timeout 300 "Hash the nonce $nonce with sha256") ||
  fail "nv-submit failed: $out"
grep -q "$want" <<<"$out" || fail "the agent's answer lacks sha256(nonce)=$want: $out"
echo "  nv-submit: ${out:0:120}"

step "SIGKILL nv-sandbox-executor: systemd restarts it"
before=$(inside systemctl show -p MainPID --value nv-sandbox-executor)
inside kill -9 "$before"
restarted() { local p; p=$(inside systemctl show -p MainPID --value nv-sandbox-executor);
              [[ $p != 0 && $p != "$before" ]] &&
                inside systemctl is-active -q nv-sandbox-executor; }
wait_for 10 restarted || fail "nv-sandbox-executor was not restarted"
echo "  restarts: $(inside systemctl show -p NRestarts --value nv-sandbox-executor)"
out=$(inside timeout 300 nv-exec --timeout 60 python -c 'print(7*6)') ||
  fail "nv-exec after restart: $out"
[[ $out == 42 ]] || fail "nv-exec after restart printed '$out'"

step "systemctl stop neurovisor.target"
inside systemctl stop neurovisor.target
# `is-active` fails for "deactivating" too: wait for each unit to be really down (its cgroup empty).
all_inactive() {
  for u in $units; do
    case "$(inside systemctl is-active "$u")" in inactive | failed) ;; *) return 1 ;; esac
  done
}
if ! wait_for 30 all_inactive; then
  for u in $units; do echo "  $u: $(inside systemctl is-active "$u")"; done
  fail "units still active 30 s after systemctl stop neurovisor.target"
fi
leftover=$(inside pgrep -a 'qemu|nv-' || true)
[[ -z $leftover ]] || fail "processes left after stop: $leftover"
step "PASS"
