"""Cost per sample of the sparse top-k MoE backbone against dense MMoE as the expert count E grows.

Both backbones get the same experts (256 -> 256 -> 128, ReLU, one batched bank), T=2 tasks and the same random
float32 batch on the CPU with 2 threads; each step is forward + backward of ``sum_t mean(out_t^2)`` (plus
the sparse backbone's load-balancing loss, as the trainer adds it), in training mode (routing noise on).
After a few warm-up steps (and, once, an untimed pass over the first configuration, for the
thread pool and allocator) a fixed number of steps is timed; the rate is the batch over the median step
time. MMoE runs every expert on every row, so its cost per sample grows ~linearly with E; SparseMoE
(top-k, k=2) runs each row through the distinct experts its tasks chose (at most k*T = 4), so its cost
should stay roughly flat: its experts run as one batched product over a zero-padded block of rows per
chosen expert (plus the gather/scatter and the E-wide routers). Reported: samples/s of each, their ratio,
the expert rows the sparse backbone computes per input row (padding included), and each one's cost per
sample relative to E=4.

    python bench/sparse_moe_cost.py [--batch 2048] [--steps 10] [--warmup 2] [--experts 4 16 64]
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

IN_DIM, DIMS, TASKS, K = 256, [256, 128], 2, 2


def samples_per_s(net: nn.Module, x: torch.Tensor, steps: int, warmup: int) -> float:
    """Forward + backward samples/s from the median of ``steps`` timed steps after ``warmup`` untimed ones
    (the median, since on a machine shared with other jobs a few steps stall)."""
    def step() -> None:
        net.zero_grad(set_to_none=True)
        loss = net(x).square().mean(dim=(1, 2)).sum()
        reg = net.regulariser()
        (loss if reg is None else loss + reg).backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return x.shape[0] / statistics.median(times)


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
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    make_expert = partial(ExpertBank, dims=DIMS)
    x = torch.randn(args.batch, IN_DIM)
    print(f"experts ExpertBank({IN_DIM}, E, {DIMS}), T={TASKS}, top-k k={K}, batch {args.batch}, float32 CPU, 2 threads, "
          f"{args.warmup} warm-up + {args.steps} timed forward+backward steps")
    print()
    print("| E | MMoE samples/s | sparse samples/s | sparse / MMoE | sparse expert rows / row "
          "| MMoE cost/sample vs E=4 | sparse cost/sample vs E=4 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first = args.experts[0]
    for net in (MMoE(IN_DIM, make_expert, first, TASKS), SparseMoE(IN_DIM, make_expert, first, TASKS, k=K)):
        samples_per_s(net, x, steps=1, warmup=args.warmup)  # untimed: thread pool, allocator, kernels
    base: tuple[float, float] | None = None
    for num_experts in args.experts:
        dense = MMoE(IN_DIM, make_expert, num_experts, TASKS).train()
        sparse = SparseMoE(IN_DIM, make_expert, num_experts, TASKS, k=K, router="topk").train()
        rows = count_rows(sparse)
        dense_rate = samples_per_s(dense, x, args.steps, args.warmup)
        sparse_rate = samples_per_s(sparse, x, args.steps, args.warmup)
        runs_per_row = rows[0] / ((args.warmup + args.steps) * args.batch)
        base = base or (dense_rate, sparse_rate)
        print(f"| {num_experts} | {dense_rate:,.0f} | {sparse_rate:,.0f} | {sparse_rate / dense_rate:.2f}x | {runs_per_row:.2f} "
              f"| {base[0] / dense_rate:.2f} | {base[1] / sparse_rate:.2f} |")


if __name__ == "__main__":
    main()
