"""The task list of SPEC §2.1: validation names the bad key; the first release's form is refused with
the new one written out."""

from __future__ import annotations

import pytest

from recsys_mtl.config import ConfigError, validate_config
from tests.config.test_load import BASE


def with_tasks(tasks: list[dict], **extra) -> dict:
    return {**BASE, "tasks": tasks, **extra}


SHORT_VIDEO = [
    {"name": "click"},
    {"name": "like", "after": "click"},
    {"name": "follow", "after": "click"},
    {"name": "share"},
    {"name": "finish", "after": "click", "weight": 0.5},
    {"name": "watch_time", "label": "play_ms", "type": "weighted_logistic", "scale": 0.001},
    {"name": "stay", "label": "stay_seconds", "type": "regression", "transform": "log1p", "where": "click"},
]


def test_any_task_list_validates():
    config = validate_config(with_tasks(SHORT_VIDEO))
    specs = config.task_specs()
    assert [t.name for t in specs] == [t["name"] for t in SHORT_VIDEO]
    assert specs[5].label == "play_ms" and specs[5].scale == 0.001 and specs[1].label == "like"
    assert config.ranking_terms() == {t["name"]: 1.0 for t in SHORT_VIDEO}


def test_two_independent_binary_tasks_need_no_kind():
    config = validate_config(with_tasks([{"name": "income"}, {"name": "never_married", "label": "marital"}]))
    assert [(t.name, t.type, t.label) for t in config.task_specs()] == [
        ("income", "binary", "income"), ("never_married", "binary", "marital"),
    ]


@pytest.mark.parametrize(
    ("tasks", "fragment"),
    [
        ([{"name": "a"}, {"name": "a"}], "names must be unique; repeated: ['a']"),
        ([{"name": "a"}, {"name": "b", "after": "nope"}], "tasks[1] (b).after: no task named 'nope'"),
        ([{"name": "a"}, {"name": "b", "where": "nope"}], "tasks[1] (b).where: no task named 'nope'"),
        ([{"name": "a", "after": "b"}, {"name": "b", "after": "a"}], "cycle: a -> b -> a"),
        ([{"name": "a", "where": "b"}, {"name": "b", "after": "a"}], "cycle"),
        ([{"name": "a"}, {"name": "t", "type": "regression", "after": "a"}], "after is for binary funnel stages"),
        ([{"name": "t", "type": "regression"}, {"name": "b", "after": "t"}], "'t' is a regression task"),
        ([{"name": "a", "transform": "log1p"}], "transform is for regression tasks"),
        ([{"name": "a", "scale": 0.1}], "scale is for regression / weighted_logistic"),
        ([{"name": "a-b"}], "tasks[0].name"),
        ([{"name": "score"}], "collide"),
        ([{"name": "a"}, {"name": "b", "after": "a"}, {"name": "b_given_a"}], "collide"),
        ([], "tasks"),
    ],
)
def test_bad_task_graphs_name_the_key(tasks, fragment):
    with pytest.raises(ConfigError) as err:
        validate_config(with_tasks(tasks))
    assert fragment in str(err.value)


def test_ranking_terms_must_name_outputs():
    raw = with_tasks([{"name": "a"}, {"name": "b", "after": "a"}], ranking={"terms": {"a": 1, "pctr": 1}})
    with pytest.raises(ConfigError, match=r"unknown outputs \['pctr'\].*'a', 'b', 'b_given_a'"):
        validate_config(raw)
    config = validate_config(with_tasks([{"name": "a"}, {"name": "b", "after": "a"}], ranking={"combine": "sum", "terms": {"b_given_a": 2}}))
    assert config.ranking_terms() == {"b_given_a": 2}


def test_the_first_release_form_fails_with_the_new_form_written_out():
    raw = {k: v for k, v in BASE.items() if k != "tasks"}
    raw["labels"] = {"click": "clk", "conversion": "conversion", "watch_time": "wt"}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    msg = str(err.value)
    assert "labels: roles and task kind/loss are the first release's form" in msg
    assert "tasks:\n- {name: clk}\n- {name: conversion}\n- {name: wt}\n" in msg  # one task per label column
    assert "`after: <task>` for a funnel stage" in msg and "`where: <task>`" in msg and "type: weighted_logistic" in msg
    old_kinds = with_tasks([{"name": "ctr", "kind": "ctr"}, {"name": "cvr", "kind": "cvr"}])
    with pytest.raises(ConfigError, match=r"- \{name: ctr\}\n- \{name: cvr\}"):
        validate_config(old_kinds)
