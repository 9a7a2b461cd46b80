"""What crosses between worker and driver: the block's checkpoint (sizes, formats, refusal of code), on real MNIST."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import torch

from cnn.train import Run, train
from sweeps.protocol import FILE, STATES, BlockState, Report, Trained, UnsafeCheckpoint, Worker, legacy_records


def runs(step: str, seeds, **options) -> list[Run]:
    first = Run.plan(step, seeds[0], threads=1, **options)
    return [dataclasses.replace(first, seed=s) for s in seeds]


def test_a_blocks_checkpoint_does_not_grow_with_its_epochs(tiny, tmp_path):
    block = runs("s004-exp3", [0, 1], epochs=4)
    state, sizes = BlockState(), []
    for epoch in train(block, tiny):
        state = state.after(epoch, last=epoch.epoch == 4)
        folder = tmp_path / str(epoch.epoch)
        folder.mkdir()
        state.save(folder)
        sizes.append(((folder / STATES).stat().st_size, (folder / FILE).stat().st_size))
    assert len(set(sizes[:3])) == 1  # epochs 1-3: the same bytes; the last adds the predictions
    assert sizes[3][0] == sizes[0][0] and sizes[3][1] > sizes[0][1] + 2 * 10_000 // 8


def test_a_state_round_trips_and_a_seed_resumes_from_it_in_another_block(tiny, tmp_path):
    block = runs("s003-model4", [0, 1, 2], epochs=2)
    it = train(block, tiny)
    BlockState().after(next(it), last=False).save(tmp_path)
    whole = [None, next(it)]
    state = BlockState.load(tmp_path, [2])
    assert (state.epoch, list(state.states), state.failed, state.predictions) == (1, [2], {}, {})
    (last,) = list(train(block[2:], tiny, state.states))  # seed 2 alone now
    ours, theirs = last.seeds[2].record, whole[1].seeds[2].record
    assert ours.lr == theirs.lr and ours.train_loss == pytest.approx(theirs.train_loss, rel=1e-4)


def test_checkpoints_of_the_earlier_single_run_format_still_load(tiny, tmp_path):
    """The format before blocks: state.pt holds the run's state, history.json its records, predictions.npy."""
    (run,) = runs("s003-model4", [3], epochs=1)
    (epoch,) = list(train([run], tiny))
    e = epoch.seeds[3]
    torch.save(e.state(), tmp_path / "state.pt")
    record = {**dataclasses.asdict(e.record), "host": "h", "device": "cpu", "torch_version": "2", "wall_time": 1.5}
    del record["block_size"]
    (tmp_path / "history.json").write_text(json.dumps([record]))
    np.save(tmp_path / "predictions.npy", e.predictions.numpy())
    state = BlockState.load(tmp_path, [3], tiny.test_y)
    assert state.epoch == 1 and torch.equal(state.states[3]["model"]["skip.weight"], e.state()["model"]["skip.weight"])
    pred, correct = state.predictions[3]
    assert torch.equal(pred, e.predictions) and torch.equal(correct, e.correct)
    (old,) = legacy_records(tmp_path, 3)
    assert old == Trained(e.record, Worker("h", "cpu", "2"), 1.5)


class Payload:
    """Unpickling this would create a file: what a crafted checkpoint could do instead of something worse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def test_a_crafted_checkpoint_is_refused_before_it_runs_anything(tmp_path):
    done = tmp_path / "ran"
    torch.save({"epoch": 1, "failed": {}, "predictions": {}, "x": Payload(done)}, tmp_path / FILE)
    torch.save({}, tmp_path / STATES)
    with pytest.raises(UnsafeCheckpoint, match=r"refusing checkpoint .*block\.pt: it names .*pathlib"):
        BlockState.load(tmp_path, [0])
    assert not done.exists()


def test_a_damaged_checkpoint_is_refused_in_one_line(tiny, tmp_path):
    """A checkpoint cut short (a disk that filled up, a copy that stopped) is refused in one line, as a crafted one."""
    BlockState().after(next(train(runs("s003-model4", [0], epochs=2), tiny)), last=False).save(tmp_path)
    data = (tmp_path / FILE).read_bytes()
    (tmp_path / FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeCheckpoint, match=r"refusing checkpoint .*block\.pt: it cannot be read \(.*\); delete"):
        BlockState.load(tmp_path, [0])


def test_a_report_is_plain_typed_data():
    report = Report(3, {}, {7: "training loss nan in epoch 3"}, Worker("h", "cpu", "2"), 0.0)
    assert json.loads(json.dumps(dataclasses.asdict(report))) == dataclasses.asdict(report) | {
        "failed": {"7": "training loss nan in epoch 3"}
    }  # JSON would turn the seeds into strings; the report keeps them ints, and is never JSON
