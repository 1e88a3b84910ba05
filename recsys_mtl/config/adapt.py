"""The ``adapt:`` section: parameter-efficient adaptation of a trained model (SPEC §9; README "Adapting a
trained model"). Checked against the rest of the config in ``Config``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from recsys_mtl.config.features import FeaturesConfig
from recsys_mtl.config.section import Section

AdaptLayer = Literal["backbone", "dense_arch", "towers"]
MAX_DOMAINS = 64  # per-domain adapters compute every domain's low-rank product for every row


class AdaptConfig(Section):
    """Train only low-rank adapters (and the towers of ``tasks``) on top of a frozen model given by
    ``train --init-from`` (required).

    * ``kind``: ``lora`` (Hu et al. 2021), ``mtlora`` (a path shared by the adapted tasks plus one per task;
      Agiza et al., CVPR 2024), ``moelora`` (``num_experts`` LoRA experts mixed by a gate per task; MOELoRA,
      Liu et al., SIGIR 2024);
    * ``layers``: where: ``backbone`` (every expert, gate and shared-bottom / column layer), ``dense_arch``
      (the MLP over the dense features), ``towers`` (plain LoRA on the towers of the adapted tasks that are
      not retrained whole; only with ``tasks`` empty);
    * ``tasks``: the new (or re-trained) tasks: their towers train whole and the adapters apply to them
      only, so every other task's outputs stay exactly the frozen model's. Empty: the adapters apply to
      every task (new data, a new surface);
    * ``freeze_embeddings``: the embedding tables stay as loaded (the pooled embeddings are detached, so
      the fused embedding optimizer never sees a gradient); false: they keep training;
    * ``domain_feature``: per-domain adapters (MLoRA, Yang et al., RecSys 2024; ``kind: lora`` only): each
      row reads the adapters of its bucket of this single-valued sparse id feature (a surface, a
      scenario), one path per bucket (its ``num_embeddings``, at most ``MAX_DOMAINS``);
      ``domain_shared`` adds a LoRA path every domain reads. Never merged: served as base + adapters.

    The base dense parameters are always frozen. B starts at zero, so the adapted model starts exactly
    as the loaded one.
    """

    kind: Literal["lora", "mtlora", "moelora"] = "lora"
    rank: PositiveInt = Field(default=8, description="rank r of each adapter (moelora: the total over its experts)")
    alpha: float = Field(default=16.0, gt=0.0, description="the update is scaled by alpha / rank")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the adapters' input")
    layers: tuple[AdaptLayer, ...] = Field(default=("backbone",), min_length=1, description="backbone, dense_arch, towers")
    tasks: tuple[str, ...] = Field(default=(), description="new tasks: towers trained, adapters only theirs; empty: all tasks")
    task_rank: PositiveInt | None = Field(default=None, description="mtlora: rank of the task paths (default: rank)")
    num_experts: PositiveInt = Field(default=2, description="moelora: LoRA experts per layer")
    freeze_embeddings: bool = True
    domain_feature: str | None = Field(default=None, description="sparse id feature choosing each row's adapters (MLoRA)")
    domain_shared: bool = Field(default=False, description="domain_feature: also a LoRA path shared by the domains")

    @model_validator(mode="after")
    def _consistent(self) -> AdaptConfig:
        if self.kind == "moelora" and self.rank % self.num_experts:
            raise ValueError(f"adapt.rank={self.rank} must be divisible by adapt.num_experts={self.num_experts} (moelora)")
        if len(set(self.layers)) != len(self.layers) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"adapt.layers and adapt.tasks must not repeat a name; got {list(self.layers)}, {list(self.tasks)}")
        if self.domain_feature is None and self.domain_shared:
            raise ValueError("adapt.domain_shared adds a shared path to per-domain adapters: set adapt.domain_feature")
        if self.domain_feature is not None and self.kind != "lora":
            raise ValueError(f"adapt.domain_feature gives each domain its own LoRA path (MLoRA): use adapt.kind=lora, "
                             f"got {self.kind}")
        if "towers" in self.layers and self.tasks:
            raise ValueError("adapt.layers: towers adapts the towers of tasks that are not retrained; with adapt.tasks "
                             "set, only those tasks are adapted and their towers train whole (drop towers)")
        return self


def check_domain_feature(name: str, features: FeaturesConfig) -> None:
    """``ValueError`` naming ``adapt.domain_feature`` unless it is a single-valued sparse id feature whose
    buckets (the KJT's ids, as they are) number at most ``MAX_DOMAINS``."""
    sparse = {f.name: f for f in features.sparse}
    if name not in sparse:
        raise ValueError(f"adapt.domain_feature names {name!r}, not a sparse (single-valued) id feature; "
                         f"sparse features: {list(sparse)}")
    feature = sparse[name]
    if feature.id_map == "managed":
        raise ValueError(f"adapt.domain_feature: {name!r} has id_map: managed, whose ids are remapped inside the "
                         "model; use hash, identity or vocab")
    if feature.num_embeddings > MAX_DOMAINS:
        raise ValueError(f"adapt.domain_feature: {name!r} has num_embeddings={feature.num_embeddings} buckets, one "
                         f"domain each; at most {MAX_DOMAINS} (every domain's adapter runs on every row): use a "
                         "feature of few buckets (identity or vocab ids of the surfaces)")
