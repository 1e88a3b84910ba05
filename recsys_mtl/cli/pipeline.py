"""``recsys-mtl pipeline``: validate-data -> train -> evaluate -> gate -> export -> publish, as one
batch job whose completed stages are skipped when it runs again."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_mtl.pipeline.runner import STAGES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="batch job: validate, train, evaluate, gate, export and publish a model")
    p.add_argument("--config", type=Path, required=True, help="pipeline config (see pipelines/configs/)")
    p.add_argument("--run-id", default=None, help="stage outputs go to WORK_DIR/RUN_ID (default: today's UTC date)")
    p.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE", help=f"redo a stage (and what follows): {', '.join(STAGES)}")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override pipeline config values, e.g. publish.model_root=/models")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recsys_mtl.pipeline.config import load_pipeline_config
    from recsys_mtl.pipeline.runner import GateRefused, Pipeline, StageFailed, default_run_id

    config = load_pipeline_config(args.config, args.overrides)
    pipeline = Pipeline(config, args.run_id or default_run_id(), set(args.force))
    try:
        manifests = pipeline.run()
    except GateRefused as exc:
        print(f"recsys-mtl pipeline: {exc}")
        return 3
    except StageFailed as exc:
        print(f"recsys-mtl pipeline: {exc}\nearlier stages' outputs are kept in {pipeline.run_dir}; fix the cause and "
              "run the same command again: completed stages are skipped")
        return 1
    report = Path(manifests["evaluate"]["outputs"]["report"])
    publish = manifests["publish"]["outputs"]
    state = "published" if publish["copied"] and "publish" not in pipeline.skipped else "already published"
    print(f"report: {report / 'report.html'}")
    print(f"model {publish['version']} {state}: {publish['path']}")
    return 0
