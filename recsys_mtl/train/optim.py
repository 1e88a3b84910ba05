"""Optimizers: embeddings are updated inside the backward pass by fbgemm (fused row-wise Adagrad or
Adam, configured on the sharder); the dense parameters by a regular torch optimizer with warm-up,
decay and gradient clipping. ``TrainOptimizer`` is what TorchRec's train pipeline steps."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys_mtl.config import TrainConfig


def lr_factor(step: int, total_steps: int, t: TrainConfig) -> float:
    """Multiplier of the dense learning rate at ``step`` (0-based): linear warm-up, then decay to
    ``min_lr_ratio`` at ``total_steps``. A pure function of the step, so a resumed run needs no
    scheduler state to continue on the same curve."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_decay == "none":
        return 1.0
    progress = min(max((step - t.warmup_steps) / max(total_steps - t.warmup_steps, 1), 0.0), 1.0)
    if t.lr_decay == "linear":
        return 1.0 - (1.0 - t.min_lr_ratio) * progress
    return t.min_lr_ratio + (1.0 - t.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _dense_factory(t: TrainConfig):
    # fused (one kernel over every parameter, CPU and CUDA): torch's default on CPU is a Python loop of
    # per-tensor updates, a fixed cost per step that dominates at small batches
    if t.dense_optimizer == "adam":
        return lambda params: torch.optim.Adam(params, lr=t.dense_lr, weight_decay=t.weight_decay, fused=True)
    if t.dense_optimizer == "adamw":
        return lambda params: torch.optim.AdamW(params, lr=t.dense_lr, weight_decay=t.weight_decay, fused=True)
    if t.dense_optimizer == "adagrad":
        return lambda params: torch.optim.Adagrad(params, lr=t.dense_lr, weight_decay=t.weight_decay, fused=True)
    return lambda params: torch.optim.SGD(params, lr=t.dense_lr, momentum=0.9, weight_decay=t.weight_decay, fused=True)


class TrainOptimizer:
    """Fused embedding optimizer + scheduled, clipped dense optimizer, stepped once per batch."""

    def __init__(self, model: nn.Module, train: TrainConfig, total_steps: int):
        self.train = train
        self.total_steps = total_steps
        # frozen parameters (``adapt:``) are left out: no optimizer state, no weight decay, no clipping share
        dense = {k: p for k, p in in_backward_optimizer_filter(model.named_parameters()) if p.requires_grad}
        self.dense_params = list(dense.values())
        self.dense = KeyedOptimizerWrapper(dense, _dense_factory(train))
        self.combined = CombinedOptimizer([model.fused_optimizer, self.dense])
        self.step_count = 0
        self.last_grad_norm: float | None = None
        self.nonfinite_gradients = False  # the last step's dense gradients were not finite (step skipped)

    @property
    def lr(self) -> float:
        return self.train.dense_lr * lr_factor(self.step_count, self.total_steps, self.train)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.combined.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> None:
        for group in self.dense.param_groups:
            group["lr"] = self.lr
        self.nonfinite_gradients = False
        if self.dense_params:
            # gradients are already all-reduced by DDP here, so every rank clips (and decides) identically
            clip = self.train.grad_clip_norm
            if clip is None:  # the norm only, to catch a non-finite gradient; nothing rescaled
                norm = float(torch.nn.utils.get_total_norm([p.grad for p in self.dense_params if p.grad is not None]))
            else:
                norm = float(torch.nn.utils.clip_grad_norm_(self.dense_params, clip))
            self.last_grad_norm = norm
            if not math.isfinite(norm):
                # a NaN gradient would turn every dense weight (and Adam's moments) NaN: skip the step
                self.nonfinite_gradients = True
                self.skip()
                return
        self.combined.step()
        self.step_count += 1

    def skip(self) -> None:
        """A step that updates nothing (non-finite loss or gradient): the schedule still advances,
        so the learning rate stays a function of the data position."""
        self.zero_grad()
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return self.combined.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.combined.load_state_dict(state)

    def materialize_state(self) -> None:
        """Create the dense optimizer's lazy state (so a checkpoint can be loaded into it in place)
        without moving any parameter: the dummy zero-gradient step is undone."""
        saved = [p.detach().clone() for p in self.dense_params]
        self.dense.init_state()
        with torch.no_grad():
            for p, s in zip(self.dense_params, saved, strict=True):
                p.copy_(s)
        self.zero_grad()
