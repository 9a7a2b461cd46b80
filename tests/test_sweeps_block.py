"""`sweep run --seeds-per-trial`: blocks of seeds through a real local Ray, on tiny real MNIST."""

import dataclasses
import json
import os
import shutil
import signal
import time

import pandas as pd
import pytest
import torch

from cnn.train import METRICS, Run, train
from sweeps import BadSweep, layout, results
from sweeps.runner import SweepConfig, run_sweep
from tests.test_sweeps import KEY, snapshot

BLOCKS = dict(steps=("s003-model4",), seeds=5, epochs=2, quick=True, seeds_per_trial=4)  # blocks 0-3 and 4


class KillBlockOnce:
    """A Tune callback that SIGKILLs the worker of the trial ``name`` once its first epoch's checkpoint is saved."""

    def __new__(cls, name):
        from ray import tune

        class Kill(tune.Callback):
            killed_at = None

            def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
                result = trial.last_result
                if trial.config["run"] == name and result["epoch"] == 1 and self.killed_at is None:
                    self.killed_at = time.time()
                    os.kill(result["pid"], signal.SIGKILL)

        return Kill()


@pytest.fixture(scope="module")
def block_results(tmp_path_factory, ray_session, tiny):
    out = tmp_path_factory.mktemp("blocks") / "results"
    summary = run_sweep(SweepConfig(**BLOCKS, out=out), data=tiny)
    assert len(summary.trained) == 5 and not summary.failed
    return out


def rows(out):
    return pd.read_parquet(out / "epochs").sort_values(KEY).reset_index(drop=True)


def test_blocks_write_exactly_one_row_per_step_seed_epoch(block_results, sweep_results):
    got = rows(block_results)
    assert len(got) == 5 * 2 and not got.duplicated(KEY).any()
    by_seed = got.groupby("seed")[["engine", "block_size"]].first()
    assert by_seed.to_dict("index") == {
        **{s: {"engine": "block", "block_size": 4} for s in range(4)},
        4: {"engine": "single", "block_size": 1},
    }
    assert len(pd.read_parquet(block_results / "predictions")) == 5
    assert not list((block_results / "runs").rglob("*.json"))  # no marker left behind
    # the single-engine sweep of the same recipe (conftest) trained seeds 0 and 1: same runs, to float rounding
    single = rows(sweep_results)
    single = single[single.step == "s003-model4"].reset_index(drop=True)
    assert (single["recipe_hash"] == got["recipe_hash"][0]).all()
    for k in METRICS:
        assert got[k][:4].tolist() == pytest.approx(single[k].tolist(), rel=1e-5), k


def test_more_seeds_form_new_blocks_and_never_retrain_finished_ones(block_results, tiny, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(block_results, out)
    before = snapshot(out)
    summary = run_sweep(SweepConfig(**{**BLOCKS, "seeds": 7}, out=out), data=tiny)
    assert sorted(summary.trained) == [("s003-model4", 5, "quick"), ("s003-model4", 6, "quick")]
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    new = rows(out).query("seed >= 5")
    assert len(new) == 4 and (new["engine"] == "block").all() and (new["block_size"] == 2).all()


def test_a_killed_block_is_retried_from_its_checkpoint_with_the_same_rows(block_results, tiny, tmp_path):
    kill = KillBlockOnce("s003-model4#0+1+2+3-quick")
    out = tmp_path / "results"
    summary = run_sweep(SweepConfig(**BLOCKS, out=out, max_failures=2), data=tiny, callbacks=[kill])
    assert kill.killed_at is not None and len(summary.trained) == 5 and not summary.failed
    got, undisturbed = rows(out), rows(block_results)
    pd.testing.assert_frame_equal(got[KEY + list(METRICS)], undisturbed[KEY + list(METRICS)])
    first = got[got.seed < 4].set_index(["seed", "epoch"])["wall_time"]
    # epoch 1 comes from the checkpoint taken before the kill, epoch 2 was trained again after it
    assert all(first[(s, 1)].timestamp() < kill.killed_at < first[(s, 2)].timestamp() for s in range(4))


def test_a_killed_sweep_resumes_its_seeds_in_other_blocks(block_results, tiny, tmp_path):
    """The block of seeds 0-3 dies after epoch 1 with no retries left; a re-run with --seeds-per-trial 2 resumes its
    four seeds from the block's checkpoint in two blocks of two, with the same epoch-1 rows."""
    kill = KillBlockOnce("s003-model4#0+1+2+3-quick")
    out = tmp_path / "results"
    summary = run_sweep(SweepConfig(**BLOCKS, out=out, max_failures=0), data=tiny, callbacks=[kill])
    assert kill.killed_at is not None and len(summary.failed) == 4 and len(summary.trained) == 1
    markers = {f.seed: results.read_marker(f.path) for f in layout.markers(out)}
    assert sorted(markers) == [0, 1, 2, 3] and all(m["epoch"] == 1 and m["checkpoint"] for m in markers.values())
    again = run_sweep(SweepConfig(**{**BLOCKS, "seeds_per_trial": 2}, out=out), data=tiny)
    assert again.resumed == 4 and not again.failed
    got, undisturbed = rows(out), rows(block_results)
    assert not got.duplicated(KEY).any() and len(got) == 10
    pd.testing.assert_frame_equal(got[KEY + list(METRICS)].head(2), undisturbed[KEY + list(METRICS)].head(2))
    for k in METRICS:  # epoch 2 trained in blocks of 2: float rounding apart
        assert got[k].tolist() == pytest.approx(undisturbed[k].tolist(), rel=1e-5), k
    epoch2 = got[(got.seed < 4) & (got.epoch == 2)]
    assert (epoch2["block_size"] == 2).all() and (got[got.epoch == 1].query("seed < 4")["block_size"] == 4).all()


def test_a_seed_that_diverges_fails_alone_and_its_block_finishes(tiny, tmp_path, ray_session):
    """Seeds 0-3 resume from an epoch-1 block checkpoint in which seed 1's first conv is NaN: seed 1 fails with its
    loss in the error, seeds 0, 2 and 3 finish with rows, and a status shows the failure. The checkpoint and its
    markers are in the format of the version before this one (state.pt, history.json), which still resumes."""
    out = tmp_path / "results"
    config = SweepConfig(**{**BLOCKS, "seeds": 4}, out=out)
    first = Run.plan("s003-model4", 0, epochs=2, quick=True, threads=1)
    runs = [dataclasses.replace(first, seed=s) for s in range(4)]
    epoch1 = next(train(runs, tiny))
    states = {seed: e.state() for seed, e in epoch1.seeds.items()}
    states[1]["model"]["convblock1.0.weight"].fill_(float("nan"))
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    torch.save({"seeds": states}, ckpt / "state.pt")
    where = {
        "host": "h",
        "device": "cpu",
        "torch_version": torch.__version__,
        "engine": "block",
        "wall_time": time.time(),
    }
    history = {str(s): [{**dataclasses.asdict(e.record), **where}] for s, e in epoch1.seeds.items()}
    (ckpt / "history.json").write_text(json.dumps({"histories": history, "failed": {}}))
    for r in runs:
        results.write_marker(out, *layout.key(r), epoch=1, epochs=2, checkpoint=str(ckpt))
    summary = run_sweep(config, data=tiny)
    assert summary.resumed == 3 and sorted(k[1] for k in summary.trained) == [0, 2, 3]
    assert len(summary.failed) == 1 and summary.failed[0].startswith("s003-model4#1-quick: ")
    assert "training loss nan in epoch 2" in summary.failed[0]
    got = rows(out)
    assert sorted(got.seed.unique()) == [0, 2, 3] and len(got) == 6
    assert "nan in epoch 2" in results.status(out)["s003-model4 [quick]"].failed[1]


def test_seeds_per_trial_must_be_positive():
    with pytest.raises(BadSweep, match="--seeds-per-trial must be at least 1, not 0"):
        SweepConfig(steps=("all",), seeds_per_trial=0)
    assert SweepConfig(steps=("all",)).block_size == 1
    assert SweepConfig(steps=("all",), gpus_per_trial=0.25).block_size == 16
