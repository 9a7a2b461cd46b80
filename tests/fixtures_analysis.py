"""Write real results folders for the analysis tests, in the format the sweep's driver writes (sweeps.layout: the
same file names, schemas and atomic writes).

`write_run` writes one finished run; `write_steps` writes steps.parquet; `write_demo` writes a small realistic sweep
of seeded random trajectories.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sweeps.layout import (
    EPOCH_SCHEMA,
    EPOCHS,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    STEP_SCHEMA,
    STEPS,
    run_file,
    run_id,
    write_table,
)
from sweeps.layout import tag as tag_of

HASH = "0123456789ab"


def write_run(
    out: Path,
    step: str,
    seed: int,
    accs,
    *,
    submission: str = "000",
    params: int = 7_000,
    recipe_hash: str = HASH,
    quick: bool = False,
    epochs: int | None = None,
    overrides: str = "{}",
    precision: str = "fp32",
    vary: str = "all",
    base_seed: int = 0,
    engine: str | list[str] = "single",
    correct=None,
    rule: str | None = "fixed",
) -> None:
    """One finished run: its epoch rows (test accuracies `accs`, percent, multiples of 0.01) and, when `correct`
    (bool per test image) is given, its predictions row. `engine`: one for every epoch, or one per epoch. `rule`:
    the `rule` column's value (`fixed`, `until-decided`); None writes a file without the column, as before it."""
    engines = [engine] * len(accs) if isinstance(engine, str) else engine
    tag = tag_of(vary, base_seed, quick)
    fixed = {
        "submission": submission,
        "seed": seed,
        "run_id": run_id(step, seed, recipe_hash, tag),
        "recipe_hash": recipe_hash,
        "quick": quick,
        "vary": vary,
        "base_seed": base_seed,
    }
    rows = [
        {
            **fixed,
            "epoch": epoch,
            "epochs": epochs or len(accs),
            "train_loss": 0.05,
            "train_acc": 99.0,
            "test_loss": 0.02,
            "test_acc": correct_count / 10_000 * 100,
            "test_correct": correct_count,
            "test_total": 10_000,
            "lr": 0.01,
            "epoch_seconds": 1.5,
            "images_per_sec": 40_000.0,
            "params": params,
            "sweep_id": "test-sweep",
            "overrides": overrides,
            "precision": precision,
            "engine": engines[epoch - 1],
            "block_size": 1 if engines[epoch - 1] == "single" else 4,
            "device": "cpu",
            "host": "test",
            "torch_version": "2.5.0",
            "ray_version": "2.40.0",
            "project_version": "0.1.0",
            "seed_init": seed,
            "seed_order": seed,
            "seed_augment": seed,
            "seed_dropout": seed,
            "wall_time": datetime(2025, 1, 1, tzinfo=timezone.utc),
        }
        for epoch, correct_count in enumerate(np.round(np.asarray(accs) * 100).astype(int).tolist(), start=1)
    ]
    schema = EPOCH_SCHEMA if rule else EPOCH_SCHEMA.remove(EPOCH_SCHEMA.get_field_index("rule"))
    write_table(run_file(out, EPOCHS, step, seed, tag), [row | {"rule": rule} for row in rows], schema)
    if correct is not None:
        correct = np.asarray(correct, dtype=bool)
        pred = {
            **fixed,
            "epoch": len(accs),
            "n": len(correct),
            "pred": bytes(len(correct)),
            "correct": np.packbits(correct).tobytes(),
        }
        write_table(run_file(out, PREDICTIONS, step, seed, tag), [pred], PREDICTION_SCHEMA)


def write_steps(out: Path, steps: list[dict]) -> None:
    """steps.parquet from dicts holding at least step, submission, order, params, epochs."""
    defaults = {
        "title": "",
        "source": "",
        "batch_size": 64,
        "recipe": "{}",
        "recipe_hash": HASH,
        "claimed_params": None,
        "claimed_best_test": None,
        "claimed_best_train": None,
        "claimed_best_epoch": None,
        "claimed_log": None,
        "claim_note": "",
        "assumptions": [],
    }
    write_table(out / STEPS, [defaults | s for s in steps], STEP_SCHEMA)


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
        steps.append(
            {
                "step": step,
                "submission": submission,
                "order": order,
                "title": f"Step {order}: model {order}",
                "source": f"{submission}.md",
                "params": params,
                "epochs": epochs,
                "claimed_best_test": max(log),
                "claimed_log": log,
                "claimed_best_epoch": int(np.argmax(log)) + 1,
                "assumptions": ["batch_size = 64: the seed does not say"] if order == 2 else [],
            }
        )
        for seed in range(seeds):
            true = level - 1.5 * np.exp(-np.arange(epochs) / 2.5) + rng.normal(0, 0.04)
            accs = rng.binomial(10_000, np.clip(true, 0, 100) / 100) / 100
            correct = np.ones(10_000, bool)
            correct[rng.choice(hard, 10_000 - round(accs[-1] * 100), replace=False)] = False
            write_run(
                out,
                step,
                seed,
                accs,
                submission=submission,
                params=params,
                correct=None if seed == seeds - 1 else correct,
            )
    write_steps(out, steps)


QUICK_STEPS = [  # (step, submission, order, params) of a zoo-like quick sweep: long names, one step over budget
    ("s001-model1", "001", 1, 13_808),
    ("s001-model3-aws", "001", 2, 7_902),
    ("s002-net1", "002", 1, 6_379_786),
    ("s003-model3-aug-skip", "003", 1, 9_180),
    ("s003-model4-plain", "003", 2, 7_616),
    ("s004-exp1", "004", 1, 7_958),
    ("s004-exp3", "004", 2, 7_958),
]


def write_quick(out: Path, seeds: int = 2, random_state: int = 0) -> None:
    """A quick sweep as `sweep run all --quick` leaves it: one epoch per run, far below the target and scattered
    widely across seeds (a tenth of the data, one epoch), with predictions for every run."""
    rng = np.random.default_rng(random_state)
    steps = []
    for step, submission, order, params in QUICK_STEPS:
        level = rng.uniform(60, 97)
        steps.append(
            {"step": step, "submission": submission, "order": order, "params": params, "epochs": 15, "title": step}
        )
        for seed in range(seeds):
            acc = round(float(np.clip(rng.normal(level, 6), 10, 99)), 2)
            correct = np.zeros(10_000, bool)
            correct[rng.choice(10_000, round(acc * 100), replace=False)] = True
            write_run(
                out, step, seed, [acc], submission=submission, params=params, quick=True, epochs=1, correct=correct
            )
    write_steps(out, steps)
