"""What the driver shows while Tune trains a sweep: runs done, elapsed time, an ETA, and each running trial's epoch
and batch, refreshed every :data:`REFRESH` seconds in a terminal (rich) and written as a plain line every
:data:`PLAIN` seconds, and at every finished trial, anywhere else (a log file, CI).

* Batches reach the driver through a small Ray actor (:func:`pulse`): each worker tells it where it is, fire and
  forget, at most every :data:`BEAT` seconds (:func:`beat`, the trainer's ``on_batch``); the callback polls it without
  waiting. Tune's own results arrive once per epoch, far too rarely for a long epoch.
* The ETA adds up the work left, run by run. A step's seconds per model-epoch are measured as it trains (its batches'
  pace, then its epochs' ``epoch_seconds``); a step not measured yet is priced by its forward FLOPs per image, plus
  :data:`OVERHEAD_FLOPS` for the work per image that is not the network's, at the seconds per FLOP of the steps
  measured so far. The work left, over the trials that ran at once, is the ETA, unless one trial alone needs longer.
  It is shown once a whole epoch has been timed (testing included: the price of a FLOP is then calibrated), or once
  most of the work left is priced by measurement, not by FLOPs (:data:`CREDIBLE`), and from then on. A sweep goes
  largest step first, so without the first rule the README's quick sweep would show none until its last minutes.
* Ctrl-C says "stopping…" at once, then Tune stops the trials (several seconds).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

import ray
from ray import tune

from cnn.train import QUICK, Run
from sweeps.plan import Block, Plan, SweepConfig, form_blocks

BEAT = 2.0  # seconds between a worker's reports of its batch
POLL = 2.0  # seconds between the driver's looks at them
REFRESH = 1.0  # seconds between redraws in a terminal
PLAIN = 8.0  # seconds between plain lines: within 10 s, a log shows a long epoch move (at 450 lines an hour)
SHOWN = 8  # running trials listed in a terminal; the rest are counted
# Work per image that is not the network's (batch gathering, rotation, masks, the optimizer, Python), in FLOPs:
# benchmarks/results/trainer-cpu.txt times s003-model4 (4.4 MFLOPs forward per image) and s002-net1 (318 MFLOPs) at
# 23.6 s and 570 s per model-epoch, a ratio that FLOPs + 9 MFLOPs explains.
OVERHEAD_FLOPS = 9e6
CREDIBLE = 0.5  # least share of the work left whose pace was measured, for an ETA to be shown


def pulse():
    """The actor workers tell their batches to. A class of its own (not importable) keeps the actor's process light:
    it imports neither torch nor this module."""

    class Pulse:
        def __init__(self):
            self.at: dict[str, tuple[int, int, int, float]] = {}

        def beat(self, trial: str, epoch: int, batch: int, of: int, t: float) -> None:
            self.at[trial] = (epoch, batch, of, t)

        def drop(self, trial: str) -> None:
            self.at.pop(trial, None)

        def get(self) -> dict[str, tuple[int, int, int, float]]:
            return self.at

    return ray.remote(num_cpus=0)(Pulse).remote()


def beat(actor, trial: str):
    """The trainer's ``on_batch`` for one trial: tells ``actor`` its epoch and batch, at most every :data:`BEAT`
    seconds and at an epoch's last batch (testing follows); None without an actor."""
    if actor is None:
        return None
    last = 0.0

    def on_batch(epoch: int, batch: int, of: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= BEAT or batch == of:
            last = now
            actor.beat.remote(trial, epoch, batch, of, time.time())

    return on_batch


class Trial:
    """One running trial as the driver knows it."""

    def __init__(self, block: Block, epoch: int, now: float):
        self.block, self.epoch, self.started = block, epoch, now  # epoch: the last one finished
        self.at: tuple[int, int, int] | None = None  # (epoch, batch, batches per epoch) of the last beat
        self.mark: tuple[int, int, float] | None = None  # (epoch, batch, worker time) of that epoch's first beat
        self.seconds: float | None = None  # its last epoch's, training and testing
        self.pace: float | None = None  # seconds per epoch at the pace of its current epoch's batches


def intro(sweep: Plan, config: SweepConfig) -> str:
    """What the sweep sets out to do, in one line of 80 columns at most."""
    if config.until_decided:
        steps = len({r.step for r in sweep.runs})
        return (
            f"until decided: {steps} steps, {config.min_seeds}-{config.max_seeds} seeds each ({len(sweep.done)} "
            f"runs here, {len(sweep.marked)} to finish)"
        )
    epochs = sum(r.recipe.epochs - sweep.held(r) for r in sweep.todo)
    return (
        f"{len(sweep.todo)} runs to train ({len(sweep.resume)} resume), {epochs} model-epochs, up to "
        f"{max(sweep.sizes.values())} seeds a trial"
    )


class Progress(tune.Callback):
    """The progress display of a sweep (module doc). ``blocks``: every trial's block as the searcher starts it (trial
    name -> :class:`sweeps.plan.Block`); ``data``: the MNIST the trials train on, for the size of an epoch."""

    def __init__(self, sweep: Plan, config: SweepConfig, blocks: dict[str, Block], data, stream):
        self.sweep, self.blocks, self.stream = sweep, blocks, stream
        # the blocks a fixed sweep will train; --until-decided decides as it goes
        self.planned = None if config.until_decided else form_blocks(sweep)
        self.images = len(data.train_y), len(data.test_y)  # of a full epoch
        self.tty = stream.isatty()
        self.total = sum(len(b.runs) for b in self.planned) if self.planned is not None else None
        self.start, self.last, self.polled = time.monotonic(), 0.0, 0.0
        self.done, self.failed = 0, 0
        self.flight: dict[str, Trial] = {}
        self.lost: dict[str, int] = {}  # trial id -> runs of its block that failed while it went on
        self.pace: dict[str, float] = {}  # step -> seconds per model-epoch, measured
        self.timed: set[str] = set()  # steps whose pace comes from a whole epoch
        self.steps: dict[str, Run] = {b.runs[0].step: b.runs[0] for b in self.planned or []}  # step -> one of its runs
        self.flops: dict[str, float] = {}  # step -> forward FLOPs per image
        self.startup: list[float] = []  # seconds from a trial's start to its first batch
        self.slots = 1  # most trials seen running at once
        self.credible = False  # the ETA was shown once
        self.stopping = self.closed = False
        self.actor = pulse() if ray.is_initialized() else None
        self.pending = None  # the actor's answer on its way
        self.live = self.tune_handler = None

    def __getstate__(self):  # Tune pickles its callbacks; a stream, a display and a pending answer do not pickle
        return {**self.__dict__, "stream": None, "live": None, "pending": None, "tune_handler": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=sys.stderr)

    # --- Tune's hooks ---------------------------------------------------------------------------------------------

    def setup(self, **info):
        """After Tune's own Ctrl-C handler is in place: say "stopping…" first, then let it stop the trials."""
        if threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            self.tune_handler = handler
            signal.signal(signal.SIGINT, self._interrupted)

    def _interrupted(self, sig, frame):
        self.stopping = True
        self.say("stopping… finished runs are saved; Ctrl-C again to quit at once")
        self.tune_handler(sig, frame)

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if self.actor is not None and self.pending is None and now - self.polled >= POLL:
            self.pending, self.polled = self.actor.get.remote(), now
        if self.pending is not None and ray.wait([self.pending], timeout=0)[0]:
            self._heard(ray.get(self.pending))
            self.pending = None
        self._show()

    def on_trial_start(self, iteration, trials, trial, **info):
        block = self.blocks[trial.config["run"]]
        self.steps.setdefault(block.runs[0].step, block.runs[0])
        held = max(self.sweep.held(r) for r in block.runs)
        self.flight[trial.config["run"]] = Trial(block, held, time.monotonic())
        self.slots = max(self.slots, len(self.flight))
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report, t = result["report"], self.flight.get(trial.config["run"])
        failed = len(report.failed)
        self.failed += failed
        self.lost[trial.trial_id] = self.lost.get(trial.trial_id, 0) + failed
        if t is not None and report.records:
            t.epoch, t.seconds = report.epoch, next(iter(report.records.values())).epoch_seconds
            step = t.block.runs[0].step
            self.pace[step] = t.seconds / len(t.block.runs)
            self.timed.add(step)
        self._show(force=bool(failed))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)
        self.done += len(self.blocks[trial.config["run"]].runs) - self.lost.get(trial.trial_id, 0)
        self._show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial)
        self.failed += len(self.blocks[trial.config["run"]].runs) - self.lost.get(trial.trial_id, 0)
        self._show(force=True)

    def on_experiment_end(self, trials, **info):
        self.close()

    def close(self) -> None:
        """Show the last state, stop the display and give Ctrl-C back; once (Tune ends the experiment, or the driver
        after a second Ctrl-C, which skips Tune's ending)."""
        if self.closed:
            return
        if self.tty:  # the last state stays on the screen; a log has it already
            self._show(force=True)
        self.closed = True
        if self.live is not None:
            self.live.stop()
        if self.tune_handler is not None and signal.getsignal(signal.SIGINT) == self._interrupted:
            signal.signal(signal.SIGINT, self.tune_handler)
        if self.actor is not None:
            ray.kill(self.actor)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ended(self, trial) -> None:
        name = trial.config["run"]
        self.flight.pop(name, None)
        if self.actor is not None:
            self.actor.drop.remote(name)

    def _heard(self, beats: dict[str, tuple[int, int, int, float]]) -> None:
        now = time.monotonic()
        for name, (epoch, batch, of, t) in beats.items():
            trial = self.flight.get(name)
            if trial is None:
                continue
            if trial.at is None:
                self.startup.append(now - trial.started)
            trial.at = (epoch, batch, of)
            if trial.mark is None or trial.mark[0] != epoch:
                trial.mark = (epoch, batch, t)
            elif batch >= trial.mark[1] + 2 and t > trial.mark[2]:  # a pace of two batches or more
                run = trial.block.runs[0]
                n_train, n_test = self._images(run)
                per_batch = (t - trial.mark[2]) / (batch - trial.mark[1])
                trial.pace = per_batch * of * (3 * n_train + n_test) / (3 * n_train)  # testing at its FLOPs' cost
                if run.step not in self.timed:
                    self.pace[run.step] = trial.pace / len(trial.block.runs)

    # --- the estimate ---------------------------------------------------------------------------------------------

    def _images(self, run) -> tuple[int, int]:
        n_train, n_test = self.images
        return (round(n_train * QUICK["fraction"]) if run.quick else n_train), n_test

    def _work(self, run) -> float:
        """FLOPs of one model-epoch of ``run``: training costs a forward and a backward (3 forwards), testing one."""
        if run.step not in self.flops:
            self.flops[run.step] = forward_flops(run)
        n_train, n_test = self._images(run)
        return (3 * n_train + n_test) * (self.flops[run.step] + OVERHEAD_FLOPS)

    def _per_epoch(self, block) -> tuple[float, bool]:
        """Seconds per epoch of ``block``, and whether its step's pace was measured (else: priced by FLOPs at the
        measured steps' seconds per FLOP). Needs some pace measured."""
        run = block.runs[0]
        if run.step in self.pace:
            return self.pace[run.step] * len(block.runs), True
        priced = [step for step in self.pace if math.isfinite(self._work(self.steps[step]))]
        if not priced:
            return math.nan, False
        per_flop = sum(self.pace[step] for step in priced) / sum(self._work(self.steps[step]) for step in priced)
        return per_flop * self._work(run) * len(block.runs), False

    def _left(self, t: Trial) -> tuple[float, bool]:
        """Seconds until running trial ``t`` ends, and whether its pace was measured."""
        per_epoch, measured = (t.seconds or t.pace, True) if t.seconds or t.pace else self._per_epoch(t.block)
        done = 0.0  # of the epoch it is in: the batches so far, at their share of the epoch (testing follows)
        if t.at and t.at[0] > t.epoch:
            n_train, n_test = self._images(t.block.runs[0])
            done = t.at[1] / t.at[2] * 3 * n_train / (3 * n_train + n_test)
        return per_epoch * max(0.0, t.block.recipe.epochs - t.epoch - done), measured

    def eta(self) -> float | None:
        """Seconds left, or None where it is not credible yet (module doc)."""
        if self.planned is None or not self.pace:
            return None
        running = [self._left(t) for t in self.flight.values()]
        startup = sum(self.startup) / len(self.startup) if self.startup else 0.0
        queued = []
        for block in self.planned:
            if block.name not in self.blocks:
                per_epoch, measured = self._per_epoch(block)
                epochs = block.recipe.epochs - max(self.sweep.held(r) for r in block.runs)
                queued.append((startup + per_epoch * epochs, measured))
        left = running + queued
        total = sum(s for s, _ in left)
        if math.isnan(total):  # a step whose FLOPs are unknown (forward_flops) and whose pace is not measured yet
            return None
        measured = sum(s for s, measured in left if measured)
        if not self.credible and not self.timed and total and measured / total < CREDIBLE:
            return None
        self.credible = True  # once shown, it stays: it only gets better
        return max(total / self.slots, *(s for s, _ in running), 0.0)

    # --- what is shown --------------------------------------------------------------------------------------------

    def summary(self) -> str:
        """Runs done, failures, elapsed time and the ETA, in one short line."""
        elapsed = time.monotonic() - self.start
        done = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        failed = f", {self.failed} failed"
        if self.stopping:
            left = "stopping…"
        elif self.planned is None:
            left = "until decided"
        else:
            eta = self.eta()
            left = "ETA: measuring" if eta is None else f"ETA about {duration(eta)}"
        return f"{done} runs done{failed}, {duration(elapsed)} elapsed, {left}"

    def rows(self) -> list[tuple[str, str, float | None]]:
        """(trial, where it is, share of its epoch done) of each running trial, by name."""
        rows = []
        for name, t in sorted(self.flight.items()):
            epochs = t.block.recipe.epochs
            if t.at is None or t.at[0] <= t.epoch:  # no batch yet, or its epoch's record is in
                where = (
                    "starting" if t.at is None else "ending" if t.epoch >= epochs else f"epoch {t.epoch + 1}/{epochs}"
                )
                rows.append((name, where, None))
                continue
            epoch, batch, of = t.at
            where = f"epoch {epoch}/{epochs} " + ("testing" if batch == of else f"{batch}/{of}")
            rows.append((name, where, batch / of))
        return rows

    def line(self) -> str:
        """The plain line: the summary and every running trial."""
        flight = ", ".join(f"{name} {where}" for name, where, _ in self.rows())
        return f"{self.summary()} | running: {flight or '-'}"

    def say(self, line: str) -> None:
        """A line of its own, above the display (a step's verdict under --until-decided, Ctrl-C)."""
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._show(force=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.closed:
            return
        if self.tty:
            if force or now - self.last >= REFRESH:
                self._live().update(self._render(), refresh=True)
                self.last = now
        elif force or now - self.last >= PLAIN:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.last = now

    def _live(self):
        if self.live is None:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(file=self.stream), auto_refresh=False)
            self.live.start()
        return self.live

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, overflow="ellipsis", max_width=30)
        grid.add_column(no_wrap=True)
        grid.add_column(width=16)
        rows = self.rows()
        for name, where, share in rows[:SHOWN]:
            bar = ProgressBar(total=1.0, completed=share or 0.0, width=16) if share is not None else Text("")
            grid.add_row(name, where, bar)
        if len(rows) > SHOWN:
            grid.add_row(f"and {len(rows) - SHOWN} more", "", "")
        top = Table.grid()
        top.add_row(Text(self.summary(), no_wrap=True, overflow="ellipsis"))
        if rows:
            top.add_row(grid)
        return top


def forward_flops(run) -> float:
    """Forward FLOPs of one image through ``run``'s network (a ``cnn.train.Run``), counted on the meta device: no
    memory, no weights. NaN for a network the meta device cannot run (a step file's forward that reads a value,
    ``.item()``): its step is priced once its pace is measured."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = run.spec.build(run.recipe)
            model.train()
            with FlopCounterMode(display=False) as count:
                model(torch.empty(2, 1, 28, 28))  # two images: BatchNorm in training needs more than one value
    except (NotImplementedError, RuntimeError):
        return math.nan
    return count.get_total_flops() / 2


def duration(seconds: float) -> str:
    """42 -> '0m42s', 3725 -> '1h02m'."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"
