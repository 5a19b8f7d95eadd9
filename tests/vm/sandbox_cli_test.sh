#!/usr/bin/env bash
# sandbox_cli_test.sh — `nv sandbox` (tools/nv/sandbox_cmd.cc) driven as a user drives it,
# against a real stack (nv up: orchestrator, nv-vm-pool-manager, nv-sandbox-executor; real
# microVMs): create, exec (exit codes, streaming, contexts, stdin code), cp in/out binary-exact
# (a 3 MiB random file, in one piece and in 1 MB pieces), ls, processes and kill, fork, pause and
# resume, --json, rm; bad input and its typed exit codes. One stack, a few sandboxes.
# Exit 77 (skipped) when the binaries or the guest image are missing.
set -u
BIN=${NV_BIN_DIR:?NV_BIN_DIR}
BUILD=${NV_BUILD_DIR:?NV_BUILD_DIR}
NV="$BIN/nv"
for f in "$NV" "$BIN/nv-orchestrator" "$BIN/nv-vm-pool-manager" "$BIN/nv-sandbox-executor" \
  "$BUILD/guest/vmlinux" "$BUILD/guest/rootfs.ext4"; do
  [ -e "$f" ] || { echo "SKIP: $f is missing"; exit 77; }
done

RT=$(mktemp -d /tmp/nv-sbxcli-test-XXXXXX)
WORK="$RT/work"
mkdir -p "$WORK"
export NV_RUNTIME_DIR="$RT" NV_KERNEL="$BUILD/guest/vmlinux" NV_ROOTFS="$BUILD/guest/rootfs.ext4"
export NV_SIZE=small NV_WARM=1 NV_MAX=5 NV_REQUIRE_EGRESS=false  # no sentinel in this stack
export NV_MOUNT_ROOT="$RT/root"  # nv-sandbox-executor --mount-root (issue 15)
mkdir -p "$RT/root/proj"
cleanup() {
  "$NV" down >/dev/null 2>&1
  rm -rf "$RT"
}
trap cleanup EXIT

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
# expect_rc WANT CMD... : runs CMD, output in $out (stdout) and $err (stderr), checks its status.
expect_rc() {
  local want=$1
  shift
  out=$("$@" 2>"$WORK/stderr")
  rc=$?
  err=$(cat "$WORK/stderr")
  [ "$rc" = "$want" ] || fail "exit $rc, want $want: $* (stdout: $out; stderr: $err)"
}
expect_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

"$NV" up --only vm-pool-manager,sandbox-executor --wait-s 600 >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log"
  echo "FAIL: nv up"
  exit 1
}

# ---- create, exec
expect_rc 0 "$NV" sandbox create --label case=cli --env GREETING=hej
ID=$out
[[ "$ID" =~ ^sbx-[A-Za-z0-9_]+-[0-9a-f]{16}$ ]] || fail "create printed '$ID', not an id"
expect_rc 3 "$NV" sandbox exec "$ID" 'echo "$GREETING out"; echo to-err >&2; exit 3'
expect_eq "$out" "hej out" "exec stdout"
expect_eq "$err" "to-err" "exec stderr"
expect_rc 0 "$NV" sandbox exec "$ID" --lang python --context nb 'x = 41'
expect_rc 0 "$NV" sandbox exec "$ID" --lang python --context nb 'print(x + 1)'
expect_eq "$out" "42" "a python context keeps its variables"
expect_rc 1 "$NV" sandbox exec "$ID" --lang python 'print(x + 1)'
[[ "$err" == *"NameError"* ]] || fail "a plain python exec has no context: $err"
printf 'import sys\nprint(sys.version_info[0])\n' >"$WORK/code.py"
expect_rc 0 "$NV" sandbox exec "$ID" --lang py - <"$WORK/code.py"
expect_eq "$out" "3" "code from stdin"
expect_rc 124 "$NV" sandbox exec "$ID" --timeout-ms 1000 'sleep 20'
expect_rc 137 "$NV" sandbox exec "$ID" 'kill -9 $$'
expect_rc 0 "$NV" sandbox exec "$ID" --json 'printf "a\tb"'
expect_eq "$(echo "$out" | json 'd["stdout"], d["exitCode"], d["nvStatus"]')" "$(printf 'a\tb 0 0')" \
  "exec --json"

# Output streams while the program runs: "first" is on our stdout while it still sleeps; Ctrl-C
# (SIGINT) then cancels it upstream: exit 130.
"$NV" sandbox exec "$ID" 'echo first; sleep 60; echo second' >"$WORK/stream.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q first "$WORK/stream.out" && break
  sleep 0.1
done
grep -q first "$WORK/stream.out" || fail "exec output did not stream before the program ended"
kill -0 "$pid" 2>/dev/null || fail "exec ended before its program did"
kill -INT "$pid"
wait "$pid"
expect_eq "$?" "130" "Ctrl-C of a streaming exec"
grep -q second "$WORK/stream.out" && fail "the cancelled program went on"

# ---- files: 3 MiB of random bytes in and out, binary-exact; in 1 MB pieces too
head -c 3145728 /dev/urandom >"$WORK/r3.bin"
expect_rc 0 "$NV" sandbox cp "$WORK/r3.bin" "$ID:/home/agent/r3.bin"
expect_rc 0 "$NV" sandbox cp "$ID:/home/agent/r3.bin" "$WORK/r3.out"
cmp -s "$WORK/r3.bin" "$WORK/r3.out" || fail "cp in/out changed the bytes"
expect_rc 0 "$NV" sandbox cp --json --piece-bytes 1000000 "$WORK/r3.bin" "$ID:/tmp/r3p.bin"
expect_eq "$(echo "$out" | json 'd["bytes"], d["requests"]')" "3145728 4" "cp in, 4 pieces"
expect_rc 0 "$NV" sandbox cp --json --piece-bytes 1000000 "$ID:/tmp/r3p.bin" "$WORK"
expect_eq "$(echo "$out" | json 'd["bytes"], d["requests"]')" "3145728 4" "cp out, 4 pieces"
cmp -s "$WORK/r3.bin" "$WORK/r3p.bin" || fail "cp in pieces changed the bytes"
want_sha=$(sha256sum <"$WORK/r3.bin" | cut -d' ' -f1)
expect_rc 0 "$NV" sandbox exec "$ID" 'sha256sum < r3.bin | cut -d" " -f1'
expect_eq "$out" "$want_sha" "the guest's sha256 of the copied file"
expect_rc 0 "$NV" sandbox exec "$ID" 'mkdir -p d/e && echo x > d/e/f'
expect_rc 0 "$NV" sandbox ls "$ID" /home/agent
[[ "$out" == *"3145728"*"/home/agent/r3.bin"* ]] || fail "ls: $out"
expect_rc 0 "$NV" sandbox ls "$ID" /home/agent -r --json
expect_eq "$(echo "$out" | json '[e["path"] for e in d["entries"] if e["type"]=="file" and e["path"].endswith("/f")]')" \
  "['/home/agent/d/e/f']" "ls -r"

# ---- background processes
expect_rc 0 "$NV" sandbox exec "$ID" --background 'sleep 300'
expect_rc 0 "$NV" sandbox processes "$ID" --json
bg=$(echo "$out" | json '[p["pid"] for p in d["processes"] if p["command"].split(" -c ")[-1].strip() == "sleep 300"][0]')
[ -n "$bg" ] || fail "the background sleep is not listed: $out"
expect_rc 0 "$NV" sandbox kill "$ID" "$bg" KILL
expect_rc 0 "$NV" sandbox processes "$ID" --json
expect_eq "$(echo "$out" | json 'len([p for p in d["processes"] if p["command"].split(" -c ")[-1].strip() == "sleep 300"])')" \
  "0" "the killed process is gone"

# ---- fork: both forks see the file and the variable; a write in one is invisible elsewhere
expect_rc 0 "$NV" sandbox fork "$ID" -n 2
read -r F1 F2 <<<"$(echo $out)"
[ -n "${F2:-}" ] || fail "fork -n 2 printed '$out'"
for f in $F1 $F2; do
  expect_rc 0 "$NV" sandbox exec "$f" 'sha256sum < r3.bin | cut -d" " -f1'
  expect_eq "$out" "$want_sha" "a fork sees the parent's file"
  expect_rc 0 "$NV" sandbox exec "$f" --lang python --context nb 'print(x + 1)'
  expect_eq "$out" "42" "a fork keeps the parent's context"
done
expect_rc 0 "$NV" sandbox exec "$F1" 'echo changed > r3.bin'
expect_rc 0 "$NV" sandbox exec "$F2" 'sha256sum < r3.bin | cut -d" " -f1'
expect_eq "$out" "$want_sha" "a write in one fork is invisible in its sibling"
expect_rc 0 "$NV" sandbox exec "$ID" 'sha256sum < r3.bin | cut -d" " -f1'
expect_eq "$out" "$want_sha" "a write in a fork is invisible in the parent"

# ---- pause, resume
expect_rc 0 "$NV" sandbox pause "$F2"
expect_rc 7 "$NV" sandbox exec "$F2" 'true'
[[ "$err" == *sandboxState* ]] || fail "exec on a paused sandbox: $err"
expect_rc 0 "$NV" sandbox resume "$F2"
expect_rc 0 "$NV" sandbox exec "$F2" 'sha256sum < r3.bin | cut -d" " -f1'
expect_eq "$out" "$want_sha" "files after pause and resume"

# ---- get, ls-all, rm
expect_rc 0 "$NV" sandbox get "$ID" --json
expect_eq "$(echo "$out" | json 'd["state"], d["owner"], d["labels"][0]["key"]')" \
  "running uid:$(id -u) case" "get --json"
expect_rc 0 "$NV" sandbox ls-all --label case=cli --json
expect_eq "$(echo "$out" | json '[s["sandboxId"] for s in d["sandboxes"]]')" "['$ID']" \
  "ls-all --label"
for s in "$F1" "$F2" "$ID"; do expect_rc 0 "$NV" sandbox rm "$s"; done
expect_rc 0 "$NV" sandbox ls-all --json
expect_eq "$(echo "$out" | json 'len(d["sandboxes"])')" "0" "nothing left after rm"

# ---- host directory mounts (issue 15): a relative HOST, the guest reads and writes, sync --json
# copies the file out byte-exact; outside --mount-root exit 8 (mountRefused); bad --mount exit 2
printf 'in\n' >"$RT/root/proj/in.txt"
expect_rc 0 bash -c "cd '$RT/root' && '$NV' sandbox create --mount proj:proj:rw"
MID=$out
expect_rc 0 "$NV" sandbox exec "$MID" 'cat proj/in.txt; printf "out\000\377" > proj/out.bin'
expect_eq "$out" "in" "the guest reads the mounted file"
[ -e "$RT/root/proj/out.bin" ] && fail "written to the host before sync"
expect_rc 0 "$NV" sandbox sync "$MID" --json
expect_eq "$(echo "$out" | json 'd["synced"][0]["filesWritten"], d["synced"][0]["bytesWritten"]')" \
  "1 5" "sync --json"
cmp <(printf 'out\000\377') "$RT/root/proj/out.bin" || fail "the synced file differs"
expect_rc 0 "$NV" sandbox get "$MID" --json
expect_eq "$(echo "$out" | json 'd["mounts"][0]["hostPath"], d["mounts"][0].get("readOnly", False)')" \
  "$RT/root/proj False" "get --json shows the mount"
expect_rc 0 "$NV" sandbox rm "$MID"
expect_rc 8 "$NV" sandbox create --mount "$WORK:w"
expect_rc 8 "$NV" sandbox create --json --mount "$WORK:w:ro"
expect_eq "$(echo "$out" | json 'd["error"]["code"]')" "mountRefused" "create --json outside the root"
expect_rc 2 "$NV" sandbox create --mount "$WORK"
expect_rc 2 "$NV" sandbox create --mount "$WORK:w:rx"
expect_rc 2 "$NV" sandbox create --mount "$WORK:/etc"
# Egress asked of a pool without --net: refused before anything runs (issue 16), exit 8.
expect_rc 8 "$NV" sandbox create --json --allow 198.51.100.7:443
expect_eq "$(echo "$out" | json 'd["error"]["code"]')" "egressDenied" "create --allow without --net"
expect_rc 2 "$NV" sandbox create --allow 198.51.100.7 --max-connections 0

# ---- bad input: typed exit codes
expect_rc 2 "$NV" sandbox frobnicate
expect_rc 2 "$NV" sandbox exec "$ID"
expect_rc 2 "$NV" sandbox create --tier huge
expect_rc 2 "$NV" sandbox create --lifetime-ms 999999999999
expect_rc 2 "$NV" sandbox cp "$WORK/no-such-file" "$ID:/home/agent/x"
expect_rc 2 "$NV" sandbox cp "$WORK/r3.bin" "$WORK/r3.copy"
expect_rc 5 "$NV" sandbox get sbx-vm-0000000000000000
expect_rc 5 "$NV" sandbox exec sbx-nobody-0123456789abcdef 'true'
expect_rc 5 "$NV" sandbox get --json not-an-id
expect_eq "$(echo "$out" | json 'd["error"]["code"]')" "unknownSandbox" "a typed JSON error"
expect_rc 0 "$NV" sandbox create
ID2=$out
expect_rc 5 "$NV" sandbox cp "$ID2:/home/agent/none" "$WORK/none.out"
[ -e "$WORK/none.out" ] && fail "a failed cp out left a file"
expect_rc 2 "$NV" sandbox cp "$WORK/r3.bin" "$ID2:/etc/passwd"
expect_rc 5 "$NV" sandbox kill "$ID2" 99999
expect_rc 2 "$NV" sandbox snapshot "$ID2" 'bad name!'
expect_rc 0 "$NV" sandbox rm "$ID2"
expect_rc 3 env NV_RUNTIME_DIR="$RT/none" "$NV" sandbox ls-all

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed; logs: $RT/logs"
  tail -n 30 "$RT"/logs/sandbox-executor.log
  exit 1
fi
echo "PASS: nv sandbox against a real stack"
