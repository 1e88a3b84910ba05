"""Labels that cannot train a model are refused before training (issue 14, item 4)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_mtl.cli import main
from recsys_mtl.data.label_check import LabelCheck
from recsys_mtl.data.synthetic import GeneratorSpec, generate
from recsys_mtl.tasks.graph import TaskSpec
from tests.train.conftest import main_in_process

CLICK = TaskSpec("click")
BUY = TaskSpec("buy", after="click")
SHARE = TaskSpec("share", where="click")
WATCH = TaskSpec("watch", "regression")


def checked(tasks: list[TaskSpec], **columns: list[float | None]) -> LabelCheck:
    check = LabelCheck(tasks)
    table = pa.table({k: pa.array(v, pa.float64()) for k, v in columns.items()})
    check.add(table.slice(0, 3))
    check.add(table.slice(3))  # counts accumulate over tables
    return check


def test_clean_labels_have_no_problem():
    check = checked(
        [CLICK, BUY, SHARE, WATCH],
        click=[0, 1, 1, 0, 1, 0], buy=[0, 0, 1, 0, 0, 0], share=[None, 0, 1, None, 0, None], watch=[0, 2.5, 1, 0, 3, 0],
    )
    assert check.problems(0.0) == []
    assert check.observed == {"click": 6, "buy": 6, "share": 3, "watch": 6}


def test_a_single_class_and_a_constant_are_named_with_their_column():
    check = checked([CLICK, WATCH], click=[0, 0, 0, 0], watch=[1.5, 1.5, 1.5, 1.5])
    problems = check.problems(0.01)
    assert len(problems) == 2
    assert "task click (label column 'click') is 0 on all 4 rows its loss sees: a single class" in problems[0]
    assert "task watch (label column 'watch') is 1.5 on all 4 rows its loss sees: a constant" in problems[1]


def test_a_where_task_whose_parent_is_never_positive_has_no_usable_row():
    click, share = checked([CLICK, SHARE], click=[0, 0, 0, 0], share=[None, None, None, None]).problems(0.01)
    assert "task click (label column 'click') is 0 on all 4 rows" in click
    assert "task share (label column 'share') has no usable row (its where task 'click' is never positive)" in share


def test_missing_labels_inside_the_space_are_dropped_rows():
    # no share label where click is positive: those rows are missing, hence dropped
    check = checked([CLICK, SHARE], click=[0, 1, 0, 1], share=[None, None, None, None])
    assert "2 of 4 rows (50.0%) have impossible labels" in check.problems(0.0)[0]
    assert "share_missing 2" in check.problems(0.0)[0]


def test_the_dropped_share_is_compared_with_the_limit():
    # a funnel stage mapped to a non-binary column: rows are dropped as impossible
    check = checked([CLICK, BUY], click=[0, 1, 1, 0, 1, 0, 1, 0], buy=[0, 0, 1, 0, 0, 0, 7, 0])
    assert (check.rows_read, check.rows_dropped) == (8, 1)
    assert check.problems(0.125) == []
    (problem,) = check.problems(0.1)
    assert "1 of 8 rows (12.5%) have impossible labels and would be dropped (buy_not_0_or_1 1)" in problem
    assert "data.max_dropped_share=0.1" in problem


@pytest.fixture(scope="module")
def single_class_data(tmp_path_factory) -> Path:
    """Tiny generator data whose click and conversion columns are all 0 (a label mapped by mistake)."""
    out = tmp_path_factory.mktemp("single_class")
    generate(out, GeneratorSpec(rows=3_000, num_users=100, num_items=100, rows_per_file=3_000, row_group_size=1_000, seed=3))
    for path in (out / "train").glob("*.parquet"):
        table = pq.read_table(path)
        for name in ("click", "conversion"):
            zeros = pc.multiply(table.column(name), 0)
            table = table.set_column(table.schema.get_field_index(name), name, zeros.cast(table.schema.field(name).type))
        pq.write_table(table, path)
    return out


def test_validate_data_refuses_a_single_class_with_exit_2(single_class_data, capsys):
    assert main(["validate-data", "--config", str(single_class_data / "config.yaml"), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "train split: task click (label column 'click') is 0 on all" in err and "a single class" in err
    assert "Traceback" not in err


def test_validate_data_refuses_a_column_mapped_to_the_wrong_task(small_config_path, capsys):
    # watch time in the conversion task's place: nearly every clicked row is "not 0 or 1"
    assert main(["validate-data", "--config", str(small_config_path), "tasks.conversion.label=watch_time"]) == 2
    err = capsys.readouterr().err
    assert "have impossible labels and would be dropped (conversion_not_0_or_1" in err


def test_train_refuses_before_any_step_and_writes_nothing(single_class_data, tmp_path):
    out = tmp_path / "run"
    # refused before any step: in this process (main_in_process, no fresh import of torch)
    result = main_in_process("train", "--config", str(single_class_data / "config.yaml"), "--out", str(out))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "the data cannot train a model" in result.stderr and "a single class" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()

