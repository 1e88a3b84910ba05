"""Running the pipeline's stages in order, each once.

Every stage writes into ``WORK_DIR/RUN_ID/.<stage>.partial/`` and, when it succeeds, gets a
``manifest.json`` (its inputs' fingerprint, outputs, timings, a fresh id) and is renamed to
``WORK_DIR/RUN_ID/<stage>/``. A stage is skipped when its manifest's fingerprint matches its inputs
now: the relevant config and the ids of the stages it reads. A changed input, or ``--force STAGE``,
re-runs it and, through the new id, everything after it. A failed stage leaves every earlier stage's
output as it was and names itself; training picks up its own checkpoints when the same inputs are
run again. Stages run the ``recsys-mtl`` sub-commands as child processes (as a scheduler would), with
their output in ``<stage>/log.txt`` and on the console.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from recsys_mtl.config import ConfigError, config_to_dict, load_config
from recsys_mtl.export.artifact import newest_version, verify
from recsys_mtl.pipeline.config import PipelineConfig
from recsys_mtl.pipeline.gate import Check, gate_checks

log = logging.getLogger("recsys_mtl.pipeline")

STAGES = ("generate", "validate", "train", "evaluate", "gate", "export", "publish")
MANIFEST = "manifest.json"


class StageFailed(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(f"stage {stage} failed: {message}")
        self.stage = stage


class GateRefused(Exception):
    def __init__(self, checks: list[Check], decision: Path):
        failed = [c.message for c in checks if not c.passed]
        super().__init__("the gate refused the new model, nothing was published:\n  " + "\n  ".join(failed) + f"\n(decision: {decision})")
        self.checks = checks


def default_run_id() -> str:
    """Today's UTC date: a daily job re-run on the same day resumes instead of starting over."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")


def _fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    name: str
    inputs: Callable[[], dict[str, Any]]  # what the stage's result depends on
    body: Callable[[Path, Path], dict[str, Any]]  # (work dir, final dir) -> outputs for the manifest


class Pipeline:
    def __init__(self, config: PipelineConfig, run_id: str, force: set[str] = frozenset()):
        unknown = sorted(set(force) - set(STAGES))
        if unknown:
            raise ValueError(f"--force {unknown}: no such stage; stages: {list(STAGES)}")
        self.config = config
        self.run_dir = Path(config.work_dir) / run_id
        self.force = set(force)
        self.manifests: dict[str, dict[str, Any]] = {}
        self.skipped: list[str] = []  # stages done by an earlier run of the same inputs

    # --- plumbing -------------------------------------------------------------------------------
    def _cli(self, stage: str, logfile: Path, *args: Any) -> None:
        """``recsys-mtl ARGS`` in a child process, its output to ``logfile`` and the console."""
        cmd = [sys.executable, "-m", "recsys_mtl", *map(str, args)]
        env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
        with open(logfile, "a") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1)
            for line in proc.stdout:
                out.write(line)
                sys.stderr.write(f"[{stage}] {line}")
            code = proc.wait()
        if code != 0:
            raise StageFailed(stage, f"`recsys-mtl {args[0]}` exited with {code}; its output is in {logfile}")

    def _upstream(self, *names: str) -> dict[str, str]:
        return {name: self.manifests[name]["id"] for name in names if name in self.manifests}

    def _run_stage(self, stage: Stage) -> dict[str, Any]:
        final = self.run_dir / stage.name
        inputs = stage.inputs()
        fingerprint = _fingerprint(inputs)
        manifest_path = final / MANIFEST
        if stage.name not in self.force and manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("fingerprint") == fingerprint:
                log.info("stage %s: done before (%s), skipped; --force %s redoes it", stage.name, manifest["finished"], stage.name)
                self.skipped.append(stage.name)
                return manifest
            log.info("stage %s: its inputs changed since it ran, running it again", stage.name)
        partial = self.run_dir / f".{stage.name}.partial"
        same_inputs = (partial / "fingerprint").is_file() and (partial / "fingerprint").read_text() == fingerprint
        if partial.exists() and not (same_inputs and stage.name == "train" and stage.name not in self.force):
            shutil.rmtree(partial)  # training alone resumes from what an interrupted attempt left
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "fingerprint").write_text(fingerprint)
        log.info("stage %s: running (log: %s)", stage.name, partial / "log.txt")
        started = time.time()
        outputs = stage.body(partial, final)
        manifest = {
            "stage": stage.name, "id": uuid.uuid4().hex, "fingerprint": fingerprint, "inputs": inputs,
            "outputs": outputs, "started": _iso(started), "finished": _iso(time.time()),
            "seconds": round(time.time() - started, 3),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if final.exists():
            shutil.rmtree(final)  # a stale result of other inputs
        os.replace(partial, final)
        log.info("stage %s: done in %.1f s", stage.name, manifest["seconds"])
        return manifest

    # --- the stages -----------------------------------------------------------------------------
    def _training_config_path(self) -> str:
        if self.config.training.config is not None:
            return self.config.training.config
        return self.manifests["generate"]["outputs"]["config"]

    @cached_property
    def _resolved_training_config(self) -> dict[str, Any]:
        """Read once, when validate first needs it (after generate, whose config it may be)."""
        return config_to_dict(load_config(self._training_config_path(), self.config.training.overrides))

    def _eval_data(self) -> str:
        data = self.config.evaluate.data or self._resolved_training_config["data"]["eval"]
        if data is None:
            raise StageFailed("evaluate", "no evaluation data: set evaluate.data, or data.eval in the training config")
        return data

    def _stages(self) -> list[Stage]:
        c = self.config
        stages = []
        if c.generate is not None:
            def generate(work: Path, final: Path) -> dict[str, Any]:
                self._cli("generate", work / "log.txt", "generate", "--out", work / "data", "--rows", c.generate.rows, "--seed", c.generate.seed,
                          "--objectives", c.generate.objectives)
                return {"config": str(final / "data" / "config.yaml")}

            stages.append(Stage("generate", lambda: {"generate": c.generate.model_dump()}, generate))

        def validate(work: Path, final: Path) -> dict[str, Any]:
            self._cli("validate", work / "log.txt", "validate-data", "--config", self._training_config_path(), "--out", work, *c.training.overrides)
            return {"summary": str(final / "summary.json")}

        def train(work: Path, final: Path) -> dict[str, Any]:
            resume = ["--resume"] if (work / "run").exists() else []  # an interrupted attempt's checkpoints
            start = init_from()
            if start is None and self._resolved_training_config.get("adapt") is not None:
                why = f"{c.publish.model_root} holds no version yet" if c.training.init_from == "published" else "from scratch"
                raise ConfigError(
                    f"the training config's adapt: section trains adapters on a trained model, and training.init_from="
                    f"{c.training.init_from} gives none ({why}): publish a model first (a run without adapt:), or set "
                    "training.init_from to a run or a model version"
                )
            self._cli(
                "train", work / "log.txt", "train", "--config", self._training_config_path(), "--out", work / "run",
                "--nproc", c.training.nproc, *resume, *(["--init-from", start] if start else []), *c.training.overrides,
            )
            return {"run": str(final / "run"), "metrics": json.loads((work / "run" / "metrics.json").read_text())}

        def evaluate(work: Path, final: Path) -> dict[str, Any]:
            self._cli(
                "evaluate", work / "log.txt", "evaluate", "--run", self.manifests["train"]["outputs"]["run"],
                "--data", self._eval_data(), "--out", work / "report", "--nproc", c.training.nproc,
            )
            return {"report": str(final / "report")}

        def published() -> Path | None:
            root = Path(c.publish.model_root)
            return newest_version(root) if root.is_dir() else None

        def init_from() -> str | None:
            """What training starts from: ``published`` is the version published now (none yet: scratch)."""
            if c.training.init_from != "published":
                return c.training.init_from
            current = published()
            return str(current) if current is not None else None

        def gate(work: Path, final: Path) -> dict[str, Any]:
            new = json.loads((Path(self.manifests["evaluate"]["outputs"]["report"]) / "metrics.json").read_text())
            current = published()
            reference = None
            if current is not None:  # the published model, scored on the same data as the new one
                self._cli(
                    "gate", work / "log.txt", "evaluate", "--run", current, "--data", self._eval_data(),
                    "--out", work / "published_report", "--nproc", c.training.nproc,
                )
                reference = json.loads((work / "published_report" / "metrics.json").read_text())
            checks = gate_checks(c.gate.rules, new, reference, current.name if current else None)
            passed = all(check.passed for check in checks)
            decision = {"passed": passed, "published": current.name if current else None, "checks": [asdict(x) for x in checks]}
            (work / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
            for check in checks:
                log.info("gate: %s %s", "pass" if check.passed else "FAIL", check.message)
            return decision

        def export(work: Path, final: Path) -> dict[str, Any]:
            quantize = ["--quantize", c.export.quantize] if c.export.quantize else []
            self._cli("export", work / "log.txt", "export", "--run", self.manifests["train"]["outputs"]["run"], "--out", work / "models", *quantize)
            (version,) = [p.name for p in (work / "models").iterdir() if not p.name.startswith(".")]
            return {"version": version, "model": str(final / "models" / version)}

        def publish(work: Path, final: Path) -> dict[str, Any]:
            source = Path(self.manifests["export"]["outputs"]["model"])
            root = Path(c.publish.model_root)
            target = root / source.name
            if target.exists():
                verify(target)  # refuses a damaged copy rather than calling it published
                return {"version": source.name, "path": str(target), "copied": False}
            root.mkdir(parents=True, exist_ok=True)
            partial = root / f".{source.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(source, partial)
            os.replace(partial, target)  # servers watching the root see the version whole or not at all
            return {"version": source.name, "path": str(target), "copied": True}

        stages += [
            Stage("validate", lambda: {"config": self._resolved_training_config, **self._upstream("generate")}, validate),
            Stage("train", lambda: {
                "config": self._resolved_training_config, "nproc": c.training.nproc, "init_from": init_from(),
                **self._upstream("validate"),
            }, train),
            Stage("evaluate", lambda: {"data": self._eval_data(), **self._upstream("train")}, evaluate),
            # the published model is not an input: this run's decision stands once made (its own publish
            # would otherwise re-open it); --force gate decides again against what is published now
            Stage("gate", lambda: {"rules": c.gate.rules and [r.model_dump() for r in c.gate.rules], **self._upstream("evaluate")}, gate),
            Stage("export", lambda: {"quantize": c.export.quantize, **self._upstream("train", "gate")}, export),
            Stage("publish", lambda: {"model_root": c.publish.model_root, **self._upstream("export")}, publish),
        ]
        return stages

    def run(self) -> dict[str, dict[str, Any]]:
        """Every stage in order; ``GateRefused`` when the gate says no (nothing is exported)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stage in self._stages():
            try:
                self.manifests[stage.name] = self._run_stage(stage)
            except (StageFailed, ConfigError):  # a config error exits 2, as the command it stands for
                raise
            except Exception as exc:  # noqa: BLE001 - name the stage whatever went wrong in it
                raise StageFailed(stage.name, f"{type(exc).__name__}: {exc}") from exc
            if stage.name == "gate" and not self.manifests["gate"]["outputs"]["passed"]:
                checks = [Check(**x) for x in self.manifests["gate"]["outputs"]["checks"]]
                raise GateRefused(checks, self.run_dir / "gate" / "decision.json")
        return self.manifests


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")
