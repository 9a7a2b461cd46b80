"""Writing the results folder, and what it says about a sweep: finished runs, in-flight markers, compatibility.

The format (layout, schemas, paths) is :mod:`sweeps.layout`. A run's file name is fixed by (step, seed), so writing a
run twice replaces it: that is what makes rows exactly-once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cnn import zoo
from cnn.errors import BadInput
from cnn.train import Run
from sweeps.layout import (
    COMPARABLE,
    EPOCH_SCHEMA,
    EPOCHS,
    LOCK,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    STEP_SCHEMA,
    STEPS,
    marker_file,
    markers,
    run_file,
    run_files,
    with_defaults,
    write_atomic,
    write_table,
)


class Incompatible(BadInput):
    """The results folder holds rows that cannot be compared with the ones this sweep would add."""


def rows(run: Run, history: list[dict[str, Any]], **columns: Any) -> list[dict[str, Any]]:
    """A finished run's epoch rows, assembled in this one place: each epoch's record from the worker (the trainer's
    metrics, the worker's host, device and torch version, its ``wall_time`` in epoch seconds), the run's fixed
    columns, and the sweep's ``columns`` (sweep id, driver versions)."""
    fixed = {**run.columns, **columns}
    return [{**r, **fixed, "wall_time": dt.datetime.fromtimestamp(r["wall_time"], dt.timezone.utc)} for r in history]


def write_run(out: Path, run: Run, rows: list[dict[str, Any]], predictions: np.ndarray, labels: np.ndarray) -> None:
    """Write a finished run: its epoch rows, then its final-epoch predictions, then drop its in-flight marker."""
    pred = {
        **run.columns,
        "epoch": rows[-1]["epoch"],
        "n": len(predictions),
        "pred": predictions.astype(np.uint8).tobytes(),
        "correct": np.packbits(predictions == labels).tobytes(),
    }
    write_table(run_file(out, EPOCHS, *run.key), rows, EPOCH_SCHEMA)
    write_table(run_file(out, PREDICTIONS, *run.key), [pred], PREDICTION_SCHEMA)
    marker_file(out, *run.key).unlink(missing_ok=True)


def write_marker(out: Path, step: str, seed: int, tag: str = "", **state: Any) -> None:
    """Record an unfinished run's state (epoch reached, checkpoint URI, error), merged into what is there."""
    path = marker_file(out, step, seed, tag)
    text = json.dumps({**read_marker(path), **state}, indent=1)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def read_marker(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def finished(out: Path) -> dict[tuple[str, int, str], tuple]:
    """Run key (step, seed, tag) -> comparability key (``layout.COMPARABLE``) of every finished run."""
    done = {}
    for f in run_files(out, EPOCHS):
        try:
            table = with_defaults(pq.read_table(f.path))
        except (pa.ArrowException, OSError) as e:
            raise Incompatible(f"{f.path} is not a results file of this tool ({str(e).splitlines()[0]})") from None
        if table.num_rows:
            done[(f.step, f.seed, f.tag)] = tuple(table[c][0].as_py() for c in COMPARABLE)
    return done


def check_compatible(out: Path, done: dict[tuple[str, int, str], tuple], runs: Iterable[Run]) -> None:
    """Refuse to add runs beside finished runs (``done``, from :func:`finished`) of the same step and ``--vary``
    setting that differ from them in the comparability key: another recipe hash, quick flag or precision."""
    existing: dict[tuple[str, str], tuple] = {}
    for (step, _, tag), key in done.items():
        existing.setdefault((step, tag), key)

    def kind(recipe_hash: str, quick: bool, precision: str, *_) -> str:
        return f"{'quick' if quick else 'full'} {precision} rows with recipe {recipe_hash}"

    for run in runs:
        key = tuple(run.columns[c] for c in COMPARABLE)
        have = existing.get((run.step, run.tag), key)
        if have != key:
            raise Incompatible(
                f"{out} holds {kind(*have)} for {run.step}; this sweep would add {kind(*key)}: use another --out"
            )


def resumable(out: Path) -> dict[tuple[str, int, str], tuple[str, int]]:
    """Run key -> (checkpoint URI, epochs it holds) of every in-flight marker whose checkpoint is still there."""
    resume = {}
    for f in markers(out):
        m = read_marker(f.path)
        checkpoint = m.get("checkpoint")
        if checkpoint and ("://" in checkpoint or Path(checkpoint).exists()):  # else its tune/ folder was removed
            resume[(f.step, f.seed, f.tag)] = (checkpoint, int(m.get("epoch", 0)))
    return resume


def write_steps(out: Path, runs: Iterable[Run]) -> None:
    """Merge the ``steps.parquet`` rows of the runs' steps into what is there (a step's row is replaced)."""
    path = out / STEPS
    old = pq.read_table(path).to_pylist() if path.exists() else []
    merged = {r["step"]: r for r in old} | {step: step_row(run) for step, run in {r.step: r for r in runs}.items()}
    write_table(path, [merged[k] for k in sorted(merged)], STEP_SCHEMA)


def step_row(run: Run) -> dict[str, Any]:
    """The ``steps.parquet`` row of a run's step, as run with its recipe."""
    step = zoo.get_step(run.step)
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
    }


@dataclass
class StepStatus:
    done: list[int] = dataclasses.field(default_factory=list)
    partial: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> "running epoch 3/15" / "stopped at …"
    failed: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> one-line error


def status(out: Path) -> dict[str, StepStatus]:
    """Per step (and ``--vary`` tag: ``step [tag]``), which seeds are done, unfinished (running, or interrupted with
    a checkpoint) and failed."""
    from filelock import FileLock, Timeout

    def row(step: str, tag: str) -> StepStatus:
        return result.setdefault(f"{step} [{tag}]" if tag else step, StepStatus())

    result: dict[str, StepStatus] = {}
    done = finished(out)
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
        elif (f.step, f.seed, f.tag) not in done:
            s.partial[f.seed] = (
                f"{'running' if live else 'stopped at'} epoch {m.get('epoch', 0)}/{m.get('epochs', '?')}"
            )
    return result
