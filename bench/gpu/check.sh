#!/usr/bin/env bash
# The GPU checks, in one go on a CUDA machine (target: under 8 minutes after the download):
#
#   bash bench/gpu/check.sh          (from the repository root)
#
# 1. installs the GPU stack into $VENV (default .venv-gpu, so a CPU .venv stays as it is) exactly as
#    README "GPU install" says: torch 2.13.0 + fbgemm-gpu 1.8.0 (CUDA builds), runtime and dev pins,
#    torchrec 1.8.0 --no-deps; skipped when $VENV already has a CUDA torch (SKIP_INSTALL=1 forces it)
# 2. checks the stack: a CUDA device visible to torch, fbgemm's CUDA operators, recsys_mtl's import check
# 3. trains on the GPU: 1 rank over NCCL with row-wise and table-row-wise sharded tables (CUDA-only
#    sharding types), the same in bf16 (model.precision=bf16), and 2 NCCL ranks when there are 2+ GPUs
#    (NCCL takes one device per rank: on a single GPU that check says it was skipped, and why)
# 4. the unit tests of sharding and planning (tests/train/test_sharding.py, tests/cli/test_plan.py)
# 5. prints the default model's training samples/s at batch 4096 and 16384 per rank (bench/train_throughput.py)
#    and the serving forward latency at 100 and 500 candidates (bench/serve_latency.py)
# 6. a summary: every step's status, seconds and numbers
#
# Without a CUDA device it stops at once (exit 1) with a message saying so. Environment: VENV, PYTHON
# (for the venv, default python3), CUDA_INDEX (default https://download.pytorch.org/whl/cu128), ROWS
# (generated rows for the throughput runs, default 1000000), STEPS (steps per throughput run, default 40).
set -uo pipefail

if [[ ! -f pyproject.toml || ! -f bench/gpu/check.sh ]]; then
    echo "bench/gpu/check.sh: run it from the repository root: bash bench/gpu/check.sh" >&2
    exit 1
fi

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
if [[ "$gpus" -lt 1 ]]; then
    echo "bench/gpu/check.sh: error: no CUDA device on this machine (nvidia-smi is missing or lists no GPU);" \
         "the GPU checks need one. The CPU tests: make test" >&2
    exit 1
fi

VENV=${VENV:-.venv-gpu}
PYTHON=${PYTHON:-python3}
CUDA_INDEX=${CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
ROWS=${ROWS:-1000000}
STEPS=${STEPS:-40}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/recsys-mtl-gpu-check.XXXXXX")
PY="$VENV/bin/python"
started=$(date +%s)
summary=()
failed=0

say() { printf '\n== %s\n' "$*"; }

# step NAME COMMAND...: run it with its output in $WORK/NAME.log (and on the console), record the result
step() {
    local name=$1
    shift
    local t0 rc
    t0=$(date +%s)
    say "$name"
    "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    local took=$(($(date +%s) - t0))
    if [[ $rc -eq 0 ]]; then
        summary+=("$(printf '%-22s %-5s %5ss' "$name" PASS "$took")")
    else
        summary+=("$(printf '%-22s %-5s %5ss  (exit %s; log: %s)' "$name" FAIL "$took" "$rc" "$WORK/$name.log")")
        failed=1
    fi
    return "$rc"
}

skip() {
    say "$1: skipped ($2)"
    summary+=("$(printf '%-22s %-5s %5s   %s' "$1" SKIP - "$2")")
}

install() {
    "$PYTHON" -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --extra-index-url "$CUDA_INDEX" -r requirements/torch-gpu.txt &&
    "$VENV/bin/pip" install -q -r requirements/runtime.txt -r requirements/dev.txt &&
    "$VENV/bin/pip" install -q --no-deps -r requirements/torchrec.txt &&
    "$VENV/bin/pip" install -q --no-deps -e .
}

have_cuda_torch() {
    [[ -x "$PY" ]] && "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)' 2>/dev/null
}

stack() {
    "$PY" - <<'EOF'
import torch, fbgemm_gpu, torchrec
import recsys_mtl  # raises with the versions found when fbgemm's operators do not load
assert torch.cuda.is_available(), "torch sees no CUDA device"
x = torch.randn(4, 4, device="cuda")
assert torch.ops.fbgemm.asynchronous_complete_cumsum(torch.tensor([1, 2, 3], device="cuda", dtype=torch.int32)).tolist() == [0, 1, 3, 6]
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), fbgemm-gpu {fbgemm_gpu.__version__}, torchrec {torchrec.__version__}")
print(f"{torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 1024**3:.0f} GiB; bf16: {torch.cuda.is_bf16_supported()}")
EOF
}

# train_check NAME NPROC OVERRIDES...: a short training run on the generated data; its plan must use the
# pinned CUDA sharding types, every logged loss must be finite
train_check() {
    local name=$1 nproc=$2
    shift 2
    "$PY" -m recsys_mtl --log-level WARNING train --config "$WORK/data/config.yaml" --out "$WORK/$name" --nproc "$nproc" \
        data.batch_size=4096 train.max_steps=20 train.log_every_steps=5 \
        train.sharding.user_id=row_wise train.sharding.item_id=table_row_wise "$@" &&
    "$PY" - "$WORK/$name" <<'EOF'
import json, math, sys
from pathlib import Path
run = Path(sys.argv[1])
plan = {t["table"]: t for t in json.loads((run / "plan.json").read_text())}
assert plan["user_id"]["sharding"] == "row_wise" and plan["item_id"]["sharding"] == "table_row_wise", plan
logs = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
losses = [v for r in logs if r["event"] == "train" for v in r["loss"].values()]
assert losses and all(math.isfinite(v) for v in losses), losses
metrics = json.loads((run / "metrics.json").read_text())
print(f"{metrics['steps']} steps on {metrics['world_size']} rank(s), {metrics['samples_per_s']:,.0f} samples/s, "
      f"click auc {metrics['metrics']['click']['auc']:.4f}; user_id row_wise, item_id table_row_wise on ranks "
      f"{plan['user_id']['ranks']}")
EOF
}

say "$gpus GPU(s); work directory $WORK"
nvidia-smi -L

if [[ "${SKIP_INSTALL:-0}" == 1 ]] || have_cuda_torch; then
    skip install "$VENV already has a CUDA torch"
else
    step install install || { echo "bench/gpu/check.sh: error: the GPU install failed (log above)" >&2; exit 1; }
fi
step stack stack || { echo "bench/gpu/check.sh: error: the CUDA stack does not work (log above)" >&2; exit 1; }

step generate "$PY" -m recsys_mtl --log-level WARNING generate --out "$WORK/data" --rows 200000
step train-1gpu-rowwise train_check train-1gpu-rowwise 1 model.precision=fp32
step train-1gpu-bf16 train_check train-1gpu-bf16 1 model.precision=bf16
if [[ "$gpus" -ge 2 ]]; then
    step train-2gpu-nccl train_check train-2gpu-nccl 2
else
    skip train-2gpu-nccl "1 GPU: NCCL runs one rank per device"
fi
step unit-tests "$PY" -m pytest -q -p no:cacheprovider tests/train/test_sharding.py tests/cli/test_plan.py

nprocs=(1)
[[ "$gpus" -ge 2 ]] && nprocs+=("$gpus")
for batch in 4096 16384; do
    step "throughput-b$batch" "$PY" bench/train_throughput.py --rows "$ROWS" --batch-size "$batch" --steps "$STEPS" \
        --log-every 5 --nprocs "${nprocs[@]}"
done
step serve-latency "$PY" bench/serve_latency.py --requests 200 --workers 1 --connections 1 --candidates 100 500

say "summary ($(($(date +%s) - started)) s; logs in $WORK)"
printf '%s\n' "${summary[@]}"
for batch in 4096 16384; do
    if [[ -f "$WORK/throughput-b$batch.log" ]]; then
        echo "training samples/s, batch $batch per rank (processes, median, min, max, vs 1):"
        grep -E '^ +[0-9]+ +[0-9,]+' "$WORK/throughput-b$batch.log" || echo "  (no result)"
    fi
done
if [[ -f "$WORK/serve-latency.log" ]]; then
    echo "serving (workers cands conns | client p50 p99 req/s | server p50 | forward p50 p99 ...):"
    grep -E '^ +1 +(100|500) ' "$WORK/serve-latency.log" || echo "  (no result)"
fi
exit "$failed"
