"""The report end to end: `sweep report` on real Parquet folders, its HTML, its words, its figures and its CSV
tables (the page in a browser: test_analysis_browser.py; the command: test_analysis_cli.py)."""

import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from analysis import figures
from analysis.cli import app
from analysis.load import load_results
from analysis.report import render_html
from analysis.stats import Options, summarize
from analysis.terminal import verdict_text
from analysis.words import (
    COMPARABLE_WORDS,
    STEPS_COLUMNS,
    definitions,
    definitions_markdown,
    in_plain_words,
    num,
    steps_columns_markdown,
)
from sweeps.layout import COMPARABLE, run_file
from tests.fixtures_analysis import write_demo, write_quick, write_run, write_steps


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
    assert lines[0].split()[:4] == ["step", "verdict", "seeds", "hit"]
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
    assert text.count('<details class="why">') == 5 and "Final accuracy scatters across seeds by" in text
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
    text = verdict_text(results, summary)
    assert re.search(r"^s1 +\w+ +2 +2/2 +\d/2 ", text, re.M)
    # the quick runs count 2 epochs, fewer than K = 3: too short to judge, and none is judged
    assert re.search(r"^s1 \[quick\] +TOO SHORT +2 +0/2 +- +97\.50 ", text, re.M)
    page = render_html(results, summary, {})
    assert "quick rows appear as separate steps marked [quick]" in page
    assert "<td>2 (2 too short)</td>" in page and "<td>2 of 3 <span" in page
    (tmp_path / "runs" / "s1").mkdir(parents=True)
    (tmp_path / "runs" / "s1" / "seed-0009.json").write_text("{}")
    text = render_html(load_results(tmp_path), summary, {})
    assert "Not in these numbers yet: 1 unfinished run (s1 1)" in text


def has_target_line(ax, target):
    return any(
        set(np.ravel(line.get_xdata())) == {target} or set(np.ravel(line.get_ydata())) == {target} for line in ax.lines
    )


def test_figures_return_figures_with_the_target_line(tmp_path):
    write_demo(tmp_path, sizes=(1, 1), seeds=3)
    results, options = load_results(tmp_path), Options(target=99.45, n_bootstrap=200)
    made = figures.all_figures(summarize(results, options), results.epochs)
    assert list(made) == ["distributions", "trajectories", "rates", "spread", "ladder", "luck", "noise"]
    assert len(made["trajectories"].axes) == 2  # a facet per step
    assert sum(ax.get_visible() for ax in made["ladder"].axes) == 2  # a panel per submission
    for name, fig in made.items():
        assert isinstance(fig, Figure)
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
    full = f"{sweep_results}-full"
    assert "A quick sweep: every run trained 2 epochs on a tenth of the training images." in text
    assert f"<code>sweep run s003-model4 s004-exp1 --out {full} &amp;&amp; sweep report --out {full}</code>" in text
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
    text = render_html(results, summary, {})
    assert "<td>99.70 % (p100)</td>" in text and "<td>best</td>" in text  # claims table: above our max
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
        "Lucky: 6 of 6 seeds reached 99.40 % at some epoch, but none held it through the last 3 "
        "epochs, so most seeds do not. Final accuracy scatters across seeds by 0.036 pp (SD); the test set alone would "
        "make it scatter by 0.078 pp. That is all test-set noise: no seed is luckier than another. "
        "The step has one true accuracy, about 99.38 %, read with a noisy ruler, and its hits of "
        "the target are the ruler's noise, not lucky seeds."
    )
    results = load_results(tmp_path)
    assert "-0.00" not in verdict_text(results, summary) and "-0.00" not in render_html(results, summary, {})


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
    results = load_results(tmp_path)
    summary = summarize(results, Options(n_bootstrap=200))
    text = verdict_text(results, summary)
    assert re.search(r"^s1 +UNDECIDED .* params over +\d+/\d+/\d+ %$", text, re.M), text
    assert re.search(r"^s2 +NEVER .* ok +-$", text, re.M), text
    claims = re.search(r'<table id="claims-table">.*?</table>', render_html(results, summary, {}), re.S).group(0)
    pass_, fail = '<span class="pass">✓</span>', '<span class="fail">✗</span>'
    assert f"<td>99.45 {pass_}, &lt;10,000 {pass_}, ≤2 {fail}</td>" in claims
    assert "<td>–</td></tr></tbody>" in claims  # s2: its seed sets no target


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
    assert invoke("--out", tmp_path, "--last-k", "1", "--split", "engine").exit_code == 0
    text = (tmp_path / "report.html").read_text()
    assert "<td>split</td><td>engine</td>" in text.replace("\n", "")


def test_the_comparable_group_is_defined_from_the_results_format():
    assert set(COMPARABLE_WORDS) == set(COMPARABLE)  # a column added to the format needs its words
    said = definitions()["comparable group"]
    assert said.startswith("rows of one step, one recipe hash, one --quick flag, one precision, one --vary setting")
    assert all(f"one {COMPARABLE_WORDS[c]}" in said for c in COMPARABLE)
    assert STEPS_COLUMNS["group"].startswith("comparable group: one step, one recipe hash")


def test_figures_and_words_adapt_to_one_epoch_runs(tmp_path):
    write_quick(tmp_path)
    results = load_results(tmp_path)
    summary = summarize(results, Options(n_bootstrap=200))
    assert summary.options.last_k == 1  # every run counts one epoch: the window is the last epoch
    made = figures.all_figures(summary, results.epochs)
    assert made["trajectories"] is None and made["luck"] is None  # one point a run, and no gap
    legend = [t.get_text() for t in made["distributions"].axes[0].get_legend().get_texts()]
    assert "final epoch" in legend and "best epoch" not in legend and not any("worst" in t for t in legend)
    plt.close("all")
    page = render_html(results, summary, {name: None if fig is None else "" for name, fig in made.items()})
    assert "No trajectories per epoch: every run counts one epoch." in page
    assert "within 1 epoch (median best epoch" in page
    text = page + verdict_text(results, summary)
    assert not re.search(r"\b1 (epochs|seeds|runs|steps)\b", text) and "(s)" not in text


def test_rates_figure_keeps_the_submission_labels_off_the_markers(tmp_path):
    write_demo(tmp_path, sizes=(3, 2), seeds=3)
    summary = summarize(load_results(tmp_path), Options(n_bootstrap=200))
    fig = figures.rates(summary.steps, summary.options)
    ax = fig.axes[0]
    plt.close(fig)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["submission 000", "s001-model1", "s002-model2", "s003-model3"] + [
        "submission 001",
        "s004-model1",
        "s005-model2",
    ]
    headings = [y for y, t in enumerate(ticks) if t.startswith("submission")]
    marked = np.concatenate([np.ravel(line.get_ydata()) for line in ax.lines if line.get_marker() == "o"])
    assert len(marked) == 10 and np.abs(marked[:, None] - headings).min() > 0.5  # a heading's row holds no marker
    assert not any("submission" in t.get_text() for t in ax.texts)


def test_an_interval_the_seeds_cannot_bound_says_so(tmp_path):
    write_steps(tmp_path, [{"step": "s1", "submission": "000", "order": 1, "params": 7_000, "epochs": 1}])
    for seed, final in enumerate([55.0, 95.0]):  # two quick-like seeds 40 points apart: variance 800 pp^2
        write_run(tmp_path, "s1", seed, [final])
    results = load_results(tmp_path)
    summary = summarize(results)
    s = summary.steps.iloc[0]
    # the chi-square upper end, 800 / 0.000982 pp^2, is past the 2,500 pp^2 an accuracy can vary
    assert s.var_model_lo > 0 and np.isnan(s.var_model_hi) and np.isnan(s.test_share_lo)
    assert s.spread == "models differ"
    row = re.search(r'<table id="spread-table">.*?<tr><td>s1</td>(.*?)</tr>', render_html(results, summary, {}), re.S)
    assert "to –: 2 seeds cannot bound it" in row.group(1)
    assert max(float(x) for x in re.findall(r"\d+\.\d+", row.group(1))) <= 50  # SDs in pp: none beyond 50
    assert "2 seeds cannot bound it above" in in_plain_words(next(summary.steps.itertuples()), summary.options)


def test_assumptions_shared_by_every_step_are_listed_once(tmp_path):
    shared = ["mean = 0.1307: no seed has transform code", "std = 0.3081: no seed has transform code"]
    own = {"s1": ["lr = 0.1: the seed says 'high'"], "s2": [], "s3": ["batch_size = 64: 938/938 batches"]}
    write_steps(
        tmp_path,
        [
            {"step": step, "submission": "000", "order": i, "params": 7_000, "epochs": 3, "assumptions": [*shared, *a]}
            for i, (step, a) in enumerate(own.items(), start=1)
        ],
    )
    for step in own:
        write_run(tmp_path, step, 0, [99.2, 99.45, 99.5])
    results = load_results(tmp_path)
    page = render_html(results, summarize(results), {})
    assert all(page.count(html.escape(a)) == 1 for a in shared)
    assert "<p>Every step assumes:</p>" in page and "<p>Nothing more: s2.</p>" in page
    assert re.search(r"<b>s1</b> also assumes 1 more value</summary><ul><li>lr = 0\.1", page)
    assert page.count('<details class="assumed">') == 2


def test_compare_is_in_the_terminal_the_html_and_a_csv(tmp_path):
    write_demo(tmp_path, sizes=(3, 2), seeds=6)
    result = invoke("--out", tmp_path, "--compare", "s003-model3", "s005-model2")  # two submissions
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert table[["before", "after", "n_before", "n_after"]].values.tolist() == [["s003-model3", "s005-model2", 6, 6]]
    row = table.iloc[0]
    said = re.sub(r"\s+", " ", result.stdout)
    assert "Comparison: s005-model2 against s003-model3: " in said
    assert f"P(s005-model2 > s003-model3) = {num(row['p_improve'])} (95% CI {num(row['p_improve_lo'])} to " in said
    assert "tables beside it: steps_summary.csv, runs_summary.csv, progression.csv, comparison.csv" in said
    page = (tmp_path / "report.html").read_text()
    assert 'id="comparison-table"' in page and "<th>A → B</th>" in page and "<th>P(B &gt; A), CI</th>" in page
    assert "<p><b>s005-model2 against s003-model3</b>: " in page
    assert "<td>s005-model2 against s003-model3</td>" in page  # the options table
