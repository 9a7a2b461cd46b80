"""Sweeps on a real local Ray: Parquet rows, exactly-once under retries and re-runs, and bad input."""

import dataclasses
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.cli import app
from cnn.train import METRICS, Run
from sweeps import layout, results
from sweeps.runner import SweepConfig, run_sweep
from tests.conftest import SWEEP

KEY = ["step", "seed", "epoch"]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the Parquet dataset, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def test_rows_one_per_step_seed_epoch(sweep_results):
    rows = pd.read_parquet(sweep_results / "epochs")
    assert len(rows) == 2 * 2 * 2 and not rows.duplicated(KEY).any()
    assert set(layout.EPOCH_SCHEMA.names) <= set(rows.columns)
    assert rows["quick"].all() and (rows["overrides"] == '{"epochs": 2}').all()
    assert (rows["test_total"] == 500).all() and rows["test_acc"].between(0, 100).all()
    assert rows.groupby("step")["recipe_hash"].nunique().eq(1).all()
    assert (rows["precision"] == "fp32").all() and (rows["device"] == "cpu").all()
    preds = pd.read_parquet(sweep_results / "predictions")
    assert len(preds) == 4 and (preds["n"] == 500).all() and preds["pred"].map(len).eq(500).all()
    steps = pd.read_parquet(sweep_results / "steps.parquet")
    assert sorted(steps["step"]) == ["s003-model4", "s004-exp1"]
    assert not (sweep_results / "runs").exists() or not list((sweep_results / "runs").rglob("*.json"))


def test_predictions_agree_with_the_rows(sweep_results):
    import numpy as np

    rows = pd.read_parquet(sweep_results / "epochs")
    for _, p in pd.read_parquet(sweep_results / "predictions").iterrows():
        correct = np.unpackbits(np.frombuffer(p["correct"], np.uint8))[: p["n"]]
        last = rows[(rows.step == p["step"]) & (rows.seed == p["seed"]) & (rows.epoch == p["epoch"])]
        assert int(correct.sum()) == int(last["test_correct"].iloc[0])


def test_other_readers_open_the_dataset_unchanged(sweep_results):
    import duckdb
    import polars as pl

    n = pl.scan_parquet(sweep_results / "epochs" / "**" / "*.parquet", hive_partitioning=True).collect().height
    assert n == 8
    con = duckdb.connect()
    got = con.execute(
        f"select count(*), count(distinct step) from read_parquet('{sweep_results}/epochs/*/*.parquet',"
        " hive_partitioning=true)"
    ).fetchone()
    assert got == (8, 2)


def test_progress_is_plain_lines_in_a_log(sweep_results):
    log = (sweep_results.parent / "progress.log").read_text()
    assert "\r" not in log and "4/4 runs done, 0 failed" in log


def test_same_sweep_twice_trains_nothing(sweep_results, tiny):
    before = snapshot(sweep_results)
    summary = run_sweep(SweepConfig(**SWEEP, out=sweep_results), data=tiny)
    assert (len(summary.trained), len(summary.plan.done)) == (0, 4)
    assert snapshot(sweep_results) == before


def test_more_seeds_trains_only_the_new_ones(sweep_results, tiny, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(sweep_results, out)
    before = snapshot(out)
    summary = run_sweep(SweepConfig(**{**SWEEP, "steps": ("s003-model4",), "seeds": 3}, out=out), data=tiny)
    assert (len(summary.trained), len(summary.plan.done)) == (1, 2)
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    rows = pd.read_parquet(out / "epochs")
    assert len(rows) == 8 + 2 and not rows.duplicated(KEY).any()


def test_full_runs_go_beside_quick_ones_and_older_quick_files_still_count(sweep_results, tiny, tmp_path):
    """The README's path after its quick sweep: full runs of the same seeds plan and train in the same folder. A
    folder written before quick runs had a tag in their file names reads those files as the quick runs they are, and
    keeps them, renamed, when a full run of the same seed takes the name."""
    out = tmp_path / "results"
    shutil.copytree(sweep_results, out)
    res = CliRunner().invoke(app, ["run", "s003-model4", "--seeds", "3", "--epochs", "2", "--dry-run", "--out", out])
    assert res.exit_code == 0 and ["s003-model4", "-", "-", "0-2"] in [ln.split() for ln in res.stdout.splitlines()]
    for kind in (layout.EPOCHS, layout.PREDICTIONS):  # as sweeps wrote them before
        for f in layout.run_files(out, kind):
            f.path.rename(f.path.with_name(f"{layout.stem(f.seed)}.parquet"))
    older = snapshot(out)
    assert not run_sweep(SweepConfig(**SWEEP, out=out), data=tiny).plan.todo  # still done: nothing to train
    summary = run_sweep(SweepConfig(steps=("s003-model4",), seeds=1, epochs=1, out=out), data=tiny)
    assert (len(summary.trained), len(summary.plan.done)) == (1, 0)
    after = snapshot(out)
    renamed = "step=s003-model4/seed-0000.parquet"
    kept = {k.replace(renamed, renamed.replace(".parquet", "-quick.parquet")): v for k, v in older.items() if "/" in k}
    assert {k: after[k] for k in kept} == kept
    rows = pd.read_parquet(out / "epochs")
    assert len(rows) == 8 + 1 and rows["quick"].sum() == 8 and not rows.duplicated([*KEY, "quick"]).any()
    report = CliRunner().invoke(app, ["report", "--out", out])  # and the report keeps them apart
    assert report.exit_code == 0 and "s003-model4 [quick]" in report.stdout, report.output


class KillWorkerOnce:
    """A Tune callback that SIGKILLs the worker process of one trial once its first epoch's checkpoint is saved."""

    def __new__(cls, step, seed, tag=""):
        from ray import tune

        class Kill(tune.Callback):
            killed_at = None

            def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
                result = trial.last_result
                name = f"{step}#{seed}" + (f"-{tag}" if tag else "")
                if trial.config["run"] == name and result["epoch"] == 1 and self.killed_at is None:
                    self.killed_at = time.time()
                    os.kill(result["pid"], signal.SIGKILL)

        return Kill()


def test_killed_worker_resumes_from_checkpoint_with_same_metrics(sweep_results, tiny, tmp_path):
    kill = KillWorkerOnce("s003-model4", 1, tag=layout.QUICK)
    out = tmp_path / "results"
    summary = run_sweep(SweepConfig(**SWEEP, out=out, max_failures=2), data=tiny, callbacks=[kill])
    assert kill.killed_at is not None and len(summary.trained) == 4 and not summary.failed
    rows = pd.read_parquet(out / "epochs").sort_values(KEY)
    undisturbed = pd.read_parquet(sweep_results / "epochs").sort_values(KEY)
    assert not rows.duplicated(KEY).any()
    pd.testing.assert_frame_equal(
        rows[KEY[:2] + list(METRICS)].reset_index(drop=True),
        undisturbed[KEY[:2] + list(METRICS)].reset_index(drop=True),
    )
    run = rows[(rows.step == "s003-model4") & (rows.seed == 1)].set_index("epoch")["wall_time"]
    # epoch 1 comes from the checkpoint taken before the kill, epoch 2 was trained again after it
    assert run[1].timestamp() < kill.killed_at < run[2].timestamp()


def test_status_shows_done_and_unfinished(sweep_results, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(sweep_results, out)
    results.write_marker(out, "s004-exp1", 7, layout.QUICK, epoch=1, epochs=2, checkpoint="/nowhere")
    results.write_marker(out, "s004-exp1", 8, layout.QUICK, error="RuntimeError: boom")
    res = CliRunner().invoke(app, ["status", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "s003-model4 [quick]    2          0      0  0-1" in res.output
    assert "seed 7: stopped at epoch 1/2" in res.output and "seed 8: failed: RuntimeError: boom" in res.output


def one_line_exit_2(args, out: Path | None = None):
    res = CliRunner().invoke(app, args)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    if out is not None:
        assert not out.exists()
    return lines[0]


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "s001-modle3"], "did you mean s001-model3"),
        (["run", "s9*"], "matches no step"),
        (["run", "s001-model3", "--seeds", "0"], "--seeds must be at least 1"),
        (["run", "s001-model3", "--seeds", "-3"], "--seeds must be at least 1"),
        (["run", "s001-model3", "--cpus-per-trial", "512"], "more than the"),
        (["run", "s001-model3", "--gpus-per-trial", "1", "--num-gpus", "0"], "needs a GPU"),
        (["run", "s001-model3", "--address", "127.0.0.1:9"], "cannot reach a Ray cluster at 127.0.0.1:9"),
        (["steps", "nope"], "unknown step 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, says, tmp_path, data_dir):
    out = tmp_path / "results"
    line = one_line_exit_2(args + (["--out", str(out), "--data-dir", str(data_dir)] if args[0] == "run" else []), out)
    assert says in line


def test_steps_shows_a_step_with_its_own_target_and_assumptions():
    result = CliRunner().invoke(app, ["steps", "s003-model4-plain"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "  best test   99.34\n  best train  98.94\n  best epoch  8\n" in out
    assert "target (the seed's own):\n  accuracy    99.0\n  params <    8,000\n  epochs <=   15\n" in out
    assert "  source     003 lines 260-262: 'Reduce parameters bellow 8k count'" in out
    assert "  optimizer   sgd  (assumed)\n" in out and "  mean        0.1307  (assumed)\n" in out
    assert "  - std = 0.3081: no seed has transform code; the session-7 class code's Normalize" in out
    assert out.count("  Conv2d ") == 7  # the network, rows of the seed's table


def test_step_row_carries_the_seeds_own_target():
    row = results.step_row(Run.plan("s004-net2", 0))
    assert set(row) == set(layout.STEP_SCHEMA.names) and row["params"] == 13_808
    assert (row["target_accuracy"], row["target_params"], row["target_epochs"]) == (99.4, None, 20)
    assert row["target_source"].startswith("004 line 80: ")


def test_unwritable_out(tmp_path, data_dir, ray_session):
    (tmp_path / "a-file").write_text("")
    line = one_line_exit_2(
        ["run", "s001-model2", "--out", str(tmp_path / "a-file" / "out"), "--data-dir", str(data_dir), "--quick"]
    )
    assert "is not writable" in line


def test_missing_mnist_while_offline(tmp_path, monkeypatch):
    # A proxy on a closed loopback port: the download fails at once, as on a machine without network.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    empty, out = tmp_path / "empty", tmp_path / "results"
    line = one_line_exit_2(["run", "s001-model2", "--quick", "--data-dir", str(empty), "--out", str(out)], out)
    assert str(empty / "MNIST" / "raw") in line and "--data-dir" in line


def test_incompatible_results_are_refused_and_kept(sweep_results, tmp_path, data_dir):
    out = tmp_path / "results"
    shutil.copytree(sweep_results, out)
    before = snapshot(out)
    line = one_line_exit_2(
        ["run", "s003-model4", "--quick", "--epochs", "3", "--out", str(out), "--data-dir", str(data_dir)]
    )
    assert "holds quick fp32 rows with recipe" in line and "s003-model4" in line
    bf16 = ["run", "s003-model4", "--quick", "--epochs", "2", "--bf16", "--out", str(out), "--data-dir", str(data_dir)]
    assert "this sweep would add quick bf16 rows" in one_line_exit_2(bf16)
    assert snapshot(out) == before


def test_config_is_plain_data():
    config = SweepConfig(steps=("all",))
    assert dataclasses.replace(config, seeds=10).seeds == 10


def test_killed_sweep_rerun_continues_from_checkpoints(tmp_path, data_dir, ray_session):
    """SIGKILL a `sweep run` (driver, Ray and workers) mid-run; the same command again finishes it from the markers'
    checkpoints, with the rows of an undisturbed sweep and no duplicates."""
    import subprocess
    import sys

    out, ray_tmp = tmp_path / "results", Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    args = ["run", "s003-model4", "--seeds", "2", "--quick", "--epochs", "2", "--data-dir", str(data_dir)]
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.Popen(
        [Path(sys.executable).parent / "sweep", *args, "--out", str(out), "--num-cpus", "2"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            markers = [results.read_marker(p) for p in (out / "runs").glob("*/*.json")]
            if any(m.get("checkpoint") and m.get("epoch") == 1 for m in markers):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], check=False)

    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    reference = tmp_path / "reference"
    assert CliRunner().invoke(app, [*args, "--out", str(reference)]).exit_code == 0
    rows, ref = (pd.read_parquet(d / "epochs").sort_values(KEY).reset_index(drop=True) for d in (out, reference))
    assert len(rows) == 4 and not rows.duplicated(KEY).any()
    pd.testing.assert_frame_equal(rows[KEY[:2] + list(METRICS)], ref[KEY[:2] + list(METRICS)])
    first = rows[rows.epoch == 1]["wall_time"].map(lambda t: t.timestamp())
    assert (first < killed_at).any(), "no run continued from the checkpoint it had before the kill"
