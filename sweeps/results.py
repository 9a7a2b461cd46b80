"""The results folder: a hive-partitioned Parquet dataset, written once per finished run by the sweep's driver.

Layout and schema: ``docs/results-format.md``. Every file is written under a temporary dot-name in its own folder and
renamed into place, so readers (pandas, polars, duckdb, :mod:`analysis`) never see half a file, and a run's file name
is fixed by (step, seed): writing a run twice replaces it, which is what makes rows exactly-once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cnn import BadInput

EPOCHS, PREDICTIONS, RUNS, STEPS = "epochs", "predictions", "runs", "steps.parquet"
LOCK = ".sweep.lock"

# `step` is the hive partition (the `step=<name>` folder), so it is not stored inside the files.
IDENTITY = [("submission", pa.string()), ("seed", pa.int64())]
EPOCH_SCHEMA = pa.schema(IDENTITY + [
    ("epoch", pa.int32()), ("epochs", pa.int32()),
    ("train_loss", pa.float64()), ("train_acc", pa.float64()),
    ("test_loss", pa.float64()), ("test_acc", pa.float64()),
    ("test_correct", pa.int32()), ("test_total", pa.int32()),
    ("lr", pa.float64()), ("epoch_seconds", pa.float64()), ("images_per_sec", pa.float64()),
    ("params", pa.int64()), ("run_id", pa.string()), ("sweep_id", pa.string()), ("recipe_hash", pa.string()),
    ("quick", pa.bool_()), ("overrides", pa.string()), ("precision", pa.string()),
    ("device", pa.string()), ("host", pa.string()),
    ("torch_version", pa.string()), ("ray_version", pa.string()), ("project_version", pa.string()),
    ("wall_time", pa.timestamp("us", tz="UTC")),
])  # fmt: skip
PREDICTION_SCHEMA = pa.schema(IDENTITY + [
    ("run_id", pa.string()), ("recipe_hash", pa.string()), ("quick", pa.bool_()),
    ("epoch", pa.int32()), ("n", pa.int32()), ("pred", pa.binary()), ("correct", pa.binary()),
])  # fmt: skip
STEP_SCHEMA = pa.schema([
    ("step", pa.string()), ("submission", pa.string()), ("order", pa.int32()), ("title", pa.string()),
    ("source", pa.string()), ("params", pa.int64()), ("epochs", pa.int32()), ("batch_size", pa.int32()),
    ("recipe", pa.string()), ("recipe_hash", pa.string()),
    ("claimed_params", pa.int64()), ("claimed_best_test", pa.float64()), ("claimed_best_train", pa.float64()),
    ("claimed_best_epoch", pa.int32()), ("claimed_log", pa.list_(pa.float64())), ("claim_note", pa.string()),
    ("assumptions", pa.list_(pa.string())),
    ("target_accuracy", pa.float64()), ("target_params", pa.int64()), ("target_epochs", pa.int32()),
    ("target_source", pa.string()),
])  # fmt: skip


class Incompatible(BadInput):
    """The results folder holds rows that cannot be compared with the ones this sweep would add."""


@dataclass(frozen=True)
class Planned:
    """A run the sweep is asked for, with what makes its rows comparable."""

    step: str
    seed: int
    recipe_hash: str
    quick: bool


def seed_file(out: Path, kind: str, step: str, seed: int) -> Path:
    return out / kind / f"step={step}" / f"seed-{seed:04d}.parquet"


def marker_file(out: Path, step: str, seed: int) -> Path:
    return out / RUNS / step / f"seed-{seed:04d}.json"


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_run(out: Path, rows: list[dict[str, Any]], predictions: np.ndarray, labels: np.ndarray) -> None:
    """Write a finished run: its epoch rows, then its final-epoch predictions, then drop its in-flight marker."""
    last = rows[-1]
    step, seed = last["step"], last["seed"]
    pred = {k: last[k] for k in ("step", "submission", "seed", "run_id", "recipe_hash", "quick", "epoch")}
    pred.update(n=len(predictions), pred=predictions.astype(np.uint8).tobytes(),
                correct=np.packbits(predictions == labels).tobytes())  # fmt: skip
    write_table(seed_file(out, EPOCHS, step, seed), rows, EPOCH_SCHEMA)
    write_table(seed_file(out, PREDICTIONS, step, seed), [pred], PREDICTION_SCHEMA)
    marker_file(out, step, seed).unlink(missing_ok=True)


def write_marker(out: Path, step: str, seed: int, **state: Any) -> None:
    """Record an unfinished run's state (epoch reached, checkpoint URI, error), merged into what is there."""
    path = marker_file(out, step, seed)
    old = read_marker(path)
    text = json.dumps({**old, **state}, indent=1)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def read_marker(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def finished(out: Path) -> dict[tuple[str, int], tuple[str, bool]]:
    """(step, seed) -> (recipe_hash, quick) of every finished run, read from the epoch files' footers."""
    done = {}
    for f in sorted((out / EPOCHS).glob("step=*/seed-*.parquet")):
        try:
            table = pq.read_table(f, columns=["recipe_hash", "quick"])
        except (pa.ArrowException, OSError) as e:
            raise Incompatible(f"{f} is not a results file of this tool ({str(e).splitlines()[0]})") from None
        step, seed = f.parent.name.split("=", 1)[1], int(re.findall(r"\d+", f.stem)[0])
        if table.num_rows:
            done[(step, seed)] = (table["recipe_hash"][0].as_py(), table["quick"][0].as_py())
    return done


def check_compatible(out: Path, planned: Iterable[Planned]) -> None:
    """Refuse to add runs under a step whose existing rows were made with another recipe hash or quick flag."""
    existing: dict[str, tuple[str, bool]] = {}
    for (step, _), key in finished(out).items():
        existing.setdefault(step, key)
    for p in planned:
        if p.step in existing and existing[p.step] != (p.recipe_hash, p.quick):
            have_hash, have_quick = existing[p.step]
            kind = lambda h, q: f"{'quick' if q else 'full'} rows with recipe {h}"  # noqa: E731
            raise Incompatible(
                f"{out} holds {kind(have_hash, have_quick)} for {p.step}; this sweep would add "
                f"{kind(p.recipe_hash, p.quick)}: use another --out"
            )


def write_steps(out: Path, rows: list[dict[str, Any]]) -> None:
    """Merge step metadata rows into ``steps.parquet`` (a step's row is replaced by the newer one)."""
    path = out / STEPS
    old = pq.read_table(path).to_pylist() if path.exists() else []
    merged = {r["step"]: r for r in old + rows}
    write_table(path, [merged[k] for k in sorted(merged)], STEP_SCHEMA)


def step_row(step, recipe, recipe_hash: str, params: int) -> dict[str, Any]:
    """The ``steps.parquet`` row of a zoo step, as run with ``recipe``."""
    c = step.claims
    return {
        "step": step.name, "submission": step.submission, "order": step.order, "title": step.title,
        "source": step.source, "params": params, "epochs": step.recipe.epochs, "batch_size": recipe.batch_size,
        "recipe": json.dumps(dataclasses.asdict(recipe)), "recipe_hash": recipe_hash,
        "claimed_params": c.params, "claimed_best_test": c.best_test, "claimed_best_train": c.best_train,
        "claimed_best_epoch": c.best_epoch, "claimed_log": list(c.log) or None, "claim_note": c.note,
        "assumptions": step.assumption_lines(),
        "target_accuracy": step.target.accuracy, "target_params": step.target.params,
        "target_epochs": step.target.epochs, "target_source": step.target.source,
    }  # fmt: skip


@dataclass
class StepStatus:
    done: list[int] = dataclasses.field(default_factory=list)
    partial: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> "epoch 3/15" / "running 3/15"
    failed: dict[int, str] = dataclasses.field(default_factory=dict)  # seed -> one-line error


def status(out: Path) -> dict[str, StepStatus]:
    """Per step, which seeds are done, unfinished (running, or interrupted with a checkpoint) and failed."""
    from filelock import FileLock, Timeout

    result: dict[str, StepStatus] = {}
    for step, seed in sorted(finished(out)):
        result.setdefault(step, StepStatus()).done.append(seed)
    try:  # a held lock means a live sweep is writing: its in-flight runs are running, not interrupted
        with FileLock(str(out / LOCK), timeout=0):
            live = False
    except Timeout:
        live = True
    for path in sorted((out / RUNS).glob("*/seed-*.json")):
        m = read_marker(path)
        s = result.setdefault(path.parent.name, StepStatus())
        seed = int(re.findall(r"\d+", path.stem)[0])
        if m.get("error"):
            s.failed[seed] = m["error"]
        elif seed not in s.done:
            s.partial[seed] = f"{'running' if live else 'stopped at'} epoch {m.get('epoch', 0)}/{m.get('epochs', '?')}"
    return result
