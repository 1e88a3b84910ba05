"""Dropped Scheduled Task (Malhotra, Vatsa & Singh, "Dropped Scheduled Task: Mitigating Negative
Transfer in Multi-task Learning using Dynamic Task Dropping", TMLR 2023).

At every step each task is scheduled (kept) with a probability p_k and otherwise dropped: it adds
nothing to this step's loss. What the paper states (its abstract, the only part that could be
consulted) is that p_k is decided from four metrics: (i) task depth, (ii) the number of ground-truth
samples per task, (iii) the amount of training completed and (iv) task stagnancy. The formulas below
are this implementation's, not verified against the paper:

    p_k = p_min + (1 − p_min) · (λ_d·depth_k + λ_n·labels_k + λ_e·progress + λ_s·stagnancy_k)

with the λ normalised to sum 1 and each metric in [0, 1]:

* depth_k = (tasks on the funnel chain ending at k) / (the longest chain): a deeper task, harder to
  learn, is scheduled more;
* labels_k = min_j n_j / n_k from ``label_counts`` (relative labelled examples per task, default
  equal): a task with fewer labels, the one prone to being dominated, is scheduled more;
* progress = min(1, step / progress_steps): every task tends to be scheduled as training completes;
* stagnancy_k = min(1, L̄_k(n−1) / L̄_k(n−2)) over windows of ``window_steps`` steps of the
  rank-averaged loss (1 until two windows are complete): a task whose loss stopped falling is
  scheduled more (as DWA weights it more).

p_min = 1 keeps every task (the fixed weights). A scheduled task keeps its configured weight; if every
task with a non-zero weight is dropped, the most probable one (the first on ties) is kept.

The mask comes from a generator seeded with (seed, step), from the rank-averaged losses, so every rank
draws the same one; it is also broadcast from rank 0. The step count and the loss windows are buffers,
so a resumed run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, from_rank0, mean_over_ranks
from recsys_mtl.tasks.graph import TaskSpec, chain


def dst_probabilities(
    depth: torch.Tensor, labels: torch.Tensor, progress: float, stagnancy: torch.Tensor, mix: torch.Tensor, min_prob: float
) -> torch.Tensor:
    """``[T]`` scheduling probabilities from the four ``[T]`` (progress: scalar) metrics in [0, 1]."""
    metrics = torch.stack([depth, labels, torch.full_like(depth, progress), stagnancy])  # [4, T]
    score = (mix[:, None] / mix.sum() * metrics).sum(dim=0)
    return (min_prob + (1 - min_prob) * score).clamp(0.0, 1.0)


class DroppedScheduledTask(Balancer):
    def __init__(
        self,
        tasks: list[TaskSpec],
        min_prob: float = 0.5,
        mix: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25),
        progress_steps: int = 10_000,
        window_steps: int = 100,
        label_counts: dict[str, float] | None = None,
        seed: int = 0,
    ):
        super().__init__(tasks)
        self.min_prob = min_prob
        self.progress_steps = progress_steps
        self.window_steps = window_steps
        self.seed = seed
        chains = torch.tensor([float(len(chain(tasks, t.name))) for t in tasks])
        counts = torch.tensor([float((label_counts or {}).get(t.name, 1.0)) for t in tasks])
        self.register_buffer("mix", torch.tensor(mix, dtype=torch.float32), persistent=False)
        self.register_buffer("depth", chains / chains.max(), persistent=False)
        self.register_buffer("labels", counts.min() / counts, persistent=False)
        self.register_buffer("mask", torch.ones(len(tasks)))  # this step's kept tasks (1) and dropped (0)
        self.register_buffer("window_sum", torch.zeros(len(tasks)))
        self.register_buffer("window_means", torch.zeros(2, len(tasks)))  # [n−2, n−1]
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weights(self) -> torch.Tensor:
        return self.initial_weights * self.mask

    def probabilities(self) -> torch.Tensor:
        """``[T]`` this step's scheduling probabilities (from the state before the step)."""
        steps = int(self.steps)
        progress = min(1.0, steps / self.progress_steps)
        if steps >= 2 * self.window_steps:
            stagnancy = (self.window_means[1] / self.window_means[0].clamp(min=1e-12)).clamp(0.0, 1.0)
        else:
            stagnancy = torch.ones_like(self.depth)
        return dst_probabilities(self.depth, self.labels, progress, stagnancy, self.mix, self.min_prob)

    def draw(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``[T]`` the 0/1 mask for this step, the same on every rank."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        uniform = torch.rand(probabilities.shape, generator=generator, dtype=torch.float64)
        probabilities = probabilities.detach().cpu().double()
        keep = uniform < probabilities
        active = self.initial_weights.cpu() > 0
        if active.any() and not (keep & active).any():
            keep[int(torch.where(active, probabilities, -1.0).argmax())] = True
        return keep.to(torch.float32)

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        probabilities = self.probabilities()
        self.mask.copy_(from_rank0(self.draw(probabilities).to(self.mask.device)))
        self.total(losses, regulariser).backward()
        self.observe(mean_over_ranks(losses.detach()))
        return {
            "dst_keep_probability": dict(zip(self.task_names, probabilities.tolist(), strict=True)),
            "dst_kept": dict(zip(self.task_names, self.mask.tolist(), strict=True)),
        }

    @torch.no_grad()
    def observe(self, losses: torch.Tensor) -> None:
        """Add one step's (rank-averaged) losses to the stagnancy windows and count the step."""
        self.window_sum += losses.to(self.window_sum)
        self.steps += 1
        if int(self.steps) % self.window_steps == 0:
            self.window_means[0] = self.window_means[1]
            self.window_means[1] = self.window_sum / self.window_steps
            self.window_sum.zero_()
