#!/bin/bash
# NeuroVisor under podman-compose (Debian's podman-compose 1.0.3) on the repo's compose.yaml:
#   the image: `./nv install --destdir STAGE`, then `podman build -f deploy/Containerfile` FROM the
#   Debian base image the systemd test uses (deploy/image/build-base.sh; built once, cached);
#   `podman-compose up -d`; every service registers; nv-exec runs python in a microVM from inside
#   the orchestrator's container; /metrics answers on the published host port (127.0.0.1);
#   `podman-compose down` leaves no container behind.
# Podman's defaults are set the way this machine needs (runc; rlimits at our hard limits) in a
# containers.conf of the test's own (CONTAINERS_CONF).
TEST_NAME=deploy_compose
source "$(dirname "$0")/lib.sh"
command -v podman-compose >/dev/null || fail "podman-compose missing: tools/setup.sh installs it"

work=$(mktemp -d /tmp/nv-compose-XXXXXX)
project=nvcompose$$
tag=localhost/neurovisor:compose-test-$$
export CONTAINERS_CONF=$work/containers.conf
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
export NV_IMAGE=$tag NV_METRICS_PORT
NV_METRICS_PORT=$(free_port)
# The gateway's model server: the container's own loopback (nothing listens there; no task is
# submitted here), so no test traffic leaves the containers.
export OLLAMA_HOST=http://127.0.0.1:11434
export NV_SIZE=small   # one template to make under TCG, not three
compose() { (cd "$SRC" && podman-compose -p "$project" -f compose.yaml "$@"); }
cleanup() {
  if [[ ${KEEP:-0} != 1 ]]; then
    compose down -t 5 >/dev/null 2>&1 || true
    podman volume rm -f "${project}_nv-run" >/dev/null 2>&1 || true
    podman rmi -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

step "base image (shared with deploy_systemd)"
base=$("$SRC/deploy/image/build-base.sh" --systemd --with cmake,python3,curl,procps $(nv_binaries))
step "./nv install --destdir (staged), podman build FROM $base"
(cd "$SRC" && NV_SKIP_APT=1 ./nv install --destdir "$work/stage") >/dev/null ||
  fail "staged install"
podman build --quiet -f "$SRC/deploy/Containerfile" --build-arg "BASE=$base" -t "$tag" \
  "$work/stage" >/dev/null || fail "podman build failed"

step "podman-compose up -d (project $project, /metrics on 127.0.0.1:$NV_METRICS_PORT)"
compose up -d >"$work/up.log" 2>&1 || { cat "$work/up.log"; fail "podman-compose up failed"; }
orch=${project}_orchestrator_1
inside() { podman exec "$orch" "$@"; }
registered() { local s; s=$(inside nv status 2>&1) &&
               for w in exec vm-pool-manager llm ebpf-sentinel metrics-exporter; do
                 grep -q "^$w " <<<"$s" || return 1
               done; }
if ! wait_for 300 registered; then
  podman ps -a --filter "label=io.podman.compose.project=$project"
  filter="label=io.podman.compose.project=$project"
  for c in $(podman ps -a --format '{{.Names}}' --filter "$filter"); do
    echo "--- $c"; podman logs --tail 8 "$c" 2>&1 | cut -c1-300
  done
  fail "the services did not all register"
fi
inside nv status

step "nv-exec python in a microVM, from the orchestrator's container"
out=$(inside timeout 300 nv-exec --timeout 60 python -c 'print(6*7)') || fail "nv-exec failed: $out"
[[ $out == 42 ]] || fail "nv-exec printed '$out'"

step "GET /metrics on the published port"
wait_for 30 curl -sf "http://127.0.0.1:$NV_METRICS_PORT/metrics" ||
  fail "no /metrics on 127.0.0.1:$NV_METRICS_PORT"
families=$(curl -sf "http://127.0.0.1:$NV_METRICS_PORT/metrics" | grep -c '^# TYPE')
echo "  metric families: $families"

step "podman-compose down"
compose down -t 10 >/dev/null 2>&1 || fail "podman-compose down failed"
left=$(podman ps -a -q --filter "label=io.podman.compose.project=$project")
[[ -z $left ]] || fail "containers left after down: $left"
step "PASS"
