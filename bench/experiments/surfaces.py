"""A second surface (issue 18): per-domain adapters (MLoRA) vs. one shared LoRA vs. full fine-tuning.

Two generated data sets of the same latent world (the same generator seed and click rate: the same users,
items and affinities, the same click process) whose conversion differs: surface A with the generator's
defaults, surface B with a higher conversion rate and a conversion that conflicts with click
(``SURFACE_B``). B has a quarter of
A's rows (a new surface has less traffic), 30 % of them held out for its test split. A ``surface`` id column (0: A, 1: B) is added to every row and
to the config as a sparse feature of 3 buckets (bucket 0: null), so every arm has the same features.

A base model is trained on the first half of A's train rows (its ``surface`` is always A); it is then
adapted, from that run, on the second half of A's rows plus B's, shuffled together, by
(a) per-domain LoRA (``domain_feature: surface``), (b) the same with a path both surfaces share
(``domain_shared``), (c) one shared LoRA for both, (d) full fine-tuning. Every arm is evaluated on A's
and B's test splits apart (``recsys-mtl evaluate``).

    PYTHONPATH=. python bench/experiments/adaptation.py --experiment surface --rows 200000 --seed 0 --out surfaces.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from bench.experiments.adaptation import OVERRIDES, trainable
from bench.experiments.daily_stream import cli
from recsys_mtl.data.synthetic import GeneratorSpec, generate

# target_cvr and task_corr only set the conversion labels (target_ctr would also redraw the latent tables)
SURFACE_B = {"target_cvr": 0.10, "task_corr": -0.3}
LORA = "kind: lora, rank: 8, layers: [backbone, dense_arch, towers]"
ARMS = {
    "base": ("base: surface A only", []),
    "domain": ("(a) per-domain LoRA", [f"adapt={{{LORA}, domain_feature: surface}}"]),
    "domain_shared": ("(b) per-domain + shared LoRA", [f"adapt={{{LORA}, domain_feature: surface, domain_shared: true}}"]),
    "shared": ("(c) one shared LoRA", [f"adapt={{{LORA}}}"]),
    "full": ("(d) full fine-tune", []),
}
METRICS = (("click", "auc"), ("click", "ne"), ("conversion", "auc"), ("conversion", "conditional_auc"))


def _with_surface(table: pa.Table, surface: int) -> pa.Table:
    return table.append_column("surface", pa.array(np.full(table.num_rows, surface, dtype=np.int64)))


def prepare(work: Path, rows: int, seed: int) -> Path:
    """Generate both surfaces and write the splits every arm reads; returns the base config's path."""
    if (work / "config.yaml").is_file():
        return work / "config.yaml"
    tables = {}
    for name, knobs in (("a", {}), ("b", {**SURFACE_B, "rows": rows // 4, "test_fraction": 0.3})):
        generate(work / "raw" / name, GeneratorSpec(**{"rows": rows, "seed": seed, **knobs}))
        for split in ("train", "test"):
            tables[name, split] = _with_surface(pq.read_table(work / "raw" / name / split), int(name == "b"))
    half = tables["a", "train"].num_rows // 2
    adapt = pa.concat_tables([tables["a", "train"].slice(half), tables["b", "train"]])
    splits = {"base_train": tables["a", "train"].slice(0, half), "a_test": tables["a", "test"], "b_test": tables["b", "test"],
              "adapt_train": adapt.take(np.random.default_rng(seed).permutation(adapt.num_rows)),
              "adapt_test": pa.concat_tables([tables["a", "test"], tables["b", "test"]])}
    for name, table in splits.items():
        (work / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, work / name / "part-00000.parquet", row_group_size=16_384)
    config = yaml.safe_load((work / "raw" / "a" / "config.yaml").read_text())
    config["data"].update(train=str(work / "base_train"), eval=str(work / "a_test"))
    config["features"]["sparse"].append({"name": "surface", "num_embeddings": 3, "dim": 16, "id_map": "identity", "side": "context"})
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work / "config.yaml"


def run_arm(config: Path, work: Path, arm: str) -> dict:
    out = work / "runs" / arm
    data = [] if arm == "base" else ["--init-from", str(work / "runs" / "base"), f"data.train={work / 'adapt_train'}",
                                     f"data.eval={work / 'adapt_test'}"]
    if not (out / "metrics.json").exists():
        seconds = cli("train", "--config", str(config), "--out", str(out), "--nproc", "1", *data, *ARMS[arm][1], *OVERRIDES)
        (out / "wall_seconds").write_text(f"{seconds:.3f}\n")
    result = {"arm": arm, "seconds": float((out / "wall_seconds").read_text())}
    result["dense_trainable"], result["embedding_trainable"] = trainable(out)
    for surface in ("a", "b"):
        report = out / f"eval_{surface}"
        if not (report / "metrics.json").exists():
            cli("evaluate", "--run", str(out), "--data", str(work / f"{surface}_test"), "--out", str(report))
        tasks = json.loads((report / "metrics.json").read_text())["tasks"]
        result.update({f"{surface}:{t}:{m}": tasks[t]["metrics"][m] for t, m in METRICS})
    return result


def main(rows: int, seed: int, work: Path | None, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = (work or Path(tmp)).resolve()
        config = prepare(root, rows, seed)
        results = []
        for arm in ARMS:
            results.append(run_arm(config, root, arm))
            print(f"{arm}: {results[-1]}", file=sys.stderr, flush=True)
    names = [f"{s.upper()} {t} {m}" for s in ("a", "b") for t, m in METRICS]
    header = ["model", *names, "dense params trained", "embedding params trained", "train wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [ARMS[r["arm"]][0], *(f"{r[f'{s}:{t}:{m}']:.4f}" for s in ("a", "b") for t, m in METRICS),
                 f"{r['dense_trainable']:,}", f"{r['embedding_trainable']:,}", f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    out.write_text(json.dumps({"rows": rows, "seed": seed, "surface_b": SURFACE_B, "overrides": OVERRIDES,
                               "arms": {k: v[1] for k, v in ARMS.items()}, "results": results}, indent=2) + "\n")
