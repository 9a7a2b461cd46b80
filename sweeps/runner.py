"""Run a sweep on Ray Tune: one trial per block of seeds of one step, one Parquet file per finished run, written by
the driver.

The data flows in the order of this file: a :class:`SweepConfig` is planned into :class:`cnn.train.Run` values
(each worked out once: step, effective recipe, recipe hash, parameters, stream seeds); the runs the results folder
does not hold yet are grouped into :class:`Block` s of up to ``--seeds-per-trial`` seeds of one step, one Tune trial
each; the thin trainable calls :func:`cnn.train.train` and reports once per epoch (:class:`sweeps.protocol.Report`)
with one checkpoint for the block (:class:`sweeps.protocol.BlockState`); the driver's :class:`ResultsWriter` keeps
the records and is the only writer of the results folder.

* MNIST is loaded once by the driver and shared through the object store (``tune.with_parameters``).
* Unfinished runs keep an in-flight marker with their last checkpoint and the records of the epochs it holds, so a
  re-run continues them from there; a trial whose worker dies is retried by Tune from its last checkpoint
  (``FailureConfig``).
* A checkpoint holds each seed's state in one format whatever its block, so a re-run may regroup unfinished seeds
  into other blocks (seeds that hold the same epoch). Finished seeds are never in a block: raising ``--seeds`` forms
  blocks of the new seeds only.
* A seed whose loss turns NaN fails alone: its marker records the error and the other seeds of its block finish.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cnn.data import MNIST, load_mnist
from cnn.train import Run, train
from sweeps import BadSweep, export, layout, results, suggest
from sweeps.layout import LOCK, TUNE, RunKey
from sweeps.plan import Block, Plan, SweepConfig, prepare
from sweeps.protocol import BlockState, Report, Trained, Worker, legacy_records

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our Parquet rows are the log
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # a failed run is one line; its traceback stays in error.txt

from ray import cloudpickle, tune  # noqa: E402

from sweeps import cluster  # noqa: E402
from sweeps.progress import Progress, beat, intro  # noqa: E402


@dataclass
class SweepSummary:
    sweep_id: str
    plan: Plan
    trained: list[RunKey] = field(default_factory=list)  # the runs finished now
    failed: list[str] = field(default_factory=list)  # "name: one-line error"
    seconds: float = 0.0
    asked: int = 0  # runs the sweep set out to train (with --until-decided: those the rule started)
    complete: bool = True  # False: interrupted before it trained all it would
    states: dict[str, str] = field(default_factory=dict)  # with --until-decided: each step's state in words

    @property
    def resumed(self) -> int:
        return sum(key in self.plan.resume for key in self.trained)

    @property
    def unfinished(self) -> int:
        """Runs started or planned, neither finished nor failed: the sweep was interrupted."""
        return self.asked - len(self.trained) - len(self.failed)


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
            cluster.check_nodes(config.cpus_per_trial, config.gpus_per_trial, config.wait_for_nodes, stream)
            results.write_steps(out, sweep.runs, sweep.folder)
            print(intro(sweep, config), *sweep.notes, sep="\n", file=stream, flush=True)
            start = time.monotonic()
            earlier = {key: _earlier(key, r) for key, r in sweep.resume.items()}
            blocks: dict[str, Block] = {}  # every trial's block, as the searcher starts them
            progress = Progress(sweep, config, blocks, data, stream)
            trials = suggest.searcher(sweep, config, blocks, earlier, progress.say)
            rule = {"rule": "until-decided" if config.until_decided else "fixed"}
            writer = ResultsWriter(out, blocks, earlier, sweep_id=summary.sweep_id, **rule, **cluster.versions())
            with progress, contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C; Tune's handler took the first
                _tuner(config, sweep, summary.sweep_id, trials, data, [writer, progress, *callbacks], progress).fit()
            summary.seconds = time.monotonic() - start
            summary.trained, summary.failed, summary.asked = writer.written, writer.failed, trials.asked()
            summary.complete = trials.finished and not summary.unfinished
            summary.states = getattr(trials, "states", {})
    finally:
        lock.release()
    return summary


def _earlier(key: RunKey, resume: results.Resume) -> list[Trained]:
    """The records of the epochs a resumed run's checkpoint holds: its marker's, or an earlier-format checkpoint's."""
    if resume.records is not None:
        return resume.records
    with tune.Checkpoint(resume.checkpoint).as_directory() as d:
        return legacy_records(Path(d), key.seed)


def _tuner(config: SweepConfig, sweep: Plan, sweep_id: str, trials, data: MNIST, callbacks, progress: Progress):
    """The searcher's trials (sweeps.suggest), each named by its block, telling ``progress`` their batches."""
    runs = {layout.key(r): r for r in sweep.todo}
    for module in {r.spec.origin.module for r in runs.values() if r.spec.origin}:  # a step file's code goes by value:
        cloudpickle.register_pickle_by_value(sys.modules[module])  # workers need neither the file nor its package
    resume = {key: r.checkpoint for key, r in sweep.resume.items()}
    share, pulse = config.gpus_per_trial, progress.actor
    trainable = tune.with_parameters(train_trial, data=data, runs=runs, resume=resume, gpu_share=share, pulse=pulse)
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}),
        tune_config=tune.TuneConfig(
            search_alg=trials, num_samples=-1, reuse_actors=True, trial_dirname_creator=lambda t: t.config["run"]
        ),
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=config.storage or str(sweep.out / TUNE),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[*callbacks, *export.loggers(config.log_to, sweep.out)],
            verbose=0,
        ),
    )


# --- the trainable (runs in a Ray worker) ---------------------------------------------------------------------------


def train_trial(config: dict[str, Any], data: MNIST, runs: dict, resume: dict, gpu_share: float, pulse=None) -> None:
    """Train one block from where Tune's checkpoint of it (a retried trial) or its seeds' markers (a re-run sweep)
    left it, reporting every epoch with the block's checkpoint, and its batches to ``pulse`` (sweeps.progress)."""
    block = Block.of(config, runs, resume)
    cluster.check_device(block.runs[0].device)
    epochs, worker = block.recipe.epochs, Worker.here(block.runs[0].device)
    state = _restore(block, data)
    live = [r for r in block.runs if r.seed not in state.failed]
    if not live or state.epoch >= epochs:  # trained to the end, but the rows were never written
        return _report(Report(state.epoch, {}, {}, worker, time.time()), state)
    with cluster.gpu_share(block, gpu_share):
        for epoch in train(live, data, state.states or None, on_batch=beat(pulse, config["run"])):
            state = state.after(epoch, last=epoch.epoch == epochs)
            records = {seed: e.record for seed, e in epoch.seeds.items()}
            _report(Report(epoch.epoch, records, epoch.failed, worker, time.time()), state)


def _restore(block: Block, data: MNIST) -> BlockState:
    """The block's state: Tune's checkpoint of the trial, else each seed's from its marker's checkpoint. Seeds that
    do not all hold one epoch (markers of an older sweep that disagree) start over together."""
    seeds, checkpoint = [r.seed for r in block.runs], tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            return BlockState.load(Path(d), seeds, data.test_y)
    state, by_uri = BlockState(), {}
    for seed, uri in block.resume.items():
        by_uri.setdefault(uri, []).append(seed)
    for uri, some in by_uri.items():
        with tune.Checkpoint(uri).as_directory() as d:
            state = state.merged(BlockState.load(Path(d), some, data.test_y))
    held = {st["epoch"] for st in state.states.values()} | ({0} if len(state.states) < len(seeds) else set())
    return state if len(held) == 1 else BlockState()


def _report(report: Report, state: BlockState) -> None:
    """The one place that speaks Tune's report API (renamed three times across Ray versions)."""
    with tempfile.TemporaryDirectory() as d:
        state.save(Path(d))
        tune.report({"epoch": report.epoch, "report": report}, checkpoint=tune.Checkpoint.from_directory(d))


# --- the driver: the single writer ----------------------------------------------------------------------------------


class ResultsWriter(tune.Callback):
    """Keeps every run's records as the workers report them, writes each finished run's rows and predictions, and
    keeps unfinished runs' markers up to date. ``earlier``: the records of resumed runs; ``sweep``: the columns of
    every row it writes (sweep id, driver versions)."""

    def __init__(self, out: Path, blocks: dict[str, Block], earlier: dict[RunKey, list[Trained]], **sweep: str):
        self.out, self.blocks, self.sweep = out, blocks, sweep
        self.records = {key: {t.record.epoch: t for t in ts} for key, ts in earlier.items()}
        self.written: list[RunKey] = []
        self.failed: list[str] = []
        self.dead: set[RunKey] = set()  # runs failed inside a block that goes on

    def _alive(self, trial) -> dict[int, Run]:
        return {r.seed: r for r in self.blocks[trial.config["run"]].runs if layout.key(r) not in self.dead}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report: Report = result["report"]
        trained = report.trained()
        for seed, run in self._alive(trial).items():
            key = layout.key(run)
            if seed in report.failed:  # its block trains on without it; a re-run trains it again from the start
                results.write_marker(self.out, *key, records=[], error=report.failed[seed], checkpoint=None, epoch=0)
                self.failed.append(f"{key.name}: {report.failed[seed]}")
                self.dead.add(key)
            elif seed in report.records:
                self.records.setdefault(key, {})[report.epoch] = trained[seed]

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        fs, epoch = checkpoint.filesystem.type_name, trial.last_result["epoch"]
        uri = checkpoint.path if fs == "local" else f"{fs}://{checkpoint.path}"
        for run in self._alive(trial).values():  # epoch, checkpoint and records in one write
            key = layout.key(run)
            kept = self.records.get(key, {})
            results.write_marker(
                self.out,
                *key,
                records=[kept[e] for e in sorted(kept) if e <= epoch],
                epoch=epoch,
                epochs=run.recipe.epochs,
                checkpoint=uri,
                sweep_id=self.sweep["sweep_id"],
                error=None,
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        runs = self._alive(trial)
        with trial.checkpoint.as_directory() as d:
            state = BlockState.load(Path(d), list(runs), states=False)
        for seed, run in runs.items():
            key, kept = layout.key(run), self.records.get(layout.key(run), {})
            missing = [e for e in range(1, run.recipe.epochs + 1) if e not in kept]
            if seed in state.failed or missing or seed not in state.predictions:
                error = state.failed.get(seed) or f"no record of epochs {missing} reached the driver"
                results.write_marker(self.out, *key, error=error)
                self.failed.append(f"{key.name}: {error}")
                continue
            pred, correct = state.predictions[seed]
            results.write_run(
                self.out, run, [kept[e] for e in sorted(kept)], pred.numpy(), correct.numpy(), **self.sweep
            )
            self.written.append(key)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _last_error_line(trial)
        for run in self._alive(trial).values():
            key = layout.key(run)
            results.write_marker(self.out, *key, error=error)
            self.failed.append(f"{key.name}: {error}")


def _last_error_line(trial) -> str:
    text = ""
    with contextlib.suppress(Exception):
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "trial failed"


def _sweep_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
