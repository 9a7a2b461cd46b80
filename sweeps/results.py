"""Writing the results folder, and what it says about a sweep: finished runs, in-flight markers, compatibility.

The format (layout, schemas, paths, rows) is :mod:`sweeps.layout`. A run's file name is fixed by its key (step, seed,
tag), so writing a run twice replaces it: that is what makes rows exactly-once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn.errors import BadInput
from cnn.train import Run
from sweeps import layout
from sweeps.layout import (
    COMPARABLE,
    EPOCH_SCHEMA,
    EPOCHS,
    LOCK,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    STEP_SCHEMA,
    STEPS,
    RunKey,
    marker_file,
    markers,
    run_file,
    write_atomic,
    write_table,
)
from sweeps.protocol import Trained


class Incompatible(BadInput):
    """The results folder holds rows that cannot be compared with the ones this sweep would add."""


def write_run(
    out: Path, run: Run, epochs: list[Trained], predictions: np.ndarray, correct: np.ndarray, **sweep: Any
) -> None:
    """Write a finished run: its epoch rows (``sweep``: the columns of the sweep, its id and the driver's versions),
    then its final-epoch predictions, then drop its in-flight marker."""
    key = layout.key(run)
    layout.make_room(out, key)
    rows = layout.epoch_rows(run, [t.flat() for t in epochs], **sweep)
    write_table(run_file(out, EPOCHS, *key), rows, EPOCH_SCHEMA)
    prediction = layout.prediction_row(run, rows[-1]["epoch"], predictions, correct)
    write_table(run_file(out, PREDICTIONS, *key), [prediction], PREDICTION_SCHEMA)
    marker_file(out, *key).unlink(missing_ok=True)


def write_marker(
    out: Path, step: str, seed: int, tag: str = "", *, records: Iterable[Trained] | None = None, **state: Any
) -> None:
    """Record an unfinished run's state (epoch reached, checkpoint URI, error, and the records of the epochs its
    checkpoint holds), merged into what is there."""
    path = marker_file(out, step, seed, tag)
    if records is not None:
        state["records"] = [t.flat() for t in records]
    text = json.dumps({**read_marker(path), **state}, indent=1)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def read_marker(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def finished(folder: layout.Folder) -> dict[RunKey, tuple]:
    """Run key -> comparability key (``layout.COMPARABLE``) of every finished run."""
    return {key: tuple(t[c][0].as_py() for c in COMPARABLE) for key, t in folder.epochs.items() if t.num_rows}


def check_compatible(out: Path, done: dict[RunKey, tuple], runs: Iterable[Run]) -> None:
    """Refuse to add runs beside finished runs (``done``, from :func:`finished`) of the same step and ``--vary``
    setting that differ from them in the comparability key: another recipe hash, quick flag or precision."""
    existing: dict[tuple[str, str], tuple] = {}
    for (step, _, tag), key in done.items():
        existing.setdefault((step, tag), key)

    def kind(recipe_hash: str, quick: bool, precision: str, *_) -> str:
        return f"{'quick' if quick else 'full'} {precision} rows with recipe {recipe_hash}"

    for run in runs:
        columns = layout.run_columns(run)
        key = tuple(columns[c] for c in COMPARABLE)
        have = existing.get((run.step, layout.key(run).tag), key)
        if have != key:
            raise Incompatible(
                f"{out} holds {kind(*have)} for {run.step}; this sweep would add {kind(*key)}: use another --out"
            )


@dataclass(frozen=True)
class Resume:
    """Where an unfinished run continues from: its marker's checkpoint, the epochs it holds, and their records (None
    for a marker written before markers kept records: they are in the checkpoint then)."""

    checkpoint: str
    epoch: int
    records: list[Trained] | None


def resumable(out: Path) -> dict[RunKey, Resume]:
    """Every in-flight marker whose checkpoint is still there."""
    resume = {}
    for f in markers(out):
        m = read_marker(f.path)
        checkpoint = m.get("checkpoint")
        if checkpoint and ("://" in checkpoint or Path(checkpoint).exists()):  # else its tune/ folder was removed
            records = [Trained.from_flat(r) for r in m["records"]] if "records" in m else None
            resume[f.key] = Resume(checkpoint, int(m.get("epoch", 0)), records)
    return resume


def write_steps(out: Path, runs: Iterable[Run], folder: layout.Folder) -> None:
    """Merge the ``steps.parquet`` rows of the runs' steps into what ``folder`` read (a step's row is replaced)."""
    path = out / STEPS
    old = folder.steps.to_pylist() if folder.steps is not None else []
    merged = {r["step"]: r for r in old} | {step: step_row(run) for step, run in {r.step: r for r in runs}.items()}
    write_table(path, [merged[k] for k in sorted(merged)], STEP_SCHEMA)


def step_row(run: Run) -> dict[str, Any]:
    """The ``steps.parquet`` row of a run's step, as run with its recipe."""
    step = run.spec
    c = step.claims
    return {
        "step": step.name,
        "submission": step.submission,
        "order": step.order,
        "title": step.title,
        "source": step.source,
        "params": run.params,
        "epochs": step.recipe.epochs,
        "batch_size": run.recipe.batch_size,
        "recipe": json.dumps(dataclasses.asdict(run.recipe)),
        "recipe_hash": run.recipe_hash,
        "claimed_params": c.params,
        "claimed_best_test": c.best_test,
        "claimed_best_train": c.best_train,
        "claimed_best_epoch": c.best_epoch,
        "claimed_log": list(c.log) or None,
        "claim_note": c.note,
        "assumptions": step.assumption_lines(),
        "target_accuracy": step.target.accuracy,
        "target_params": step.target.params,
        "target_epochs": step.target.epochs,
        "target_source": step.target.source,
        "step_file": step.origin.file if step.origin else None,
        "step_file_sha256": step.origin.sha256 if step.origin else None,
        "step_package": (step.origin.package or None) if step.origin else None,
    }


@dataclass
class StepStatus:
    done: list[int] = dataclasses.field(default_factory=list)
    partial: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> "running epoch 3/15" / "stopped at …"
    failed: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> one-line error


def status(out: Path, folder: layout.Folder | None = None) -> dict[str, StepStatus]:
    """Per step (and ``--vary`` tag: ``step [tag]``), which seeds are done, unfinished (running, or interrupted with
    a checkpoint) and failed; ``folder``: what was read of ``out`` already."""
    from filelock import FileLock, Timeout

    def row(step: str, tag: str) -> StepStatus:
        return result.setdefault(f"{step} [{tag}]" if tag else step, StepStatus())

    result: dict[str, StepStatus] = {}
    done = finished(folder or layout.read(out))
    for step, seed, tag in sorted(done):
        row(step, tag).done.append(seed)
    try:  # a held lock means a live sweep is writing: its in-flight runs are running, not interrupted
        with FileLock(str(out / LOCK), timeout=0):
            live = False
    except Timeout:
        live = True
    for f in markers(out):
        m, s = read_marker(f.path), row(f.step, f.tag)
        if m.get("error"):
            s.failed[f.seed] = m["error"]
        elif f.key not in done:
            s.partial[f.seed] = (
                f"{'running' if live else 'stopped at'} epoch {m.get('epoch', 0)}/{m.get('epochs', '?')}"
            )
    return result
