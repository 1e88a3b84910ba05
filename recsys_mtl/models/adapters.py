"""Adapters in the multi-task model (the config's ``adapt:`` section; SPEC §9): the one place that inserts
them, so training, checkpoints, warm start, export and serving all build the same architecture.

``insert_adapters`` freezes every dense parameter of the model (dense MLP, backbone, gating, transfer,
towers), wraps the chosen layers with low-rank adapters (``modules.lora``), unfreezes the towers of
``adapt.tasks`` and, with ``freeze_embeddings``, makes the model detach its pooled embeddings (the fused
embedding optimizer then gets no gradient and leaves every row as loaded). Freezing happens before
DistributedModelParallel wraps the model, so DDP and the dense optimizer see only the trainable
parameters.

When the adapters in the shared layers (dense MLP, backbone) do not apply the same way to every task
(``adapt.tasks`` set, or a task-conditioned kind), the model's ``routing`` runs the dense part once per
group (``models.routing``): the unadapted tasks read a run with the adapters off, so their outputs are
exactly the frozen model's.

With ``adapt.domain_feature`` every adapter is per domain (``modules.lora.DomainLoRA``, MLoRA): the model
reads each row's bucket of that feature from the KJT it is given (``MultiTaskModel.domain``) and every
adapter applies that bucket's path to the row.

``merge_for_serving``: when every adapter applies the same way to every task and every row that reads
it, the adapters are folded into the base weights and the result is a plain model (the config without
``adapt:``); otherwise the model is served as base + adapters.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from recsys_mtl.config import AdaptConfig, Config, ConfigError, config_to_dict, validate_config
from recsys_mtl.models.multitask import MultiTaskModel
from recsys_mtl.models.routing import Group, Routing
from recsys_mtl.modules.lora import adapter_parameters, add_adapters, merge_adapters

SHARED = ("dense_arch", "backbone")  # the adapt.layers every task reads


def adapted_tasks(adapt: AdaptConfig, tasks: list[str]) -> list[str]:
    """The tasks the adapters serve: ``adapt.tasks`` in model order, or every task."""
    return [t for t in tasks if t in adapt.tasks] if adapt.tasks else list(tasks)


def task_dependent(adapt: AdaptConfig, tasks: list[str]) -> bool:
    """Whether the shared layers' adapters apply differently to different tasks."""
    return adapt.kind != "lora" or set(adapted_tasks(adapt, tasks)) != set(tasks)


def mergeable(adapt: AdaptConfig, tasks: list[str]) -> bool:
    """Whether the adapters fold into one plain model (towers take plain LoRA, mergeable unless per domain)."""
    if adapt.domain_feature is not None:
        return False
    return not (set(adapt.layers) & set(SHARED)) or not task_dependent(adapt, tasks)


def insert_adapters(model: MultiTaskModel, config: Config) -> None:
    """Freeze ``model``'s dense parameters and insert ``config.adapt``'s adapters, in place (see the module docstring)."""
    adapt = config.adapt
    assert adapt is not None
    tasks = list(model.towers)
    served = adapted_tasks(adapt, tasks)
    for name, module in model.named_children():
        if name not in ("ebc", "managed"):  # the tables are frozen by detaching their output
            module.requires_grad_(False)
    options: dict[str, Any] = {"rank": adapt.rank, "alpha": adapt.alpha, "dropout": adapt.dropout, "kind": adapt.kind}
    if adapt.kind != "lora":
        options.update(num_tasks=len(served), task_rank=adapt.task_rank, num_experts=adapt.num_experts)
    domain: dict[str, Any] = {}
    if adapt.domain_feature is not None:
        keys = [f.name for f in config.features.id_features]  # the KJT's keys, in order
        num_domains = next(f.num_embeddings for f in config.features.sparse if f.name == adapt.domain_feature)
        domain = {"num_domains": num_domains, "domain_shared": adapt.domain_shared}
        model.domain = (keys.index(adapt.domain_feature), num_domains)
    options.update(domain)
    for layer in adapt.layers:
        if layer == "towers":
            names = [n for t in served for n in add_adapters(model.towers[t], adapt.rank, adapt.alpha, dropout=adapt.dropout, **domain)]
        else:
            names = add_adapters(getattr(model, layer), **options)
        if not names:
            raise ConfigError(f"adapt.layers: {layer} has no dense layers in this model (model.*_dims); drop it from adapt.layers")
    for t in adapt.tasks:
        model.towers[t].requires_grad_(True)
    model.freeze_embeddings = adapt.freeze_embeddings
    if set(adapt.layers) & set(SHARED) and task_dependent(adapt, tasks):
        index = {t: i for i, t in enumerate(tasks)}
        groups = []
        rest = tuple(index[t] for t in tasks if t not in served)
        if rest:
            groups.append(Group(False, None, rest))
        if adapt.kind == "lora":
            groups.append(Group(True, None, tuple(index[t] for t in served)))
        else:
            groups += [Group(True, k, (index[t],)) for k, t in enumerate(served)]
        model.routing = Routing(tuple(groups))


def adapter_summary(model: nn.Module, adapt: AdaptConfig, merged: bool) -> dict[str, Any]:
    """What an export records about the adapters (their size, and whether they were merged)."""
    count = sum(p.numel() for p in adapter_parameters(model))
    return {"kind": adapt.kind, "layers": list(adapt.layers), "tasks": list(adapt.tasks), "merged": merged,
            "domain_feature": adapt.domain_feature,
            "parameters": count, "bytes": sum(p.numel() * p.element_size() for p in adapter_parameters(model))}


def merge_for_serving(model: MultiTaskModel, config: Config) -> tuple[MultiTaskModel, Config, dict[str, Any]]:
    """``(model, config, summary)`` to export: the adapters folded into a plain copy of the model and the
    config without ``adapt:`` when they are mergeable; else ``model`` and ``config`` unchanged."""
    adapt = config.adapt
    assert adapt is not None
    tasks = [t.name for t in config.tasks]
    if not mergeable(adapt, tasks):
        return model, config, adapter_summary(model, adapt, merged=False)
    summary = adapter_summary(model, adapt, merged=True)
    plain = copy.deepcopy(model)
    merge_adapters(plain)
    plain.freeze_embeddings, plain.routing = False, None
    raw = config_to_dict(config)
    raw.pop("adapt")
    return plain, validate_config(raw, "the adapted run's config without adapt:"), summary


def require_source(config: Config, init_from: object, resuming: bool) -> None:
    """``ConfigError`` when ``adapt:`` is set for a new run without ``--init-from`` (nothing to adapt)."""
    if config.adapt is not None and init_from is None and not resuming:
        raise ConfigError(
            "adapt: trains adapters on a trained model, which --init-from RUN_OR_MODEL names (a training run, a model "
            "version or a model root); pass it, or remove the adapt: section to train from scratch"
        )
