"""torch-rechub's MMOE and ESMM on the shared arrays, trained with the library's MTLTrainer epoch."""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from inputs import Split
from latency import latency_ms  # bench/latency.py
from timing import ForwardClock
from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
from torch_rechub.models.multi_task import ESMM, MMOE
from torch_rechub.trainers import MTLTrainer
from torch_rechub.utils.data import DataGenerator

from recsys_mtl.config import Config


def _x(split: Split, names: list[str], rows: slice = slice(None)) -> dict[str, np.ndarray]:
    every = {**split.ids, **split.lists, **split.dense}
    return {name: every[name][rows] for name in names}


def run(kind: str, config: Config, train: Split, test: Split, batch_size: int, dim: int) -> dict:
    sparse = [SparseFeature(f.name, f.num_embeddings, embed_dim=dim) for f in config.features.sparse]
    if kind == "mmoe":
        features = sparse + [
            SequenceFeature(f.name, f.num_embeddings, embed_dim=dim, pooling=f.pooling, padding_idx=0)
            for f in config.features.multi_hot
        ] + [DenseFeature(f.name) for f in config.features.dense]
        model = MMOE(features, ["classification", "classification"], n_expert=4,
                     expert_params={"dims": [256, 128]}, tower_params_list=[{"dims": [64]}, {"dims": [64]}])
        labels = lambda s: np.stack([s.click, s.conversion], axis=1)  # noqa: E731
        outputs = {"click": 0, "conversion": 1}
        task_types = ["classification", "classification"]
    else:  # torch-rechub's ESMM embeds sparse features only (no dense or list inputs)
        sides = {f.name: f.side for f in config.features.sparse}
        user = [f for f in sparse if sides[f.name] in ("user", "context")]
        item = [f for f in sparse if sides[f.name] not in ("user", "context")]
        features = user + item
        model = ESMM(user, item, cvr_params={"dims": [256, 128, 64]}, ctr_params={"dims": [256, 128, 64]})
        # its columns: cvr (not trained by ESMM), ctr, ctcvr (= our click and entire-space conversion)
        labels = lambda s: np.stack([s.conversion, s.click, s.conversion], axis=1)  # noqa: E731
        outputs = {"click": 1, "conversion": 2}
        task_types = ["classification"] * 3
    names = [f.name for f in features]
    train_loader, _, test_loader = DataGenerator(_x(train, names), labels(train)).generate_dataloader(
        x_val=_x(test, names), y_val=labels(test), x_test=_x(test, names), y_test=labels(test), batch_size=batch_size,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MTLTrainer(model, task_types=task_types, optimizer_params={"lr": 1e-3, "weight_decay": 1e-5}, n_epoch=1, model_path=tmp)
        clock = ForwardClock(model)
        trainer.train_one_epoch(train_loader)
        rate = clock.samples_per_s(batch_size)
    model.eval()
    with torch.inference_mode():
        batches = [(model(x), y) for x, y in test_loader]
    predictions = torch.cat([p for p, _ in batches]).numpy()
    assert np.array_equal(torch.cat([y for _, y in batches]).numpy(), labels(test)), "test loader reordered rows"
    latency = {}
    for n in (100, 500):
        x = {k: torch.from_numpy(v) for k, v in _x(test, names, slice(0, n)).items()}
        latency[n] = latency_ms(lambda x=x: model(x))
    return {**{name: predictions[:, i] for name, i in outputs.items()}, "samples_per_s": rate, "latency": latency}
