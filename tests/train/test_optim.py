from __future__ import annotations

import pytest

from recsys_mtl.config import TrainConfig
from recsys_mtl.train.optim import lr_factor


def test_warmup_then_cosine_to_the_floor():
    t = TrainConfig(warmup_steps=10, lr_decay="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, 100, t) == pytest.approx(0.1)
    assert lr_factor(9, 100, t) == pytest.approx(1.0)
    assert lr_factor(10, 100, t) == pytest.approx(1.0)
    assert lr_factor(55, 100, t) == pytest.approx(0.55)
    assert lr_factor(100, 100, t) == pytest.approx(0.1)
    assert lr_factor(500, 100, t) == pytest.approx(0.1)


@pytest.mark.parametrize(("decay", "mid"), [("none", 1.0), ("linear", 0.5)])
def test_other_decays(decay, mid):
    t = TrainConfig(warmup_steps=0, lr_decay=decay, min_lr_ratio=0.0)
    assert lr_factor(50, 100, t) == pytest.approx(mid)
