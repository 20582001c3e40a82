#!/usr/bin/env bash
# Builds effmetrics from source on the GPU machine (torch + CUDA preinstalled, no network) and
# runs the test suite there. The CUDA tests (tests/python/test_cuda.py): counts on CUDA equal
# counts on CPU; em.benchmark's event latency within 3% of torch.cuda.Event and triton's
# do_bench; L2 flush and graph replay; peak memory == max_memory_allocated; module times and
# step busy/idle from CUDA events (a host sleep is found as idle, a GPU-bound loop has none;
# the profiler's raw cudart events and c10::Event both agree with torch.cuda.Event);
# compiled models counted on CUDA as on CPU, a reduce-overhead (CUDA graphs) model timed; an
# NCCL collective (single-rank group) timed on NCCL's stream, agreeing with events around it.
# Counter (sampled counting, MFU from the H200's peak, NVML energy) and the distributed suite
# (gloo) run there too. Then bench/timing.py --cuda prints the figures for the notes (forward
# and training-step overhead, device busy vs events, per-op cost of the events).
# Budget: under 5 minutes (each stage's limit below only stops a hang; run it with timeout_s=600).
#
#   bash scripts/gpu_check.sh            # through the device tool: run(command="bash scripts/gpu_check.sh")
#
# Nothing it finds is lost to a short output tail, a crash or a hang:
# - where $OUT is set (the device tool's folder of files that come back), the whole log goes to
#   $OUT/gpu_check.log and each pytest run's results to $OUT/pytest-*.xml (JUnit);
# - test_cuda.py (tests that have never all run on a GPU) runs in a pytest process of its own,
#   so a crash there leaves the other suites and the figures to run;
# - a test that hangs (a collective waiting forever) is stopped after $TEST_TIMEOUT seconds
#   where pytest-timeout is installed (it is on the GPU machine), and each stage after its own
#   limit; after the build, a failed stage does not stop the next ones; the script exits with
#   the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-}
TEST_TIMEOUT=${TEST_TIMEOUT:-120}
export PYTHONUNBUFFERED=1

rc=0
stage() {  # stage NAME LIMIT_S COMMAND...: run it under a time limit, print its time and status
  local name=$1 limit=$2 start=$SECONDS status=0
  shift 2
  echo "=== $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "=== $name: stopped at its limit of ${limit} s"
  fi
  echo "=== $name: exit $status after $((SECONDS - start)) s (script at ${SECONDS} s)"
  if [ "$status" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=$status; fi
  return "$status"
}

main() {
  "$PY" - <<'PYEOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| available", torch.cuda.is_available(), "|",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
  local tests=OFF gen=() pytest_args=(-q -rs -s --durations=8)
  if [ -f /usr/include/gtest/gtest.h ]; then tests=ON; else echo "GoogleTest absent: C++ tests skipped here"; fi
  command -v ninja >/dev/null && gen=(-G Ninja)
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then
    pytest_args+=(--timeout "$TEST_TIMEOUT")
  else
    echo "pytest-timeout absent: a hanging test is stopped only by its stage's limit"
  fi

  # In the order of what is worth most if the device time runs out: the build, the CUDA tests
  # (some have never run on a GPU), the figures for the notes, then what CI also runs on CPU.
  local exe
  exe=$("$PY" -c "import sys; print(sys.executable)") || return
  stage configure 60 cmake -S . -B build-gpu "${gen[@]}" --log-level=WARNING \
        -DPython3_EXECUTABLE="$exe" -DEFFMETRICS_BUILD_TESTS=$tests || return
  stage build 240 cmake --build build-gpu -j "$(nproc)" || return
  junit() { [ -n "$OUT" ] && echo "--junitxml=$OUT/pytest-$1.xml"; }
  stage "pytest test_cuda.py" 150 env PYTHONPATH=python "$PY" -m pytest "${pytest_args[@]}" \
    $(junit cuda) tests/python/test_cuda.py
  # Figures for the notes: profile(time=True) overhead on the GPU and event busy time vs torch.
  if "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    stage "bench/timing.py --cuda" 150 env PYTHONPATH=python "$PY" bench/timing.py --cuda --rounds 10
  fi
  if [ "$tests" = ON ]; then stage ctest 60 ctest --test-dir build-gpu --output-on-failure; fi
  # The counting, timing, memory and NVTX suites (CUDA tests among them); the report's Chromium
  # rendering and the notebooks are CPU-side and need packages that machine lacks.
  stage "pytest suites" 180 env PYTHONPATH=python "$PY" -m pytest "${pytest_args[@]}" $(junit suites) \
    tests/python/test_api.py tests/python/test_flop_counter.py tests/python/test_vit_oracle.py \
    tests/python/test_params.py tests/python/test_memory.py tests/python/test_time.py \
    tests/python/test_timing.py tests/python/test_nvtx.py tests/python/test_zoo.py \
    tests/python/test_compile.py tests/python/test_counter.py tests/python/test_energy_mfu.py \
    tests/python/test_effective.py tests/python/test_distributed.py
  return $rc
}

status=0
if [ -n "$OUT" ]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/gpu_check.log"
  status=${PIPESTATUS[0]}
  echo "gpu_check.sh: exit $status after ${SECONDS} s" | tee -a "$OUT/gpu_check.log"
else
  main || status=$?
  echo "gpu_check.sh: exit $status after ${SECONDS} s"
fi
exit "$status"
