"""Speed of the one trainer by block size: model-epochs per second of ``cnn.train.train`` with S = 1, 2, 4, 8, 16
seeds per block, against the seeds' own DataLoader loop (``bench_trainer.seeds_epoch``), in one process.

Result: benchmarks/results/block-cpu.txt (the machine, its load and the figures are in the file).

Each case alternates the paths (seeds' loop, S=1, 2, 4, 8, 16, then again) so that load from other work on the
machine hits all of them, and reports the median seconds per model-epoch (train + test of one seed) and the ratio
seeds' loop / path. A block of S seeds trains S model-epochs per epoch, so its seconds per model-epoch are its
epoch's seconds / S.

``--batches N`` times only the first N training batches of each seed (the first N x batch images; every seed of a
block draws its own order over them) and the same share of the test set, and extrapolates each path to a full epoch
as ``fixed + (measured - fixed) * full / part``, where ``fixed`` is what a run pays once whatever its length (building
the S networks; for the seeds' loop, its DataLoader workers' start-up, as in bench_trainer.py).

``--threads 1`` measures what one sweep trial gets with ``--cpus-per-trial 1`` (two such trials share a 2-core
machine): the default of ``sweep run --seeds-per-trial`` on a CPU follows from it. The seeds' loop keeps its two
threads and two DataLoader workers.

``--before DIR`` adds the two trainers of a checkout from before the one trainer (DIR at 6eb0730 or earlier, whose
``cnn.train.train(run)`` and ``cnn.block.train_block`` are ``single`` and ``block S=1`` here), imported beside ours and
run in the same process, alternating with the other paths: the fair comparison of one trainer against two.

``--compile`` adds each block size under ``torch.compile`` (inductor, CPU), compile time included: a full epoch
counts the compilation once, as a run would.

``--profile`` adds where the best block's time goes (bench_trainer.breakdown).

Usage: ``.venv/bin/python benchmarks/bench_block.py`` runs the cases below and writes the results file;
``--step NAME [--batches N] [--sizes 1,4] [--threads 1] [--reps 2] [--out FILE]`` runs one step. Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_trainer as bt  # noqa: E402

from cnn import block as cblock  # noqa: E402
from cnn import data as cdata  # noqa: E402
from cnn import draws as cdraws  # noqa: E402
from cnn import zoo  # noqa: E402
from cnn.train import Run, train  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "block-cpu.txt"
SIZES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Case:
    step: str
    batches: int | None  # None: a full epoch; N: the first N training batches per seed, extrapolated
    sizes: tuple[int, ...] = SIZES
    reps: int = 2
    profile: bool = False


CASES = (
    Case("s001-model3", batches=150, reps=3, profile=True),  # 7,902 params, batch 64: 938 batches per epoch
    Case("s004-exp1", batches=75, reps=3),  # 7,958 params, batch 128: 469 batches
    Case("s002-net1", batches=3, reps=1),  # 6,379,786 params, batch 128: ~1.2 s per model-batch on 2 cores
)


def block_epoch(step: str, data: cdata.MNIST, S: int, threads: int, compiled: bool = False, device: str = "cpu"):
    """One epoch of a block of S seeds (0..S-1): (seconds, fixed seconds, mean test accuracy %)."""
    base = Run.plan(step, 0, epochs=1, threads=threads, device=device)
    stack, masks = cblock.stack, cdraws.Masks.__call__
    if compiled:  # the batched network as torch.compile makes it (train() builds it through cnn.block.stack), with
        # the dropout masks left outside the graph: counter-based draws from Python ints and numpy, called per layer
        sys.modules["cnn.train"].stack = lambda models: torch.compile(stack(models))
        cdraws.Masks.__call__ = torch.compiler.disable(masks)
    start = time.perf_counter()
    try:
        (epoch,) = list(train([dataclasses.replace(base, seed=s) for s in range(S)], data))
    finally:
        sys.modules["cnn.train"].stack, cdraws.Masks.__call__ = stack, masks
    seconds = time.perf_counter() - start
    records = [e.record for e in epoch.seeds.values()]
    return seconds, seconds - records[0].epoch_seconds, statistics.mean(r.test_acc for r in records)


class Before:
    """The trainers of another checkout (``--before``), imported beside ours: its ``cnn`` modules live in a dict of
    their own and are swapped into ``sys.modules`` while one of its trainers runs, since its code imports some of
    them at call time."""

    def __init__(self, tree: Path):
        ours = self._take()
        sys.path.insert(0, str(tree))
        try:
            self.train = importlib.import_module("cnn.train")
            self.block = importlib.import_module("cnn.block")
            self.modules = self._take()
        finally:
            sys.path.remove(str(tree))
            sys.modules.update(ours)

    @staticmethod
    def _take() -> dict:
        return {k: sys.modules.pop(k) for k in list(sys.modules) if k == "cnn" or k.startswith("cnn.")}

    @contextlib.contextmanager
    def active(self):
        ours = self._take()
        sys.modules.update(self.modules)
        try:
            yield
        finally:
            self._take()
            sys.modules.update(ours)

    def epoch(self, engine: str, step: str, data: cdata.MNIST, threads: int):
        """One epoch of its single-seed trainer or its block engine at S=1: as :func:`block_epoch`."""
        with self.active():
            run = self.train.Run.plan(step, 0, epochs=1, threads=threads)
            start = time.perf_counter()
            if engine == "single":
                (epoch,) = list(self.train.train(run, data))
                record = epoch.record
            else:
                (epoch,) = list(self.block.train_block([run], data))
                record = epoch.epochs[0].record
            seconds = time.perf_counter() - start
        return seconds, seconds - record["epoch_seconds"], record["test_acc"]


def run_case(
    case: Case, full, seeds_sets, threads: int, say, before: Before | None, compiled: bool, device: str = "cpu"
):
    recipe = zoo.get_step(case.step).recipe
    data, (train_set, test_set), scale = bt.subsets(bt.Case(case.step, case.batches), full, seeds_sets)
    n_batches = -(-len(data.train_y) // recipe.batch_size)
    what = (
        f"{n_batches} batches + {len(data.test_y):,} test images"
        if case.batches is None
        else f"PARTIAL: first {n_batches} of {-(-bt.FULL_TRAIN // recipe.batch_size)} batches + "
        f"{len(data.test_y):,} of 10,000 test images, extrapolated x{scale:.3f} to a full epoch"
    )
    params = zoo.count_params(zoo.get_step(case.step).model())
    where = f"{threads} thread(s)" if device == "cpu" else torch.cuda.get_device_name()
    say(f"\n{case.step} ({params:,} params, batch {recipe.batch_size}, {what}); both on {where}")

    paths = {"seeds": lambda d: bt.seeds_epoch(case.step, *d, device=device)}
    if before:
        for engine in ("single", "block"):
            paths[f"before: {engine}" + (" S=1" if engine == "block" else "")] = lambda d, engine=engine: before.epoch(
                engine, case.step, d, threads
            )
    for S in case.sizes:
        paths[f"S={S}"] = lambda d, S=S: block_epoch(case.step, d, S, threads, device=device)
        if compiled:
            paths[f"S={S} compiled"] = lambda d, S=S: block_epoch(case.step, d, S, threads, True, device)
    warm, warm_sets, _ = bt.subsets(bt.Case(case.step, batches=2), full, seeds_sets)
    for path, epoch in paths.items():  # untimed first calls: oneDNN primitives for every shape, workers
        if "compiled" not in path:  # a compiled path pays its compilation in every timed epoch, as a run would
            epoch(warm_sets if path == "seeds" else warm)

    times: dict[str, list[float]] = {p: [] for p in paths}  # seconds per model-epoch, extrapolated
    for rep in range(1, case.reps + 1):
        line = []
        for path, epoch in paths.items():
            secs, fixed, acc = epoch((train_set, test_set) if path == "seeds" else data)
            models = int(path.split("=")[1].split()[0]) if path.startswith("S=") else 1
            times[path].append((fixed + (secs - fixed) * scale) / models)
            line.append(f"{path} {times[path][-1]:.1f} s (acc {acc:.1f} %)")
        say(f"  rep {rep} [load {os.getloadavg()[0]:.2f}]: " + "; ".join(line))
    med = {p: statistics.median(t) for p, t in times.items()}
    say(f"  {'path':<18}{'s/model-epoch':>14}{'model-epochs/s':>16}{'vs seeds loop':>15}{'per rep':>22}")
    for p in paths:
        per_rep = ", ".join(f"{a / b:.2f}x" for a, b in zip(times["seeds"], times[p]))
        say(f"  {p:<18}{med[p]:>14.1f}{1 / med[p]:>16.4f}{med['seeds'] / med[p]:>14.2f}x{per_rep:>22}")
    if case.profile:
        best = min((p for p in med if p.startswith("S=") and "compiled" not in p), key=med.get)
        bt.breakdown(case.step, data, med["seeds"], med[best], say, S=int(best.split("=")[1]))
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", help="one step instead of the default cases")
    parser.add_argument("--batches", type=int, help="time only the first N training batches (and the same test share)")
    parser.add_argument("--sizes", help="block sizes, comma-separated (default 1,2,4,8,16)")
    parser.add_argument("--threads", type=int, default=bt.THREADS, help="torch threads of ours (default 2)")
    parser.add_argument("--reps", type=int, help="repetitions of each path, alternating")
    parser.add_argument("--profile", action="store_true", help="with --step: also print where a block's time goes")
    parser.add_argument("--before", type=Path, help="also time the trainers of this other checkout of the project")
    parser.add_argument("--compile", action="store_true", help="also time each block size under torch.compile")
    parser.add_argument("--out", type=Path, help=f"also write the report here (default without --step: {OUT})")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    if args.step:
        cases = [Case(args.step, args.batches, sizes or SIZES, args.reps or 2, args.profile)]
    else:
        cases = [
            Case(c.step, args.batches or c.batches, sizes or c.sizes, args.reps or c.reps, c.profile) for c in CASES
        ]
    out = args.out or (None if args.step else OUT)

    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    say("Trainer speed by block size, CPU: the seeds' DataLoader loop vs cnn.train.train with S=k seeds as one batched")
    say("network (S=1: one seed alone), seconds per model-epoch (train + test of one seed)")
    before = Before(args.before) if args.before else None
    if before:
        say(f"before: the trainers of {args.before} ({bt.git_commit(args.before)}), in this process")
    for line in bt.machine():
        say(line)
    say(
        f"seeds' loop: torch.set_num_threads({bt.THREADS}), 2 DataLoader workers, fp32 NCHW, nn.Dropout; ours: "
        f"{args.threads} thread(s), channels_last; alternating paths per rep; ratio = median(seeds) / median(path)"
    )
    full = cdata.load_mnist(bt.DATA_DIR, download=False)
    seeds_sets = bt.seeds_datasets()
    for case in cases:
        run_case(case, full, seeds_sets, args.threads, say, before, args.compile)
    say(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if out:
        bt.write(out, lines)


if __name__ == "__main__":
    main()
