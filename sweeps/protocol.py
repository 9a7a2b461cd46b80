"""What crosses between a sweep's workers and its driver, as typed values saved and loaded here and nowhere else.

* :class:`Report`, once per epoch of a block, in Tune's metrics: the epoch's record of each seed still training, the
  seeds that failed in it, and where it ran. The driver keeps the records; they are never written into checkpoints,
  so a checkpoint's size does not grow with the epochs already run.
* :class:`BlockState`, the block's checkpoint: each training seed's state (:meth:`cnn.train.SeedEpoch.state`), the
  seeds that failed, and at the last epoch each seed's test-set predictions. Read with
  ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted checkpoint cannot run code on
  the worker that resumes it, or on the driver (:class:`UnsafeCheckpoint`).
* :class:`Trained`, one seed's epoch as the driver keeps it, and as the in-flight marker of an unfinished run stores
  it (flat JSON), so that a re-run of a killed sweep has the records of the epochs its checkpoint holds.

Checkpoints of the two earlier formats still load: a block's (``state.pt`` with ``{"seeds": ...}``, ``history.json``,
``predictions-<seed>.npy``) and a single run's (``state.pt`` holding the run's state, ``history.json`` its records,
``predictions.npy``). Their records come from ``history.json`` (:func:`legacy_records`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn.errors import BadInput
from cnn.train import Epoch, Record

FILE, STATES = "block.pt", "states.pt"  # a checkpoint's files: epoch, failures and predictions; the seeds' states
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


class UnsafeCheckpoint(BadInput):
    """A checkpoint holds something other than tensors and plain containers. One line."""


@dataclass(frozen=True)
class Worker:
    """Where a block trained."""

    host: str
    device: str  # "cpu", or the GPU's name
    torch_version: str

    @classmethod
    def here(cls, device: str) -> Worker:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        return cls(socket.gethostname(), name, torch.__version__)


@dataclass(frozen=True)
class Trained:
    """One seed's epoch as the driver keeps it: the trainer's record, where it ran and when it ended."""

    record: Record
    worker: Worker
    wall_time: float  # seconds since the Unix epoch

    def flat(self) -> dict[str, Any]:
        """One flat dict: the record's fields, the worker's, and ``wall_time`` (sweeps.layout.epoch_rows's input)."""
        return {**dataclasses.asdict(self.record), **dataclasses.asdict(self.worker), "wall_time": self.wall_time}

    @classmethod
    def from_flat(cls, d: dict[str, Any]) -> Trained:
        """From :meth:`flat`, or a record of an earlier checkpoint's history (no ``block_size`` before blocks
        existed: 1; its ``engine`` is implied by the block size)."""
        record = Record(**{"block_size": 1, **{k: d[k] for k in RECORD_FIELDS if k in d}})
        return cls(record, Worker(d["host"], d["device"], d["torch_version"]), d["wall_time"])


@dataclass(frozen=True)
class Report:
    """One epoch of a block, in Tune's metrics (under ``"report"``)."""

    epoch: int
    records: dict[int, Record]  # seed -> this epoch's record, for the seeds still training
    failed: dict[int, str]  # seed -> one-line reason, for the seeds that failed in this epoch
    worker: Worker
    wall_time: float

    def trained(self) -> dict[int, Trained]:
        return {seed: Trained(r, self.worker, self.wall_time) for seed, r in self.records.items()}


@dataclass
class BlockState:
    """A block's checkpoint: what its seeds hold after ``epoch`` epochs (0: nothing yet)."""

    epoch: int = 0
    states: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> state, seeds still training
    failed: dict[int, str] = field(default_factory=dict)  # seed -> one-line reason
    predictions: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # seed -> (uint8, bool)

    def after(self, epoch: Epoch, last: bool) -> BlockState:
        """The state after one trained epoch; ``last``: it is the recipe's last, so predictions are kept."""
        return BlockState(
            epoch.epoch,
            {seed: e.state() for seed, e in epoch.seeds.items()},
            {**self.failed, **epoch.failed},
            {seed: (e.predictions, e.correct) for seed, e in epoch.seeds.items()} if last else {},
        )

    def save(self, folder: Path) -> None:
        """Into ``folder``: the seeds' states in one file, the rest (small) in another, so that the driver reads a
        finished block's predictions without its weights."""
        torch.save(self.states, folder / STATES)
        torch.save({"epoch": self.epoch, "failed": self.failed, "predictions": self.predictions}, folder / FILE)

    @classmethod
    def load(
        cls, folder: Path, seeds: list[int], labels: torch.Tensor | None = None, *, states: bool = True
    ) -> BlockState:
        """The part of ``seeds`` of a checkpoint folder of any format (module doc), without the seeds' states unless
        ``states``. ``labels``, the test set's, give the correctness an earlier format did not store. Raises
        :class:`UnsafeCheckpoint` for one that holds anything but tensors and plain containers."""
        if (folder / FILE).exists():
            whole = cls(**_load(folder / FILE), states=_load(folder / STATES) if states else {})
        else:
            whole = _legacy(folder, seeds, labels)
        keep = set(seeds)
        return cls(
            whole.epoch,
            {s: v for s, v in whole.states.items() if s in keep},
            {s: v for s, v in whole.failed.items() if s in keep},
            {s: v for s, v in whole.predictions.items() if s in keep},
        )

    def merged(self, other: BlockState) -> BlockState:
        """Both states' seeds (seeds of one block restored from the checkpoints of different earlier blocks)."""
        return BlockState(
            max(self.epoch, other.epoch),
            {**self.states, **other.states},
            {**self.failed, **other.failed},
            {**self.predictions, **other.predictions},
        )


def check_safe(folder: Path) -> None:
    """Raise :class:`UnsafeCheckpoint`, naming what it would import, if a checkpoint file in ``folder`` holds anything
    but tensors and plain containers. Reads only the files' pickles, not their tensors."""
    for path in sorted(folder.glob("*.pt")):
        _check(path)


def _check(path: Path) -> None:
    again = "delete it, or the marker under runs/ that points at it, to train the run from the start"
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:  # truncated, not a zip, …
        raise UnsafeCheckpoint(f"refusing checkpoint {path}: it cannot be read ({e}); {again}") from None
    if unsafe:
        raise UnsafeCheckpoint(
            f"refusing checkpoint {path}: it names {', '.join(unsafe)}, and loading it could run code; {again}"
        )


def _load(path: Path) -> Any:
    _check(path)  # a clear message; weights_only is what refuses, whatever the check misses
    return torch.load(path, map_location="cpu", weights_only=True)


def _legacy(folder: Path, seeds: list[int], labels: torch.Tensor | None) -> BlockState:
    """A checkpoint of an earlier format (module doc)."""
    state = _load(folder / "state.pt")
    if "seeds" in state:
        states, files = state["seeds"], {s: folder / f"predictions-{s}.npy" for s in state["seeds"]}
        failed = {int(s): m for s, m in json.loads((folder / "history.json").read_text())["failed"].items()}
    else:  # one run's checkpoint, read for the one seed its marker names
        (seed,) = seeds
        states, files, failed = {seed: state}, {seed: folder / "predictions.npy"}, {}
    predictions = {}
    for seed, path in files.items():
        if path.exists() and labels is not None:
            pred = torch.from_numpy(np.load(path, allow_pickle=False))
            predictions[seed] = (pred, pred.long() == labels)
    return BlockState(max((st["epoch"] for st in states.values()), default=0), states, failed, predictions)


def legacy_records(folder: Path, seed: int) -> list[Trained]:
    """The records of ``seed`` in an earlier-format checkpoint's ``history.json`` (module doc); [] for this format."""
    path = folder / "history.json"
    if (folder / FILE).exists() or not path.exists():
        return []
    history = json.loads(path.read_text())
    if isinstance(history, dict):
        history = history["histories"].get(str(seed), [])
    return [Trained.from_flat(d) for d in history]
