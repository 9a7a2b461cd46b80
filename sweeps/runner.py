"""Run a sweep on Ray Tune: one trial per block of seeds of one step, one Parquet file per finished run, written by
the driver.

The data flows in the order of this file: a :class:`SweepConfig` is planned into :class:`cnn.train.Run` values
(each worked out once: effective recipe, recipe hash, parameters, row columns); the runs the results folder does not
hold yet are grouped into :class:`Block` s of up to ``--seeds-per-trial`` seeds of one step, one Tune trial each; the
thin trainable calls :func:`cnn.train.train` (a block of one) or :func:`cnn.block.train_block` and reports once per
epoch with one checkpoint for the block; the driver's :class:`ResultsWriter` is the only writer of the results folder.

* MNIST is loaded once by the driver and shared through the object store (``tune.with_parameters``).
* Unfinished runs keep an in-flight marker with their last checkpoint, so a re-run continues them from there; a
  trial whose worker dies is retried by Tune from its last checkpoint (``FailureConfig``).
* A checkpoint holds each seed's state in :func:`cnn.train.train`'s format, so a re-run may regroup unfinished seeds
  into other blocks (seeds that hold the same epoch), or train them with the other engine. Finished seeds are never
  in a block: raising ``--seeds`` forms blocks of the new seeds only.
* A seed whose loss turns NaN fails alone: its marker records the error and the other seeds of its block finish.
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
from cnn.block import train_block
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

# Seeds per trial when --seeds-per-trial is not given. CPU: 1, since blocks pay little and unevenly there
# (benchmarks/results/block-cpu.txt: best 1.7x the single-seed trainer at S=4 for s001-model3, 1.15x at S=2 for
# s004-exp1, slower than it at S>=8; on one thread 1.15x and 0.92x at S=4); with one thread per run, N runs on N
# cores stay busy. GPU: not measured (no
# GPU for issue 9); 16 seeds give every kernel 16 models' work, and fractional --gpus-per-trial lets several
# blocks share one GPU.
SEEDS_PER_TRIAL = {"cpu": 1, "cuda": 16}


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
    seeds_per_trial: int | None = None  # seeds of one step per trial, trained as one network; None: per device

    @property
    def block_size(self) -> int:
        """``seeds_per_trial``, or the device's default: :data:`SEEDS_PER_TRIAL`."""
        return self.seeds_per_trial or SEEDS_PER_TRIAL["cuda" if self.gpus_per_trial > 0 else "cpu"]

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
            (
                self.seeds_per_trial is None or self.seeds_per_trial >= 1,
                f"--seeds-per-trial must be at least 1, not {self.seeds_per_trial}",
            ),
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


@dataclass(frozen=True)
class Block:
    """The runs one Tune trial trains together: seeds of one step (and one ``--vary`` setting) that start from the
    same epoch. One run trains with :func:`cnn.train.train`, more with :func:`cnn.block.train_block`."""

    runs: tuple[Run, ...]

    @property
    def name(self) -> str:
        """The trial's name: the run's name for one run, else ``<step>#<seed>+<seed>+...[-<tag>]``."""
        first = self.runs[0]
        if len(self.runs) == 1:
            return first.name
        return f"{first.step}#{'+'.join(str(r.seed) for r in self.runs)}" + (f"-{first.tag}" if first.tag else "")

    @property
    def recipe(self):
        return self.runs[0].recipe

    @property
    def params(self) -> int:
        return self.runs[0].params


def form_blocks(sweep: Plan, size: int) -> list[Block]:
    """The runs left to train, in blocks of up to ``size`` seeds: per step and ``--vary`` setting, the seeds that hold
    the same epoch (0, or their checkpoint's), in seed order."""
    groups: dict[tuple, list[Run]] = {}
    for run in sweep.todo:
        groups.setdefault((run.step, run.tag, sweep.resume.get(run.key, ("", 0))[1]), []).append(run)
    return [Block(tuple(g[i : i + size])) for g in groups.values() for i in range(0, len(g), size)]


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
            blocks = {b.name: b for b in form_blocks(sweep, config.block_size)}
            epochs = sum(map(sweep.epochs_left, todo))
            print(
                f"{len(todo)} runs to train ({len(sweep.resume)} resume from a checkpoint), {epochs} model-epochs, "
                f"in {len(blocks)} trials of up to {config.block_size} seeds; workers start and import torch",
                file=stream,
                flush=True,
            )
            start = time.monotonic()
            writer = ResultsWriter(out, blocks, data.test_y.numpy(), sweep_id=summary.sweep_id, **cluster.versions())
            progress = Progress(blocks, epochs, stream)
            try:
                _tuner(config, sweep, summary.sweep_id, blocks, data, [writer, progress, *callbacks]).fit()
            except KeyboardInterrupt:  # a second Ctrl-C; Tune's handler took the first and stopped the trials
                pass
            summary.seconds = time.monotonic() - start
            summary.trained, summary.failed = writer.written, writer.failed
    finally:
        lock.release()
    return summary


def _tuner(config: SweepConfig, sweep: Plan, sweep_id: str, blocks: dict[str, Block], data: MNIST, callbacks):
    """One trial per block, the largest networks first, named by the block's name (config ``run``: for a block of
    one, the run's name); the trainable looks the block up, and resumes each seed from the checkpoint its marker
    names, if any."""
    resume_from = {r.name: sweep.resume[r.key][0] for b in blocks.values() for r in b.runs if r.key in sweep.resume}
    trainable = tune.with_parameters(train_trial, data=data, blocks=blocks, resume_from=resume_from)
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}),
        param_space={"run": tune.grid_search(sorted(blocks, key=lambda name: -blocks[name].params))},
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


def train_trial(config: dict[str, Any], data: MNIST, blocks: dict[str, Block], resume_from: dict[str, str]) -> None:
    """Train one block, resuming from Tune's checkpoint of it (a retried trial) or each seed's marker's (a re-run
    sweep). Each epoch is one checkpoint: ``state.pt`` (every training seed's state), ``history.json`` (every seed's
    records so far, and the seeds that failed), and at the last epoch ``predictions-<seed>.npy``."""
    block = blocks[config["run"]]
    recipe = block.recipe
    states, histories, predictions, failed = {}, {r.seed: [] for r in block.runs}, {}, {}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            states, hist, predictions, failed = _read_checkpoint(Path(d), block.runs)
            histories.update(hist)
    else:
        for r in block.runs:
            if r.name in resume_from:
                with tune.Checkpoint(resume_from[r.name]).as_directory() as d:
                    st, hist, pred, _ = _read_checkpoint(Path(d), [r])
                states.update(st)
                histories.update(hist)
                predictions.update(pred)
    live = [r for r in block.runs if str(r.seed) not in failed]  # failed: str(seed) -> error, as in history.json
    if len({states[r.seed]["epoch"] if r.seed in states else 0 for r in live}) > 1:
        # Seeds of one block start from one epoch (sweeps group them so); a marker that disagrees with its
        # checkpoint (a sweep killed between the two writes before issue 9) restarts the block instead.
        states, histories, predictions = {}, {r.seed: [] for r in block.runs}, {}
    held = max((st["epoch"] for st in states.values()), default=0)
    device = torch.cuda.get_device_name() if block.runs[0].device == "cuda" else "cpu"
    worker = {"host": socket.gethostname(), "device": device, "torch_version": torch.__version__}

    def save(epoch: int, new_states: dict[int, dict], new_failed: dict[int, str]) -> None:
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint({"seeds": new_states}, Path(d) / "state.pt")
            done = {str(s): h for s, h in histories.items() if str(s) not in failed}
            (Path(d) / "history.json").write_text(json.dumps({"histories": done, "failed": failed}))
            if epoch == recipe.epochs:
                for seed, pred in predictions.items():
                    np.save(Path(d) / f"predictions-{seed}.npy", pred)
            metrics = {"epoch": epoch, "seeds": len(new_states), "failed": json.dumps(new_failed)}
            _report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    if not live or held >= recipe.epochs:  # trained to the end, but the rows were never written
        save(held, states, {})
        return
    if len(block.runs) == 1:
        (run,) = block.runs
        epochs = ((e.record["epoch"], {run.seed: e}, {}) for e in train(run, data, states.get(run.seed)))
    else:
        epochs = ((b.epoch, b.epochs, b.failed) for b in train_block(live, data, states or None))
    for epoch, trained, new_failed in epochs:
        failed.update({str(s): m for s, m in new_failed.items()})
        for seed, e in trained.items():
            histories[seed].append({**e.record, **worker, "wall_time": time.time()})
            if epoch == recipe.epochs:
                predictions[seed] = e.predictions.numpy()
        save(epoch, {seed: e.state() for seed, e in trained.items()}, new_failed)


def _read_checkpoint(d: Path, runs) -> tuple[dict, dict, dict, dict]:
    """From a checkpoint folder, for ``runs``: their states and histories (by seed), their final predictions where
    saved, and the block's failed seeds (by str(seed)). Also reads a one-run checkpoint from before issue 9."""
    state, history = load_checkpoint(d / "state.pt"), json.loads((d / "history.json").read_text())
    legacy = "seeds" not in state
    if legacy:
        state, history = {"seeds": {runs[0].seed: state}}, {"histories": {str(runs[0].seed): history}, "failed": {}}
    states = {r.seed: state["seeds"][r.seed] for r in runs if r.seed in state["seeds"]}
    histories = {r.seed: history["histories"][str(r.seed)] for r in runs if r.seed in states}
    files = {r.seed: d / ("predictions.npy" if legacy else f"predictions-{r.seed}.npy") for r in runs}
    return states, histories, {s: np.load(f) for s, f in files.items() if f.exists()}, history["failed"]


def _report(metrics: dict[str, Any], checkpoint) -> None:
    """The one place that speaks Tune's report API (renamed three times across Ray versions)."""
    tune.report(metrics, checkpoint=checkpoint)


# --- the driver: the single writer ----------------------------------------------------------------------------------


class ResultsWriter(tune.Callback):
    """Writes each finished run's rows and predictions, and keeps unfinished runs' markers up to date. ``columns``
    (sweep id, driver versions) go into every row it writes."""

    def __init__(self, out: Path, blocks: dict[str, Block], labels: np.ndarray, **columns: str):
        self.out, self.blocks, self.labels, self.columns = out, blocks, labels, columns
        self.written, self.failed = [], []
        self.dead: set[tuple[str, int, str]] = set()  # keys of runs failed inside a block that goes on

    def _alive(self, trial) -> list[Run]:
        return [r for r in self.blocks[trial.config["run"]].runs if r.key not in self.dead]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        failed = {int(s): m for s, m in json.loads(result.get("failed", "{}")).items()}
        for run in self._alive(trial):
            if run.seed in failed:  # its block trains on without it; a re-run trains it again from the start
                results.write_marker(self.out, *run.key, error=failed[run.seed], checkpoint=None, epoch=0)
                self.failed.append(f"{run.name}: {failed[run.seed]}")
                self.dead.add(run.key)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        fs = checkpoint.filesystem.type_name
        uri = checkpoint.path if fs == "local" else f"{fs}://{checkpoint.path}"
        for run in self._alive(trial):  # epoch and checkpoint in one write: a re-run groups seeds by it
            results.write_marker(
                self.out,
                *run.key,
                epoch=trial.last_result["epoch"],
                epochs=run.recipe.epochs,
                checkpoint=uri,
                sweep_id=self.columns["sweep_id"],
                error=None,
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        with trial.checkpoint.as_directory() as d:
            history = json.loads((Path(d) / "history.json").read_text())
            runs = [r for r in self._alive(trial) if str(r.seed) not in history["failed"]]
            predictions = {r.seed: np.load(Path(d) / f"predictions-{r.seed}.npy") for r in runs}
        for run in runs:
            rows = results.rows(run, history["histories"][str(run.seed)], **self.columns)
            results.write_run(self.out, run, rows, predictions[run.seed], self.labels)
            self.written.append(run.key)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _last_error_line(trial)
        for run in self._alive(trial):
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
