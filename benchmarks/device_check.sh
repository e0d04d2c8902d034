#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU (no network needed): build the extension with CUDA, run
# the GPU tests (every CUDA and Triton kernel against the reference, CUDA-graphed sampling against
# eager), the op benchmarks (pytest-benchmark), the end-to-end sampling benchmark
# (bench_sampling.py --preset gpu), a per-op profile of a network call (profile_network.py),
# compute-sanitizer memcheck on a small subset, and write report.json (device_report.py). The
# benchmarks update the GPU's tables in benchmarks/results/, copied to OUTDIR. Prints the
# tables, then a verdict on each performance target.
# Each step after the build has a time limit (seconds, from the environment: TESTS_SECONDS,
# BENCH_SECONDS, SAMPLING_SECONDS, PROFILE_SECONDS, MEMCHECK_SECONDS) so that the whole stays within
# about 8 minutes on one H200; the benchmarks save what they measured as they go, so a step cut short
# keeps it.
#
#     bash benchmarks/device_check.sh OUTDIR
#
# Copy OUTDIR/*.csv over benchmarks/results/ and commit them; report.json and the logs stay out.
set -uo pipefail
out=${1:?usage: bash benchmarks/device_check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
start=$(date +%s)
steps=()

step() {  # step NAME SECONDS COMMAND...: runs it (0: no limit), logs to OUTDIR/NAME.log, records the outcome
  local name=$1 limit=$2 rc
  shift 2
  echo "[$(($(date +%s) - start))s] $name"
  if [ "$limit" -gt 0 ]; then
    # SIGINT first: pytest then still prints its summary and writes its report; a kill 10 s later.
    timeout -s INT -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
  else
    "$@" > "$out/$name.log" 2>&1
  fi
  rc=$?
  case $rc in
    0) steps+=("$name:ok") ;;
    124) steps+=("$name:timed_out(${limit}s)") ;;
    *) steps+=("$name:failed($rc)") ;;
  esac
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
step build 0 env FASTSDE_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
  MAX_JOBS="${MAX_JOBS:-16}" python3 -m pip install --no-build-isolation --no-deps -e .
step info 30 python3 -m fastsde.info
# Several processes where pytest-xdist is installed: the Triton tests spend most of their time compiling.
# Each test's outcome on its own line as it ends (-v), so that a run cut short still names them;
# no test may hang the step where pytest-timeout is installed.
plugins=()
python3 -c "import xdist" 2> /dev/null && plugins+=(-n 8)
python3 -c "import pytest_timeout" 2> /dev/null && plugins+=(--timeout 60)
step gpu_tests "${TESTS_SECONDS:-120}" python3 -m pytest -v -m gpu "${plugins[@]}" tests \
  --junitxml="$out/gpu_tests.xml"
step bench "${BENCH_SECONDS:-90}" python3 -m pytest -q -p no:cacheprovider benchmarks/bench_ops.py --device cuda \
  --rounds 20 --inner 5 --benchmark-json "$out/ops.json"
[ -f "$out/ops.json" ] && python3 benchmarks/table.py --from-pytest-benchmark "$out/ops.json" --device cuda
step bench_sampling "${SAMPLING_SECONDS:-120}" python3 benchmarks/bench_sampling.py --preset gpu --record
# Which ops a call's time goes to, at batch 1 (launches) and 512 (bandwidth, arithmetic).
step profile "${PROFILE_SECONDS:-30}" python3 benchmarks/profile_network.py --device cuda --batches 1,512 \
  --precision bf16 --record
kind=$(cd benchmarks && python3 -c 'import table; print(table.kind("cuda"))')
cp benchmarks/results/*-"$kind".csv "$out"/ 2> /dev/null
if command -v compute-sanitizer > /dev/null; then
  step memcheck "${MEMCHECK_SECONDS:-30}" compute-sanitizer --tool memcheck --error-exitcode 1 \
    python3 -m pytest -q -m gpu tests/test_upfirdn2d.py tests/test_group_norm.py tests/test_pc_update.py \
    -k "cuda and ((dtype0 and matches_reference) or layouts or unaligned)" -x  # dtype0: float32
else
  steps+=("memcheck:unavailable")
fi

python3 benchmarks/device_report.py "$out" "$(($(date +%s) - start))" "${steps[@]}"
