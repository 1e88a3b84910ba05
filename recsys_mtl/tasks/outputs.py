"""Model outputs by name and the ranking score (docs/tasks.md), from tower logits.

``<task>``: a binary task's probability over its space (a funnel stage's entire-space product of its
chain's conditionals), or a regression / weighted-logistic task's expected label in the label column's
units; ``<task>_given_<after>``: a funnel stage's conditional probability. Shapes: ``[B]`` each.
"""

from __future__ import annotations

import torch

from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.losses import chain_log_prob


def predict(tasks: list[TaskSpec], logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{tower: [B]} -> {output: [B]}`` for every output of ``output_names(tasks)``, in that order."""
    out = {}
    for t in tasks:
        raw = logits[t.name]
        if t.type == "binary":
            if t.after is None:
                out[t.name] = torch.sigmoid(raw)
            else:
                out[t.name] = torch.exp(chain_log_prob(tasks, t.name, logits))
                out[t.conditional_output] = torch.sigmoid(raw)
        elif t.type == "regression":
            value = torch.expm1(raw) if t.transform == "log1p" else raw
            out[t.name] = value.clamp(min=0) / t.scale  # labels are non-negative (checked on read)
        else:
            out[t.name] = torch.exp(raw) / t.scale
    return out


def ranking_score(outputs: dict[str, torch.Tensor], probabilities: set[str], combine: str, terms: dict[str, float]) -> torch.Tensor:
    """``product``: Π_k term_k ** e_k in log space (term: a probability itself, any other output 1 +
    value); ``sum``: Σ_k w_k · output_k. ``{output: [B]} -> [B]``"""
    first = next(iter(outputs.values()))
    total = torch.zeros_like(first)
    for name, coefficient in terms.items():
        if not coefficient:
            continue
        value = outputs[name]
        if combine == "sum":
            total = total + coefficient * value
        else:
            log_term = torch.log(value.clamp(min=1e-30)) if name in probabilities else torch.log1p(value)
            total = total + coefficient * log_term
    return total if combine == "sum" else torch.exp(total)
