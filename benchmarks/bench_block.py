"""Block engine speed: model-epochs per second of ``cnn.block.train_block`` at S = 1, 2, 4, 8, 16 seeds per block,
against the seeds' own DataLoader loop (``bench_trainer.seeds_epoch``) and the single-seed trainer, in one process.

Result: benchmarks/results/block-cpu.txt (the machine, its load and the figures are in the file).

Each case alternates the paths (seeds' loop, single-seed trainer, block S=1, 2, 4, 8, 16, then again) so that load
from other work on the machine hits all of them, and reports the median seconds per model-epoch (train + test of one
seed) and the ratio seeds' loop / path. A block of S seeds trains S model-epochs per epoch, so its seconds per
model-epoch are its epoch's seconds / S.

``--batches N`` times only the first N training batches of each seed (the first N x batch images; every seed of a
block draws its own order over them) and the same share of the test set, and extrapolates each path to a full epoch
as ``fixed + (measured - fixed) * full / part``, where ``fixed`` is what a run pays once whatever its length (building
the S networks; for the seeds' loop, its DataLoader workers' start-up, as in bench_trainer.py).

``--threads 1`` measures what one sweep trial gets with ``--cpus-per-trial 1`` (two such trials share a 2-core
machine): the default of ``sweep run --seeds-per-trial`` on a CPU follows from it. The seeds' loop keeps its two
threads and two DataLoader workers.

``--profile`` adds where a block's time goes (torch.profiler over a few block steps, and the dropout-mask share timed
around ``cnn.draws.multiplier``) and the ceiling it implies.

Usage: ``.venv/bin/python benchmarks/bench_block.py`` runs the cases below and writes the results file;
``--step NAME [--batches N] [--sizes 1,4] [--threads 1] [--reps 2] [--out FILE]`` runs one step. Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_trainer as bt  # noqa: E402

from cnn import data as cdata  # noqa: E402
from cnn import draws, zoo  # noqa: E402
from cnn.block import train_block  # noqa: E402
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


def block_epoch(step: str, data: cdata.MNIST, S: int, threads: int) -> tuple[float, float, float]:
    """One epoch of a block of S seeds (0..S-1): (seconds, fixed seconds, mean test accuracy %)."""
    base = Run.plan(step, 0, epochs=1, threads=threads)
    start = time.perf_counter()
    (epoch,) = list(train_block([dataclasses.replace(base, seed=s) for s in range(S)], data))
    seconds = time.perf_counter() - start
    records = [e.record for e in epoch.epochs.values()]
    return seconds, seconds - records[0]["epoch_seconds"], statistics.mean(r["test_acc"] for r in records)


def single_epoch(step: str, data: cdata.MNIST, threads: int) -> tuple[float, float, float]:
    start = time.perf_counter()
    (epoch,) = list(train(Run.plan(step, 0, epochs=1, threads=threads), data))
    seconds = time.perf_counter() - start
    return seconds, seconds - epoch.record["epoch_seconds"], epoch.record["test_acc"]


def run_case(case: Case, full, seeds_sets, threads: int, say) -> dict[str, float]:
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
    say(f"\n{case.step} ({params:,} params, batch {recipe.batch_size}, {what}); ours on {threads} thread(s)")
    warm, warm_sets, _ = bt.subsets(bt.Case(case.step, batches=2), full, seeds_sets)
    bt.seeds_epoch(case.step, *warm_sets)  # untimed first calls: oneDNN primitives for every shape, workers
    single_epoch(case.step, warm, threads)
    for S in case.sizes:
        block_epoch(case.step, warm, S, threads)

    paths = ["seeds", "single", *(f"block S={S}" for S in case.sizes)]
    times: dict[str, list[float]] = {p: [] for p in paths}  # seconds per model-epoch, extrapolated
    for rep in range(1, case.reps + 1):
        line = []
        for path in paths:
            if path == "seeds":
                secs, fixed, acc = bt.seeds_epoch(case.step, train_set, test_set)
                models = 1
            elif path == "single":
                secs, fixed, acc = single_epoch(case.step, data, threads)
                models = 1
            else:
                models = int(path.split("=")[1])
                secs, fixed, acc = block_epoch(case.step, data, models, threads)
            epoch = (fixed + (secs - fixed) * scale) / models
            times[path].append(epoch)
            line.append(f"{path} {epoch:.1f} s (acc {acc:.1f} %)")
        say(f"  rep {rep} [load {os.getloadavg()[0]:.2f}]: " + "; ".join(line))
    med = {p: statistics.median(t) for p, t in times.items()}
    say(f"  {'path':<14}{'s/model-epoch':>14}{'model-epochs/s':>16}{'vs seeds loop':>15}{'per rep':>22}")
    for p in paths:
        per_rep = ", ".join(f"{a / b:.2f}x" for a, b in zip(times["seeds"], times[p]))
        say(f"  {p:<14}{med[p]:>14.1f}{1 / med[p]:>16.4f}{med['seeds'] / med[p]:>14.2f}x{per_rep:>22}")
    if case.profile:
        best = min((p for p in med if p.startswith("block")), key=med.get)
        breakdown(case.step, data, int(best.split("=")[1]), threads, med, say)
    return med


def breakdown(step: str, data: cdata.MNIST, S: int, threads: int, med: dict[str, float], say) -> None:
    """Where a block of S seeds spends its epoch: the dropout-mask share, then the heaviest ops."""
    from torch.profiler import ProfilerActivity, profile

    spent = [0.0]
    multiplier = draws.multiplier

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = multiplier(*args, **kwargs)
        spent[0] += time.perf_counter() - t
        return out

    draws.multiplier = timed
    try:
        secs, _, _ = block_epoch(step, data, S, threads)
    finally:
        draws.multiplier = multiplier
    say(f"  where a block of {S} spends one epoch ({secs:.1f} s here, partial data):")
    say(f"    dropout masks (cnn.draws, numpy, batch split over the threads): {100 * spent[0] / secs:.1f} %")
    recipe = zoo.get_step(step).recipe
    n = min(len(data.train_y), 20 * recipe.batch_size)
    few = cdata.MNIST(data.train_x[:n], data.train_y[:n], data.test_x[:1000], data.test_y[:1000])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        block_epoch(step, few, S, threads)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    say(f"  heaviest ops by self CPU time, block of {S}, {n // recipe.batch_size} steps + 1,000 test images:")
    shares: dict[str, float] = {}
    for e in events[:12]:
        share = 100 * e.self_cpu_time_total / total
        say(f"    {e.key:<44}{share:5.1f} %  ({e.count} calls)")
        shares[e.key] = share
    conv = sum(v for k, v in shares.items() if "convolution" in k)
    best = min(v for k, v in med.items() if k.startswith("block"))
    say(
        f"  ceiling: convolutions alone are {conv:.0f} % of a block's time; with everything else free a block would "
        f"reach {med['seeds'] / (best * conv / 100):.1f}x the seeds' loop (best block here: {med['seeds'] / best:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", help="one step instead of the default cases")
    parser.add_argument("--batches", type=int, help="time only the first N training batches (and the same test share)")
    parser.add_argument("--sizes", help="block sizes, comma-separated (default 1,2,4,8,16)")
    parser.add_argument("--threads", type=int, default=bt.THREADS, help="torch threads of ours (default 2)")
    parser.add_argument("--reps", type=int, help="repetitions of each path, alternating")
    parser.add_argument("--profile", action="store_true", help="with --step: also print where a block's time goes")
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

    say("Block engine speed, CPU: the seeds' DataLoader loop vs cnn.train.train (single) vs cnn.block.train_block")
    say("(block S=k: k seeds of one step as one batched network), seconds per model-epoch (train + test of one seed)")
    for line in bt.machine():
        say(line)
    say(
        f"seeds' loop: torch.set_num_threads({bt.THREADS}), 2 DataLoader workers, fp32 NCHW, nn.Dropout; ours: "
        f"{args.threads} thread(s), channels_last; alternating paths per rep; ratio = median(seeds) / median(path)"
    )
    full = cdata.load_mnist(bt.DATA_DIR, download=False)
    seeds_sets = bt.seeds_datasets()
    for case in cases:
        run_case(case, full, seeds_sets, args.threads, say)
    say(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if out:
        bt.write(out, lines)


if __name__ == "__main__":
    main()
