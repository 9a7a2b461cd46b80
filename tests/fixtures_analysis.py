"""Write real results folders (docs/results-format.md) with pyarrow, for the analysis tests.

`write_run` writes one finished run as the sweep's driver does (sweeps/results.py: the same file names
`step=<name>/seed-<SSSS>.parquet`, columns and types, `step` both as the partition folder and as a column);
`write_steps` writes steps.parquet; `write_demo` writes a small realistic sweep of seeded random trajectories.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EPOCH_SCHEMA = pa.schema([
    ("step", pa.string()), ("submission", pa.string()), ("seed", pa.int64()),
    ("epoch", pa.int32()), ("epochs", pa.int32()),
    ("train_loss", pa.float64()), ("train_acc", pa.float64()), ("test_loss", pa.float64()),
    ("test_acc", pa.float64()), ("test_correct", pa.int32()), ("test_total", pa.int32()), ("lr", pa.float64()),
    ("epoch_seconds", pa.float64()), ("images_per_sec", pa.float64()), ("params", pa.int64()),
    ("run_id", pa.string()), ("sweep_id", pa.string()), ("recipe_hash", pa.string()), ("quick", pa.bool_()),
    ("overrides", pa.string()), ("precision", pa.string()), ("device", pa.string()), ("host", pa.string()),
    ("torch_version", pa.string()), ("ray_version", pa.string()), ("project_version", pa.string()),
    ("wall_time", pa.timestamp("us", tz="UTC")),
])
PREDICTION_SCHEMA = pa.schema([
    ("step", pa.string()), ("submission", pa.string()), ("seed", pa.int64()),
    ("run_id", pa.string()), ("recipe_hash", pa.string()), ("quick", pa.bool_()),
    ("epoch", pa.int32()), ("n", pa.int32()), ("pred", pa.binary()), ("correct", pa.binary()),
])
STEP_SCHEMA = pa.schema([
    ("step", pa.string()), ("submission", pa.string()), ("order", pa.int32()), ("title", pa.string()),
    ("source", pa.string()), ("params", pa.int64()), ("epochs", pa.int32()), ("batch_size", pa.int32()),
    ("recipe", pa.string()), ("recipe_hash", pa.string()), ("claimed_params", pa.int64()),
    ("claimed_best_test", pa.float64()), ("claimed_best_train", pa.float64()), ("claimed_best_epoch", pa.int32()),
    ("claimed_log", pa.list_(pa.float64())), ("claim_note", pa.string()), ("assumptions", pa.list_(pa.string())),
])
HASH = "0123456789ab"


def write_run(out: Path, step: str, seed: int, accs, *, submission: str = "000", params: int = 7_000,
              recipe_hash: str = HASH, quick: bool = False, epochs: int | None = None, overrides: str = "{}",
              correct=None) -> None:
    """One finished run: its epoch rows (test accuracies `accs`, percent, multiples of 0.01) and, when `correct`
    (bool per test image) is given, its predictions row."""
    n_epochs = len(accs)
    test_correct = np.round(np.asarray(accs) * 100).astype(int)
    run_id = f"{step}/seed={seed}/{recipe_hash}"
    rows = {
        "step": [step] * n_epochs, "submission": [submission] * n_epochs, "seed": [seed] * n_epochs,
        "epoch": list(range(1, n_epochs + 1)),
        "epochs": [epochs or n_epochs] * n_epochs, "train_loss": [0.05] * n_epochs, "train_acc": [99.0] * n_epochs,
        "test_loss": [0.02] * n_epochs, "test_acc": list(test_correct / 10_000 * 100),
        "test_correct": list(test_correct), "test_total": [10_000] * n_epochs, "lr": [0.01] * n_epochs,
        "epoch_seconds": [1.5] * n_epochs, "images_per_sec": [40_000.0] * n_epochs, "params": [params] * n_epochs,
        "run_id": [run_id] * n_epochs, "sweep_id": ["test-sweep"] * n_epochs,
        "recipe_hash": [recipe_hash] * n_epochs, "quick": [quick] * n_epochs, "overrides": [overrides] * n_epochs,
        "precision": ["fp32"] * n_epochs, "device": ["cpu"] * n_epochs, "host": ["test"] * n_epochs,
        "torch_version": ["2.5.0"] * n_epochs, "ray_version": ["2.40.0"] * n_epochs,
        "project_version": ["0.1.0"] * n_epochs,
        "wall_time": [datetime(2025, 1, 1, tzinfo=timezone.utc)] * n_epochs,
    }
    _write(pa.table(rows, schema=EPOCH_SCHEMA), run_file(out, "epochs", step, seed))
    if correct is not None:
        correct = np.asarray(correct, dtype=bool)
        pred = {"step": [step], "submission": [submission], "seed": [seed], "run_id": [run_id],
                "recipe_hash": [recipe_hash], "quick": [quick],
                "epoch": [n_epochs], "n": [len(correct)], "pred": [bytes(len(correct))],
                "correct": [np.packbits(correct).tobytes()]}
        _write(pa.table(pred, schema=PREDICTION_SCHEMA), run_file(out, "predictions", step, seed))


def run_file(out: Path, kind: str, step: str, seed: int) -> Path:
    """Where the driver writes a run's `epochs` or `predictions` file."""
    return out / kind / f"step={step}" / f"seed-{seed:04d}.parquet"


def write_steps(out: Path, steps: list[dict]) -> None:
    """steps.parquet from dicts holding at least step, submission, order, params, epochs."""
    defaults = {"title": "", "source": "", "batch_size": 64, "recipe": "{}", "recipe_hash": HASH,
                "claimed_params": None, "claimed_best_test": None, "claimed_best_train": None,
                "claimed_best_epoch": None, "claimed_log": None, "claim_note": "", "assumptions": []}
    rows = [defaults | s for s in steps]
    _write(pa.Table.from_pylist(rows, schema=STEP_SCHEMA), out / "steps.parquet")


def write_demo(out: Path, sizes=(3, 2), seeds: int = 8, random_state: int = 0) -> None:
    """A sweep over submissions "000", "001", … of `sizes` steps each, every step a bit better than the one before.

    Trajectories rise towards a per-step level and scatter binomially on 10,000 test images; predictions exist for
    every run but the last seed of each step (as if it were still being written).
    """
    rng = np.random.default_rng(random_state)
    hard = rng.permutation(10_000)[:600]  # the images any run may get wrong, shared by all runs
    steps = []
    orders = [(f"{sub:03d}", order) for sub, size in enumerate(sizes) for order in range(1, size + 1)]
    for i, (submission, order) in enumerate(orders):
        step, epochs, params = f"s{i + 1:03d}-model{order}", 15 if i % 3 else 20, 5_500 + 800 * order
        level = 99.22 + 0.25 * order / 3 + 0.05 * (submission == "001")
        log = list(np.round(level + 0.1 - 1.5 * np.exp(-np.arange(epochs) / 2.5), 2))
        steps.append({"step": step, "submission": submission, "order": order, "title": f"Step {order}: model {order}",
                      "source": f"{submission}.md", "params": params, "epochs": epochs,
                      "claimed_best_test": max(log), "claimed_log": log, "claimed_best_epoch": int(np.argmax(log)) + 1,
                      "assumptions": ["batch_size = 64: the seed does not say"] if order == 2 else []})
        for seed in range(seeds):
            true = level - 1.5 * np.exp(-np.arange(epochs) / 2.5) + rng.normal(0, 0.04)
            accs = rng.binomial(10_000, np.clip(true, 0, 100) / 100) / 100
            correct = np.ones(10_000, bool)
            correct[rng.choice(hard, 10_000 - round(accs[-1] * 100), replace=False)] = False
            write_run(out, step, seed, accs, submission=submission, params=params,
                      correct=None if seed == seeds - 1 else correct)
    write_steps(out, steps)


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)

