"""The training loop: one linear pass of set-up, steps, evaluation and checkpoints on DMP.

Run directory ``RUN/``: ``config.yaml`` (resolved), ``dense_stats.json``, ``vocab.parquet`` (``id_map: vocab``), ``plan.json``,
``train_log.jsonl`` (one JSON object per log interval / evaluation / checkpoint), ``checkpoints/``,
``metrics.json`` (final evaluation, data quality, throughput).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan

from recsys_mtl.config import Config, save_config
from recsys_mtl.data.label_check import require_trainable_labels
from recsys_mtl.data.quality import sum_over_ranks
from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.errors import TrainingDiverged
from recsys_mtl.features.batch import Batch
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.vocab import VOCAB_FILE, Vocabularies, vocab_features
from recsys_mtl.models.adapters import require_source
from recsys_mtl.models.builder import build_train_module
from recsys_mtl.progress import Progress
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.scale import dwarfing
from recsys_mtl.train.checkpoint import (
    best_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from recsys_mtl.train.distributed import (
    DistEnv,
    broadcast_object,
    collective_timeouts,
    dense_wrapper,
    init_distributed,
    on_main,
    shutdown,
)
from recsys_mtl.train.evaluate import eval_reader, evaluate
from recsys_mtl.train.joblog import JobLog
from recsys_mtl.train.lock import run_lock
from recsys_mtl.train.optim import TrainOptimizer
from recsys_mtl.train.pipeline import BalancedTrainPipeline
from recsys_mtl.train.resume import check_out_dir
from recsys_mtl.train.selection import Selection
from recsys_mtl.train.sharding import describe_plan, make_plan, sharders
from recsys_mtl.train.warm_start import source_directory, warm_start

log = logging.getLogger("recsys_mtl.train")


@dataclass(frozen=True)
class Position:
    """Where training stands: optimizer steps done, and the data position they correspond to."""

    step: int
    epoch: int
    batch_in_epoch: int


def resume_position(meta: dict[str, Any], steps_per_epoch: int, world_size: int) -> Position:
    """The data position to continue from. At another world size the rows already consumed in the
    epoch are mapped to this job's (smaller or larger) per-rank batch count, rounding down."""
    epoch, batch = meta["epoch"], meta["batch_in_epoch"]
    if meta["world_size"] != world_size:
        batch = batch * meta["world_size"] // world_size
        log.warning(
            "resuming a %d-rank checkpoint on %d ranks: continuing epoch %d at batch %d of %d",
            meta["world_size"], world_size, epoch, batch, steps_per_epoch,
        )
    if batch >= steps_per_epoch:
        epoch, batch = epoch + 1, 0
    return Position(epoch * steps_per_epoch + batch, epoch, batch)


def _epochs(reader: BatchReader, start: Position, epochs: int) -> Iterator[Batch]:
    """Batches from ``start`` to the end of the last epoch; each epoch has its own shuffle order."""
    for epoch in range(start.epoch, epochs):
        reader.set_epoch(epoch, start.batch_in_epoch if epoch == start.epoch else 0)
        yield from reader


def _dense_stats(config: Config, out: Path, env: DistEnv, resuming: bool, frozen: Path | None = None) -> DenseStats:
    """Train-split statistics, computed once by rank 0 (reread when resuming, so a resumed run
    transforms its inputs exactly as before) and shared with every rank. ``frozen``: the source of an
    adaptation run, whose statistics are kept (its frozen layers read inputs transformed as before)."""
    path = out / "dense_stats.json"
    stats = None
    if env.is_main:
        if resuming and path.is_file():
            stats = DenseStats.load(path)
        elif frozen is not None:
            stats = DenseStats.load(source_directory(frozen) / "dense_stats.json")
            stats.save(path)
        else:
            source = ParquetSource(config.data.train)
            stats = DenseStats.of_source(config.features.dense, source)
            stats.save(path)
    return DenseStats.from_dict(broadcast_object(stats.to_dict() if stats else None))


def _vocabularies(config: Config, out: Path, env: DistEnv, resuming: bool, frozen: Path | None = None) -> Vocabularies | None:
    """The ``id_map: vocab`` features' vocabularies, built by rank 0 in one pass over the train split
    and saved as ``RUN/vocab.parquet`` (reread when resuming: ids keep their rows), shared with every rank.
    ``frozen``: the source of an adaptation run, whose vocabularies are kept (its frozen rows keep their ids)."""
    features = vocab_features(config)
    if not features:
        return None
    path = out / VOCAB_FILE
    data = None
    if env.is_main:
        if frozen is not None and not (resuming and path.is_file()):
            shutil.copyfile(source_directory(frozen) / VOCAB_FILE, path)
        elif not (resuming and path.is_file()):
            Vocabularies.of_source(features, ParquetSource(config.data.train)).save(path)
        data = path.read_bytes()
    return Vocabularies.from_bytes(broadcast_object(data))


def _check_labels(config: Config, env: DistEnv) -> None:
    """Refuse labels that cannot train a model (a single class, too many impossible rows) before any
    step: rank 0 reads the label columns of each split once, every rank raises the same error."""
    on_main(env.is_main, lambda: require_trainable_labels(config, ["train"] + (["eval"] if config.data.eval is not None else [])))


def _seed_step(seed: int, device: torch.device) -> None:
    """Seed the generators a step's dropout draws from: the CPU's, and the current GPU's on a CUDA run.
    Not ``torch.manual_seed``: it also seeds every backend that is not initialised (CUDA, XPU, MTIA on
    a CPU run) by queueing a call with a formatted stack trace: 0.3 ms a step against 0.002 ms."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def build_sharded(config: Config, env: DistEnv, scheduled_steps: int) -> tuple[DistributedModelParallel, TrainOptimizer, ShardingPlan]:
    """The train module on the meta device, planned and sharded by DMP, with its optimizer.

    ``scheduled_steps`` is the length of the LR schedule (all epochs; ``max_steps`` only stops early,
    so a run stopped and resumed follows the same curve as one that was not).
    """
    # the same seed on every rank: dense parameters start identical (DDP also broadcasts them)
    torch.manual_seed(config.train.seed)
    module = build_train_module(config, device="meta", world_size=env.world_size)
    plan = make_plan(module, config, env.device, env.world_size)
    with warnings.catch_warnings():
        # torchrec 1.8 itself passes DDP's deprecated broadcast_buffers; nothing to act on here
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*is deprecated", category=FutureWarning)
        model = DistributedModelParallel(
            module, device=env.device, plan=plan, sharders=sharders(config), data_parallel_wrapper=dense_wrapper(env.world_size)
        )
    return model, TrainOptimizer(model, config.train, scheduled_steps), plan


def train(config: Config, out: Path, resume: bool = False, init_from: Path | None = None) -> dict[str, Any]:
    """Train as the config says (joining or creating the process group); return the final metrics.
    ``init_from``: a run or model version to warm-start a new run from (``recsys_mtl.train.warm_start``)."""
    env = init_distributed(config.train.collective_timeout_s)
    try:  # one job per run directory; a stalled rank ends the job with an error naming the collective
        with collective_timeouts(config.train.collective_timeout_s), run_lock(Path(out), env):
            result = _train(config, Path(out), resume, env, init_from)
    except BaseException:
        shutdown(failed=True)
        raise
    shutdown()
    return result


def _train(config: Config, out: Path, resume: bool, env: DistEnv, init_from: Path | None) -> dict[str, Any]:
    t = config.train
    latest = check_out_dir(config, out, resume, env.world_size)  # reads only: a refused resume leaves the run as it was
    require_source(config, init_from, resuming=latest is not None)
    _check_labels(config, env)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    frozen = init_from if config.adapt is not None and latest is None else None  # adaptation: the source's input transforms
    stats = _dense_stats(config, out, env, resuming=latest is not None, frozen=frozen)
    vocabs = _vocabularies(config, out, env, resuming=latest is not None, frozen=frozen)
    if env.is_main:
        save_config(config, out / "config.yaml")

    tasks = config.task_specs()
    names = [task.name for task in tasks]
    train_reader = BatchReader.from_config(
        config, "train", FeatureProcessor(config, stats, vocabs=vocabs), rank=env.rank, world_size=env.world_size,
        unknown_id_rate=config.features.unknown_id_rate,
    )
    eval_data = config.data.eval
    evaluator = None if eval_data is None else eval_reader(config, stats, eval_data, env.rank, env.world_size, vocabs=vocabs)
    steps_per_epoch = len(train_reader)
    total_steps = min(steps_per_epoch * t.epochs, t.max_steps or steps_per_epoch * t.epochs)

    model, optimizer, plan = build_sharded(config, env, scheduled_steps=steps_per_epoch * t.epochs)
    if env.is_main:
        (out / "plan.json").write_text(json.dumps(describe_plan(plan), indent=2) + "\n")
        log.info("sharding plan:\n%s", plan)

    pos = Position(0, 0, 0)
    if latest is not None:
        meta = load_checkpoint(latest, model, optimizer)
        pos = resume_position(meta, steps_per_epoch, env.world_size)
        optimizer.step_count = pos.step
        log.info("resumed from %s at step %d (epoch %d, batch %d)", latest, pos.step, pos.epoch, pos.batch_in_epoch)
        if init_from is not None:
            log.info("--init-from %s not used: the run continues from its own checkpoint", init_from)
    elif init_from is not None:
        warm_start(model, config, init_from, out, env.is_main, vocabs)
    resumed_at = pos.step if latest is not None else None
    joblog = JobLog(out / "train_log.jsonl", t.prometheus_port, resumed_at) if env.is_main else None
    selection = Selection.of(t.select, read_meta(latest).get("selection") if latest is not None else None)
    stopped = selection is not None and selection.exhausted  # a resumed run that had stopped early trains no further

    first_step = pos.step
    pipeline = BalancedTrainPipeline(model, optimizer, env.device)
    stream = _epochs(train_reader, pos, t.epochs)
    batches = islice(stream, max(total_steps - pos.step, 0))
    samples_per_step = config.data.batch_size * env.world_size
    metrics: dict[str, dict[str, float]] = {}
    interval_losses = torch.zeros(len(tasks))
    interval_steps, interval_start, train_seconds = 0, time.perf_counter(), 0.0
    scale_checked = False  # the first log interval of this job checks that no task swamps the others
    interval_good, bad_steps = 0, 0  # steps of the interval with finite losses; skipped steps in all

    def checkpoint(best: bool = False) -> None:
        meta = {
            "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch, "world_size": env.world_size,
            "steps_per_epoch": steps_per_epoch, "config": json.loads(config.model_dump_json()), "metrics": metrics,
            "selection": selection.state() if selection else None, **({"best": selection.best()} if best and selection else {}),
        }
        save_checkpoint(out / "checkpoints", pos.step, model, optimizer, meta, t.keep_checkpoints, best)
        if joblog:
            joblog.write("checkpoint", step=pos.step)

    def run_eval() -> None:
        nonlocal metrics
        if evaluator is None:
            return
        detached = pipeline.detach()  # evaluation runs the sharded model without the pipeline's hooks
        metrics = evaluate(detached, evaluator, tasks, env.device, groups=config.group_key is not None)
        pipeline.attach(detached)
        if joblog:
            joblog.write("eval", step=pos.step, epoch=pos.epoch, metrics=metrics)
        log.info("eval at step %d: %s", pos.step, _headline(metrics))

    model.train()
    progress = Progress((total_steps - pos.step) * samples_per_step, "train", "samples", enabled=env.is_main)
    try:
        while pos.step < total_steps and not stopped:
            # dropout draws from a stream fixed by (seed, step, rank): a resumed run repeats it exactly
            _seed_step(t.seed * 1_000_003 + pos.step * 7_919 + env.rank, env.device)
            step_start = time.perf_counter()
            log_step = (pos.step + 1) % t.log_every_steps == 0 or pos.step + 1 == total_steps
            pipeline.report_gradients = log_step and t.balancing.log_gradients
            losses, _ = pipeline.progress(batches)  # the pipeline returns the output part of (loss, output)
            train_seconds += time.perf_counter() - step_start
            bad = pipeline.nonfinite or (["(dense gradients)"] if optimizer.nonfinite_gradients else [])
            if bad:
                bad_steps += 1
                _check_bad_step(pos.step + 1, bad, bad_steps, t.max_bad_steps, out, warn=env.is_main)
            else:
                interval_losses += torch.stack([losses[task.name] for task in tasks]).cpu()
                interval_good += 1
            interval_steps += 1
            batch_in_epoch = pos.batch_in_epoch + 1
            epoch_done = batch_in_epoch == steps_per_epoch
            pos = Position(pos.step + 1, pos.epoch + epoch_done, 0 if epoch_done else batch_in_epoch)
            progress.update(samples_per_step)

            if log_step:
                mean = interval_losses.clone()
                dist.all_reduce(mean)  # every rank is at the same step, so this cannot hang
                mean /= max(interval_good, 1) * env.world_size  # skipped (non-finite) steps left out
                elapsed = time.perf_counter() - interval_start
                if joblog:
                    joblog.write(
                        "train", step=pos.step, epoch=pos.epoch, lr=optimizer.lr,
                        samples_per_s=interval_steps * samples_per_step / elapsed,
                        loss={task.name: float(v) for task, v in zip(tasks, mean, strict=True)},
                        task_weights=dict(zip(names, pipeline.balancer.weights().tolist(), strict=True)),
                        grad_norm=optimizer.last_grad_norm,
                        **pipeline.last_report,
                    )
                if not scale_checked and env.is_main:
                    _warn_dwarfing(tasks, dict(zip(names, mean.tolist(), strict=True)), pipeline.last_report, joblog, pos.step)
                scale_checked = True
                interval_losses.zero_()
                interval_steps, interval_good, interval_start = 0, 0, time.perf_counter()

            finished = pos.step == total_steps
            evaluated = epoch_done or finished or bool(t.eval_every_steps and pos.step % t.eval_every_steps == 0)
            if evaluated:
                run_eval()
            # train.select: every evaluation is checkpointed, the best marked; rank 0's decision holds on every rank
            improved, stopped = broadcast_object(selection.update(metrics, pos.step)) if evaluated and selection else (False, False)
            if (evaluated and selection) or epoch_done or finished or (t.checkpoint_every_steps and pos.step % t.checkpoint_every_steps == 0):
                checkpoint(best=improved)
            if stopped and env.is_main:
                log.info("%s", selection.stop_message(pos.step))
                if joblog:
                    joblog.write("early_stop", step=pos.step, metric=selection.metric, best_step=selection.best_step, best_value=selection.best_value)
    finally:
        # stop the reader's prefetch thread (it may be ahead of the last step) before teardown
        stream.close()
        progress.close()

    if pos.step == 0 or not metrics:  # nothing left to train (resumed a finished run): still report
        run_eval()
    quality = sum_over_ranks(train_reader.quality)
    result = {
        "steps": pos.step,
        "epochs": t.epochs,
        "world_size": env.world_size,
        "samples_per_s": samples_per_step * (pos.step - first_step) / train_seconds if train_seconds else None,
        "metrics": metrics,
        "train_data_quality": quality.to_dict(),
        "plan": describe_plan(plan),
    }
    if selection is not None and selection.best_step is not None:  # the best checkpoint's evaluation
        best = best_checkpoint(out / "checkpoints")
        result.update(metrics=selection.best_metrics, selected=selection.selected(best and best.name, pos.step))
    if env.is_main:
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        if joblog:
            joblog.write("done", **{k: v for k, v in result.items() if k != "plan"})
        log.info("data quality (train): %s", quality.to_dict())
    return result


def _check_bad_step(step: int, bad: list[str], bad_steps: int, allowed: int, out: Path, *, warn: bool) -> None:
    """Log a skipped step (non-finite loss or gradient); ``TrainingDiverged`` once more than ``allowed``
    were skipped. The step updated nothing and no checkpoint is written after it, so the run's latest
    checkpoint is its last good one."""
    latest = latest_checkpoint(out / "checkpoints")
    kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written before it"
    what = f"non-finite loss of task(s) {', '.join(bad)}" if not bad[0].startswith("(") else "non-finite dense gradients"
    if bad_steps > allowed:
        raise TrainingDiverged(
            f"training diverged at step {step}: {what} ({bad_steps} bad step(s), train.max_bad_steps={allowed}); "
            f"{kept}. Lower train.dense_lr / train.embedding_lr, check the labels' units (tasks[].scale), or allow "
            "a few skipped steps with train.max_bad_steps=N"
        )
    if warn:
        log.warning("step %d skipped (no update): %s (%d of %d allowed)", step, what, bad_steps, allowed)


def _warn_dwarfing(
    tasks: list[TaskSpec], losses: dict[str, float], report: dict[str, Any], joblog: JobLog | None, step: int
) -> None:
    """Warn (log and job log) when one task's loss or shared-layer gradient dwarfs another's."""
    found = [dwarfing(losses, "mean loss", tasks), dwarfing(report.get("task_grad_norm", {}), "gradient norm", tasks)]
    for warning in filter(None, found):
        log.warning("step %d: %s", step, warning)
        if joblog:
            joblog.write("warning", step=step, message=warning)


def _headline(metrics: dict[str, dict[str, float]]) -> str:
    return ", ".join(
        f"{task} {name} {value:.4f}" for task, m in metrics.items() for name, value in m.items() if not name.startswith("oracle")
    )
