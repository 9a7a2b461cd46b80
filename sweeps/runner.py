"""Run a sweep on Ray Tune: one trial per (step, seed), one Parquet file per finished run, written by the driver.

* The trainable is thin: it calls :func:`cnn.train.train` and reports once per epoch through :func:`_report`, with a
  checkpoint holding the trainer state, the records so far and, at the end, the test predictions.
* MNIST is loaded once by the driver and shared through the object store (``tune.with_parameters``).
* :class:`ResultsWriter` (a Tune ``Callback`` on the driver) is the only writer of the results folder. Unfinished
  runs keep an in-flight marker with their last checkpoint, so a re-run continues them from there; a trial whose
  worker dies is retried by Tune from its last checkpoint (``FailureConfig``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from filelock import FileLock, Timeout

from cnn import BadInput, zoo
from cnn.data import MNIST, load_mnist
from cnn.train import Run, load_checkpoint, save_checkpoint, train
from sweeps import results

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our Parquet rows are the log
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402


class BadSweep(BadInput):
    """A sweep that cannot start as asked. The message is one line for the user; nothing has been written."""


@dataclass(frozen=True)
class SweepConfig:
    steps: tuple[str, ...]  # names or glob patterns; "all" is every step
    seeds: int = 5
    seed_start: int = 0
    out: Path = Path("results")
    data_dir: Path | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    address: str | None = None
    storage: str | None = None
    epochs: int | None = None
    quick: bool = False
    precision: str = "fp32"
    max_failures: int = 2


@dataclass
class SweepSummary:
    sweep_id: str
    planned: int
    already_done: int
    trained: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def plan(config: SweepConfig) -> list[Run]:
    """The runs a sweep asks for, in zoo order, after validating the options that need no cluster."""
    if config.seeds < 1:
        raise BadSweep(f"--seeds must be at least 1, not {config.seeds}")
    if config.seed_start < 0:
        raise BadSweep(f"--seed-start must be 0 or more, not {config.seed_start}")
    if config.epochs is not None and config.epochs < 1:
        raise BadSweep(f"--epochs must be at least 1, not {config.epochs}")
    if config.cpus_per_trial <= 0 or config.gpus_per_trial < 0:
        raise BadSweep("--cpus-per-trial must be positive and --gpus-per-trial not negative")
    steps = zoo.select(list(config.steps))
    device = "cuda" if config.gpus_per_trial > 0 else "cpu"
    threads = max(1, int(config.cpus_per_trial))
    return [
        Run(s.name, seed, epochs=config.epochs, quick=config.quick, precision=config.precision,
            device=device, threads=threads)
        for s in steps for seed in range(config.seed_start, config.seed_start + config.seeds)
    ]  # fmt: skip


def run_sweep(config: SweepConfig, data: MNIST | None = None, callbacks=(), stream=None) -> SweepSummary:
    """Train every planned run that the results folder does not hold yet. Bad input raises before any write."""
    out = config.out.expanduser().resolve()
    runs = plan(config)
    results.check_compatible(out, [results.Planned(r.step, r.seed, r.recipe_hash(), r.quick) for r in runs])
    done = results.finished(out)
    todo = [r for r in runs if (r.step, r.seed) not in done]
    summary = SweepSummary(_sweep_id(), planned=len(runs), already_done=len(runs) - len(todo))
    if not todo:
        return summary
    _check_resources(config)
    data = data if data is not None else load_mnist(config.data_dir)
    _check_writable(out)
    lock = FileLock(str(out / results.LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BadSweep(f"another sweep is writing to {out}; wait for it or use another --out") from None
    try:
        with _ray(config):
            _check_cluster_resources(config)
            results.write_steps(out, [_step_row(r) for r in {r.step: r for r in runs}.values()])
            start = time.monotonic()
            writer = ResultsWriter(out, summary.sweep_id, data.test_y.numpy(), config)
            progress = Progress(len(todo), sum(r.recipe().epochs for r in todo), stream or sys.stderr)
            tuner = _tuner(config, out, summary.sweep_id, todo, data, [writer, progress, *callbacks])
            tuner.fit()
            summary.seconds = time.monotonic() - start
            summary.trained, summary.failed = writer.written, writer.failed
    finally:
        lock.release()
    return summary


def _tuner(config: SweepConfig, out: Path, sweep_id: str, todo: list[Run], data: MNIST, callbacks) -> tune.Tuner:
    specs = []
    for r in sorted(todo, key=lambda r: -zoo.architecture(r.step, r.recipe())[1]):  # longest first
        checkpoint = results.read_marker(results.marker_file(out, r.step, r.seed)).get("checkpoint")
        if checkpoint and "://" not in checkpoint and not Path(checkpoint).exists():
            checkpoint = None  # its tune/ folder was removed: train the run from the start
        specs.append({"run": dataclasses.asdict(r), "resume_from": checkpoint})
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data), {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    )
    return tune.Tuner(
        trainable,
        param_space={"spec": tune.grid_search(specs)},
        tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=lambda t: _run_name(t.config)),
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=config.storage or str(out / "tune"),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            verbose=0,
        ),
    )


# --- the trainable (runs in a Ray worker) ---------------------------------------------------------------------------


def train_trial(config: dict[str, Any], data: MNIST) -> None:
    """Train one run, resuming from Tune's checkpoint (a retried trial) or the marker's (a re-run sweep)."""
    spec, run = config["spec"], _spec_run(config)
    epochs = run.recipe().epochs
    checkpoint = tune.get_checkpoint() or (tune.Checkpoint(spec["resume_from"]) if spec.get("resume_from") else None)
    resume, history = None, []
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_checkpoint(Path(d) / "state.pt")
            history = json.loads((Path(d) / "history.json").read_text())
            if resume["epoch"] >= epochs:  # trained to the end, but its rows were never written: report it again
                _report(history, checkpoint=checkpoint)
                return
    device = torch.cuda.get_device_name() if run.device == "cuda" else "cpu"
    env = {"host": socket.gethostname(), "device": device, "torch_version": torch.__version__}
    for epoch in train(run, data, resume):
        history.append({**epoch.record, **env, "wall_time": time.time()})
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(epoch.state(), Path(d) / "state.pt")
            (Path(d) / "history.json").write_text(json.dumps(history))
            if epoch.record["epoch"] == epochs:
                np.save(Path(d) / "predictions.npy", epoch.predictions.numpy())
            _report(history, checkpoint=tune.Checkpoint.from_directory(d))


def _report(history: list[dict[str, Any]], checkpoint) -> None:
    """The one place that speaks Tune's report API (renamed three times across Ray versions)."""
    tune.report({k: v for k, v in history[-1].items() if isinstance(v, (int, float))}, checkpoint=checkpoint)


# --- the driver: the single writer, and the progress display --------------------------------------------------------


class ResultsWriter(tune.Callback):
    """Writes each finished run's rows and predictions, and keeps unfinished runs' markers up to date."""

    def __init__(self, out: Path, sweep_id: str, labels: np.ndarray, config: SweepConfig):
        self.out, self.sweep_id, self.labels = out, sweep_id, labels
        self.overrides = json.dumps({k: v for k, v in (("epochs", config.epochs),) if v is not None})
        self.versions = {"ray_version": ray.__version__, "project_version": project_version()}
        self.written, self.failed = 0, []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = _spec_run(trial.config)
        results.write_marker(self.out, run.step, run.seed, epoch=result["epoch"], epochs=run.recipe().epochs,
                             sweep_id=self.sweep_id, error=None)  # fmt: skip

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        run = _spec_run(trial.config)
        fs = checkpoint.filesystem.type_name
        uri = checkpoint.path if fs == "local" else f"{fs}://{checkpoint.path}"
        results.write_marker(self.out, run.step, run.seed, checkpoint=uri)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run = _spec_run(trial.config)
        with trial.checkpoint.as_directory() as d:
            history = json.loads((Path(d) / "history.json").read_text())
            predictions = np.load(Path(d) / "predictions.npy")
        step = zoo.get_step(run.step)
        identity = {
            "step": run.step, "submission": step.submission, "seed": run.seed, "epochs": run.recipe().epochs,
            "params": zoo.architecture(run.step, run.recipe())[1], "run_id": f"{run.step}/seed={run.seed}/{run.recipe_hash()}",
            "sweep_id": self.sweep_id, "recipe_hash": run.recipe_hash(), "quick": run.quick,
            "overrides": self.overrides, "precision": run.precision, **self.versions,
        }  # fmt: skip
        rows = [
            {**r, **identity, "wall_time": dt.datetime.fromtimestamp(r["wall_time"], dt.timezone.utc)}
            for r in history
        ]
        results.write_run(self.out, rows, predictions, self.labels)
        self.written += 1

    def on_trial_error(self, iteration, trials, trial, **info):
        run = _spec_run(trial.config)
        error = _last_error_line(trial)
        results.write_marker(self.out, run.step, run.seed, error=error)
        self.failed.append(f"{_run_name(trial.config)}: {error}")


class Progress(tune.Callback):
    """Runs done/total, runs in flight with their epoch, failures and an ETA: one rewritten line on a terminal, a
    plain line every 30 s and at each finished run when the output is a log file."""

    def __init__(self, runs: int, epochs: int, stream):
        self.runs, self.epochs, self.stream = runs, epochs, stream
        self.tty = stream.isatty()
        self.start, self.last = time.monotonic(), 0.0
        self.done, self.failed, self.epochs_done = 0, 0, 0
        self.flight: dict[str, str] = {}

    def __getstate__(self):  # Tune pickles callbacks with its experiment state; a stream does not pickle
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=sys.stderr)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs_done += 1
        epochs = _spec_run(trial.config).recipe().epochs
        self.flight[trial.trial_id] = f"{_run_name(trial.config)} {result['epoch']}/{epochs}"
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.flight.pop(trial.trial_id, None)
        self.done += 1
        self._show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.flight.pop(trial.trial_id, None)
        self.failed += 1
        self._show(force=True)

    def on_experiment_end(self, trials, **info):
        if self.tty:
            self.stream.write("\n")

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = "?"
        if self.epochs_done:
            eta = _duration(elapsed / self.epochs_done * max(0, self.epochs - self.epochs_done))
        flight = ", ".join(sorted(self.flight.values())) or "-"
        return (f"{self.done}/{self.runs} runs done, {self.failed} failed, {_duration(elapsed)} elapsed, ETA {eta}"
                f" | running: {flight}")  # fmt: skip

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + self.line()[:width].ljust(width))
        elif force or now - self.last >= 30:
            self.stream.write(self.line() + "\n")
            self.last = now
        self.stream.flush()


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _spec_run(config: dict[str, Any]) -> Run:
    return Run(**{**config["spec"]["run"], "seeds": None})


def _run_name(config: dict[str, Any]) -> str:
    run = config["spec"]["run"]
    return f"{run['step']}#{run['seed']}"


def _last_error_line(trial) -> str:
    text = ""
    with contextlib.suppress(Exception):
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "trial failed"


def _step_row(run: Run) -> dict[str, Any]:
    step = zoo.get_step(run.step)
    return results.step_row(step, run.recipe(), run.recipe_hash(), zoo.architecture(run.step, run.recipe())[1])


def _sweep_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def project_version() -> str:
    """The package version, plus the git commit when the code runs from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("cnn-sweeps")
    except PackageNotFoundError:
        v = "unknown"
    with contextlib.suppress(Exception):
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True,
                             capture_output=True, timeout=5).stdout.strip()  # fmt: skip
        v += f"+g{sha}" if sha else ""
    return v


# --- checks that come before anything is written --------------------------------------------------------------------


def _check_resources(config: SweepConfig) -> None:
    """Resources of a local Ray, or that ``--address`` answers at all; a cluster's nodes are checked once joined."""
    if config.address:
        if config.address != "auto":
            host, _, port = config.address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError):
                raise BadSweep(f"cannot reach a Ray cluster at {config.address}") from None
        return
    cpus = config.num_cpus or os.cpu_count() or 1
    gpus = config.num_gpus if config.num_gpus is not None else torch.cuda.device_count()
    if config.cpus_per_trial > cpus:
        raise BadSweep(f"--cpus-per-trial {config.cpus_per_trial:g} is more than the {cpus} CPUs here")
    if config.gpus_per_trial > 0 and gpus == 0:
        raise BadSweep("--gpus-per-trial needs a GPU, and none is visible (no CUDA device, or --num-gpus 0)")
    if config.gpus_per_trial > gpus:
        raise BadSweep(f"--gpus-per-trial {config.gpus_per_trial:g} is more than the {gpus} GPUs here")


def _check_cluster_resources(config: SweepConfig) -> None:
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if config.cpus_per_trial > cpus:
        raise BadSweep(f"--cpus-per-trial {config.cpus_per_trial:g} is more than any node has ({cpus:g} CPUs)")
    if config.gpus_per_trial > gpus:
        raise BadSweep(f"--gpus-per-trial {config.gpus_per_trial:g} is more than any node has ({gpus:g} GPUs)")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe"):
            pass
    except OSError as e:
        raise BadSweep(f"--out {out} is not writable ({e.strerror or e})") from None


@contextlib.contextmanager
def _ray(config: SweepConfig) -> Iterator[None]:
    """Join ``--address``, or start a local Ray; reuse one this process already started (tests share one)."""
    if ray.is_initialized():
        yield
        return
    kwargs = {"address": config.address} if config.address else {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus}
    try:
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True)  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BadSweep(f"cannot start or join Ray at {config.address or 'a local instance'}: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
