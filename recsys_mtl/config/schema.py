"""Typed, frozen configuration schema (SPEC §2).

Every section is a frozen pydantic model that rejects unknown keys, so a typo fails at load time with
the key's path instead of being silently ignored. Lists are tuples so a loaded config cannot be
mutated; derive a changed config with ``apply_overrides`` / ``model_copy(update=...)`` instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SparseFeature(Section):
    """One id per row (int64 or string), mapped into ``num_embeddings`` buckets.

    Bucket 0 is reserved for null (and, with ``id_map: identity``, out-of-range) ids.
    ``id_map: hash`` hashes any int64/string id into buckets 1..num_embeddings-1 with a stable hash;
    ``identity`` uses an int64 id ``i`` in [0, num_embeddings-1) as bucket ``i + 1`` (no collisions,
    for small dense vocabularies such as hour or device type).
    """

    name: str = Field(min_length=1)
    num_embeddings: int = Field(ge=2, description="buckets, including the reserved bucket 0")
    dim: PositiveInt
    column: str | None = Field(default=None, description="Parquet column, when it differs from name")
    id_map: Literal["hash", "identity"] = "hash"

    @property
    def source_column(self) -> str:
        return self.column or self.name


class MultiHotFeature(SparseFeature):
    """A variable-length list of ids per row (list<int64> or list<string>), pooled by the model."""

    pooling: Literal["sum", "mean"] = "sum"
    max_length: PositiveInt | None = Field(
        default=None, description="keep at most this many leading ids per row (None: keep all)"
    )


class DenseFeature(Section):
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
    sparse: tuple[SparseFeature, ...] = ()
    multi_hot: tuple[MultiHotFeature, ...] = ()
    dense: tuple[DenseFeature, ...] = ()

    @model_validator(mode="after")
    def _names_unique_and_some_ids(self) -> FeaturesConfig:
        names = [f.name for f in (*self.sparse, *self.multi_hot, *self.dense)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique across sparse/multi_hot/dense; repeated: {dupes}")
        if not self.sparse and not self.multi_hot:
            raise ValueError("at least one sparse or multi_hot feature is required (the embedding input)")
        return self

    @property
    def id_features(self) -> tuple[SparseFeature, ...]:
        """Sparse then multi-hot features: the keys of the KeyedJaggedTensor, in order."""
        return (*self.sparse, *self.multi_hot)


class LabelsConfig(Section):
    """Label columns by role. A role set to null is absent (e.g. a CTR-only dataset)."""

    click: str | None = "click"
    conversion: str | None = None
    watch_time: str | None = None

    @model_validator(mode="after")
    def _funnel(self) -> LabelsConfig:
        if not any((self.click, self.conversion, self.watch_time)):
            raise ValueError("at least one of click / conversion / watch_time must name a column")
        if self.conversion and not self.click:
            raise ValueError("conversion needs click: conversions are only possible on clicked rows (ESMM funnel)")
        return self

    def columns(self) -> dict[str, str]:
        """``{role: column}`` for the roles that are present."""
        roles = {"click": self.click, "conversion": self.conversion, "watch_time": self.watch_time}
        return {role: col for role, col in roles.items() if col}


class DataConfig(Section):
    """Where the Parquet data lives and how it is read.

    ``train`` / ``eval``: a directory (or a single file) of Parquet, local path or any URI pyarrow.fs
    understands (``s3://…``); relative paths are resolved against the config file's directory.
    ``bad_rows``: ``drop`` counts and drops rows with impossible labels, ``reject`` stops with an error.
    ``last_batch``: ``pad`` fills the last batch of every rank with zero-weight rows (nothing lost),
    ``drop`` drops the incomplete tail; either way every rank yields the same number of batches.
    """

    train: str
    eval: str | None = None
    batch_size: PositiveInt = 4096
    shuffle: bool = True
    seed: int = 0
    bad_rows: Literal["drop", "reject"] = "drop"
    last_batch: Literal["pad", "drop"] = "pad"
    prefetch: int = Field(default=4, ge=0, description="batches prepared ahead in a background thread")


class Config(Section):
    """The whole resolved configuration of a run."""

    data: DataConfig
    features: FeaturesConfig
    labels: LabelsConfig = LabelsConfig()
    group_key: str | None = Field(default=None, description="column grouping rows for GAUC (e.g. user_id)")
