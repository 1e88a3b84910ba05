"""The MMoE paper's synthetic study (Ma et al., "Modeling Task Relationships in Multi-task Learning
with Multi-gate Mixture-of-Experts", KDD 2018, §4): two regression tasks whose correlation is set
exactly, learned by shared-bottom, one-gate MoE, MMoE and PLE with matched parameter counts, and
by three later backbones of the library: sluice networks (Ruder et al., AAAI 2019), soft parameter
sharing (an L2 tie between two task columns, Duong et al. 2015, and its trace-norm variant, Yang &
Hospedales 2017) and a sparse MoE (noisy top-2 of the same experts, Switch load-balancing loss).

Data (the paper's recipe): orthogonal unit vectors u1, u2 in R^d; w1 = c·u1,
w2 = c·(p·u1 + sqrt(1 − p²)·u2); x ~ N(0, I); y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε,
ε ~ N(0, 0.01); d = 100, m = 10, α_i, β_i ~ N(0, 1) drawn per seed, c = 3 by default (at c = 1 every
model reaches the noise floor within a few thousand steps and the comparison shows nothing). The models are the
library's own backbones (`recsys_mtl.modules`), each followed by one `Tower` per task; widths are
chosen so every model has about the MMoE's parameter count. A backbone's own loss term
(`regulariser()`: the sluice orthogonality penalty, the soft-sharing tie, the sparse MoE's routing
loss) is added to the training loss before the backward; test losses are computed in eval mode (no
routing noise). Reported: test MSE averaged over both
tasks, mean ± std over seeds, and the mean test-loss curves per correlation.

    python bench/experiments/mmoe_synthetic.py [--seeds 5] [--steps 3000] [--train-rows 20000] [--c 3]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from collections.abc import Callable
from functools import partial

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import FIGURES, markdown_table, write_section  # noqa: E402
from torch import nn  # noqa: E402

from recsys_mtl.modules.backbones import PLE, MMoE, SharedBottom  # noqa: E402
from recsys_mtl.modules.experts import ExpertBank  # noqa: E402
from recsys_mtl.modules.mlp import MLP  # noqa: E402
from recsys_mtl.modules.sluice import Sluice  # noqa: E402
from recsys_mtl.modules.soft_sharing import SoftSharing  # noqa: E402
from recsys_mtl.modules.sparse_moe import SparseMoE  # noqa: E402
from recsys_mtl.modules.towers import Tower  # noqa: E402

log = logging.getLogger("mmoe_synthetic")
CORRELATIONS = (1.0, 0.9, 0.5, 0.0)
MODELS = ("shared_bottom", "moe", "mmoe", "ple", "sluice", "soft_l2", "soft_trace", "sparse_moe")
NEW_MODELS = ("sluice", "soft_l2", "soft_trace", "sparse_moe")  # compared with MMoE in the write-up
D, M, TASKS = 100, 10, 2
EXPERTS, EXPERT_WIDTH, TOWER = 8, 16, (8,)
SUBSPACES, ORTHOGONALITY = 2, 0.1  # sluice: the paper's defaults
SOFT_STRENGTH = 1e-3  # soft sharing: weight of the L2 / trace-norm tie
TOP_K, BALANCE = 2, 1e-2  # sparse MoE: experts per task and row, Switch load-balancing weight


def make_data(p: float, c: float, rows: int, generator: torch.Generator, shape: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [N, d], y [N, 2])`` for correlation ``p`` and scale ``c``; ``shape`` = (u1, u2, α, β) fixed per seed."""
    u1, u2, alpha, beta = shape
    w = torch.stack([c * u1, c * (p * u1 + math.sqrt(1 - p * p) * u2)], dim=1)  # [d, 2]
    x = torch.randn(rows, D, generator=generator)
    z = x @ w  # [N, 2]
    waves = torch.sin(alpha[:, None, None] * z + beta[:, None, None]).sum(dim=0)  # [N, 2]
    return x, z + waves + 0.1 * torch.randn(rows, TASKS, generator=generator)


def task_shape(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    q, _ = torch.linalg.qr(torch.randn(D, 2, generator=generator))  # two orthonormal columns
    return q[:, 0], q[:, 1], torch.randn(M, generator=generator), torch.randn(M, generator=generator)


class TwoTaskRegressor(nn.Module):
    """backbone ``[B, d] -> [T, B, H]``, then one tower per task: ``[B, d] -> [B, T]``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.towers = nn.ModuleList(Tower(backbone.out_dim, TOWER) for _ in range(TASKS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = self.backbone(x)  # [T, B, H]
        return torch.stack([tower(reps[t]) for t, tower in enumerate(self.towers)], dim=1)

    def regulariser(self) -> torch.Tensor | None:
        """The backbone's own loss term (None without one); for the sparse MoE that of the last
        training-mode forward, so call it right after the forward."""
        return self.backbone.regulariser()


def builders() -> dict[str, Callable[[int], nn.Module]]:
    """Model name -> (width -> model); the width is what is tuned to match parameter counts."""
    expert = lambda width: partial(ExpertBank, dims=(width,))  # noqa: E731
    return {
        "shared_bottom": lambda w: TwoTaskRegressor(SharedBottom(MLP(D, (w,)), TASKS)),
        "moe": lambda w: TwoTaskRegressor(MMoE(D, expert(w), EXPERTS, TASKS, num_gates=1)),
        "mmoe": lambda w: TwoTaskRegressor(MMoE(D, expert(w), EXPERTS, TASKS)),
        # two CGC levels, one task expert per task and two shared experts per level
        "ple": lambda w: TwoTaskRegressor(PLE(D, expert(w), TASKS, levels=2, task_experts=1, shared_experts=2)),
        # two layers of w units per task column, S subspaces mixed by alpha after each, beta readout
        "sluice": lambda w: TwoTaskRegressor(Sluice(D, [w, w], TASKS, lambda i, o: MLP(i, (o,)), SUBSPACES, ORTHOGONALITY)),
        # one one-layer column of w units per task, weights tied by the penalty
        "soft_l2": lambda w: TwoTaskRegressor(SoftSharing(D, expert(w), TASKS, SOFT_STRENGTH, "l2")),
        "soft_trace": lambda w: TwoTaskRegressor(SoftSharing(D, expert(w), TASKS, SOFT_STRENGTH, "trace")),
        "sparse_moe": lambda w: TwoTaskRegressor(SparseMoE(D, expert(w), EXPERTS, TASKS, k=TOP_K, balance=BALANCE)),
    }


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_widths() -> tuple[dict[str, int], dict[str, int]]:
    """Width per model whose parameter count is closest to the MMoE's (8 experts of 16 units)."""
    build = builders()
    target = count(build["mmoe"](EXPERT_WIDTH))
    widths = {"mmoe": EXPERT_WIDTH}
    for name in MODELS:
        if name != "mmoe":  # sluice splits every layer into SUBSPACES equal parts
            candidates = range(SUBSPACES, 400, SUBSPACES) if name == "sluice" else range(2, 400)
            widths[name] = min(candidates, key=lambda w, n=name: abs(count(build[n](w)) - target))
    return widths, {name: count(build[name](w)) for name, w in widths.items()}


def run(model: TwoTaskRegressor, data: tuple[torch.Tensor, ...], steps: int, batch: int, lr: float, generator: torch.Generator, every: int) -> list[float]:
    """Adam on the summed task MSE plus the backbone's regulariser; the test MSE (mean over tasks,
    eval mode) every ``every`` steps."""
    x, y, x_test, y_test = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    curve = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, x.shape[0], (batch,), generator=generator)
        prediction = model(x[idx])
        reg = model.regulariser()  # right after the forward: the sparse MoE's is that forward's routing loss
        loss = ((prediction - y[idx]) ** 2).mean(dim=0).sum() + (reg if reg is not None else 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                curve.append(float(((model(x_test) - y_test) ** 2).mean()))
            model.train()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--test-rows", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--c", type=float, default=3.0, help="the paper's scale constant c (|w_k| = c)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(1)
    every = max(args.steps // 40, 1)
    widths, params = matched_widths()
    log.info("widths %s, parameters %s", widths, params)
    build = builders()
    final: dict[tuple[float, str], list[float]] = {}
    curves: dict[tuple[float, str], list[list[float]]] = {}
    label_corr: dict[float, list[float]] = {}
    start = time.perf_counter()
    for p in CORRELATIONS:
        for seed in range(args.seeds):
            generator = torch.Generator().manual_seed(seed)
            shape = task_shape(generator)
            x, y = make_data(p, args.c, args.train_rows, generator, shape)
            x_test, y_test = make_data(p, args.c, args.test_rows, generator, shape)
            label_corr.setdefault(p, []).append(float(torch.corrcoef(y.T)[0, 1]))
            for name in MODELS:
                torch.manual_seed(1000 + seed)
                curve = run(build[name](widths[name]), (x, y, x_test, y_test), args.steps, args.batch_size, args.lr,
                            torch.Generator().manual_seed(seed), every)
                curves.setdefault((p, name), []).append(curve)
                final[(p, name)] = final.get((p, name), []) + [statistics.mean(curve[-3:])]
                log.info("p=%.1f seed %d %-13s test MSE %.4f (%.0f s)", p, seed, name, final[(p, name)][-1], time.perf_counter() - start)

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(CORRELATIONS), figsize=(4 * len(CORRELATIONS), 3.4), sharey=True)
    steps_axis = [every * (i + 1) for i in range(len(next(iter(curves.values()))[0]))]
    for ax, p in zip(axes, CORRELATIONS, strict=True):
        for name in MODELS:
            mean_curve = [statistics.mean(c[i] for c in curves[(p, name)]) for i in range(len(steps_axis))]
            ax.plot(steps_axis, mean_curve, label=name, linestyle="--" if name in NEW_MODELS else "-")
        ax.set_title(f"correlation p = {p}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test MSE, mean over tasks and {args.seeds} seeds")
    axes[0].set_yscale("log")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "mmoe_synthetic_curves.png", dpi=110)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in MODELS:
        means = [statistics.mean(final[(p, name)]) for p in CORRELATIONS]
        ax.plot(CORRELATIONS, means, marker="o", label=name, linestyle="--" if name in NEW_MODELS else "-")
    ax.invert_xaxis()
    ax.set_xlabel("task correlation p")
    ax.set_ylabel("final test MSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "mmoe_synthetic_final.png", dpi=110)

    def cell(p: float, name: str) -> str:
        values = final[(p, name)]
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"

    rows = [[f"{p:.1f}", f"{statistics.mean(label_corr[p]):.2f}", *(cell(p, n) for n in MODELS)] for p in CORRELATIONS]
    table = markdown_table(["p", "label corr.", *MODELS], rows)

    def paired(p: float, name: str) -> str:
        """Mean over seeds of the model's loss over shared-bottom's on the same data: the seeds'
        α, β make some problems much harder than others, which the spread above mostly shows."""
        ratios = [m / b for m, b in zip(final[(p, name)], final[(p, "shared_bottom")], strict=True)]
        return f"{statistics.mean(ratios):.2f}"

    paired_table = markdown_table(["p", *MODELS], [[f"{p:.1f}", *(paired(p, n) for n in MODELS)] for p in CORRELATIONS])

    def versus_mmoe(p: float, name: str) -> tuple[float, float, float, int, str]:
        """(mean difference to MMoE, larger of the two seed stds, mean paired ratio, seeds won, verdict).
        The verdict is "better"/"worse" only when the paired differences agree in sign beyond twice
        their standard error; otherwise "no difference" (the seed spread swamps the gap)."""
        new, base = final[(p, name)], final[(p, "mmoe")]
        n = len(new)
        differences = [a - b for a, b in zip(new, base, strict=True)]
        spread = max(statistics.stdev(new), statistics.stdev(base)) if n > 1 else 0.0
        error = statistics.stdev(differences) / math.sqrt(n) if n > 1 else math.inf
        mean = statistics.mean(differences)
        verdict = "no difference" if abs(mean) <= 2 * error else ("better" if mean < 0 else "worse")
        ratio = statistics.mean(a / b for a, b in zip(new, base, strict=True))
        return mean, spread, ratio, sum(d < 0 for d in differences), verdict

    versus = {(p, n): versus_mmoe(p, n) for p in CORRELATIONS for n in NEW_MODELS}
    versus_table = markdown_table(
        ["p", *NEW_MODELS],
        [[f"{p:.1f}", *(f"{versus[(p, n)][2]:.2f} ({versus[(p, n)][3]}/{args.seeds}; {versus[(p, n)][0]:+.3f} vs. ± {versus[(p, n)][1]:.3f})"
                        for n in NEW_MODELS)] for p in CORRELATIONS],
    )

    def verdict_line(name: str) -> str:
        groups: dict[str, list[str]] = {}
        for p in CORRELATIONS:
            groups.setdefault(versus[(p, name)][4], []).append(f"{p:.1f}")
        within = all(abs(versus[(p, name)][0]) < versus[(p, name)][1] for p in CORRELATIONS)
        parts = []
        if "better" in groups:
            parts.append(f"helps (paired) at p = {', '.join(groups['better'])}")
        if "worse" in groups:
            parts.append(f"is worse than MMoE at p = {', '.join(groups['worse'])}")
        if "no difference" in groups:
            parts.append(f"does not help at p = {', '.join(groups['no difference'])} (no paired difference beyond twice its standard error)")
        spread = ("every mean difference is smaller than the seed std, so unpaired the two are indistinguishable"
                  if within else "some mean differences exceed the seed std")
        return f"- **{name}** vs. MMoE: {'; '.join(parts)}; {spread}."

    verdicts = "\n".join(verdict_line(n) for n in NEW_MODELS)
    drop = {n: statistics.mean(final[(0.0, n)]) - statistics.mean(final[(1.0, n)]) for n in MODELS}
    ranking = {p: sorted(MODELS, key=lambda n, p=p: statistics.mean(final[(p, n)])) for p in CORRELATIONS}
    command = (
        f"python bench/experiments/mmoe_synthetic.py --seeds {args.seeds} --steps {args.steps} "
        f"--train-rows {args.train_rows} --test-rows {args.test_rows} --batch-size {args.batch_size} --lr {args.lr} --c {args.c:g}"
    )
    write_section("mmoe", f"""
## MMoE paper: task correlation vs. architecture (synthetic regression)

Command: `{command}` ({time.perf_counter() - start:.0f} s on {torch.get_num_threads()} CPU thread).

Setup: the paper's generator (d = {D}, c = {args.c:g}, m = {M}, α, β ~ N(0, 1) per seed, ε ~ N(0, 0.01)),
{args.train_rows:,} training and {args.test_rows:,} test rows per seed, seeds 0–{args.seeds - 1};
Adam (lr {args.lr}) on the sum of the two MSEs, batch {args.batch_size}, {args.steps:,} steps. Widths
matched to the MMoE's parameter count: {", ".join(f"{n} {widths[n]} units ({params[n]:,} parameters)" for n in MODELS)}
(MMoE and one-gate MoE: {EXPERTS} experts; PLE: 2 CGC levels, 1 task + 2 shared experts per level;
sluice: one column per task of two {widths["sluice"]}-unit layers, {SUBSPACES} subspaces, orthogonality
{ORTHOGONALITY:g}, balanced alpha; soft_l2 / soft_trace: one {widths["soft_l2"]}-unit one-layer column per
task, tied by the L2 distance / the trace norm of the stacked weights at strength {SOFT_STRENGTH:g};
sparse_moe: {EXPERTS} experts, noisy top-{TOP_K} routing per task with the Switch load-balancing loss at
{BALANCE:g}; every model has a {TOWER[0]}-unit tower per task). The new backbones' `regulariser()` is
added to the loss at every step; test losses are taken in eval mode. "label corr." is the measured Pearson correlation of
y1 and y2. Cells: test MSE averaged over both tasks (mean of the last three evaluations), mean ± std
over seeds; lower is better.

{table}

The same losses paired by seed, as a ratio to shared-bottom's on the same data (mean over seeds;
below 1 beats shared-bottom):

{paired_table}

Loss increase from p = 1.0 to p = 0.0: {", ".join(f"{n} {drop[n]:+.3f}" for n in MODELS)}.
Order at p = 0.0 (best first): {", ".join(ranking[0.0])}; at p = 1.0: {", ".join(ranking[1.0])}.

The new backbones against MMoE, paired by seed: mean ratio of their loss to MMoE's (below 1 beats
MMoE), seeds on which they beat it, and the mean loss difference next to the larger of the two
models' seed stds:

{versus_table}

{verdicts}

![test loss curves](experiments/mmoe_synthetic_curves.png)

![final loss vs correlation](experiments/mmoe_synthetic_final.png)
""")


if __name__ == "__main__":
    main()
