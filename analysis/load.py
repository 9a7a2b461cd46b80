"""Read a results folder (docs/results-format.md) into three DataFrames: epochs, predictions, steps.

This module is the only reader of the folder. It refuses bad input with one `ReportError` line: a missing folder,
a folder with no finished run, a file Parquet cannot read (corrupt or half written), a file without the columns the
report needs, or duplicate rows for one (step, seed, epoch). Names that start with `.` or `_`, and any name that
does not end in `.parquet` (the atomic writer's `*.tmp`), are not results and are skipped. A run may have its
epochs but not yet its predictions; `predictions` then simply lacks that run. Runs still in flight (a marker under
`runs/<step>/` and no epoch rows yet) are only counted, per step, so that a report made mid-sweep can say so.

Comparable groups
-----------------
Rows are pooled only within a *comparable group*: one step, one recipe hash, one `quick` flag. Quick rows train on
a tenth of the data for a short run, and a different hash means a different effective recipe, so pooling across
groups would mix different experiments. Groups are never merged and never dropped; each row gets a `group` label
that is the step name, extended only as far as needed to tell the step's groups apart:

- `<step> [quick]` for quick rows, when the folder holds both quick and full rows;
- `<step> @<first 7 hash digits>`, when the step has rows under more than one recipe hash with the same quick flag.

A folder from one quick sweep therefore reads `s001-model3` (the report states that all runs are quick), and a
folder that mixes reads `s001-model3 [quick]` next to `s001-model3`. Every statistic and figure is per group, and a
progression only compares groups with the same quick flag.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analysis import ReportError

GROUP_KEY = ["step", "recipe_hash", "quick"]
EPOCH_COLUMNS = {"submission", "seed", "epoch", "epochs", "test_acc", "test_total", "params", "recipe_hash", "quick"}
PREDICTION_COLUMNS = {"seed", "recipe_hash", "quick", "epoch", "n", "correct"}
STEP_COLUMNS = {"step", "submission", "order", "params", "epochs"}
STEP_OPTIONAL = ["title", "source", "recipe_hash", "claimed_params", "claimed_best_test", "claimed_best_train",
                 "claimed_best_epoch", "claimed_log", "claim_note", "assumptions",
                 "target_accuracy", "target_params", "target_epochs", "target_source"]
_HIVE = ds.HivePartitioning(pa.schema([("step", pa.string())]))


@dataclass(frozen=True)
class Results:
    """The rows of one results folder. `epochs` and `predictions` carry a `group` column (see module doc)."""

    epochs: pd.DataFrame  # one row per (step, seed, epoch) of a finished run
    predictions: pd.DataFrame  # one row per finished run whose predictions exist; may be empty
    steps: pd.DataFrame  # one row per step with rows: metadata, claims, assumptions
    out: Path
    unfinished: dict[str, int] = field(default_factory=dict)  # step -> runs in flight, interrupted or failed


def load_results(out: Path) -> Results:
    """Read `out`; raise ReportError with one line on anything the report cannot use."""
    out = Path(out)
    if not out.is_dir():
        raise ReportError(f"{out}: no such results folder")
    epochs = _read_partitioned(out / "epochs", EPOCH_COLUMNS)
    if epochs.empty:
        raise ReportError(f"{out}: no finished runs yet (no rows under epochs/)")
    _refuse_duplicates(epochs, ["step", "seed", "epoch"], out / "epochs")
    predictions = _read_partitioned(out / "predictions", PREDICTION_COLUMNS)
    _refuse_duplicates(predictions, ["step", "seed"], out / "predictions")

    keys = epochs[GROUP_KEY].drop_duplicates().reset_index(drop=True)
    keys["group"] = group_labels(keys)
    epochs = epochs.merge(keys, on=GROUP_KEY, how="left")
    runs = epochs[["seed", *GROUP_KEY, "group"]].drop_duplicates()  # predictions count only beside their epoch rows
    predictions = predictions.merge(runs, on=["seed", *GROUP_KEY]) if len(predictions) else predictions.assign(group="")
    return Results(epochs=epochs, predictions=predictions, steps=_steps(out / "steps.parquet", epochs), out=out,
                   unfinished=_unfinished(out / "runs", epochs))


def group_labels(keys: pd.DataFrame) -> pd.Series:
    """Label each unique (step, recipe_hash, quick) row as described in the module doc."""
    quick = keys["quick"].astype(bool)
    label = keys["step"].astype(str)
    if quick.nunique() > 1:
        label = label.where(~quick, label + " [quick]")
    hashes = keys.groupby(["step", "quick"])["recipe_hash"].transform("nunique")
    return label.where(hashes == 1, label + " @" + keys["recipe_hash"].astype(str).str[:7])


def _read_partitioned(folder: Path, required: set[str]) -> pd.DataFrame:
    """All `<folder>/step=<name>/*.parquet` files as one frame, with `step` taken from the hive partition."""
    files = sorted(p for p in folder.glob("*/*.parquet") if not p.name.startswith((".", "_"))
                   and not p.parent.name.startswith((".", "_")))
    tables = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise ReportError(f"cannot read {path}: {_first_line(e)}") from None
        step = ds.get_partition_keys(_HIVE.parse(f"/{path.parent.name}/")).get("step")
        if step is None:
            raise ReportError(f"{path}: not in a step=<name> folder")
        missing = required - set(table.column_names)
        if missing:
            raise ReportError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        if "step" in table.column_names:
            table = table.drop_columns("step")
        tables.append(table.append_column("step", pa.array([step] * table.num_rows, pa.string())))
    if not tables:
        return pd.DataFrame(columns=["step", *sorted(required)])
    try:
        frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except pa.ArrowException as e:
        raise ReportError(f"{folder}: files disagree on column types: {_first_line(e)}") from None
    if frame[list(required)].isna().any().any():
        raise ReportError(f"{folder}: empty values in required columns")
    return frame


def _refuse_duplicates(frame: pd.DataFrame, key: list[str], folder: Path) -> None:
    dup = frame[frame.duplicated(key)]
    if not dup.empty:
        first = dup.iloc[0]
        raise ReportError(f"{folder}: duplicate rows for " + ", ".join(f"{k} {first[k]}" for k in key))


def _steps(path: Path, epochs: pd.DataFrame) -> pd.DataFrame:
    """steps.parquet, plus a bare row (no order, no claims) for any step with rows that it does not list yet."""
    if path.exists():
        try:
            steps = pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as e:
            raise ReportError(f"cannot read {path}: {_first_line(e)}") from None
        missing = STEP_COLUMNS - set(steps.columns)
        if missing:
            raise ReportError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    else:
        steps = pd.DataFrame(columns=sorted(STEP_COLUMNS))
    unlisted = epochs[~epochs["step"].isin(steps["step"])]
    bare = unlisted.groupby("step", as_index=False).agg(
        submission=("submission", "first"), params=("params", "first"), epochs=("epochs", "max"))
    steps = pd.concat([df for df in (steps, bare) if not df.empty], ignore_index=True)
    steps = steps[steps["step"].isin(epochs["step"])].reset_index(drop=True)
    return steps.reindex(columns=list(dict.fromkeys([*steps.columns, *STEP_OPTIONAL])))  # optional columns as NaN


def _unfinished(folder: Path, epochs: pd.DataFrame) -> dict[str, int]:
    """Per step, the runs with a marker `runs/<step>/seed…<S>….json` and no epoch rows yet."""
    finished = set(zip(epochs["step"], epochs["seed"]))
    markers = ((p.parent.name, re.search(r"\d+", p.stem)) for p in folder.glob("*/*.json")
               if not p.name.startswith((".", "_")))
    return dict(Counter(step for step, seed in markers if seed and (step, int(seed.group())) not in finished))


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
