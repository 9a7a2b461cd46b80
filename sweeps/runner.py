"""Run a sweep on Ray Tune: one trial per (step, seed), one Parquet file per finished run, written by the driver.

The data flows in the order of this file: a :class:`SweepConfig` is planned into :class:`cnn.train.Run` values
(each worked out once: effective recipe, recipe hash, parameters, row columns); the runs the results folder does not
hold yet become one Tune trial each; the thin trainable calls :func:`cnn.train.train` and reports once per epoch
with a checkpoint; the driver's :class:`ResultsWriter` is the only writer of the results folder.

* MNIST is loaded once by the driver and shared through the object store (``tune.with_parameters``).
* Unfinished runs keep an in-flight marker with their last checkpoint, so a re-run continues them from there; a
  trial whose worker dies is retried by Tune from its last checkpoint (``FailureConfig``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from cnn import zoo
from cnn.data import MNIST, load_mnist
from cnn.train import Run, load_checkpoint, parse_vary, save_checkpoint, train
from sweeps import BadSweep, layout, results
from sweeps.layout import LOCK, TUNE

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our Parquet rows are the log
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

from ray import tune  # noqa: E402

from sweeps import cluster  # noqa: E402
from sweeps.progress import Progress  # noqa: E402


@dataclass(frozen=True)
class SweepConfig:
    """What ``sweep run`` was asked for. Every option is checked here, before anything starts."""

    steps: tuple[str, ...]  # names or glob patterns; "all" is every step
    seeds: int = 5  # seeds per step
    seed_start: int = 0  # the first seed
    out: Path = Path("results")
    data_dir: Path | None = None
    num_cpus: int | None = None  # of a local Ray; None: all
    num_gpus: int | None = None  # of a local Ray; None: all
    cpus_per_trial: float = 1  # also the run's torch threads
    gpus_per_trial: float = 0  # > 0 trains on CUDA; fractions share a GPU
    address: str | None = None  # a running Ray cluster to join
    storage: str | None = None  # Tune's state; None: OUT/tune
    epochs: int | None = None  # overrides every recipe's epochs
    quick: bool = False
    precision: str = "fp32"  # fp32 | bf16
    max_failures: int = 2  # retries of a trial whose worker fails
    vary: str = "all"  # the random streams the seed drives: all, none, or a comma list (cnn.train.parse_vary)
    base_seed: int = 0  # the seed of the streams not varied

    def __post_init__(self):
        try:
            object.__setattr__(self, "vary", parse_vary(self.vary))
        except ValueError as e:
            raise BadSweep(str(e)) from None
        checks = [
            (self.seeds >= 1, f"--seeds must be at least 1, not {self.seeds}"),
            (self.seed_start >= 0, f"--seed-start must be 0 or more, not {self.seed_start}"),
            (self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be positive, not {self.cpus_per_trial:g}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must not be negative, not {self.gpus_per_trial:g}"),
            (self.num_cpus is None or self.num_cpus >= 1, f"--num-cpus must be at least 1, not {self.num_cpus}"),
            (self.num_gpus is None or self.num_gpus >= 0, f"--num-gpus must not be negative, not {self.num_gpus}"),
            (self.max_failures >= 0, f"--max-failures must be 0 or more, not {self.max_failures}"),
            (self.base_seed >= 0, f"--base-seed must be 0 or more, not {self.base_seed}"),
            (self.precision in ("fp32", "bf16"), f"precision must be fp32 or bf16, not {self.precision!r}"),
            (
                self.out.expanduser().resolve() != Path.cwd(),
                f"--out '{self.out}' is the current folder; name a results folder of its own, e.g. --out results",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise BadSweep(message)


def plan(config: SweepConfig) -> list[Run]:
    """The runs a sweep asks for, in zoo order. Each step's network is built once, for all its seeds."""
    device, threads = ("cuda" if config.gpus_per_trial > 0 else "cpu"), max(1, int(config.cpus_per_trial))
    runs = []
    for step in zoo.select(list(config.steps)):
        first = Run.plan(
            step.name,
            config.seed_start,
            epochs=config.epochs,
            quick=config.quick,
            precision=config.precision,
            device=device,
            threads=threads,
            vary=config.vary,
            base_seed=config.base_seed,
        )
        runs += [dataclasses.replace(first, seed=s) for s in range(config.seed_start, config.seed_start + config.seeds)]
    return runs


@dataclass(frozen=True)
class Plan:
    """What a sweep will do in its results folder: the runs asked for, those done, those that resume."""

    out: Path
    runs: list[Run]
    done: frozenset[tuple[str, int, str]]  # keys (Run.key) of the runs asked for that have rows in the folder
    resume: dict[tuple[str, int, str], tuple[str, int]]  # run key -> (checkpoint URI, epochs it holds), not done
    quarantined: list[tuple[Path, Path]]  # damaged files moved aside just now: (from, to)

    @property
    def todo(self) -> list[Run]:
        return [r for r in self.runs if r.key not in self.done]

    def epochs_left(self, run: Run) -> int:
        return run.recipe.epochs - self.resume.get(run.key, ("", 0))[1]


def prepare(config: SweepConfig) -> Plan:
    """Plan the sweep against its results folder: move damaged files aside, refuse incompatible rows, and find what
    is done and what resumes. Starts nothing; ``sweep run --dry-run`` prints this."""
    out = config.out.expanduser().resolve()
    quarantined = layout.quarantine_damaged(out)
    runs, done = plan(config), results.finished(out)
    results.check_compatible(out, done, runs)
    asked = {r.key for r in runs}
    resume = {key: c for key, c in results.resumable(out).items() if key in asked and key not in done}
    return Plan(out, runs, frozenset(done) & asked, resume, quarantined)


@dataclass
class SweepSummary:
    sweep_id: str
    plan: Plan
    trained: list[tuple[str, int, str]] = field(default_factory=list)  # keys of the runs finished now
    failed: list[str] = field(default_factory=list)  # "name: one-line error"
    seconds: float = 0.0

    @property
    def resumed(self) -> int:
        return sum(key in self.plan.resume for key in self.trained)

    @property
    def unfinished(self) -> int:
        """Runs neither finished nor failed: the sweep was interrupted."""
        return len(self.plan.todo) - len(self.trained) - len(self.failed)


def run_sweep(config: SweepConfig, data: MNIST | None = None, callbacks=(), stream=None) -> SweepSummary:
    """Train every planned run that the results folder does not hold yet. Bad input raises before any write. Notes
    on what is happening, and the progress line, go to ``stream`` (stderr)."""
    stream = stream or sys.stderr
    sweep = prepare(config)
    out, todo, summary = sweep.out, sweep.todo, SweepSummary(_sweep_id(), sweep)
    if not todo:
        return summary
    cluster.check_resources(
        config.address, config.num_cpus, config.num_gpus, config.cpus_per_trial, config.gpus_per_trial
    )
    cluster.check_storage(config.storage)
    data = data if data is not None else load_mnist(config.data_dir)
    cluster.check_writable(out)
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BadSweep(f"another sweep is writing to {out}; wait for it or use another --out") from None
    try:
        print(f"starting Ray ({f'joining {config.address}' if config.address else 'local'})", file=stream, flush=True)
        with cluster.ray_session(config.address, config.num_cpus, config.num_gpus):
            cluster.check_nodes(config.cpus_per_trial, config.gpus_per_trial)
            results.write_steps(out, sweep.runs)
            runs, epochs = {r.name: r for r in todo}, sum(map(sweep.epochs_left, todo))
            print(
                f"{len(todo)} runs to train ({len(sweep.resume)} resume from a checkpoint), {epochs} model-epochs; "
                "workers start and import torch",
                file=stream,
                flush=True,
            )
            start = time.monotonic()
            writer = ResultsWriter(out, runs, data.test_y.numpy(), sweep_id=summary.sweep_id, **cluster.versions())
            progress = Progress(runs, epochs, stream)
            try:
                _tuner(config, sweep, summary.sweep_id, runs, data, [writer, progress, *callbacks]).fit()
            except KeyboardInterrupt:  # a second Ctrl-C; Tune's handler took the first and stopped the trials
                pass
            summary.seconds = time.monotonic() - start
            summary.trained, summary.failed = writer.written, writer.failed
    finally:
        lock.release()
    return summary


def _tuner(config: SweepConfig, sweep: Plan, sweep_id: str, runs: dict[str, Run], data: MNIST, callbacks):
    """One trial per run, the largest networks first, named by the run's name (config ``run``); the trainable looks
    the run up, and resumes it from the checkpoint its marker names, if any."""
    resume_from = {r.name: sweep.resume[r.key][0] for r in runs.values() if r.key in sweep.resume}
    trainable = tune.with_parameters(train_trial, data=data, runs=runs, resume_from=resume_from)
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}),
        param_space={"run": tune.grid_search(sorted(runs, key=lambda name: -runs[name].params))},
        tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=lambda t: t.config["run"]),
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=config.storage or str(sweep.out / TUNE),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            verbose=0,
        ),
    )


# --- the trainable (runs in a Ray worker) ---------------------------------------------------------------------------


def train_trial(config: dict[str, Any], data: MNIST, runs: dict[str, Run], resume_from: dict[str, str]) -> None:
    """Train one run, resuming from Tune's checkpoint (a retried trial) or its marker's (a re-run sweep)."""
    run = runs[config["run"]]
    marked = resume_from.get(run.name)
    checkpoint = tune.get_checkpoint() or (tune.Checkpoint(marked) if marked else None)
    resume, history = None, []
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_checkpoint(Path(d) / "state.pt")
            history = json.loads((Path(d) / "history.json").read_text())
            if resume["epoch"] >= run.recipe.epochs:  # trained to the end, but its rows were never written
                _report(history, checkpoint=checkpoint)
                return
    device = torch.cuda.get_device_name() if run.device == "cuda" else "cpu"
    worker = {"host": socket.gethostname(), "device": device, "torch_version": torch.__version__}
    for epoch in train(run, data, resume):
        history.append({**epoch.record, **worker, "wall_time": time.time()})
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(epoch.state(), Path(d) / "state.pt")
            (Path(d) / "history.json").write_text(json.dumps(history))
            if epoch.record["epoch"] == run.recipe.epochs:
                np.save(Path(d) / "predictions.npy", epoch.predictions.numpy())
            _report(history, checkpoint=tune.Checkpoint.from_directory(d))


def _report(history: list[dict[str, Any]], checkpoint) -> None:
    """The one place that speaks Tune's report API (renamed three times across Ray versions)."""
    tune.report({k: v for k, v in history[-1].items() if isinstance(v, (int, float))}, checkpoint=checkpoint)


# --- the driver: the single writer ----------------------------------------------------------------------------------


class ResultsWriter(tune.Callback):
    """Writes each finished run's rows and predictions, and keeps unfinished runs' markers up to date. ``columns``
    (sweep id, driver versions) go into every row it writes."""

    def __init__(self, out: Path, runs: dict[str, Run], labels: np.ndarray, **columns: str):
        self.out, self.runs, self.labels, self.columns = out, runs, labels, columns
        self.written, self.failed = [], []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = self.runs[trial.config["run"]]
        results.write_marker(
            self.out,
            *run.key,
            epoch=result["epoch"],
            epochs=run.recipe.epochs,
            sweep_id=self.columns["sweep_id"],
            error=None,
        )

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        run, fs = self.runs[trial.config["run"]], checkpoint.filesystem.type_name
        uri = checkpoint.path if fs == "local" else f"{fs}://{checkpoint.path}"
        results.write_marker(self.out, *run.key, checkpoint=uri)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run = self.runs[trial.config["run"]]
        with trial.checkpoint.as_directory() as d:
            history = json.loads((Path(d) / "history.json").read_text())
            predictions = np.load(Path(d) / "predictions.npy")
        results.write_run(self.out, run, results.rows(run, history, **self.columns), predictions, self.labels)
        self.written.append(run.key)

    def on_trial_error(self, iteration, trials, trial, **info):
        run, error = self.runs[trial.config["run"]], _last_error_line(trial)
        results.write_marker(self.out, *run.key, error=error)
        self.failed.append(f"{run.name}: {error}")


def _last_error_line(trial) -> str:
    text = ""
    with contextlib.suppress(Exception):
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "trial failed"


def _sweep_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
