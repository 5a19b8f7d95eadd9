#!/bin/bash
# The launcher's supervision, service by service: `nv up` starts the whole stack (a temp runtime
# dir, the scripted model server on loopback, /metrics on a free loopback port), then each
# service in turn is SIGKILLed. For each: a new process must be running within 5 s (the
# supervisor restarts it with backoff: 0.5 s first), `nv status` must be clean again, and a new
# request through it must succeed:
#   orchestrator, sandbox-executor, vm-pool-manager  nv-exec python in a microVM
#   llm-gateway                                        nv-submit agent task (fake_llm.py)
#   metrics-exporter                                   GET /metrics (curl)
#   ebpf-sentinel                                      registered again in nv status
# Also: a second `nv up` with everything running says so and starts nothing; with the supervisor
# itself killed, a killed service stays down: `nv status` exits 1 and marks it DEAD, and `nv up`
# starts it (and a new supervisor); `nv down` leaves no process behind.
TEST_NAME=deploy_supervise
source "$(dirname "$0")/lib.sh"
NV=$BUILD/bin/nv
export NV_RUNTIME_DIR
NV_RUNTIME_DIR=$(mktemp -d /tmp/nv-supervise-XXXXXX)
export NV_LISTEN=127.0.0.1:$(free_port)
export NV_SIZE=small          # one tier: one template to boot under TCG, not three
llm_port=$(free_port)
export OLLAMA_HOST=http://127.0.0.1:$llm_port
python3 "$SRC/tests/fixtures/fake_llm.py" --script "$SRC/tests/fixtures/agent_e2e_nonce.json" \
  --port "$llm_port" --quiet >"$NV_RUNTIME_DIR.fake_llm.log" 2>&1 &
llm_pid=$!
cleanup() {
  local rc=$?
  if [[ $rc != 0 && -d $NV_RUNTIME_DIR/logs ]]; then
    echo "--- supervisor.log"; tail -n 20 "$NV_RUNTIME_DIR/logs/supervisor.log" || true
    for f in "$NV_RUNTIME_DIR"/logs/*.log; do
      echo "--- $f"; tail -n 4 "$f" | cut -c1-300
    done
  fi
  "$NV" down >/dev/null 2>&1 || true
  kill "$llm_pid" 2>/dev/null || true
  rm -rf "$NV_RUNTIME_DIR" "$NV_RUNTIME_DIR.fake_llm.log"
}
trap cleanup EXIT

step "nv up (runtime dir $NV_RUNTIME_DIR, /metrics on $NV_LISTEN)"
"$NV" up --wait-s 400 || fail "nv up failed"
"$NV" status || fail "nv status after nv up: exit $?"
out=$("$NV" up --wait-s 60) || fail "second nv up failed"
grep -q "already up" <<<"$out" || fail "second nv up did not say 'already up': $out"

exec_ok() {
  local out
  out=$("$BUILD/bin/nv-exec" --timeout 60 python -c 'print(6*7)' 2>&1) && [[ $out == 42 ]] ||
    { echo "  nv-exec: $out"; return 1; }
}
agent_ok() {
  local nonce want out
  nonce=$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
  want=$(printf '%s' "$nonce" | sha256sum | cut -d' ' -f1)
  out=$("$BUILD/bin/nv-submit" --quiet --timeout 300 "Hash the nonce $nonce" 2>&1) &&
    grep -q "$want" <<<"$out" || { echo "  nv-submit: $out"; return 1; }
}
metrics_ok() { local m; m=$(curl -sf "http://$NV_LISTEN/metrics") && grep -q '^# TYPE' <<<"$m"; }
registered() { "$NV" status | grep -q "^$1 "; }
all_ok() { "$NV" status >/dev/null; }

step "baseline requests"
exec_ok || fail "nv-exec before any kill"
agent_ok || fail "agent task before any kill"
metrics_ok || fail "/metrics before any kill"

for svc in orchestrator ebpf-sentinel metrics-exporter llm-gateway sandbox-executor \
           vm-pool-manager; do
  pidfile=$NV_RUNTIME_DIR/pids/$svc.pid
  [[ -f $pidfile ]] || { step "$svc: not started (not built here), skipped"; continue; }
  old=$(cat "$pidfile")
  kill -9 "$old"
  t_kill=$SECONDS
  back() { local p; p=$(cat "$pidfile" 2>/dev/null) && [[ $p != "$old" ]] && kill -0 "$p"; }
  wait_for 5 back ||
    fail "$svc not back within 5 s of SIGKILL ($(tail -3 "$NV_RUNTIME_DIR/logs/supervisor.log"))"
  step "$svc SIGKILLed: back as pid $(cat "$pidfile") after $((SECONDS - t_kill)) s"
  case $svc in
    orchestrator|sandbox-executor|vm-pool-manager)
      # The executor re-registers; a restarted pool manager first boots its template (TCG).
      wait_for 400 exec_ok || fail "nv-exec after $svc was restarted" ;;
    llm-gateway) wait_for 120 agent_ok || fail "agent task after llm-gateway was restarted" ;;
    metrics-exporter) wait_for 60 metrics_ok || fail "/metrics after metrics-exporter restart" ;;
    ebpf-sentinel) wait_for 120 registered ebpf-sentinel || fail "sentinel not registered again" ;;
  esac
  wait_for 120 all_ok || { "$NV" status; fail "nv status not clean after $svc came back"; }
  step "$svc: a new request succeeded"
done

step "the supervisor itself SIGKILLed, then a service: nv status says so, nv up restarts it"
kill -9 "$(cat "$NV_RUNTIME_DIR/pids/supervisor.pid")"
old=$(cat "$NV_RUNTIME_DIR/pids/metrics-exporter.pid")
kill -9 "$old"
sleep 1
out=$("$NV" status 2>&1) && fail "nv status exited 0 with the supervisor and the exporter dead"
grep -q "metrics-exporter *DEAD" <<<"$out" || fail "nv status does not mark the exporter DEAD: $out"
"$NV" up --wait-s 120 || fail "nv up did not bring the exporter back"
[[ $(cat "$NV_RUNTIME_DIR/pids/metrics-exporter.pid") != "$old" ]] || fail "exporter pid unchanged"
metrics_ok || fail "/metrics after nv up"
"$NV" status >/dev/null || fail "nv status after nv up: exit $?"

step "nv down"
pids=$(cat "$NV_RUNTIME_DIR"/pids/*.pid)
"$NV" down || fail "nv down failed"
# A zombie is not running (its parent, a killed supervisor, is gone; init reaps it when it does).
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
for p in $pids; do
  running "$p" && fail "pid $p still running after nv down: $(ps -o pid,stat,args= -p "$p")"
done
step "PASS"
