"""Typed configuration: schema, YAML loading, ``key=value`` overrides, validation, saving."""

from recsys_mtl.config.adapt import AdaptConfig
from recsys_mtl.config.features import DenseFeature, FeaturesConfig, MultiHotFeature, SparseFeature
from recsys_mtl.config.load import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    dump_config,
    load_config,
    save_config,
    validate_config,
)
from recsys_mtl.config.schema import (
    BalancingConfig,
    Config,
    DataConfig,
    ModelConfig,
    RankingConfig,
    TaskConfig,
    TrainConfig,
)

__all__ = [
    "AdaptConfig",
    "BalancingConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DenseFeature",
    "FeaturesConfig",
    "ModelConfig",
    "RankingConfig",
    "MultiHotFeature",
    "SparseFeature",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "load_config",
    "save_config",
    "validate_config",
]
