"""The results folder's format has one owner, sweeps.layout: the docs, the writer and the test fixtures agree."""

from pathlib import Path

import pyarrow.parquet as pq

from sweeps import layout
from tests.fixtures_analysis import write_run, write_steps

DOC = Path(__file__).resolve().parents[1] / "docs" / "results-format.md"


def test_the_format_doc_is_generated_from_the_layout():
    assert DOC.read_text() == layout.markdown(), "run: python -m sweeps.layout > docs/results-format.md"


def test_fixture_files_have_the_writers_schemas(sweep_results, tmp_path):
    write_run(tmp_path, "s003-model4", 0, [98.0, 99.0], correct=[True, False])
    write_steps(tmp_path, [{"step": "s003-model4", "submission": "003", "order": 5, "params": 7_616, "epochs": 15}])
    for kind in (layout.EPOCHS, layout.PREDICTIONS):
        ours = pq.read_schema(layout.run_file(tmp_path, kind, "s003-model4", 0))
        writers = pq.read_schema(layout.run_file(sweep_results, kind, "s003-model4", 0, layout.QUICK))
        assert ours.remove_metadata() == writers.remove_metadata(), kind
    assert (
        pq.read_schema(tmp_path / layout.STEPS).remove_metadata()
        == pq.read_schema(sweep_results / layout.STEPS).remove_metadata()
    )


def test_run_file_names_parse_one_way():
    from cnn.train import Run

    assert layout.parse_name(layout.run_file(Path("o"), layout.EPOCHS, "s", 7)) == (7, "")
    assert layout.parse_name(layout.marker_file(Path("o"), "s", 12)) == (12, "")
    tag = layout.key(Run.plan("s003-model4", 3, vary="dropout,order", base_seed=5)).tag
    assert tag == "vary-order+dropout-b5"
    assert layout.parse_name(layout.run_file(Path("o"), layout.EPOCHS, "s", 3, tag)) == (3, tag)
    quick = layout.key(Run.plan("s003-model4", 3, quick=True, vary="order", base_seed=5)).tag
    assert (layout.key(Run.plan("s003-model4", 3, quick=True)).tag, quick) == ("quick", "quick-vary-order-b5")
    for tag in ("quick", quick):
        assert layout.parse_name(layout.marker_file(Path("o"), "s", 3, tag)) == (3, tag)
    for name in (
        ".seed-0007.parquet.123.tmp",
        "seed-0007.parquet.tmp",
        "seed-x.parquet",
        "part-0.parquet",
        "seed-0007-vary-.parquet",
        "seed-0007-quick-.parquet",
        "seed-0007-vary-order-b0-quick.parquet",
    ):
        assert layout.parse_name(Path(name)) is None, name
