"""The committed reference sweep (``benchmarks/reference``): complete, redrawn by ``sweep report`` into the CSVs
committed beside it, and told by the README in words generated from it."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.cli import app
from analysis.load import load_results
from analysis.reference import FOLDER, markdown
from analysis.stats import Options, summarize
from sweeps import layout

STEPS = ["s001-model3", "s003-model4", "s004-exp3"]
CSVS = ["steps_summary.csv", "runs_summary.csv", "progression.csv"]


@pytest.fixture(scope="module")
def results():
    return load_results(FOLDER)


def test_ten_seeds_of_each_step_full_length_and_each_epoch_once(results):
    e = results.epochs
    assert sorted(e["step"].unique()) == STEPS
    assert len(e) == 10 * 3 * 15 and not e.duplicated(["step", "seed", "epoch"]).any()
    assert (e.groupby("step")["seed"].nunique() == 10).all() and set(e["epoch"]) == set(range(1, 16))
    assert not e["quick"].any() and (e["device"] == "cpu").all()
    assert len(results.predictions) == 30


def test_only_rows_are_committed():
    """Rows, predictions and steps.parquet; not Tune's state, checkpoints or in-flight markers."""
    assert not (FOLDER / layout.TUNE).exists() and not (FOLDER / layout.RUNS).exists()


def test_the_report_redraws_the_committed_csvs(tmp_path):
    copy = tmp_path / "reference"
    shutil.copytree(FOLDER, copy)
    for name in CSVS:
        (copy / name).unlink()
    result = CliRunner().invoke(app, ["report", "--out", str(copy)])
    assert result.exit_code == 0, result.output
    for name in CSVS:
        assert (copy / name).read_bytes() == (FOLDER / name).read_bytes(), name
    assert (copy / "report.html").stat().st_size > 0


def test_the_readme_section_is_generated_from_the_data(results):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = markdown(results, summarize(results, Options()))
    assert section in readme
    steps = pd.read_csv(FOLDER / "steps_summary.csv")
    for s in steps.itertuples():
        assert f"| `{s.step}` | **{s.verdict}** |" in section
