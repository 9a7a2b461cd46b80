"""The sweep's progress line, shown by the driver while Tune runs the trials."""

from __future__ import annotations

import shutil
import sys
import time

from ray import tune

from cnn.train import Run


class Progress(tune.Callback):
    """Runs done/total, runs started with their epoch, failures and an ETA: one rewritten line on a terminal, a plain
    line every 30 s and at each finished run when the output is a log file. The ETA is for the ``epochs`` left to
    train (a resumed run counts only the epochs after its checkpoint)."""

    def __init__(self, runs: dict[str, Run], epochs: int, stream):
        self.runs, self.epochs, self.stream = runs, epochs, stream
        self.tty = stream.isatty()
        self.start, self.last = time.monotonic(), 0.0
        self.done, self.failed, self.epochs_done = 0, 0, 0
        self.flight: dict[str, str] = {}

    def __getstate__(self):  # Tune pickles callbacks with its experiment state; a stream does not pickle
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=sys.stderr)

    def on_trial_start(self, iteration, trials, trial, **info):
        run = self.runs[trial.config["run"]]
        self.flight[trial.trial_id] = f"{run.name} starting"
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs_done += 1
        run = self.runs[trial.config["run"]]
        self.flight[trial.trial_id] = f"{run.name} {result['epoch']}/{run.recipe.epochs}"
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
            eta = duration(elapsed / self.epochs_done * max(0, self.epochs - self.epochs_done))
        flight = ", ".join(sorted(self.flight.values())) or "-"
        done = f"{self.done}/{len(self.runs)} runs done, {self.failed} failed"
        return f"{done}, {duration(elapsed)} elapsed, ETA {eta} | running: {flight}"

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + self.line()[:width].ljust(width))
        elif force or now - self.last >= 30:
            self.stream.write(self.line() + "\n")
            self.last = now
        self.stream.flush()


def duration(seconds: float) -> str:
    """42 -> '0m42s', 3725 -> '1h02m'."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"
