"""The sweep's progress line, shown by the driver while Tune runs the trials."""

from __future__ import annotations

import shutil
import sys
import time

from ray import tune


class Progress(tune.Callback):
    """Runs done/total, trials (blocks of runs) started with their epoch, failures and an ETA: one rewritten line on a
    terminal, a plain line every 30 s and at each finished trial when the output is a log file. The ETA is for the
    ``epochs`` (model-epochs) left to train (a resumed run counts only the epochs after its checkpoint). ``blocks``
    maps trial names to :class:`sweeps.runner.Block` s."""

    def __init__(self, blocks: dict, total: int | None, epochs: int | None, stream):
        self.blocks, self.total, self.epochs, self.stream = blocks, total, epochs, stream
        self.tty = stream.isatty()
        self.start, self.last = time.monotonic(), 0.0
        self.done, self.failed, self.epochs_done = 0, 0, 0
        self.flight: dict[str, str] = {}
        self.lost: dict[str, int] = {}  # trial id -> runs of its block that failed while it went on

    def __getstate__(self):  # Tune pickles callbacks with its experiment state; a stream does not pickle
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=sys.stderr)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.flight[trial.trial_id] = f"{trial.config['run']} starting"
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        block, report = self.blocks[trial.config["run"]], result["report"]
        self.epochs_done += len(report.records)
        failed = len(report.failed)
        self.failed += failed
        self.lost[trial.trial_id] = self.lost.get(trial.trial_id, 0) + failed
        self.flight[trial.trial_id] = f"{block.name} {result['epoch']}/{block.recipe.epochs}"
        self._show(force=bool(failed))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.flight.pop(trial.trial_id, None)
        self.done += len(self.blocks[trial.config["run"]].runs) - self.lost.get(trial.trial_id, 0)
        self._show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.flight.pop(trial.trial_id, None)
        self.failed += len(self.blocks[trial.config["run"]].runs) - self.lost.get(trial.trial_id, 0)
        self._show(force=True)

    def on_experiment_end(self, trials, **info):
        if self.tty:
            self.stream.write("\n")

    def say(self, line: str) -> None:
        """A line of its own, above the progress line (a step's verdict under --until-decided)."""
        self.stream.write(
            ("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r" if self.tty else "") + line + "\n"
        )
        self._show(force=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = "?"
        if self.epochs_done and self.epochs:
            eta = duration(elapsed / self.epochs_done * max(0, self.epochs - self.epochs_done))
        flight = ", ".join(sorted(self.flight.values())) or "-"
        done = f"{self.done}/{self.total if self.total is not None else '?'} runs done, {self.failed} failed"
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
