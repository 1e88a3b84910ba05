"""Where a training step's time goes: the real training loop (one process, TorchRec's sparse-dist train
pipeline) under torch.profiler, its CPU time per step split by kind of work, at each batch size, on the
generated data ("synthetic": tables up to 100k rows) and on small tables (the shape of MovieLens-100k:
~1k users, ~1.7k items; ``bench/datasets.py``).

Kinds (by the profiler's event names, self time): dense matrix products; activations (ReLU forward
and backward); other tensor ops (elementwise, copies, casts, concatenation, softmax, losses); the
embedding kernels (fbgemm lookup, fused backward + optimizer); the sparse data distribution (TorchRec's
input/output all-to-all and KJT splits, run even in one process); the dense optimizer (step, clipping
norms); the data (the pipeline's next batch: reading and the Arrow -> KJT feature path); and framework
overhead (the self time of the profiler's Python-level regions: DDP's forward, the autograd engine's
per-node bookkeeping, the train pipeline's own spans). The per-step total is the sum; the samples/s
beside it is measured by the loop's own log, in the same run, with the profiler on (lower than without).

    python bench/step_profile.py [--batch 256 2048] [--steps 300] [--data synthetic small] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: datasets.py

from datasets import prepare  # noqa: E402

from recsys_mtl.config import load_config  # noqa: E402
from recsys_mtl.train.loop import train  # noqa: E402

KINDS = (
    ("dense matmuls", lambda n: n in {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addmv"}),
    ("activations", lambda n: n in {"aten::clamp_min", "aten::threshold_backward", "aten::relu", "aten::gelu"}),
    ("embedding kernels", lambda n: n.startswith("fbgemm::") or n.startswith("[lookup]")),
    ("sparse data dist", lambda n: n.startswith(("c10d::", "[splits_dist]", "[output_dist]", "[input_dist]", "## all2all"))),
    ("dense optimizer", lambda n: n.startswith("Optimizer.") or n.startswith("aten::_fused_") or "vector_norm" in n),
    ("data (next batch)", lambda n: n == "## next_batch ##"),
    ("other tensor ops", lambda n: n.startswith("aten::")),
    ("framework overhead", lambda n: True),
)


def profile_run(config_path: Path, batch: int, steps: int, out: Path) -> tuple[dict[str, float], float, list[tuple[str, float]]]:
    """ms per step of each kind, the loop's median samples/s (first interval dropped), the top events."""
    config = load_config(config_path, [
        f"data.batch_size={batch}", f"train.max_steps={steps}", "data.eval=null", f"train.log_every_steps={max(steps // 6, 1)}",
    ])
    shutil.rmtree(out, ignore_errors=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(config, out)
    per_kind = dict.fromkeys([k for k, _ in KINDS], 0.0)
    events = []
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1e3 / steps
        events.append((e.key, ms))
        per_kind[next(kind for kind, match in KINDS if match(e.key))] += ms
    records = map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
    rates = [r["samples_per_s"] for r in records if r["event"] == "train"]
    return per_kind, statistics.median(rates[1:] or rates), sorted(events, key=lambda kv: -kv[1])[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", nargs="+", default=["synthetic", "small"], choices=["synthetic", "small"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("bench-work"))
    parser.add_argument("--top", action="store_true", help="also print each run's 8 costliest events")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            config = prepare(data, args.work) / "config.yaml"
            for batch in args.batch:
                runs[(data, batch)] = profile_run(config, batch, args.steps, Path(tmp) / "run")
    print(f"CPU ms per training step by kind of work ({args.steps} steps, 1 process, {args.threads} threads, torch {torch.__version__})")
    print()
    print("| kind | " + " | ".join(f"{d} @ {b}" for d, b in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for kind, _ in KINDS:
        print(f"| {kind} | " + " | ".join(f"{r[0][kind]:.2f}" for r in runs.values()) + " |")
    print("| **total** | " + " | ".join(f"**{sum(r[0].values()):.2f}**" for r in runs.values()) + " |")
    print("| samples/s (profiled) | " + " | ".join(f"{r[1]:,.0f}" for r in runs.values()) + " |")
    if args.top:
        for (data, batch), (_, _, top) in runs.items():
            print(f"\n{data} @ {batch}: " + ", ".join(f"{name} {ms:.2f}" for name, ms in top))


if __name__ == "__main__":
    main()
