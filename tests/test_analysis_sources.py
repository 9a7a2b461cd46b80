"""Which source of randomness drives a step's spread (sweep run --vary): hand-checkable fixtures."""

import numpy as np
import pytest

from analysis.load import load_results
from analysis.report import write_report
from analysis.stats import Options, summarize
from analysis.words import source_words
from tests.fixtures_analysis import write_run, write_steps

# final accuracies per --vary setting: order spreads them most, init hardly at all
FINALS = {
    "all": [99.30, 99.50, 99.20, 99.45],
    "order": [99.25, 99.55, 99.35, 99.45],
    "init": [99.38, 99.40, 99.39, 99.41],
}


@pytest.fixture
def folder(tmp_path):
    write_steps(tmp_path, [{"step": "s1", "submission": "000", "order": 1, "params": 7_000, "epochs": 3}])
    for vary, finals in FINALS.items():
        for seed, final in enumerate(finals):
            write_run(tmp_path, "s1", seed, [99.0, final, final], vary=vary)
    write_run(tmp_path, "s2", 0, [99.0, 99.1, 99.2])  # a step with one setting only: not in the table
    return tmp_path


def test_sources_table_by_hand(folder):
    summary = summarize(load_results(folder), Options(last_k=2))
    t = summary.sources.set_index("vary")
    assert list(t.index) == ["init", "order", "all"] and set(t["step"]) == {"s1"}
    for vary, finals in FINALS.items():
        assert t.loc[vary, "final_sd"] == pytest.approx(np.std(finals, ddof=1))
        q1, q3 = np.quantile(finals, [0.25, 0.75])
        assert t.loc[vary, "final_iqr"] == pytest.approx(q3 - q1)
        assert t.loc[vary, "n"] == 4
    assert t.loc["init", "consistent_rate"] == pytest.approx(0.5)  # 99.40 and 99.41 hold the target
    assert t.loc["order", "consistent_rate"] == pytest.approx(0.5)  # 99.55 and 99.45
    words = source_words(summary.sources)
    assert words.startswith("Most of the spread comes from data order") and "cannot be kept" in words


def test_init_driving_the_spread_says_it_can_be_kept(folder, tmp_path):
    summary = summarize(load_results(folder), Options(last_k=2))
    flipped = summary.sources.assign(vary=summary.sources["vary"].replace({"init": "order", "order": "init"}))
    assert "a lucky initialisation can be kept" in source_words(flipped)


def test_no_vary_groups_no_sources_section(tmp_path, folder):
    for p in folder.glob("epochs/step=s1/*-vary-*"):
        p.unlink()
    summary = summarize(load_results(folder), Options(last_k=2))
    assert summary.sources.empty
    paths = write_report(load_results(folder), summary, tmp_path / "r" / "report.html")
    assert "Which source of randomness" not in paths.html.read_text() and not (tmp_path / "r" / "sources.csv").exists()
    assert paths.sources_csv is None


def test_report_shows_sources(folder, tmp_path):
    results = load_results(folder)
    paths = write_report(results, summarize(results, Options(last_k=2)), tmp_path / "r" / "report.html")
    page = paths.html.read_text()
    assert "Which source of randomness makes a step lucky" in page and 'id="fig-sources"' in page
    assert paths.sources_csv == tmp_path / "r" / "sources.csv"
    assert paths.sources_csv.read_text().startswith("step,group,vary,base_seed,n,final_sd")
