"""The report end to end: `sweep report` on real Parquet folders, its HTML in headless Chromium, its CSV tables."""

import base64
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from analysis import figures
from analysis.load import load_results
from analysis.report import (
    STEPS_COLUMNS,
    definitions,
    definitions_markdown,
    in_plain_words,
    num,
    render_html,
    steps_columns_markdown,
    verdict_text,
)
from analysis.stats import Options, summarize
from sweeps.cli import app
from sweeps.layout import run_file
from tests.fixtures_analysis import write_demo, write_run, write_steps

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "chrome"))), None)


def invoke(*args):
    return CliRunner().invoke(app, ["report", *map(str, args)])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 5-step demo sweep and the result of `sweep report` on it (rendered once for the module)."""
    out = tmp_path_factory.mktemp("results")
    write_demo(out, sizes=(3, 2), seeds=6)
    return out, invoke("--out", out)


class Refs(HTMLParser):
    """Every tag with its attributes."""

    def __init__(self, text):
        super().__init__()
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_cli_prints_the_verdict_table_and_writes_report(demo):
    out, result = demo
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["step", "params", "epochs", "seeds"]
    assert [line.split()[0] for line in lines[1:6]] == [
        f"s00{i}-model{o}" for i, o in zip(range(1, 6), (1, 2, 3, 1, 2))
    ]
    assert f"report: {out / 'report.html'}" in result.stdout


def test_html_is_self_contained(demo):
    out, _ = demo
    text = (out / "report.html").read_text()
    tags = Refs(text).tags
    images = [a for t, a in tags if t == "img"]
    assert len(images) == 7
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    fetching = [
        (t, a) for t, a in tags for k in ("src", "href", "action") if re.match(r"\s*(https?:)?//", a.get(k) or "")
    ]
    assert fetching == [] and not any(t == "link" or (t == "script" and "src" in a) for t, a in tags)
    assert "@import" not in text and "url(" not in text


def test_html_holds_the_tables_summary_and_definitions(demo):
    out, _ = demo
    text = (out / "report.html").read_text()
    table = re.search(r'<table id="verdict-table">(.*?)</table>', text, re.S).group(1)
    assert table.count("<tr>") == 1 + 5 and 'class="verdict LUCKY"' in table
    for heading in (
        "Submission 000",
        "Submission 001",
        "Definitions and options",
        "Progression",
        "How much of the spread is the test set",
        "Columns of steps_summary.csv",
    ):
        assert heading in text
    assert "99.40 % test accuracy" in text and "in each of the last 3 epochs" in text
    for term, meaning in definitions(Options()).items():  # the definitions section is the code's
        assert f"<dt>{html.escape(term)}</dt><dd>{html.escape(meaning)}</dd>" in text
    assert text.count("<li>") == 5 and "Final accuracy scatters across seeds by" in text
    assert "6 seeds per step" in text  # partial results say how many seeds there are
    assert "have no predictions file yet" in text  # the demo's last seeds have none


def test_csv_numbers_recompute_from_the_epoch_rows(demo):
    out, _ = demo
    check_runs_summary(out, pd.read_csv(out / "runs_summary.csv"))
    steps = pd.read_csv(out / "steps_summary.csv")
    assert steps["n_seeds"].tolist() == [6] * 5
    assert steps.columns.tolist() == list(STEPS_COLUMNS)  # every column documented, and only those
    assert steps["in_plain_words"].str.startswith(tuple(v.capitalize() + ":" for v in steps["verdict"])).all()
    assert pd.read_csv(out / "progression.csv")[["before", "after"]].values.tolist() == [
        ["s001-model1", "s002-model2"],
        ["s002-model2", "s003-model3"],
        ["s004-model1", "s005-model2"],
    ]


def check_runs_summary(out, runs: pd.DataFrame, target=99.40, last_k=3):
    """Recompute best, final, worst of last K, hit and consistent from the Parquet rows, without analysis.load."""
    epochs = ds.dataset(out / "epochs", format="parquet", partitioning="hive").to_table().to_pandas()
    recipe = ds.dataset(out / "steps.parquet").to_table(columns=["step", "epochs"]).to_pandas()
    epochs = epochs.merge(recipe.rename(columns={"epochs": "recipe_epochs"}), on="step")
    assert len(runs) == epochs.groupby(["step", "seed"]).ngroups > 0
    for run in runs.itertuples():
        rows = epochs[(epochs["step"] == run.step) & (epochs["seed"] == run.seed)].sort_values("epoch")
        budget = min(rows["recipe_epochs"].iloc[0], rows["epochs"].iloc[0])
        acc = rows.loc[rows["epoch"] <= budget, "test_acc"].to_numpy()
        assert (run.budget, run.best_acc, run.final_acc) == (budget, acc.max(), acc[-1])
        assert run.lastk_min == acc[-last_k:].min()
        assert (run.hit, run.consistent) == (acc.max() >= target, acc[-last_k:].min() >= target)


def test_headless_chromium_loads_every_figure(demo, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    out, _ = demo
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-figures-loaded="7/7"' in dom  # set by the report's script once the page has loaded
    assert dom.count('data-loaded="yes"') == 7 and 'data-loaded="no"' not in dom
    assert re.search(r'<table id="verdict-table">.*s005-model2.*</table>', dom, re.S)


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    result = invoke("--out", tmp_path)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    write_run(tmp_path, "s1", 0, [99.0, 99.5])
    run_file(tmp_path, "epochs", "s1", 1).write_bytes(b"PAR1 half a file")
    result = invoke("--out", tmp_path, "--last-k", "1")  # the damaged run is moved aside, and reported without it
    assert result.exit_code == 0 and result.stderr.count("\n") == 1
    assert re.match(r"moved damaged .*step=s1/seed-0001\.parquet to .*quarantine/epochs/step=s1/", result.stderr)


def test_quick_and_full_rows_are_reported_apart(tmp_path):
    write_steps(tmp_path, [{"step": "s1", "submission": "000", "order": 1, "params": 7_000, "epochs": 3}])
    for seed in (0, 1):
        write_run(tmp_path, "s1", seed, [99.2, 99.45, 99.5])
        write_run(tmp_path, "s1", seed + 2, [97.0, 97.5], quick=True, recipe_hash="ffffffffffff")
    results = load_results(tmp_path)
    summary = summarize(results, Options(n_bootstrap=200))
    text = verdict_text(summary)
    assert re.search(r"^s1 +7,000 ok +3 ok +2 +2/2 ", text, re.M)
    # the quick runs count 2 epochs, fewer than K = 3: too short to judge
    assert re.search(r"^s1 \[quick\] +7,000 ok +2 of 3 ok +2 \(2 too short\) +0/2 .* - +TOO SHORT +- +", text, re.M)
    assert "quick rows appear as separate steps marked [quick]" in render_html(results, summary, {})
    (tmp_path / "runs" / "s1").mkdir(parents=True)
    (tmp_path / "runs" / "s1" / "seed-0009.json").write_text("{}")
    text = render_html(load_results(tmp_path), summary, {})
    assert "Not in these numbers yet: 1 unfinished run(s) (s1 1)" in text


def has_target_line(ax, target):
    return any(
        set(np.ravel(line.get_xdata())) == {target} or set(np.ravel(line.get_ydata())) == {target} for line in ax.lines
    )


def test_figures_return_figures_with_the_target_line(tmp_path):
    write_demo(tmp_path, sizes=(1, 1), seeds=3)
    results, options = load_results(tmp_path), Options(target=99.45, n_bootstrap=200)
    made = figures.all_figures(summarize(results, options), results.epochs)
    assert list(made) == ["distributions", "trajectories", "rates", "spread", "ladder", "luck", "noise"]
    assert len(made["trajectories"][0].axes) == 2  # a facet per step
    assert sum(ax.get_visible() for ax in made["ladder"][0].axes) == 2  # a panel per submission
    for name, (fig, caption) in made.items():
        assert isinstance(fig, Figure) and caption
        accuracy_axes = [ax for ax in fig.axes if ax.get_visible() and name not in ("rates", "spread", "luck")]
        assert all(has_target_line(ax, 99.45) for ax in accuracy_axes)
        fig.clf()


def test_report_on_real_sweep(sweep_results, tmp_path):
    """`sweep report` on the rows of a tiny real sweep (2 steps x 2 seeds x 2 epochs, quick)."""
    html = tmp_path / "report.html"
    result = invoke("--out", sweep_results, "--html", html, "--last-k", 2)  # the runs train 2 epochs
    assert result.exit_code == 0, result.output
    text = html.read_text()
    assert '<table id="verdict-table">' in text and text.count("data:image/png;base64,") == 7
    assert "All runs here are --quick runs" in text
    runs = pd.read_csv(tmp_path / "runs_summary.csv")
    assert len(runs) == 4
    check_runs_summary(sweep_results, runs)
    assert pd.read_csv(tmp_path / "steps_summary.csv")["n_seeds"].tolist() == [2, 2]


def test_claim_above_our_max_names_the_assumptions(tmp_path):
    write_steps(
        tmp_path,
        [
            {
                "step": "s1",
                "submission": "000",
                "order": 1,
                "params": 7_000,
                "epochs": 3,
                "claimed_best_test": 99.70,
                "assumptions": ["lr = 0.01: the seed does not say"],
            }
        ],
    )
    for seed in (0, 1):
        write_run(tmp_path, "s1", seed, [99.2, 99.45, 99.5 - seed / 10])
    results = load_results(tmp_path)
    summary = summarize(results, Options(n_bootstrap=200))
    assert "99.70: p100 >max" in verdict_text(summary)
    text = render_html(results, summary, {})
    assert "claim of 99.70 % sits at percentile 100 of our seeds&#x27; best epochs, above all of them." in text
    assert "this step assumes lr = 0.01: the seed does not say." in text


def test_last_k_longer_than_every_run_is_one_line_and_exit_code_2(tmp_path):
    write_steps(tmp_path, [{"step": "s1", "submission": "000", "order": 1, "params": 7_000, "epochs": 2}])
    write_run(tmp_path, "s1", 0, [99.0, 99.5])
    result = invoke("--out", tmp_path, "--last-k", 3)
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: last-K window of 3 epochs is longer than every run")


def test_readme_tables_are_the_code_s():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert definitions_markdown(Options()) in readme
    assert steps_columns_markdown() in readme


def test_numbers_never_print_minus_zero():
    assert num(-1.4e-14) == "0.00" and num(-0.004) == "0.00" and num(-0.005001) == "-0.01"
    assert num(-1e-9, "+.3f") == "+0.000" and num(-1e-12, ".0%") == "0%" and num(np.nan) == "–"


def test_plain_words_say_what_the_spread_means_for_luck(tmp_path):
    write_steps(tmp_path, [{"step": "s1", "submission": "000", "order": 1, "params": 7_000, "epochs": 3}])
    # finals with mean 99.38 and sample variance 0.0064 / 5 = 0.00128 pp^2 (SD 0.036 pp), against 0.00616 expected
    # from the test set: even the interval's upper end (5 * 0.00128 / 0.831 - 0.00616 = 0.0015) stays below that
    for seed, final in enumerate([99.33, 99.38, 99.41, 99.36, 99.43, 99.37]):
        write_run(tmp_path, "s1", seed, [99.2, 99.45, final])
    summary = summarize(load_results(tmp_path))
    step = next(summary.steps.itertuples())
    assert step.spread == "test set" and step.var_model_hi == pytest.approx(
        5 * 0.00128 / 0.8312 - step.var_test, abs=1e-5
    )
    words = in_plain_words(step, summary.options)
    assert words.startswith(
        "Lucky: 6 of 6 seeds reached 99.40 % at some epoch and 0 of 6 held it through the last 3 "
        "epochs. Final accuracy scatters across seeds by 0.036 pp (SD); the test set alone would "
        "make it scatter by 0.078 pp. That is all test-set noise: no seed is luckier than another. "
        "The step has one true accuracy, about 99.38 %, read with a noisy ruler, and its hits of "
        "the target are the ruler's noise, not lucky seeds."
    )
    assert "-0.00" not in verdict_text(summary) and "-0.00" not in render_html(load_results(tmp_path), summary, {})


def test_verdict_table_marks_the_seeds_own_target(tmp_path):
    write_steps(
        tmp_path,
        [
            {
                "step": "s1",
                "submission": "000",
                "order": 1,
                "params": 9_000,
                "epochs": 3,
                "target_accuracy": 99.45,
                "target_params": 10_000,
                "target_epochs": 2,
                "target_source": "000 line 1: 'under 10k in 2 epochs'",
            },
            {"step": "s2", "submission": "000", "order": 2, "params": 7_000, "epochs": 3},
        ],
    )
    for seed in (0, 1):  # best epochs 99.5 and 99.45: both reach 99.45
        write_run(tmp_path, "s1", seed, [99.2, 99.45, 99.5 - seed / 10], params=9_000)
    write_run(tmp_path, "s2", 0, [99.0, 99.1, 99.2])
    text = verdict_text(summarize(load_results(tmp_path), Options(n_bootstrap=200)))
    assert re.search(r"^s1 +9,000 OVER .* 99\.45 ok, <10,000 ok, <=2 NO +UNDECIDED", text, re.M), text
    assert re.search(r"^s2 .* - +NEVER\b", text, re.M), text


def test_split_engine_reports_each_engines_runs_apart(tmp_path):
    write_steps(tmp_path, [{"step": "s001-a", "submission": "000", "order": 1, "params": 7_000, "epochs": 3}])
    for seed in range(4):
        write_run(tmp_path, "s001-a", seed, [99.3, 99.45, 99.42], engine="single" if seed < 2 else "block")
    pooled = invoke("--out", tmp_path, "--last-k", "1", "--json")
    assert pooled.exit_code == 0, pooled.output
    assert {row["group"]: row["n_seeds"] for row in json.loads(pooled.stdout)} == {"s001-a": 4}
    split = invoke("--out", tmp_path, "--last-k", "1", "--split", "engine", "--json")
    assert split.exit_code == 0, split.output
    rows = {row["group"]: row["n_seeds"] for row in json.loads(split.stdout)}
    assert rows == {"s001-a [engine=single]": 2, "s001-a [engine=block]": 2}
    text = (tmp_path / "report.html").read_text()
    assert "<td>split</td><td>engine</td>" in text.replace("\n", "")
