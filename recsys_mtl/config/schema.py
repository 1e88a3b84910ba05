"""Typed, frozen configuration schema (SPEC §2); the ``features:`` section is in ``config.features``.

Every section is a frozen pydantic model that rejects unknown keys, so a typo fails at load time with
the key's path instead of being silently ignored. Lists are tuples so a loaded config cannot be
mutated; derive a changed config with ``apply_overrides`` / ``model_copy(update=...)`` instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

from recsys_mtl.config.adapt import AdaptConfig, check_domain_feature
from recsys_mtl.config.features import FeaturesConfig
from recsys_mtl.config.legacy import legacy_tasks_message
from recsys_mtl.config.section import Section
from recsys_mtl.tasks.graph import TaskSpec, check_task_graph, output_names
from recsys_mtl.train.selection import Mode, check_select, natural_mode


class DataConfig(Section):
    """Where the Parquet data lives and how it is read.

    ``train`` / ``eval``: a directory (or a single file) of Parquet, local path or any URI pyarrow.fs
    understands (``s3://…``); relative paths are resolved against the config file's directory.
    ``bad_rows``: ``drop`` counts and drops rows with impossible labels, ``reject`` stops with an error.
    Either way ``validate-data`` and ``train`` first read every split's labels and refuse one where a task
    has a single class (or no row) or more rows would be dropped than ``max_dropped_share`` (none with
    ``reject``).
    ``last_batch``: ``pad`` fills the last batch of every rank with zero-weight rows (nothing lost),
    ``drop`` drops the incomplete tail; either way every rank yields the same number of batches.
    """

    train: str
    eval: str | None = None
    batch_size: PositiveInt = 4096
    shuffle: bool = True
    seed: int = 0
    bad_rows: Literal["drop", "reject"] = "drop"
    max_dropped_share: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="largest share of a split's rows that may have impossible labels (dropped); more: refused before training",
    )
    last_batch: Literal["pad", "drop"] = "pad"
    prefetch: int = Field(default=4, ge=0, description="batches prepared ahead in a background thread")


Dims = tuple[PositiveInt, ...]


class GatingConfig(Section):
    """Task- and domain-conditioned gating (PEPNet, Chang et al., KDD 2023): the embeddings entering the
    backbone and every tower's hidden units are scaled by gates over the embeddings of
    ``domain_features`` (e.g. the surface or scenario; id features) and, for the towers, a learned
    ``task_dim``-wide embedding of each task; gates are ``gamma · sigmoid(...)``, 1 at the start."""

    domain_features: tuple[str, ...] = Field(min_length=1, description="id features the gates are conditioned on")
    task_dim: PositiveInt = 8
    gamma: float = Field(default=2.0, gt=0.0)


class ModelConfig(Section):
    """The network between the embeddings and the task towers (SPEC §1).

    ``hidden_dims`` is the MLP of each expert (mmoe, ple, sparse_moe), of the shared bottom
    (shared_bottom), or of each task's column (cross_stitch, sluice, soft_sharing). The backbones are
    documented with their papers in ``recsys_mtl.modules``. ``dense_dims`` is the MLP over the dense features before they
    join the embeddings (empty: raw dense values). Empty ``hidden_dims``, ``tower_dims`` and
    ``dense_dims`` with ``shared_bottom`` and ``interaction: none`` make a logistic regression on
    the same features.
    """

    backbone: Literal["shared_bottom", "mmoe", "ple", "cross_stitch", "sluice", "soft_sharing", "sparse_moe"] = "mmoe"
    interaction: Literal["auto", "dot", "none"] = Field(
        default="auto",
        description="dot: add DLRM-style pairwise dot products of the feature embeddings and the dense "
        "projection to the backbone input (all embedding dims must be equal); auto: dot when they are",
    )
    dense_dims: Dims = (64,)
    hidden_dims: Dims = (256, 128)
    num_experts: PositiveInt = Field(default=4, description="mmoe, sparse_moe: shared experts")
    moe_router: Literal["topk", "dselect"] = Field(default="topk", description="sparse_moe: noisy top-k or DSelect-k")
    moe_top_k: PositiveInt = Field(default=2, description="sparse_moe: experts each task's router selects")
    moe_balance: float = Field(default=1e-2, ge=0.0, description="sparse_moe topk: weight of the load-balancing loss")
    sluice_subspaces: PositiveInt = Field(default=2, description="sluice: subspaces of each layer")
    sluice_orthogonality: float = Field(default=0.1, ge=0.0, description="sluice: weight of the subspace orthogonality penalty")
    soft_sharing_penalty: Literal["l2", "trace"] = Field(default="l2", description="soft_sharing: L2 distance or trace norm")
    soft_sharing_strength: float = Field(default=1e-3, ge=0.0, description="soft_sharing: weight of the penalty")
    ple_levels: PositiveInt = Field(default=2, description="ple: stacked CGC levels")
    ple_shared_experts: PositiveInt = 2
    ple_task_experts: PositiveInt = 1
    tower_dims: Dims = (64,)
    tower_transfer: Literal["none", "aitm"] = Field(
        default="none", description="aitm: each funnel stage's tower (after: T) reads T's tower (Xi et al., KDD 2021)",
    )
    gating: GatingConfig | None = None
    activation: Literal["relu", "gelu", "silu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="compute dtype of the backbone (experts, gates, shared layers: most of the FLOPs), in "
        "training and serving; weights, embeddings, towers and losses stay float32. auto: bf16 where the "
        "hardware runs it natively (CPUs with AVX512-BF16/AMX, CUDA GPUs with bf16), else fp32",
    )


TaskType = Literal["binary", "regression", "weighted_logistic"]


class TaskConfig(Section):
    """One objective (SPEC §2.1, docs/tasks.md): its own tower, loss, outputs and metrics, all
    following from ``type`` and its place in the task graph (``after`` / ``where``), never its name.

    * ``binary``: BCE, output a probability; ``after: T`` makes it a funnel stage below binary task T
      (the tower predicts p(self | T); the prediction p(T) x p(self | T) is trained on every row);
    * ``regression``: squared error on ``transform(scale x label)``, output in the label's units;
    * ``weighted_logistic``: rows with label > 0 are positives weighted by ``scale x label`` (YouTube
      WLR), output E[label] = exp(logit) / scale.

    ``where: T`` takes the loss (and metrics) only on rows where T's label is positive.
    """

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="names the tower, the outputs, the metrics and the served field",
    )
    label: str | None = Field(default=None, min_length=1, description="label column (default: name)")
    type: TaskType = "binary"
    transform: Literal["none", "log1p"] = Field(default="none", description="regression only")
    scale: float = Field(
        default=1.0, gt=0.0,
        description="regression / weighted_logistic: the label is multiplied by it in the loss (e.g. 0.001 for "
        "milliseconds -> seconds) so one task's units cannot swamp the others' losses; outputs stay in label units",
    )
    after: str | None = Field(default=None, description="binary only: funnel stage below this binary task")
    where: str | None = Field(default=None, description="loss only on rows where this binary task's label is 1")
    weight: float = Field(default=1.0, ge=0.0, description="loss weight, or a balancing strategy's start")
    weight_column: str | None = Field(default=None, min_length=1, description="per-row sample weight column")

    @property
    def label_column(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _keys_fit_type(self) -> TaskConfig:
        if self.after is not None and self.type != "binary":
            raise ValueError(
                f"task {self.name!r}: after is for binary funnel stages, not type {self.type}; use where: "
                f"{self.after} to train it on {self.after}'s positive rows"
            )
        if self.transform != "none" and self.type != "regression":
            raise ValueError(f"task {self.name!r}: transform is for regression tasks, not type {self.type}")
        if self.scale != 1.0 and self.type == "binary":
            raise ValueError(f"task {self.name!r}: scale is for regression / weighted_logistic tasks, not binary")
        if self.after is not None and self.after == self.where:
            raise ValueError(f"task {self.name!r}: after and where both name {self.after!r}; pick one")
        return self


ShardingType = Literal["table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "data_parallel"]


class BalancingConfig(Section):
    """How the task losses are combined into the one loss that is back-propagated (SPEC §1).

    * ``fixed``: sum of ``tasks[].weight`` x loss;
    * ``uncertainty``: Kendall et al. (2018), a learned log-variance s per task: exp(-s)·L + s/2 for
      classification losses, exp(-s)·L/2 + s/2 for ``regression`` tasks;
    * ``gradnorm``: Chen et al. (2018), weights learned so the tasks' gradient norms at the last shared
      layer follow their relative inverse training rates to the power ``gradnorm_alpha``;
    * ``dwa``: Dynamic Weight Average, Liu et al. (2019): weights from the ratio of each task's mean
      loss over the last two windows of ``dwa_window_steps`` steps, softmax at ``dwa_temperature``;
    * ``pcgrad``: Yu et al. (2020), each task's gradient on the shared dense parameters loses its
      component along any other task's gradient it conflicts with (negative inner product);
    * ``metabalance``: He et al. (2022), per shared tensor each auxiliary task's gradient is rescaled
      towards the ``metabalance_target`` task's (moving-average) gradient norm, relaxed by
      ``metabalance_relax``, averaged with ``metabalance_beta``;
    * ``dst``: Dropped Scheduled Task, Malhotra et al. (2023): each step every task is kept with a
      probability from its funnel depth, its share of labels (``dst_label_counts``), the training
      progress (``dst_progress_steps``) and the stagnation of its loss (``dst_window_steps``), mixed by
      ``dst_metric_weights`` above the floor ``dst_min_prob``; dropped tasks add nothing that step;
    * ``gradvac``: Gradient Vaccine, Wang et al. (2021): PCGrad with adaptive cosine goals, an EMA
      (``gradvac_beta``) of each pair's observed gradient cosine (0: PCGrad);
    * ``cagrad``: Liu et al. (2021), the update within ``cagrad_c``·‖mean gradient‖ of the mean
      gradient that most improves the worst task (0: the plain weighted sum).

    ``metabalance``, ``gradvac`` and ``cagrad`` change the gradient of the shared dense parameters only;
    the embeddings and the towers get the ordinary gradient of the weighted sum.
    """

    strategy: Literal["fixed", "uncertainty", "gradnorm", "dwa", "pcgrad", "metabalance", "dst", "gradvac", "cagrad"] = "fixed"
    gradnorm_alpha: float = Field(default=1.5, ge=0.0, description="gradnorm: restoring-force strength")
    gradnorm_lr: float = Field(default=0.01, gt=0.0, description="gradnorm: Adam step size of the weights")
    dwa_temperature: float = Field(default=2.0, gt=0.0, description="dwa: softmax temperature T")
    dwa_window_steps: PositiveInt = Field(default=100, description="dwa: steps averaged per loss window")
    metabalance_target: str | None = Field(
        default=None, description="metabalance: the target task (its gradient magnitude is kept); null: the first task"
    )
    metabalance_relax: float = Field(default=0.7, ge=0.0, le=1.0, description="metabalance: relax factor r (0: plain sum)")
    metabalance_beta: float = Field(default=0.9, ge=0.0, lt=1.0, description="metabalance: moving-average factor of the norms")
    dst_min_prob: float = Field(default=0.5, ge=0.0, le=1.0, description="dst: the lowest keep probability (1: never drop)")
    dst_metric_weights: tuple[float, float, float, float] = Field(
        default=(0.25, 0.25, 0.25, 0.25),
        description="dst: how the depth, labels, progress and stagnancy metrics are mixed (normalised to sum 1)",
    )
    dst_progress_steps: PositiveInt = Field(default=10_000, description="dst: steps over which the progress metric rises to 1")
    dst_window_steps: PositiveInt = Field(default=100, description="dst: steps per loss window of the stagnancy metric")
    dst_label_counts: dict[str, float] = Field(
        default_factory=dict, description="dst: relative number of labelled examples per task (missing: 1)"
    )
    gradvac_beta: float = Field(default=0.5, ge=0.0, le=1.0, description="gradvac: EMA factor of the cosine goals (0: pcgrad)")
    cagrad_c: float = Field(default=0.5, ge=0.0, description="cagrad: radius of the ball around the mean gradient (0: plain sum)")
    log_gradients: bool = Field(
        default=True,
        description="log per-task gradient norms and pairwise cosines on the shared dense parameters at "
        "every log interval (one extra gradient pass per task on those steps)",
    )

    @model_validator(mode="after")
    def _check_dst(self) -> BalancingConfig:
        if any(w < 0 for w in self.dst_metric_weights) or sum(self.dst_metric_weights) <= 0:
            raise ValueError(f"dst_metric_weights must be >= 0 with a positive sum, got {list(self.dst_metric_weights)}")
        if any(not v > 0 for v in self.dst_label_counts.values()):
            raise ValueError(f"dst_label_counts must be positive, got {self.dst_label_counts}")
        return self


class SelectConfig(Section):
    """Model selection (SPEC §4): follow ``metric`` at every evaluation, checkpoint there, mark the best
    checkpoint (``checkpoints/BEST``) and stop after ``patience`` evaluations without improvement."""

    metric: str = Field(description="<task>.<metric> of the evaluation, e.g. click.auc or watch_time.rmse")
    mode: Literal["max", "min"] | None = Field(
        default=None, description="max or min; null: the metric's direction (auc, gauc, pr_auc, xauc: max; logloss, ne, rmse, mae: min)"
    )
    patience: PositiveInt | None = Field(default=None, description="evaluations without improvement before stopping; null: never stop")
    min_delta: float = Field(default=0.0, ge=0.0, description="smallest change that counts as an improvement")

    @property
    def direction(self) -> Mode:
        """``mode``, or the metric's own direction."""
        return self.mode or natural_mode(self.metric)


class TrainConfig(Section):
    """Optimisation, logging, evaluation and checkpoint cadence (SPEC §4)."""

    epochs: PositiveInt = 1
    max_steps: PositiveInt | None = Field(default=None, description="stop after this many steps in all")
    embedding_optimizer: Literal["rowwise_adagrad", "adam"] = "rowwise_adagrad"
    embedding_lr: float = Field(default=0.05, gt=0.0)
    dense_optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    dense_lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_steps: int = Field(default=50, ge=0, description="linear LR warm-up of the dense optimizer")
    lr_decay: Literal["none", "linear", "cosine"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    grad_clip_norm: float | None = Field(default=10.0, gt=0.0, description="dense gradients; null: off")
    max_bad_steps: int = Field(
        default=0, ge=0,
        description="steps with a non-finite loss or dense gradient that are skipped (no update) before training "
        "stops with an error naming the step and tasks; 0: stop at the first. The last good checkpoint is kept",
    )
    log_every_steps: PositiveInt = 50
    eval_every_steps: int = Field(default=0, ge=0, description="0: evaluate at the end of each epoch only")
    checkpoint_every_steps: int = Field(default=0, ge=0, description="0: at the end of each epoch only")
    keep_checkpoints: PositiveInt = 2
    sharding: dict[str, ShardingType] = Field(
        default_factory=dict, description="pin a table's sharding type; others are chosen by the planner"
    )
    prometheus_port: int | None = Field(default=None, ge=0, le=65535, description="rank 0 job metrics")
    collective_timeout_s: float = Field(
        default=600.0, gt=0.0,
        description="longest wait of a rank for the others in a collective (rendezvous, step, evaluation, "
        "checkpoint); past it the job stops with an error naming the collective instead of hanging",
    )
    balancing: BalancingConfig = BalancingConfig()
    seed: int = 0
    select: SelectConfig | None = Field(default=None, description="model selection and early stopping; null: off")


class RankingConfig(Section):
    """The combined ranking score of a candidate (batch scoring and serving), over output names
    (``<task>``, ``<task>_given_<after>``; docs/tasks.md):

    * ``product``: score = Π_k term_k ** terms[k], term = the output for probabilities, 1 + the output
      for regression / weighted-logistic outputs (so a zero does not zero the score);
    * ``sum``: score = Σ_k terms[k] * output_k.

    ``terms`` null: every task's ``<task>`` output with exponent (or weight) 1.
    """

    combine: Literal["product", "sum"] = "product"
    terms: dict[str, float] | None = Field(default=None, description="output name -> exponent (product) or weight (sum)")


class Config(Section):
    """The whole resolved configuration of a run."""

    data: DataConfig
    features: FeaturesConfig
    tasks: tuple[TaskConfig, ...] = Field(min_length=1, description="the objectives (SPEC §2.1, docs/tasks.md)")
    group_key: str | None = Field(default=None, description="column grouping rows for GAUC (e.g. user_id)")
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    ranking: RankingConfig = RankingConfig()
    adapt: AdaptConfig | None = Field(default=None, description="train only adapters on a model given by --init-from; null: off")

    @model_validator(mode="before")
    @classmethod
    def _no_legacy_tasks(cls, raw: Any) -> Any:
        message = legacy_tasks_message(raw)
        if message:
            raise ValueError(message)
        return raw

    @model_validator(mode="after")
    def _tasks_and_tables(self) -> Config:
        check_task_graph(self.task_specs())
        outputs = output_names(self.task_specs())
        unknown = sorted(set(self.ranking.terms or {}) - set(outputs))
        if unknown:
            raise ValueError(f"ranking.terms names unknown outputs {unknown}; outputs of these tasks: {outputs}")
        if self.model.interaction == "dot" and not self.uses_dot_interaction():
            raise ValueError("model.interaction=dot needs one embedding dim for all features; set it to none")
        unknown = sorted(set(self.train.sharding) - set(self.features.tables()))
        if unknown:
            raise ValueError(f"train.sharding names unknown tables {unknown}; tables: {list(self.features.tables())}")
        m = self.model
        if m.backbone == "sparse_moe" and m.moe_top_k > m.num_experts:
            raise ValueError(f"model.moe_top_k={m.moe_top_k} must be at most model.num_experts={m.num_experts}")
        if m.backbone == "sluice" and len(set(m.hidden_dims)) > 1:
            raise ValueError(
                f"model.backbone=sluice reads out a mix of its layers (β): model.hidden_dims must be equal, "
                f"e.g. [{m.hidden_dims[-1]}, {m.hidden_dims[-1]}]; got {list(m.hidden_dims)}"
            )
        if m.tower_transfer == "aitm" and not any(t.after for t in self.tasks):
            raise ValueError("model.tower_transfer=aitm transfers between funnel stages; no task has after: (use none)")
        if m.gating is not None:
            ids = [f.name for f in self.features.id_features]
            unknown = sorted(set(m.gating.domain_features) - set(ids))
            if unknown:
                raise ValueError(f"model.gating.domain_features names {unknown}, not id features; id features: {ids}")
        if self.adapt is not None:
            unknown = sorted(set(self.adapt.tasks) - {t.name for t in self.tasks})
            if unknown:
                raise ValueError(f"adapt.tasks names {unknown}, not tasks; tasks: {[t.name for t in self.tasks]}")
            if self.adapt.domain_feature is not None:
                check_domain_feature(self.adapt.domain_feature, self.features)
                if "backbone" in self.adapt.layers and m.backbone == "sparse_moe" and m.moe_router == "topk":
                    raise ValueError("adapt.domain_feature: the top-k sparse MoE runs its experts on rows regrouped per "
                                     "expert, which the per-row domain paths do not follow; adapt dense_arch / towers, or "
                                     "use model.moe_router=dselect")
        if self.train.select is not None:
            tasks = {t.name: {"type": t.type, "after": t.after, "where": t.where} for t in self.tasks}
            check_select(self.train.select.metric, tasks, groups=self.group_key is not None, has_eval=self.data.eval is not None)
        return self

    def task_specs(self) -> list[TaskSpec]:
        """The tasks as the model, losses, metrics and scorer see them (no config types past here)."""
        return [
            TaskSpec(
                name=t.name, type=t.type, label=t.label_column, after=t.after, where=t.where, weight=t.weight,
                transform=t.transform, scale=t.scale, weight_column=t.weight_column,
            )
            for t in self.tasks
        ]

    def ranking_terms(self) -> dict[str, float]:
        """``ranking.terms``, or the default: every task's output with exponent (weight) 1."""
        if self.ranking.terms is not None:
            return dict(self.ranking.terms)
        return {t.name: 1.0 for t in self.tasks}

    def uses_dot_interaction(self) -> bool:
        """Whether the model gets the dot interaction (``auto`` picks it when embedding dims agree)."""
        one_dim = len({f.dim for f in self.features.id_features}) == 1
        return self.model.interaction != "none" and one_dim
