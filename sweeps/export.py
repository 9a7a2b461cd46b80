"""Every run's per-epoch metrics, also where users already look: TensorBoard, MLflow or W&B (``sweep run --log-to``),
through Ray Tune's own logger callbacks. The Parquet rows stay the record; these are views of the same numbers.

A trial reports one :class:`sweeps.protocol.Report` per epoch, and a Tune logger logs flat numbers, so each logger
here sees :func:`numbers` instead of the result: the epoch, and each seed's record (:data:`METRICS`), under their own
names for a trial of one seed and under ``seed_<S>/`` in a block of several, one series per seed. Each series is
stepped by the epoch. Where the stores go:

* ``tensorboard``: event files in each trial's folder under Tune's storage (``OUT/tune`` unless ``--storage``), for
  ``tensorboard --logdir OUT/tune``;
* ``mlflow``: ``$MLFLOW_TRACKING_URI``, else a file store in ``OUT/mlruns`` (which MLflow 3 keeps, in maintenance,
  for those who ask: ``MLFLOW_ALLOW_FILE_STORE``), experiment ``cnn-sweeps``; one MLflow run per trial, whose params
  name the trial's runs;
* ``wandb``: project ``$WANDB_PROJECT``, else ``cnn-sweeps``; one W&B run per trial, with its files in
  ``OUT/wandb``, where ``WANDB_MODE=offline`` keeps the runs for ``wandb sync OUT/wandb/offline-run-*``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cnn.errors import BadInput

# name -> the module it needs, and what installs it (tensorboardX comes with ray[tune]; the others are extras)
LOGGERS = {
    "tensorboard": ("tensorboardX", "tensorboardX"),
    "mlflow": ("mlflow", "'cnn-sweeps[mlflow]'"),
    "wandb": ("wandb", "'cnn-sweeps[wandb]'"),
}
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds")
PROJECT = "cnn-sweeps"  # MLflow's experiment and W&B's project, unless the environment names one


def check(names: tuple[str, ...]) -> None:
    """Raise BadInput, in one line, for a logger that is not one of :data:`LOGGERS` or whose package is missing."""
    for name in names:
        if name not in LOGGERS:
            raise BadInput(f"--log-to takes {', '.join(LOGGERS)}; not {name!r}")
        module, install = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise BadInput(f"--log-to {name} needs the {module} package: pip install {install}")


def numbers(trial, result: dict) -> dict:
    """What a logger logs of a trial's result: flat numbers (module doc)."""
    from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION

    report = result["report"]
    seeds = {seed: {m: getattr(r, m) for m in METRICS} for seed, r in report.records.items()}
    alone = len(trial.config["keys"]) == 1
    per_seed = next(iter(seeds.values()), {}) if alone else {f"seed_{seed}": m for seed, m in seeds.items()}
    return {"epoch": report.epoch, TIMESTEPS_TOTAL: report.epoch, TRAINING_ITERATION: report.epoch, **per_seed}


class Numbers:
    """Mixed into a Tune logger callback: it logs :func:`numbers` of each result."""

    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, numbers(trial, result))


def loggers(names: tuple[str, ...], out: Path) -> list:
    """Tune callbacks for ``names`` (:data:`LOGGERS`), in that order."""
    made = []
    for name in names:
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback as Logger

            options = {}
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback as Logger

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:  # a folder beside the results: MLflow 3 keeps its file store, in maintenance, on request
                uri = (out / "mlruns").resolve().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            options = {"tracking_uri": uri, "experiment_name": os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)}
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback as Logger

            # the logging actors run in Ray's workers, whose environment may predate the driver's WANDB_MODE
            mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
            # in OUT/wandb, not in the trial's folder: Tune copies that to its storage before W&B has written
            options = {"project": os.environ.get("WANDB_PROJECT", PROJECT), "dir": str(out.resolve()), **mode}
        made.append(type(Logger.__name__, (Numbers, Logger), {})(**options))
    return made
