"""Cost per sample of the sparse top-k MoE backbone against dense MMoE as the expert count E grows.

Both backbones get the same experts (256 -> 256 -> 128, ReLU, one batched bank), T=2 tasks and the same random
float32 batch on the CPU with one thread; each step is forward + backward of ``sum_t mean(out_t^2)`` (plus
the sparse backbone's load-balancing loss, as the trainer adds it), in training mode (routing noise on).
After a few warm-up steps (and, once, an untimed pass over the first configuration, for the allocator)
a fixed number of steps is timed in process CPU time (one thread, so a busy machine stretches the wall
clock but hardly the CPU time); the cost per sample is the median step's CPU time over the batch. MMoE runs every expert on every row, so its cost per sample grows ~linearly with E; SparseMoE
(top-k, k=2) runs each row through the distinct experts its tasks chose (at most k*T = 4), so its cost
should stay roughly flat: its experts run as one batched product over a zero-padded block of rows per
chosen expert (plus the gather/scatter and the E-wide routers). Reported: CPU microseconds per sample of each, their ratio,
the expert rows the sparse backbone computes per input row (padding included), and each one's cost per
sample relative to E=4.

    python bench/sparse_moe_cost.py [--batch 2048] [--steps 10] [--warmup 2] [--experts 4 16 64]
        [--in-dim 256] [--dims 256 128] [--tasks 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from torch import nn

from recsys_mtl.modules.backbones import MMoE
from recsys_mtl.modules.experts import ExpertBank
from recsys_mtl.modules.sparse_moe import SparseMoE

K = 2


def cost_us(net: nn.Module, x: torch.Tensor, steps: int, warmup: int) -> float:
    """Forward + backward CPU microseconds per sample from the median of ``steps`` timed steps after
    ``warmup`` untimed ones."""
    def step() -> None:
        net.zero_grad(set_to_none=True)
        loss = net(x).square().mean(dim=(1, 2)).sum()
        reg = net.regulariser()
        (loss if reg is None else loss + reg).backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e6 / x.shape[0]


def count_rows(net: SparseMoE) -> list[int]:
    """A one-element counter of the expert rows (one row through one expert, padding included) ``net``
    computes from now on."""
    rows = [0]

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        rows[0] += output.shape[0] * output.shape[1]  # [A, C, H]: A experts' blocks of C rows

    net.experts.register_forward_hook(hook)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--experts", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--in-dim", type=int, default=256, help="backbone input width (the default model's is 258)")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 128], help="each expert's layers")
    parser.add_argument("--tasks", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    make_expert = partial(ExpertBank, dims=args.dims)
    x = torch.randn(args.batch, args.in_dim)
    print(f"experts ExpertBank({args.in_dim}, E, {args.dims}), T={args.tasks}, top-k k={K}, batch {args.batch}, float32 CPU, 1 thread, "
          f"{args.warmup} warm-up + {args.steps} timed forward+backward steps, CPU time")
    print()
    print("| E | MMoE CPU µs/sample | sparse CPU µs/sample | MMoE / sparse | sparse expert rows / row "
          "| MMoE cost/sample vs E=4 | sparse cost/sample vs E=4 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first = args.experts[0]
    for net in (MMoE(args.in_dim, make_expert, first, args.tasks), SparseMoE(args.in_dim, make_expert, first, args.tasks, k=K)):
        cost_us(net, x, steps=1, warmup=args.warmup)  # untimed: allocator, kernels
    base: tuple[float, float] | None = None
    for num_experts in args.experts:
        dense = MMoE(args.in_dim, make_expert, num_experts, args.tasks).train()
        sparse = SparseMoE(args.in_dim, make_expert, num_experts, args.tasks, k=K, router="topk").train()
        rows = count_rows(sparse)
        dense_cost = cost_us(dense, x, args.steps, args.warmup)
        sparse_cost = cost_us(sparse, x, args.steps, args.warmup)
        runs_per_row = rows[0] / ((args.warmup + args.steps) * args.batch)
        base = base or (dense_cost, sparse_cost)
        print(f"| {num_experts} | {dense_cost:.1f} | {sparse_cost:.1f} | {dense_cost / sparse_cost:.2f}x | {runs_per_row:.2f} "
              f"| {dense_cost / base[0]:.2f} | {sparse_cost / base[1]:.2f} |")


if __name__ == "__main__":
    main()
