"""The results folder's format, in one place: its layout, the three Parquet schemas with each column's meaning, the
path builders and the iterators over run files and markers.

It needs only pyarrow and numpy, so the writer (:mod:`sweeps.results`), the reader (:mod:`analysis.load`) and the
tests' fixtures share it without importing Ray or torch. It is also where a run becomes rows: its key, name and tag,
the columns every row of it shares, and its epoch and prediction rows are built here, once, from the trainer's typed
records (:func:`epoch_rows`). ``docs/results-format.md`` is generated from it
(``python -m sweeps.layout > docs/results-format.md``), and a test keeps the two equal.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EPOCHS, PREDICTIONS, RUNS, TUNE, STEPS = "epochs", "predictions", "runs", "tune", "steps.parquet"
QUARANTINE = "quarantine"
LOCK = ".sweep.lock"
# Rows of one step are pooled, and added to, only where these agree; anything else that changes the numbers is in
# the recipe hash (network, recipe, overrides, quick).
COMPARABLE = ["recipe_hash", "quick", "precision", "vary", "base_seed"]
DEFAULTS = {"vary": "all", "base_seed": 0}  # for files written before these columns existed
# for epoch files written before these columns existed
EPOCH_DEFAULTS = {"engine": "single", "block_size": 1, "rule": "fixed"}
QUICK = "quick"  # the tag of a --quick run's files
# seed-0007.parquet, seed-0007.json; a quick or --vary run adds its tag (:func:`tag`): seed-0007-quick.parquet,
# seed-0007-vary-order-b0.parquet, seed-0007-quick-vary-order-b0.parquet
SEED_NAME = re.compile(r"seed-(\d+)(?:-((?:quick-)?vary-[a-z+]+-b\d+|quick))?\.(parquet|json)")

LAYOUT = f"""\
OUT/
  {STEPS}                          one row per step that has rows here (metadata, claims, assumptions)
  {EPOCHS}/step=<name>/seed-<SSSS>[-<tag>].parquet one file per *finished* run: one row per epoch (hive: by step)
  {PREDICTIONS}/step=<name>/seed-<SSSS>[-<tag>].parquet one row per finished run: final-epoch predictions
  {RUNS}/<name>/seed-<SSSS>[-<tag>].json  in-flight state of a run not yet finished: epoch reached, checkpoint, error

<tag> is there only for runs of `sweep run --quick`, `quick`, and of `sweep run --vary` other than `all`,
vary-<sources joined by +>-b<base seed>, both joined by - (seed-0003-quick.parquet, seed-0003-vary-order-b0.parquet,
seed-0003-quick-vary-order-b0.parquet), so that such runs live beside the full `all` runs of the same step and seed.
A quick run's files written before quick runs had a tag are named without it; they read as the quick runs they are,
and are renamed to their tagged names when a full run of that seed is written.
  {TUNE}/                                  Ray Tune's own experiment state (unless --storage points elsewhere)
  {QUARANTINE}/                            damaged files moved aside (same relative paths); their runs train again"""

# (name, type, meaning). `step` is the hive partition (the `step=<name>` folder), so run files do not store it.
EPOCH_COLUMNS = [
    ("submission", pa.string(), "seed file prefix: `000` … `004`; for a step from a step file, the file's stem"),
    ("seed", pa.int64(), "run seed"),
    ("epoch", pa.int32(), "1-based epoch number"),
    ("epochs", pa.int32(), "epochs this run trains for (the recipe's, or the `--epochs` / `--quick` override)"),
    ("train_loss", pa.float64(), "mean training loss over the epoch"),
    ("train_acc", pa.float64(), "training accuracy over the epoch, **percent** (on augmented images, dropout on)"),
    ("test_loss", pa.float64(), "mean test loss"),
    ("test_acc", pa.float64(), "test accuracy, **percent** (e.g. 99.41)"),
    ("test_correct", pa.int32(), "correctly classified test images"),
    ("test_total", pa.int32(), "test images evaluated (10,000)"),
    ("lr", pa.float64(), "learning rate used during this epoch"),
    ("epoch_seconds", pa.float64(), "wall seconds of the epoch (train + test); for a block, the whole block's epoch"),
    ("images_per_sec", pa.float64(), "training images per second of this run (a block trains `block_size` times more)"),
    (
        "engine",
        pa.string(),
        "how this epoch trained: `single` (the seed alone, a block of one) or `block` (`block_size` seeds of one "
        "step as one batched network, `sweep run --seeds-per-trial`); the same draws per seed, numbers equal to "
        "float rounding; rows of both are comparable and pooled",
    ),
    ("block_size", pa.int32(), "seeds trained together with this one in this epoch, itself included (1 for `single`)"),
    ("params", pa.int64(), "trainable parameters"),
    (
        "rule",
        pa.string(),
        "how the sweep that wrote this run chose its seeds: `fixed` (a number fixed in advance, `sweep run --seeds`) "
        "or `until-decided` (`sweep run --until-decided`: seeds added while the step's verdict was undecided, judged "
        "with a confidence sequence)",
    ),
    (
        "run_id",
        pa.string(),
        "`<step>/seed=<S>/<recipe_hash>`, and `/<tag>` for a quick run or a `--vary` run other than `all` (the tag of "
        "its file name)",
    ),
    ("sweep_id", pa.string(), "id of the `sweep run` invocation that finished the run"),
    (
        "recipe_hash",
        pa.string(),
        "12 hex digits over the network and the effective recipe (incl. overrides and "
        "quick); rows with different hashes under one step are not comparable",
    ),
    ("quick", pa.bool_(), "trained with `--quick` (10 % stratified train slice, 1 epoch unless --epochs)"),
    ("overrides", pa.string(), "JSON object of recipe fields overridden on the command line, `{}` when none"),
    (
        "precision",
        pa.string(),
        "the precision actually used: `fp32` (IEEE fp32 on every device), `tf32` (TF32 convolutions and matmuls on a "
        "GPU that has them, `--tf32`) or `bf16` (bf16 autocast, `--bf16`); never pooled with each other",
    ),
    (
        "vary",
        pa.string(),
        "the random streams that vary with the seed (`sweep run --vary`): `all`, `none`, or a "
        "comma list of `init`, `order`, `augment`, `dropout`; the others are held at the base seed's",
    ),
    (
        "base_seed",
        pa.int64(),
        "the seed whose streams the ones not varied take (`--base-seed`); 0 when `vary` is `all`",
    ),
    ("seed_init", pa.int64(), "seed of the weight-initialisation stream actually used"),
    ("seed_order", pa.int64(), "seed of the data-order stream actually used"),
    ("seed_augment", pa.int64(), "seed of the augmentation (rotation angle) stream actually used"),
    ("seed_dropout", pa.int64(), "seed of the dropout-mask stream actually used"),
    ("device", pa.string(), "e.g. `cpu`, `NVIDIA H100 80GB HBM3`"),
    ("host", pa.string(), "host name of the worker"),
    ("torch_version", pa.string(), "torch version of the worker"),
    ("ray_version", pa.string(), "Ray version of the driver"),
    ("project_version", pa.string(), "package version, plus the git commit when known"),
    ("wall_time", pa.timestamp("us", tz="UTC"), "when the epoch finished"),
]
PREDICTION_COLUMNS = [
    *(
        c
        for c in EPOCH_COLUMNS
        if c[0] in ("submission", "seed", "run_id", "recipe_hash", "quick", "vary", "base_seed")
    ),
    ("epoch", pa.int32(), "the final epoch, whose predictions these are"),
    ("n", pa.int32(), "number of test images (10,000)"),
    ("pred", pa.binary(), "`n` bytes: predicted label (uint8) per test image, in test-set order"),
    ("correct", pa.binary(), "`np.packbits` of the per-image correctness (bool), `ceil(n/8)` bytes"),
]
STEP_COLUMNS = [
    ("step", pa.string(), "step name"),
    (
        "submission",
        pa.string(),
        "`000` … `004`; for a step from a step file, the file's stem (for an installed package's, its entry point's "
        "name)",
    ),
    ("order", pa.int32(), "position of the step within its submission's progression (1, 2, …)"),
    ("title", pa.string(), "heading of the step in the seed file (a step file's own title for it, or empty)"),
    ("source", pa.string(), "seed file name, or step file name (with its package and version)"),
    ("params", pa.int64(), "trainable parameters"),
    ("epochs", pa.int32(), "recipe epochs (the epoch budget the student used)"),
    ("batch_size", pa.int32(), "recipe batch size"),
    ("recipe", pa.string(), "JSON of the full recipe"),
    ("recipe_hash", pa.string(), "hash of the recipe as run in this folder"),
    ("claimed_params", pa.int64(), "parameter count the seed reported (nullable)"),
    ("claimed_best_test", pa.float64(), "best test accuracy the seed reported, percent (nullable)"),
    ("claimed_best_train", pa.float64(), "best train accuracy the seed reported, percent (nullable)"),
    ("claimed_best_epoch", pa.int32(), "1-based epoch of the claimed best test accuracy (nullable)"),
    ("claimed_log", pa.list_(pa.float64()), "the seed's own per-epoch test accuracy log, percent, epoch 1 first"),
    ("claim_note", pa.string(), "where the seed contradicts itself, what we read it as"),
    ("assumptions", pa.list_(pa.string()), "recipe values we assumed because the seed is silent, `field = value: why`"),
    (
        "target_accuracy",
        pa.float64(),
        "test accuracy the seed itself set out to reach with this step, percent (nullable)",
    ),
    ("target_params", pa.int64(), "parameter count the seed's own target stays below (nullable)"),
    ("target_epochs", pa.int32(), "epochs the seed's own target allows at most (nullable)"),
    (
        "target_source",
        pa.string(),
        'the seed\'s line number(s) and words for its own target ("(no numbers)" where it sets none)',
    ),
    (
        "step_file",
        pa.string(),
        "where a step from outside the zoo was declared, absolute: its step file (`--steps-from`), or the module "
        "file of its installed package; empty for the zoo's steps",
    ),
    ("step_file_sha256", pa.string(), "SHA-256 of that file as the sweep read it (as `sha256sum` prints it)"),
    (
        "step_package",
        pa.string(),
        "for a step of an installed package (entry-point group `cnn_sweeps.steps`): the distribution and its version",
    ),
]


def _schema(columns) -> pa.Schema:
    return pa.schema([(name, type_) for name, type_, _ in columns])


EPOCH_SCHEMA, PREDICTION_SCHEMA, STEP_SCHEMA = map(_schema, (EPOCH_COLUMNS, PREDICTION_COLUMNS, STEP_COLUMNS))


# --- runs: key, name, columns, rows --------------------------------------------------------------------------------


class RunKey(NamedTuple):
    """What names a run's files: its step, seed and ``--vary`` tag."""

    step: str
    seed: int
    tag: str = ""  # "" for a full run whose seed drives every random stream; else its tag (:func:`tag`)

    @property
    def name(self) -> str:
        """``<step>#<seed>[-<tag>]``: the run in messages, and a trial of one run."""
        return f"{self.step}#{self.seed}" + (f"-{self.tag}" if self.tag else "")


def tag(vary: str, base_seed: int, quick: bool = False) -> str:
    """'' for a full run whose seed drives every stream; else what tells its files apart from that run's: ``quick``
    for a --quick run, ``vary-<streams joined by +>-b<base seed>`` for a --vary run, both joined by '-'."""
    varied = "" if vary == "all" else f"vary-{vary.replace(',', '+')}-b{base_seed}"
    return "-".join(filter(None, (QUICK if quick else "", varied)))


def run_id(step: str, seed: int, recipe_hash: str, tag: str = "") -> str:
    """The ``run_id`` column: ``<step>/seed=<S>/<recipe hash>[/<tag>]``."""
    return "/".join(filter(None, (step, f"seed={seed}", recipe_hash, tag)))


def key(run) -> RunKey:
    """The key of a planned run (a ``cnn.train.Run``)."""
    return RunKey(run.step, run.seed, tag(run.vary, run.base_seed, run.quick))


def run_columns(run) -> dict[str, Any]:
    """The columns every row of a planned run (a ``cnn.train.Run``) shares; :data:`EPOCH_COLUMNS` says what each
    means."""
    return {
        "submission": run.spec.submission,
        "seed": run.seed,
        "epochs": run.recipe.epochs,
        "params": run.params,
        "run_id": run_id(run.step, run.seed, run.recipe_hash, key(run).tag),
        "recipe_hash": run.recipe_hash,
        "quick": run.quick,
        "overrides": run.overrides,
        "precision": run.precision,
        "vary": run.vary,
        "base_seed": run.base_seed,
        **{f"seed_{stream}": seed for stream, seed in vars(run.seeds).items()},
    }


def epoch_rows(run, epochs: Iterable[Mapping[str, Any]], **sweep: Any) -> list[dict[str, Any]]:
    """A finished run's epoch rows: the run's columns and the sweep's (``sweep_id``, the driver's versions), then each
    epoch's flat record (the trainer's metrics and timings, ``block_size``, the precision actually used, the worker's
    ``host``, ``device`` and ``torch_version``, ``wall_time`` in seconds since the Unix epoch)."""
    fixed = {**run_columns(run), **sweep}
    return [
        {
            **fixed,
            **{k: v for k, v in e.items() if v is not None},
            "engine": "single" if e["block_size"] == 1 else "block",
            "wall_time": dt.datetime.fromtimestamp(e["wall_time"], dt.timezone.utc),
        }
        for e in epochs
    ]


def prediction_row(run, epoch: int, predictions: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """A finished run's predictions row: uint8 labels and bool correctness per test image, for its final epoch."""
    return {
        **run_columns(run),
        "epoch": epoch,
        "n": len(predictions),
        "pred": predictions.astype(np.uint8).tobytes(),
        "correct": np.packbits(correct).tobytes(),
    }


# --- paths ----------------------------------------------------------------------------------------------------------


class RunFile(NamedTuple):
    step: str
    seed: int
    tag: str  # the tag of its name (:func:`tag`)
    path: Path

    @property
    def key(self) -> RunKey:
        return RunKey(self.step, self.seed, self.tag)


def stem(seed: int, tag: str = "") -> str:
    return f"seed-{seed:04d}" + (f"-{tag}" if tag else "")


def run_file(out: Path, kind: str, step: str, seed: int, tag: str = "") -> Path:
    """A finished run's file under ``kind`` (:data:`EPOCHS` or :data:`PREDICTIONS`)."""
    return out / kind / f"step={step}" / f"{stem(seed, tag)}.parquet"


def marker_file(out: Path, step: str, seed: int, tag: str = "") -> Path:
    """An unfinished run's in-flight marker."""
    return out / RUNS / step / f"{stem(seed, tag)}.json"


def parse_name(path: Path) -> tuple[int, str] | None:
    """(seed, tag) of a run file or marker name; None for any other name (a writer's dot-named temporary file)."""
    match = SEED_NAME.fullmatch(path.name)
    return (int(match.group(1)), match.group(2) or "") if match else None


def run_files(out: Path, kind: str) -> Iterator[RunFile]:
    """Every run file under ``kind``, sorted by path."""
    for path in sorted((out / kind).glob("step=*/seed-*.parquet")):
        if name := parse_name(path):
            yield RunFile(path.parent.name.removeprefix("step="), *name, path)


def markers(out: Path) -> Iterator[RunFile]:
    """Every in-flight marker, sorted by path."""
    for path in sorted((out / RUNS).glob("*/seed-*.json")):
        if name := parse_name(path):
            yield RunFile(path.parent.name, *name, path)


def with_defaults(table: pa.Table, kind: str = EPOCHS) -> pa.Table:
    """``table``, a run file under ``kind``, with the :data:`DEFAULTS` columns it lacks, and for :data:`EPOCHS` the
    :data:`EPOCH_DEFAULTS` ones (files written before those columns existed)."""
    for name, value in {**DEFAULTS, **(EPOCH_DEFAULTS if kind == EPOCHS else {})}.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, EPOCH_SCHEMA.field(name).type))
    return table


@dataclass(frozen=True)
class Folder:
    """A results folder as one command reads it, every file once. A run with a file Parquet cannot read (both of its
    files), and an unreadable ``steps.parquet``, were first moved aside into ``OUT/quarantine/`` under the same
    relative paths, never deleted or overwritten, so that one damaged file blocks nothing: the run counts as not
    finished and trains again."""

    epochs: dict[RunKey, pa.Table]  # one table per finished run, with the default columns of older files
    predictions: dict[RunKey, pa.Table]
    steps: pa.Table | None  # steps.parquet, None where there is none
    quarantined: list[tuple[Path, Path]]  # (damaged file, where it went), moved by this read


def read(out: Path) -> Folder:
    """Read every run file of ``out`` and its ``steps.parquet`` once, moving damaged ones aside (:class:`Folder`)."""
    tables: dict[str, dict[RunKey, pa.Table]] = {EPOCHS: {}, PREDICTIONS: {}}
    keys: dict[Path, RunKey] = {}  # file -> the key it was read under
    damaged: list[Path] = []
    for kind, found in tables.items():
        for f in run_files(out, kind):
            try:
                table = with_defaults(pq.read_table(f.path), kind)
            except (pa.ArrowException, OSError):
                damaged.append(f.path)
                continue
            keys[f.path] = content_key(f, table)
            found[keys[f.path]] = table
    steps = None
    if (out / STEPS).exists():
        try:
            steps = pq.read_table(out / STEPS)
        except (pa.ArrowException, OSError):
            damaged.append(out / STEPS)
    moved: dict[Path, Path] = {}
    for path in damaged:
        if path.name == STEPS:
            moved[path] = _move_aside(out, path)
            continue
        step, (seed, tag) = path.parent.name.removeprefix("step="), parse_name(path)
        for kind, found in tables.items():
            file = run_file(out, kind, step, seed, tag)
            found.pop(keys.get(file), None)
            if file.exists():
                moved[file] = _move_aside(out, file)
    return Folder(tables[EPOCHS], tables[PREDICTIONS], steps, [(path, moved[path]) for path in damaged])


def content_key(f: RunFile, table: pa.Table) -> RunKey:
    """The key of the run a file holds: its name's, but for a quick run's file written before quick runs had a tag
    of their own, which is named as a full run's."""
    if table.num_rows and table["quick"][0].as_py() and not f.tag.startswith(QUICK):
        return f.key._replace(tag="-".join(filter(None, (QUICK, f.tag))))
    return f.key


def make_room(out: Path, key: RunKey) -> None:
    """Before a run's files are written: a quick run's files that hold their names (written before quick runs had a
    tag) move to their tagged names, so that both runs keep their rows."""
    path = run_file(out, EPOCHS, *key)
    if not path.exists():
        return
    quick = content_key(RunFile(*key, path), pq.read_table(path, columns=["quick"])).tag
    if quick != key.tag:
        for kind in (EPOCHS, PREDICTIONS):
            file = run_file(out, kind, *key)
            if file.exists():
                target = run_file(out, kind, key.step, key.seed, quick)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target)


def _move_aside(out: Path, file: Path) -> Path:
    target = out / QUARANTINE / file.relative_to(out)
    while target.exists():
        target = target.with_name(target.name + "~")
    target.parent.mkdir(parents=True, exist_ok=True)
    return file.rename(target)


def quarantined(out: Path) -> list[Path]:
    """Every file moved aside by :func:`read`, sorted."""
    return sorted(p for p in (out / QUARANTINE).rglob("*") if p.is_file())


# --- atomic writes --------------------------------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Rows (dicts; keys outside ``schema`` are ignored) as one Parquet file, atomically."""
    table = pa.Table.from_pylist(rows, schema=schema)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


# --- the documentation ----------------------------------------------------------------------------------------------


def markdown() -> str:
    """``docs/results-format.md``."""

    def table(columns, first=()) -> str:
        lines = ["| column | type | meaning |", "| --- | --- | --- |", *first]
        return "\n".join(lines + [f"| {name} | {type_} | {meaning} |" for name, type_, meaning in columns])

    step_row = (
        "| step | string (hive partition) | step name, e.g. `s001-model3`: the `step=<name>` folder, not stored in "
    )
    step_row += "the files |"
    return f"""\
# The results folder (`--out`)

<!-- Generated by `python -m sweeps.layout > docs/results-format.md` from sweeps/layout.py; do not edit by hand. -->

`sweep run` writes, and `sweep report` / `sweep status` read, this layout. The sweep's driver is the only writer;
every file is written to a temporary name in the same folder and renamed into place, so a reader never sees half a
file.

```
{LAYOUT}
```

## `{EPOCHS}`: one row per (step, seed, epoch)

{table(EPOCH_COLUMNS, [step_row])}

## `{PREDICTIONS}`: one row per finished run

{table(PREDICTION_COLUMNS, [step_row])}

## `{STEPS}`: one row per step

{table(STEP_COLUMNS)}
"""


if __name__ == "__main__":
    print(markdown(), end="")
