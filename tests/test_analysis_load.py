"""analysis.load: reading real Parquet results folders, refusing bad ones, keeping incompatible rows apart."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import ReportError
from analysis.load import group_labels, load_results
from sweeps.layout import run_file
from tests.fixtures_analysis import write_run, write_steps

ACCS = [99.3, 99.45, 99.38]


def steps_row(step="s001-a", order=1, **kw):
    return {"step": step, "submission": "000", "order": order, "params": 7_000, "epochs": 3} | kw


@pytest.fixture
def folder(tmp_path):
    write_steps(tmp_path, [steps_row()])
    for seed in (0, 1):
        write_run(tmp_path, "s001-a", seed, ACCS, correct=[True, False, True])
    return tmp_path


def test_reads_rows_with_step_from_the_partition(folder):
    r = load_results(folder)
    assert len(r.epochs) == 6 and set(r.epochs["step"]) == {"s001-a"}
    assert r.epochs.sort_values(["seed", "epoch"])["test_acc"].tolist() == pytest.approx(ACCS * 2)
    assert r.predictions["seed"].tolist() == [0, 1] and set(r.predictions["group"]) == {"s001-a"}
    assert r.steps["step"].tolist() == ["s001-a"]


def test_missing_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(ReportError, match="no such results folder"):
        load_results(tmp_path / "nope")
    with pytest.raises(ReportError, match="no finished runs"):
        load_results(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_run_is_quarantined_and_blocks_nothing(folder, damage):
    path = run_file(folder, "epochs", "s001-a", 1)
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not parquet at all", "truncated": data[: len(data) // 2], "empty": b""}[damage])
    r = load_results(folder)
    assert sorted(r.epochs["seed"].unique()) == [0] and r.predictions["seed"].tolist() == [0]
    assert [(a.relative_to(folder), b.relative_to(folder)) for a, b in r.quarantined] == [
        (Path("epochs/step=s001-a/seed-0001.parquet"), Path("quarantine/epochs/step=s001-a/seed-0001.parquet"))
    ]
    assert (folder / "quarantine" / "predictions" / "step=s001-a" / "seed-0001.parquet").exists()  # the whole run


def test_temporary_and_hidden_files_are_skipped(folder):
    for name in (".seed-0007.parquet.1234.tmp", "seed-0008.parquet.tmp", ".seed-0009.parquet", "_seed-0010.parquet"):
        (folder / "epochs" / "step=s001-a" / name).write_bytes(b"half written")
    assert sorted(load_results(folder).epochs["seed"].unique()) == [0, 1]


def test_missing_column_and_duplicate_rows_are_refused(folder):
    path = run_file(folder, "epochs", "s001-a", 1)
    table = pq.read_table(path)
    pq.write_table(table.drop_columns("test_acc"), path)
    with pytest.raises(ReportError, match="missing column.*test_acc"):
        load_results(folder)
    pq.write_table(pa.concat_tables([table, table]), path)
    with pytest.raises(ReportError, match="duplicate rows for step s001-a, .*seed 1, epoch 1"):
        load_results(folder)


def test_quick_and_full_rows_are_kept_apart(folder):
    write_run(folder, "s001-a", 2, [98.0, 98.5], quick=True, recipe_hash="fedcba987654")
    groups = load_results(folder).epochs.groupby("group")["seed"].unique()
    assert {g: sorted(s) for g, s in groups.items()} == {"s001-a": [0, 1], "s001-a [quick]": [2]}


def test_labels_extend_the_step_name_only_as_far_as_needed():
    keys = pd.DataFrame(
        {
            "step": ["a", "a", "a", "b"],
            "recipe_hash": ["1111111aaa", "2222222bbb", "3333333ccc", "x"],
            "quick": [False, False, True, True],
            "precision": "fp32",
            "vary": "all",
            "base_seed": 0,
        }
    )
    assert group_labels(keys).tolist() == ["a @1111111", "a @2222222", "a [quick]", "b [quick]"]
    assert group_labels(keys[keys["quick"]]).tolist() == ["a", "b"]  # all quick: the report says so once
    bf16 = keys.assign(precision=["fp32", "fp32", "fp32", "bf16"])
    assert group_labels(bf16).tolist() == ["a @1111111", "a @2222222", "a [quick]", "b [quick] [bf16]"]


def test_precisions_are_never_pooled(folder):
    write_run(folder, "s001-a", 2, [98.0, 98.5], precision="bf16")
    groups = load_results(folder).epochs.groupby("group")["seed"].unique()
    assert {g: sorted(s) for g, s in groups.items()} == {"s001-a": [0, 1], "s001-a [bf16]": [2]}


def test_engines_are_pooled_unless_split(folder):
    write_run(folder, "s001-a", 2, ACCS, engine="block", correct=[True, True, False])
    write_run(folder, "s001-a", 3, ACCS, engine=["single", "block", "block"])  # resumed in a block
    assert set(load_results(folder).epochs["group"]) == {"s001-a"}
    r = load_results(folder, split=("engine",))
    groups = r.epochs.groupby("group")["seed"].unique()
    assert {g: sorted(s) for g, s in groups.items()} == {
        "s001-a [engine=single]": [0, 1],
        "s001-a [engine=block]": [2],
        "s001-a [engine=block+single]": [3],
    }
    assert r.epochs["engine"].tolist().count("single") == 7  # the rows keep their own values
    assert dict(zip(r.predictions["seed"], r.predictions["group"])) == {
        0: "s001-a [engine=single]",
        1: "s001-a [engine=single]",
        2: "s001-a [engine=block]",
    }
    two = load_results(folder, split=("engine", "block_size"))
    assert "s001-a [engine=block] [block_size=4]" in set(two.epochs["group"])


def test_only_pooled_columns_split(folder):
    with pytest.raises(ReportError, match="--split takes engine, block_size, device, not 'seed'"):
        load_results(folder, split=("seed",))


def test_missing_predictions_and_unlisted_steps(tmp_path):
    write_steps(tmp_path, [steps_row()])
    write_run(tmp_path, "s001-a", 0, ACCS)  # no predictions yet
    write_run(tmp_path, "s002-b", 0, ACCS, submission="001", params=6_000)  # steps.parquet does not list it yet
    for step, seed in (("s001-a", 0), ("s001-a", 3), ("s002-b", 1)):  # seed 0 of s001-a has finished: stale marker
        (tmp_path / "runs" / step).mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / step / f"seed-{seed:04d}.json").write_text('{"epoch": 1}')
    r = load_results(tmp_path)
    assert r.unfinished == {"s001-a": 1, "s002-b": 1}
    assert r.predictions.empty and "group" in r.predictions
    bare = r.steps.set_index("step").loc["s002-b"]
    assert (bare["submission"], bare["params"], bare["epochs"]) == ("001", 6_000, 3) and pd.isna(bare["order"])
