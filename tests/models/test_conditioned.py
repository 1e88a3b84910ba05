"""Task- and domain-conditioned gating (PEPNet) and AITM's transfer between funnel towers, in the
whole model (issue 16, items 4 and 5)."""

from __future__ import annotations

import pytest
import torch

from recsys_mtl.config import ConfigError, validate_config
from recsys_mtl.models.builder import build_model
from recsys_mtl.tasks.outputs import predict
from tests.models.test_builder import cfg, make_batch

GATING = {"domain_features": ["device", "hour"], "task_dim": 4}


@pytest.fixture(scope="module")
def batch(small_config):
    return make_batch(small_config)


def test_gates_at_their_neutral_value_reproduce_the_base_network(small_config, batch):
    base = build_model(cfg(small_config, model__hidden_dims=[32, 16], model__tower_dims=[16, 8]), "cpu").eval()
    gated = build_model(cfg(small_config, model__hidden_dims=[32, 16], model__tower_dims=[16, 8], model__gating=GATING), "cpu").eval()
    missing, unexpected = gated.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("gating.") or ".gates." in k for k in missing)
    want, got = base(batch.sparse, batch.dense), gated(batch.sparse, batch.dense)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)
    # the gates do act once they move: the embedding gate and the towers' unit gates each change the output
    for gate in (gated.gating.embeddings.gate.out, gated.towers["click"].gates[0].out):
        with torch.no_grad():
            gate.bias.fill_(1.0)
        assert not torch.equal(gated(batch.sparse, batch.dense)["click"], want["click"])
        with torch.no_grad():
            gate.bias.zero_()


def test_the_gates_read_the_domain_and_the_task_but_do_not_steer_the_embeddings(small_config, batch):
    model = build_model(cfg(small_config, model__gating=GATING), "cpu")
    with torch.no_grad():
        for gate in (model.gating.embeddings.gate, *(g for t in model.towers.values() for g in t.gates)):
            gate.out.weight.normal_()
    logits = model(batch.sparse, batch.dense)
    click, watch = logits["click"].sum(), logits["watch_time"].sum()
    grad = torch.autograd.grad(click, model.gating.tasks.tasks.weight, retain_graph=True)[0]
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() == 0  # click's tower reads click's task embedding only
    assert torch.autograd.grad(watch, model.gating.tasks.tasks.weight)[0][2].abs().sum() > 0


def test_aitm_lets_a_stage_read_the_stage_above_and_never_exceeds_it(small_config, batch):
    config = cfg(small_config, model__tower_transfer="aitm")
    assert {t.name: t.after for t in config.tasks}["conversion"] == "click"
    model = build_model(config, "cpu")
    with torch.no_grad():  # extreme weights: the constraint must hold for any logits, not by luck
        for p in model.towers.parameters():
            p.mul_(20.0)
    logits = model(batch.sparse, batch.dense)
    outputs = predict(config.task_specs(), logits)
    assert bool((outputs["conversion"] <= outputs["click"]).all())  # the calibrator's constraint, by construction
    # the conversion tower reads the click tower's representation; click reads nothing of conversion
    click_hidden = list(model.towers["click"].mlp.parameters())[0]
    assert torch.autograd.grad(logits["conversion"].sum(), click_hidden, retain_graph=True)[0].abs().sum() > 0
    conversion_hidden = list(model.towers["conversion"].mlp.parameters())[0]
    assert torch.autograd.grad(logits["click"].sum(), conversion_hidden, allow_unused=True)[0] is None


def test_conditioning_keys_are_checked(small_config):
    with pytest.raises(ConfigError, match="model.gating.domain_features names \\['surface'\\], not id features"):
        cfg(small_config, model__gating={"domain_features": ["surface"]})
    plain = small_config.model_dump(mode="json")
    plain["tasks"] = [t for t in plain["tasks"] if t["name"] != "conversion"]
    plain["model"]["tower_transfer"] = "aitm"
    plain["ranking"]["terms"] = None
    with pytest.raises(ConfigError, match="tower_transfer=aitm transfers between funnel stages; no task has after"):
        validate_config(plain)
