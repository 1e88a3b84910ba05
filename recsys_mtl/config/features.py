"""The ``features:`` section: id features (and how their ids map to rows), dense features, and what the
server does with each (SPEC §2, §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from recsys_mtl.config.section import Section


class ServedFeature(Section):
    """How the online server treats a feature (SPEC §6); training ignores these keys."""

    side: Literal["user", "context", "item"] | None = Field(
        default=None,
        description="where a request usually gives it (API docs, examples, benchmarks); a request may "
        "give any feature at request level (user/context) or per candidate",
    )
    required: bool = Field(
        default=False,
        description="a scoring request without it is refused (422); otherwise a missing value is a null, "
        "as in training (reserved bucket, empty list, or the dense fill)",
    )


class SparseFeature(ServedFeature):
    """One id per row (int64 or string), mapped into ``num_embeddings`` buckets.

    Bucket 0 is reserved for null (and, with ``id_map: identity``, out-of-range) ids.
    ``id_map: hash`` hashes any int64/string id into buckets 1..num_embeddings-1 with a stable hash;
    ``identity`` uses an int64 id ``i`` in [0, num_embeddings-1) as bucket ``i + 1`` (no collisions,
    for small dense vocabularies such as hour or device type). ``vocab`` maps the ids seen at least
    ``min_count`` times in the train split, the ``num_embeddings - 1`` most frequent (ties: smaller id
    first), to buckets 1.. in that order, with no collisions; any other id (unseen in training) goes to
    bucket 0 (``recsys_mtl.features.vocab``; the vocabulary is saved with the run and the artifact).
    ``managed`` is for unbounded, churning id spaces (user and item ids): TorchRec's managed-collision
    module (``MCHManagedCollisionModule``) gives each admitted id a row of its own, admits the ids seen
    since the last admission every ``eviction_interval`` training steps and, when the table is full,
    evicts the least recently (``eviction: lru``) or least often (``lfu``) seen ids; its id-to-row map is
    part of the model's state (checkpointed, warm-started, exported). An id not admitted (unseen in
    training, evicted, or new since the last admission) reads the table's miss row, its last row; null
    ids are one id of their own (``recsys_mtl.models.managed``).
    """

    name: str = Field(min_length=1)
    num_embeddings: int = Field(ge=2, description="buckets, including the reserved bucket 0")
    dim: PositiveInt
    column: str | None = Field(default=None, description="Parquet column, when it differs from name")
    id_map: Literal["hash", "identity", "vocab", "managed"] = "hash"
    min_count: int | None = Field(
        default=None, ge=1, description="id_map: vocab only: ids seen fewer times in the train split are unknown (default 1)",
    )
    eviction: Literal["lru", "lfu"] | None = Field(
        default=None, description="id_map: managed only: which ids a full table evicts (default lru)",
    )
    eviction_interval: PositiveInt | None = Field(
        default=None, description="id_map: managed only: training steps between admissions of new ids (default 10)",
    )
    table: str | None = Field(
        default=None, description="embedding table name; features naming the same table share it"
    )

    @model_validator(mode="after")
    def _min_count_with_vocab(self) -> SparseFeature:
        if self.min_count is not None and self.id_map != "vocab":
            raise ValueError(f"min_count is for id_map: vocab; feature {self.name!r} has id_map: {self.id_map}")
        for key in ("eviction", "eviction_interval"):
            if getattr(self, key) is not None and self.id_map != "managed":
                raise ValueError(f"{key} is for id_map: managed; feature {self.name!r} has id_map: {self.id_map}")
        return self

    @property
    def managed_ids(self) -> tuple[str, int]:
        """``(eviction, eviction_interval)`` of an ``id_map: managed`` feature, defaults filled in."""
        return self.eviction or "lru", self.eviction_interval or 10

    @property
    def vocab_min_count(self) -> int:
        """``min_count`` of an ``id_map: vocab`` feature (1 when not set)."""
        return self.min_count or 1

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def source_column(self) -> str:
        return self.column or self.name


class MultiHotFeature(SparseFeature):
    """A variable-length list of ids per row (list<int64> or list<string>), pooled by the model."""

    pooling: Literal["sum", "mean"] = "sum"
    max_length: PositiveInt | None = Field(
        default=None, description="keep at most this many leading ids per row (None: keep all)"
    )


class DenseFeature(ServedFeature):
    """A float feature. Null and non-finite values are replaced by ``fill`` before the transform.

    ``log1p`` is the symmetric ``sign(x) * log1p(|x|)`` so negative values stay finite;
    ``standardize`` uses the mean/std computed once from the train split.
    ``fill: mean`` fills with that train mean.
    """

    name: str = Field(min_length=1)
    transform: Literal["none", "log1p", "standardize"] = "none"
    fill: float | Literal["mean"] = 0.0
    column: str | None = None

    @property
    def source_column(self) -> str:
        return self.column or self.name


class FeaturesConfig(Section):
    """The model's inputs. Row 0 of every table is reserved for "no id": a null id, an id out of range
    with ``id_map: identity``, and so an id the model has never seen. ``unknown_id_rate`` of the train
    split's ids are read as unknown (row 0) so that this row learns what an unknown id predicts, the
    average of the ids it stands for, instead of keeping its random initialisation (a skewed score).
    Tables of ``id_map: managed`` features read unknown ids from their miss row instead, which training
    reaches with the ids awaiting admission; ``unknown_id_rate`` leaves their ids as they are.
    """

    sparse: tuple[SparseFeature, ...] = ()
    multi_hot: tuple[MultiHotFeature, ...] = ()
    dense: tuple[DenseFeature, ...] = ()
    unknown_id_rate: float = Field(
        default=0.01, ge=0.0, lt=1.0, description="share of training ids read as unknown (reserved row 0); 0: off",
    )

    @model_validator(mode="after")
    def _names_unique_and_some_ids(self) -> FeaturesConfig:
        names = [f.name for f in (*self.sparse, *self.multi_hot, *self.dense)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique across sparse/multi_hot/dense; repeated: {dupes}")
        if not self.sparse and not self.multi_hot:
            raise ValueError("at least one sparse or multi_hot feature is required (the embedding input)")
        for table, members in self.tables().items():
            shapes = {(f.num_embeddings, f.dim) for f in members}
            poolings = {f.pooling for f in members if isinstance(f, MultiHotFeature)}
            # a managed table has one id-to-row map, admitting and evicting for all its features
            managed = {f.managed_ids if f.id_map == "managed" else None for f in members}
            if len(shapes) > 1 or len(poolings) > 1 or len(managed) > 1:
                raise ValueError(
                    f"features sharing table {table!r} ({[f.name for f in members]}) must agree on "
                    "num_embeddings and dim, multi-hot members on pooling, and on id_map: managed with its "
                    "eviction and eviction_interval"
                )
        return self

    def tables(self) -> dict[str, list[SparseFeature]]:
        """Embedding tables in order of first use, each with the id features it serves."""
        out: dict[str, list[SparseFeature]] = {}
        for f in self.id_features:
            out.setdefault(f.table_name, []).append(f)
        return out

    @property
    def id_features(self) -> tuple[SparseFeature, ...]:
        """Sparse then multi-hot features: the keys of the KeyedJaggedTensor, in order."""
        return (*self.sparse, *self.multi_hot)
