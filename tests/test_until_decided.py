"""`sweep run --until-decided`: seeds added through a Tune searcher until each step's verdict is decided, on real MNIST
and a real local Ray. One step reaches the target in every run, the other in none."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.load import load_results
from analysis.stats import Options, summarize
from cnn.data import MNIST
from sweeps import layout
from sweeps.cli import app
from sweeps.runner import SweepConfig, run_sweep
from tests.test_bad_input import interrupt

# One quick epoch (6,000 images): s003-model4 scores 81-88 %, s001-model2 40-58 % on 2,000 test images; target 70 %.
RULE = dict(steps=("s003-model4", "s001-model2"), quick=True, until_decided=True, target=70.0, last_k=1)


@pytest.fixture(scope="module")
def data(mnist) -> MNIST:
    return MNIST(mnist.train_x, mnist.train_y, mnist.test_x[:2000], mnist.test_y[:2000])


def seeds(out) -> dict[str, list[int]]:
    rows = pd.read_parquet(out / "epochs")
    assert not rows.duplicated(["step", "seed", "epoch"]).any() and (rows["rule"] == "until-decided").all()
    return {step: sorted(g["seed"].unique()) for step, g in rows.groupby("step")}


def test_each_step_takes_the_seeds_its_verdict_needs_then_stops(ray_session, data, tmp_path):
    """All eight seeds on one side of 0.5 decide at 95 %: both steps stop at exactly 8 contiguous seeds, however
    many more the maximum allows; a re-run finds both decided and trains nothing."""
    out = tmp_path / "results"
    summary = run_sweep(SweepConfig(**RULE, out=out, min_seeds=3, max_seeds=12), data=data)
    assert not summary.failed and summary.complete and len(summary.trained) == 16
    assert seeds(out) == {"s001-model2": list(range(8)), "s003-model4": list(range(8))}
    assert summary.states == {"s003-model4": "CONSISTENT at 8 seeds", "s001-model2": "NEVER at 8 seeds"}
    again = run_sweep(SweepConfig(**RULE, out=out, min_seeds=3, max_seeds=12), data=data)
    assert (len(again.trained), again.complete) == (0, True)
    options = Options(target=70.0, last_k=1)
    steps = summarize(load_results(out), options).steps.set_index("step")
    assert steps["rule"].to_dict() == {"s001-model2": "until-decided", "s003-model4": "until-decided"}
    assert steps["verdict"].to_dict() == {"s001-model2": "NEVER", "s003-model4": "CONSISTENT"}


def test_a_rerun_continues_the_decision_where_it_stood(ray_session, data, tmp_path):
    """Stopped at a maximum of 5 seeds, too few to decide; a re-run with a maximum of 12 adds seeds 5, 6, 7 and never
    trains seeds 0-4 again."""
    out = tmp_path / "results"
    first = run_sweep(SweepConfig(**{**RULE, "steps": ("s003-model4",)}, out=out, min_seeds=5, max_seeds=5), data=data)
    assert first.states == {"s003-model4": "UNDECIDED at the maximum (5 of 5 consistent)"}
    before = {p: p.read_bytes() for p in (out / layout.EPOCHS).rglob("*.parquet")}
    second = run_sweep(SweepConfig(**{**RULE, "steps": ("s003-model4",)}, out=out, max_seeds=12), data=data)
    assert sorted(k.seed for k in second.trained) == [5, 6, 7]
    assert second.states == {"s003-model4": "CONSISTENT at 8 seeds"}
    assert all(p.read_bytes() == b for p, b in before.items())
    assert seeds(out) == {"s003-model4": list(range(8))}


def test_ctrl_c_then_the_same_command_finishes_the_decision(ray_session, tmp_path, data_dir):
    """A real `sweep run --until-decided` stopped by Ctrl-C once a run has a checkpoint; the same command again
    resumes the unfinished runs, keeps the finished rows as they were and decides the step at 8 seeds."""
    out = tmp_path / "results"
    args = ["run", "s003-model4", "--until-decided", "--quick", "--epochs", "2", "--target", "70", "--last-k", "1"]
    args += ["--data-dir", str(data_dir)]
    code, stderr, _ = interrupt(args, out)
    assert code == 130 and "Traceback" not in stderr and "continue with: sweep run" in stderr, stderr
    before = {p: p.read_bytes() for p in (out / layout.EPOCHS).rglob("*.parquet")}
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0 and "s003-model4: CONSISTENT at 8 seeds" in res.stdout, res.output
    assert all(p.read_bytes() == b for p, b in before.items())
    assert seeds(out) == {"s003-model4": list(range(8))}


def test_until_decided_refuses_what_it_cannot_decide(tmp_path, data_dir):
    runner = CliRunner()
    base = ["run", "s003-model4", "--until-decided", "--out", str(tmp_path / "r"), "--data-dir", str(data_dir)]
    for args, says in (
        (["--seeds", "5"], "--seeds and --until-decided both say how many seeds"),
        (["--quick", "--last-k", "3"], "--last-k 3 is longer than s003-model4's 1 epoch"),
        (["--max-seeds", "4"], "--max-seeds must be at least --min-seeds"),
    ):
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 2 and says in res.stderr and len(res.stderr.splitlines()) == 1, res.output
