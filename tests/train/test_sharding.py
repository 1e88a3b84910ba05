from __future__ import annotations

import pytest
import torch

from recsys_mtl.config import ConfigError, validate_config
from recsys_mtl.train.sharding import constraints


def with_pins(small_config, pins):
    raw = small_config.model_dump(mode="json")
    raw["train"]["sharding"] = pins
    return validate_config(raw)


def test_unpinned_tables_get_every_fused_type_the_device_offers(small_config):
    cpu = constraints(small_config, torch.device("cpu"))
    assert set(cpu) == set(small_config.features.tables())
    assert cpu["user_id"].sharding_types == ["table_wise", "column_wise", "table_column_wise"]
    assert cpu["user_id"].compute_kernels == ["fused"]
    assert "row_wise" in constraints(small_config, torch.device("cuda"))["user_id"].sharding_types


def test_pins_are_honoured_and_data_parallel_only_when_pinned(small_config):
    pinned = constraints(with_pins(small_config, {"hour": "data_parallel", "user_id": "column_wise"}), torch.device("cpu"))
    assert pinned["hour"].sharding_types == ["data_parallel"]
    assert pinned["user_id"].sharding_types == ["column_wise"]


def test_a_type_the_device_lacks_is_a_clear_error(small_config):
    with pytest.raises(ConfigError, match="train.sharding.user_id: row_wise is not available on cpu"):
        constraints(with_pins(small_config, {"user_id": "row_wise"}), torch.device("cpu"))
