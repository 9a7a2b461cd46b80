"""The progress display of a real sweep: alive during a long epoch in a terminal (a pseudo-terminal) and in a log (a
pipe), within 80 columns; its ETA from measured pace and FLOPs; the worker's throttled beat."""

import dataclasses
import fcntl
import io
import math
import os
import pty
import re
import struct
import termios
import threading
import time

import pytest
import ray
from torch import nn

from cnn.data import MNIST
from cnn.train import Run
from sweeps import progress
from sweeps.plan import SweepConfig, prepare
from sweeps.progress import Progress, Trial, duration, forward_flops
from sweeps.runner import run_sweep

# One run whose single epoch takes a while (30 s or more here): s004-init (74.5 MFLOPs per image), 71 batches of 128.
LONG = dict(steps=("s004-init",), seeds=1, epochs=1)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WHERE = re.compile(r"s004-init#0 +epoch 1/1 (\d+)/(\d+)")


@pytest.fixture(scope="module")
def long_epoch(mnist) -> MNIST:
    return MNIST(mnist.train_x[:9000], mnist.train_y[:9000], mnist.test_x[:500], mnist.test_y[:500])


class Stamped(io.TextIOBase):
    """A pipe's end as the sweep sees it (not a terminal), keeping when each line came."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.lines += [(time.monotonic(), line) for line in text.splitlines() if line]
        return len(text)


def batches(stamped: list[tuple[float, str]]) -> list[tuple[float, int]]:
    """(time, batch) of each output that shows the run's batch, in order."""
    return [(t, int(m.group(1))) for t, text in stamped for m in [WHERE.search(text)] if m]


def moves_every_10s(shown: list[tuple[float, int]]) -> None:
    """The batch shown moves, and from the first batch shown to the last, the output changed at least every 10 s."""
    assert len({b for _, b in shown}) >= 3, shown
    gaps = [b[0] - a[0] for a, b in zip(shown, shown[1:])]
    assert max(gaps) <= 10, gaps


def test_a_log_gets_a_line_at_least_every_10s_during_a_long_epoch(tmp_path, ray_session, long_epoch):
    log = Stamped()
    summary = run_sweep(SweepConfig(**LONG, out=tmp_path / "results"), data=long_epoch, stream=log)
    assert len(summary.trained) == 1
    moves_every_10s(batches(log.lines))
    assert all("\r" not in line and "\x1b" not in line for _, line in log.lines)
    assert "1/1 runs done, 0 failed" in log.lines[-1][1]


def test_a_terminal_redraws_within_80_columns_during_a_long_epoch(tmp_path, ray_session, long_epoch):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    frames: list[tuple[float, str]] = []

    def read():
        while chunk := _read(master):
            frames.append((time.monotonic(), chunk.decode(errors="replace")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with os.fdopen(slave, "w") as terminal:
        summary = run_sweep(SweepConfig(**LONG, out=tmp_path / "results"), data=long_epoch, stream=terminal)
    reader.join(timeout=5)
    os.close(master)
    assert len(summary.trained) == 1
    written = re.split(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n", "".join(text for _, text in frames))
    assert max(len(text) for text in written) <= 80  # what is written between the cursor's moves
    screen = ANSI.sub("", "".join(text for _, text in frames)).replace("\r", "")
    moves_every_10s(batches([(t, ANSI.sub("", text)) for t, text in frames]))
    assert "━" in screen and "1/1 runs done, 0 failed" in screen.splitlines()[-1]


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other end is closed
        return b""


def test_a_worker_beats_at_most_every_2s_and_at_each_epochs_end(ray_session):
    actor = progress.pulse()
    on_batch = progress.beat(actor, "s#0")
    for batch in range(1, 6):  # far faster than a beat
        on_batch(1, batch, 10)
    assert ray.get(actor.get.remote()) == {"s#0": (1, 1, 10, pytest.approx(time.time(), abs=5))}
    on_batch(1, 10, 10)  # the epoch's last batch: testing follows, the driver should know
    assert ray.get(actor.get.remote())["s#0"][:3] == (1, 10, 10)
    assert progress.beat(None, "s#0") is None
    ray.kill(actor)


def test_the_eta_prices_what_is_not_measured_by_flops_and_waits_until_it_is_credible(tmp_path):
    """Two steps, two seeds each; s003-model4's pace is measured (10 s per model-epoch), s004-exp1's is not. The ETA
    is shown once half the work left is measured, or once a whole epoch was timed."""
    config = SweepConfig(steps=("s003-model4", "s004-exp1"), seeds=2, epochs=2, out=tmp_path / "results")
    sweep = prepare(config)
    data = MNIST(*[range(n) for n in (60_000, 60_000, 10_000, 10_000)])
    p = Progress(sweep, config, {}, data, io.StringIO())
    p.close()
    assert p.eta() is None  # nothing measured yet
    blocks = {b.name: b for b in p.planned}
    p.blocks.update(blocks)  # every block started, the first two run now
    first, second = (b for b in p.planned if b.runs[0].step == "s003-model4")
    p.flight = {first.name: Trial(first, 0, 0.0), second.name: Trial(second, 1, 0.0)}
    p.slots = 2
    p.pace["s003-model4"] = 10.0
    p.flight[first.name].at = (1, 469, 938)  # half of its first epoch's batches, and testing to come
    first_left = 10 * (2 - 0.5 * 180_000 / 190_000)  # 3 forwards per training image, one per test image
    assert p.eta() == pytest.approx(max((first_left + 10) / 2, first_left))
    p.blocks.clear()  # now none started: s004-exp1's four model-epochs are priced by FLOPs
    p.blocks.update({first.name: first, second.name: second})
    p.flight = {}
    p.credible = False  # as if it had never been shown: once shown, it stays
    exp1 = 10.0 * (forward_flops(Run.plan("s004-exp1", 0)) + progress.OVERHEAD_FLOPS) / (4_380_408 + 9e6)
    assert exp1 == pytest.approx(10 * (2_990_768 + 9e6) / (4_380_408 + 9e6))
    assert p.eta() is None  # the measured share is 0: not credible
    p.timed.add("s003-model4")  # until a whole epoch of s003-model4 is timed, which calibrates the FLOPs' price
    assert p.eta() == pytest.approx(4 * exp1 / 2)
    p.timed.clear()
    p.credible = False
    p.blocks.clear()
    assert p.eta() == pytest.approx((4 * 10 + 4 * exp1) / 2)  # half of it measured: shown
    p.flops["s004-exp1"] = math.nan  # a network the meta device cannot run has no FLOPs to price it by
    assert p.eta() is None
    p.pace["s004-exp1"] = 7.0  # until its pace is measured
    assert p.eta() == pytest.approx((4 * 10 + 4 * 7) / 2)


class Reads(nn.Module):
    """A forward that reads a value from a tensor, as a step file's may: the meta device cannot run it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 28)

    def forward(self, x):
        x = self.conv(x).flatten(1)
        return x / max(1.0, x.abs().max().item())


def test_forward_flops_and_durations():
    assert forward_flops(Run.plan("s003-model4", 0)) == 4_380_408
    run = Run.plan("s003-model4", 0)
    assert math.isnan(
        forward_flops(dataclasses.replace(run, spec=dataclasses.replace(run.spec, build=lambda r: Reads())))
    )
    assert forward_flops(Run.plan("s002-net1", 0)) == 317_961_216
    assert [duration(s) for s in (42, 61, 3725)] == ["0m42s", "1m01s", "1h02m"]
