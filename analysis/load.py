"""Read a results folder (docs/results-format.md) into three DataFrames: epochs, predictions, steps.

This module is the report's reader of the folder; it reads it through `sweeps.layout.read`, each file once. A run
with a file Parquet cannot read is first moved aside into `quarantine/`, so that it blocks no other step. It refuses
bad input with one `ReportError` line: a missing folder, a folder with no finished run, a file without the columns the
report needs, files that disagree on column types, or duplicate rows for one (step, seed, epoch). Run files are found
as `sweeps.layout` names them (`step=<name>/seed-<SSSS>[-<tag>].parquet`); any other name, such as the atomic writer's
dot-named temporary file, is not a result and is skipped. A run may have its epochs but not yet its predictions;
`predictions` then simply lacks that run. Runs still in flight (a marker under `runs/<step>/` and no epoch rows yet)
are only counted, per step, so that a report made mid-sweep can say so.

Comparable groups
-----------------
Rows are pooled only within a *comparable group*: one step, one recipe hash, one `quick` flag, one precision, one
`--vary` setting and base seed (`sweeps.layout.COMPARABLE`). Quick rows train on
a tenth of the data for a short run, and a different hash means a different effective recipe, so pooling across
groups would mix different experiments. Groups are never merged and never dropped; each row gets a `group` label
that is the step name, extended only as far as needed to tell the step's groups apart:

- `<step> [quick]` for quick rows, when the folder holds both quick and full rows;
- `<step> [bf16]` for bf16 rows, when the folder holds rows of more than one precision;
- `<step> [vary order b0]` for the rows of `sweep run --vary order --base-seed 0` (any `vary` other than `all`);
- `<step> @<first 7 hash digits>`, when the step has rows under more than one recipe hash with the same quick flag
  and precision.

A folder from one quick sweep therefore reads `s001-model3` (the report states that all runs are quick), and a
folder that mixes reads `s001-model3 [quick]` next to `s001-model3`. Every statistic and figure is per group, and a
progression only compares groups with the same quick flag.

Some columns change bits, not distributions, and are pooled: the engine (`single` for a block of one, else
`block`), the block size and the device (`SPLITTABLE`). `sweep report --split engine` reports a step's runs of each
engine apart, as `<step> [engine=block]` next to `<step> [engine=single]`. A split value belongs to a run: a run whose
epochs hold several values (a seed that resumed in a block of another size) reads e.g. `[engine=block+single]`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from analysis import ReportError
from sweeps import layout

GROUP_KEY = ["step", *layout.COMPARABLE]
RUN_KEY = ["step", "quick", "vary", "base_seed", "seed"]  # one run: its file name (layout.run_file)
SPLITTABLE = ("engine", "block_size", "device")  # pooled columns that `sweep report --split` can report apart
EPOCH_COLUMNS = {"submission", "seed", "epoch", "epochs", "test_acc", "test_total", "params", *layout.COMPARABLE}
PREDICTION_COLUMNS = {"seed", "recipe_hash", "quick", "epoch", "n", "correct"}
STEP_COLUMNS = {"step", "submission", "order", "params", "epochs"}
STEP_OPTIONAL = [
    "title",
    "source",
    "recipe_hash",
    "claimed_params",
    "claimed_best_test",
    "claimed_best_train",
    "claimed_best_epoch",
    "claimed_log",
    "claim_note",
    "assumptions",
    "target_accuracy",
    "target_params",
    "target_epochs",
    "target_source",
    "step_file",
    "step_package",
]


@dataclass(frozen=True)
class Results:
    """The rows of one results folder. `epochs` and `predictions` carry a `group` column (see module doc)."""

    epochs: pd.DataFrame  # one row per (step, seed, epoch) of a finished run
    predictions: pd.DataFrame  # one row per finished run whose predictions exist; may be empty
    steps: pd.DataFrame  # one row per step with rows: metadata, claims, assumptions
    out: Path
    unfinished: dict[str, int] = field(default_factory=dict)  # step -> runs in flight, interrupted or failed
    quarantined: list[tuple[Path, Path]] = field(default_factory=list)  # damaged files moved aside now: (from, to)
    notes: list[str] = field(default_factory=list)  # what the command found beyond the rows (sweep report --steps-from)


def load_results(out: Path, split: tuple[str, ...] = ()) -> Results:
    """Read `out`; raise ReportError with one line on anything the report cannot use. `split`: SPLITTABLE columns
    whose values are reported apart (module doc)."""
    out = Path(out)
    check_split(split)
    if out.is_file():
        raise ReportError(f"{out} is a file, not a results folder")
    if not out.is_dir():
        raise ReportError(f"{out}: no such results folder")
    folder = layout.read(out)
    epochs = _frame(folder.epochs, out / layout.EPOCHS, EPOCH_COLUMNS)
    if epochs.empty:
        raise ReportError(f"{out}: no finished runs yet (no rows under epochs/)")
    _refuse_duplicates(epochs, [*RUN_KEY, "epoch"], out / layout.EPOCHS)
    predictions = _frame(folder.predictions, out / layout.PREDICTIONS, PREDICTION_COLUMNS)
    _refuse_duplicates(predictions, RUN_KEY, out / layout.PREDICTIONS)

    by = [f"by {column}" for column in split]
    if split:  # each run's value of each split column, on all its rows
        values = epochs.groupby(RUN_KEY)[list(split)].agg(lambda v: "+".join(sorted(map(str, v.unique()))))
        epochs = epochs.merge(values.set_axis(by, axis=1).reset_index(), on=RUN_KEY, how="left")
    keys = epochs[GROUP_KEY + by].drop_duplicates().reset_index(drop=True)
    keys["group"] = group_labels(keys)
    epochs = epochs.merge(keys, on=GROUP_KEY + by, how="left").drop(columns=by)
    # predictions count only beside their own run's epoch rows
    runs = epochs[["step", "seed", "recipe_hash", "quick", "vary", "base_seed", "group"]].drop_duplicates()
    match = ["step", "seed", "recipe_hash", "quick", "vary", "base_seed"]
    predictions = predictions.merge(runs, on=match) if len(predictions) else predictions.assign(group="")
    return Results(
        epochs=epochs,
        predictions=predictions,
        steps=_steps(folder.steps, out / layout.STEPS, epochs),
        out=out,
        unfinished=_unfinished(out, epochs),
        quarantined=folder.quarantined,
    )


def check_split(split: tuple[str, ...]) -> None:
    for column in split:
        if column not in SPLITTABLE:
            raise ReportError(f"--split takes {', '.join(SPLITTABLE)}, not {column!r}")


def group_labels(keys: pd.DataFrame) -> pd.Series:
    """Label each unique (step, *layout.COMPARABLE, *split) row as described in the module doc; a split column is
    named `by <column>`."""
    quick, precision = keys["quick"].astype(bool), keys["precision"].astype(str)
    label = keys["step"].astype(str)
    if quick.nunique() > 1:
        label = label.where(~quick, label + " [quick]")
    if precision.nunique() > 1:
        label = label.where(precision == "fp32", label + " [" + precision + "]")
    varied = keys["vary"].astype(str) + " b" + keys["base_seed"].astype(str)
    label = label.where(keys["vary"] == "all", label + " [vary " + varied + "]")
    hashes = keys.groupby(["step", "quick", "precision", "vary", "base_seed"])["recipe_hash"].transform("nunique")
    label = label.where(hashes == 1, label + " @" + keys["recipe_hash"].astype(str).str[:7])
    for column in keys.columns[keys.columns.str.startswith("by ")]:
        label = label + f" [{column[3:]}=" + keys[column] + "]"
    return label


def _frame(tables: dict[layout.RunKey, pa.Table], folder: Path, required: set[str]) -> pd.DataFrame:
    """The run files of one kind (layout.read) as one frame, with `step` taken from the run's key."""
    parts = []
    for key, table in tables.items():
        missing = required - set(table.column_names)
        if missing:
            path = layout.run_file(folder.parent, folder.name, *key)
            raise ReportError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        parts.append(table.append_column("step", pa.array([key.step] * table.num_rows, pa.string())))
    if not parts:
        return pd.DataFrame(columns=["step", *sorted(required)])
    try:
        frame = pa.concat_tables(parts, promote_options="permissive").to_pandas()
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


def _steps(table: pa.Table | None, path: Path, epochs: pd.DataFrame) -> pd.DataFrame:
    """steps.parquet (as layout.read read it), plus a bare row (no order, no claims) for any step with rows that it
    does not list yet."""
    if table is not None:
        steps = table.to_pandas()
        missing = STEP_COLUMNS - set(steps.columns)
        if missing:
            raise ReportError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    else:
        steps = pd.DataFrame(columns=sorted(STEP_COLUMNS))
    unlisted = epochs[~epochs["step"].isin(steps["step"])]
    bare = unlisted.groupby("step", as_index=False).agg(
        submission=("submission", "first"), params=("params", "first"), epochs=("epochs", "max")
    )
    steps = pd.concat([df for df in (steps, bare) if not df.empty], ignore_index=True)
    steps = steps[steps["step"].isin(epochs["step"])].reset_index(drop=True)
    columns = dict.fromkeys([*sorted(STEP_COLUMNS), *steps.columns, *STEP_OPTIONAL])
    return steps.reindex(columns=list(columns))  # a bare row's order and the optional columns as NaN


def _unfinished(out: Path, epochs: pd.DataFrame) -> dict[str, int]:
    """Per step, the runs with an in-flight marker (layout.markers) and no epoch rows yet."""
    runs = epochs[RUN_KEY].drop_duplicates().itertuples(index=False)
    finished = {layout.RunKey(r.step, r.seed, layout.tag(r.vary, r.base_seed, r.quick)) for r in runs}
    return dict(Counter(f.step for f in layout.markers(out) if f.key not in finished))


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
