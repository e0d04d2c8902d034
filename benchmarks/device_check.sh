#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU (no network needed): build the extension with CUDA, run
# the GPU tests (every CUDA and Triton kernel against the reference, CUDA-graphed sampling against
# eager), compute-sanitizer memcheck on a small subset, the op benchmarks, the end-to-end sampling
# benchmark (benchmarks/bench_sampling.py --preset gpu, cut off after BENCH_SECONDS, default 240;
# it saves after every model), and write report.json. Prints a short table last.
#
#     bash benchmarks/device_check.sh OUTDIR
#
# Copy OUTDIR to benchmarks/results/<gpu>-<date>/ and commit it.
set -uo pipefail
out=${1:?usage: bash benchmarks/device_check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
start=$(date +%s)
steps=()

step() {  # step NAME COMMAND...: runs it, logs to OUTDIR/NAME.log, records ok / failed
  local name=$1
  shift
  echo "[$(($(date +%s) - start))s] $name"
  if "$@" > "$out/$name.log" 2>&1; then steps+=("$name:ok"); else steps+=("$name:failed($?)"); fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
step build env FASTSDE_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
  MAX_JOBS="${MAX_JOBS:-16}" python3 -m pip install --no-build-isolation --no-deps -e .
step info python3 -m fastsde.info
step gpu_tests python3 -m pytest -q -m gpu tests --junitxml="$out/gpu_tests.xml"
if command -v compute-sanitizer > /dev/null; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 \
    python3 -m pytest -q -m gpu tests/test_upfirdn2d.py tests/test_group_norm.py tests/test_pc_update.py \
    -k "float32 and (matches_reference or layouts)" -x
else
  steps+=("memcheck:unavailable")
fi
step bench python3 benchmarks/bench_ops.py --device cuda --rounds 30 --inner 5 --json "$out/bench_ops_cuda.json"
step bench_sampling timeout "${BENCH_SECONDS:-240}" python3 benchmarks/bench_sampling.py --preset gpu \
  --json "$out/bench_sampling_gpu.json"

python3 - "$out" "$(($(date +%s) - start))" "${steps[@]}" <<'PY'
import json, os, platform, sys
out, seconds, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
report = {"seconds": seconds, "steps": dict(s.split(":", 1) for s in steps),
          "gpu": open(os.path.join(out, "gpu.txt")).read().strip(), "python": platform.python_version()}
try:
    import torch, triton  # noqa: F401
    report.update(torch=torch.__version__, cuda=torch.version.cuda, triton=triton.__version__)
except ImportError as e:
    report["versions_error"] = str(e)
bench = os.path.join(out, "bench_ops_cuda.json")
rows = json.load(open(bench))["rows"] if os.path.exists(bench) else []
report["bench_rows"] = len(rows)
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=1)
for r in rows:
    print(f"{r['case'][:40]:40s} {r['candidate'][:26]:26s} {r['median_ms']:9.4f} ms {r['speedup_vs_baseline']:6.2f}x {r['GB_per_s']:7.1f} GB/s")
e2e = os.path.join(out, "bench_sampling_gpu.json")
if os.path.exists(e2e):
    from fastsde.bench import table
    e2e = json.load(open(e2e))
    report["bench_sampling_rows"] = len(e2e["rows"])
    json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=1)
    print(table(e2e["rows"], e2e["accuracy"]))
print(json.dumps({k: v for k, v in report.items() if k != "bench_rows"}))
PY
