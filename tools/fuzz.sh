#!/usr/bin/env bash
# tools/fuzz.sh — build and run the libFuzzer targets (tests/fuzz).
#   tools/fuzz.sh                     build, then run every target for 300 s
#   tools/fuzz.sh TARGET [SECONDS]    build, then run one target (or "all") for SECONDS
#   tools/fuzz.sh --build             only build them (clang++, into <build>/fuzz)
#   tools/fuzz.sh --list              the target names
#   tools/fuzz.sh --ci TARGET SECONDS what ctest's `fuzz` label runs: no build, one short run
# Inputs the fuzzer finds go to <build>/fuzz/corpus/TARGET (the seed corpus in
# tests/fuzz/corpus/TARGET is read, never written); a crash, leak, timeout or UB writes its input
# to <build>/fuzz/artifacts/TARGET/ and the run fails. Reproduce one with
#   <build>/fuzz/bin/TARGET <artifact>
# then fix the parser, add the input to tests/fuzz/corpus/TARGET/ and a unit test for it.
#   NV_BUILD_DIR       main build directory (default: <repo>/build)
#   NV_FUZZ_MAX_LEN    longest input tried (default 65536 bytes)
#   NV_FUZZ_JOBS       build jobs (default: nproc)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NV_BUILD_DIR:-$ROOT/build}
FUZZ_BUILD=$BUILD/fuzz
SRC=$ROOT/tests/fuzz
TARGETS=(bus_frames guest_agent guest_channel ollama_chat ollama_stream openai_chat openai_stream
         text_tool_calls config utf8 dns_query inference_request)

say() { printf '\033[1m[fuzz]\033[0m %s\n' "$*" >&2; }
die() { printf '[fuzz] error: %s\n' "$*" >&2; exit 1; }

build() {
  command -v clang++ >/dev/null || die "clang++ not found: run tools/setup.sh (Debian clang)"
  mkdir -p "$FUZZ_BUILD"
  if [[ ! -f $FUZZ_BUILD/build.ninja ]]; then
    # No ccache: it does not hash -fsanitize-ignorelist's file and hands back objects built
    # without it. Ninja's own rebuilds are incremental.
    say "configuring $FUZZ_BUILD (clang)"
    cmake -S "$SRC" -B "$FUZZ_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$FUZZ_BUILD/bin" \
      >"$FUZZ_BUILD.configure.log" 2>&1 \
      || { cat "$FUZZ_BUILD.configure.log" >&2; die "cmake configure failed"; }
  fi
  say "building ${#TARGETS[@]} targets"
  if ! cmake --build "$FUZZ_BUILD" -j"${NV_FUZZ_JOBS:-$(nproc)}" >"$FUZZ_BUILD.build.log" 2>&1; then
    grep -E 'error|FAILED' -A5 "$FUZZ_BUILD.build.log" | head -60 >&2
    die "build failed (full log: $FUZZ_BUILD.build.log)"
  fi
}

dict_for() {
  case $1 in
    ollama_*|openai_*) echo "$SRC/dict/llm_json.dict" ;;
    *) [[ -f $SRC/dict/$1.dict ]] && echo "$SRC/dict/$1.dict" ;;
  esac
  return 0
}

# run TARGET SECONDS: one libFuzzer run; prints a summary line; fails on any finding.
run() {
  local t=$1 secs=$2 bin=$FUZZ_BUILD/bin/$1
  [[ -x $bin ]] || die "no fuzz target '$t' (built: ${TARGETS[*]})"
  local work=$FUZZ_BUILD/corpus/$t art=$FUZZ_BUILD/artifacts/$t log=$FUZZ_BUILD/logs/$t.log
  mkdir -p "$work" "$art" "$(dirname "$log")" "$SRC/corpus/$t"
  local args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048
              -max_len="${NV_FUZZ_MAX_LEN:-65536}" -print_final_stats=1
              -artifact_prefix="$art/")
  local dict; dict=$(dict_for "$t")
  [[ -n $dict ]] && args+=(-dict="$dict")
  say "$t: ${secs} s (log: $log)"
  local rc=0
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
    "$bin" "${args[@]}" "$work" "$SRC/corpus/$t" >"$log" 2>&1 || rc=$?
  local done_line; done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  local eps; eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  local cov ft corp
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[^ ]*\).*/\1/p' <<<"$done_line")
  printf '%-16s %8s exec/s  cov %6s  ft %6s  corpus %s\n' "$t" "${eps:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}"
  if [[ $rc -ne 0 ]]; then
    grep -E 'ERROR: |runtime error|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -20 >&2
    die "$t found a fault (exit $rc); input in $art/ — see the header of tools/fuzz.sh"
  fi
}

case ${1:-all} in
  --build) build ;;
  --list) printf '%s\n' "${TARGETS[@]}" ;;
  --ci)
    [[ $# -eq 3 ]] || die "usage: tools/fuzz.sh --ci TARGET SECONDS"
    run "$2" "$3"
    ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    target=${1:-all} secs=${2:-300}
    build
    if [[ $target == all ]]; then
      for t in "${TARGETS[@]}"; do run "$t" "$secs"; done
    else
      run "$target" "$secs"
    fi
    ;;
esac
