"""Sweep efficiency on a local Ray: how much of the cores' time goes into training, and what Ray's start costs.

    efficiency = sum of the trials' epoch seconds (train + test) / (sweep wall seconds x cores)
    overhead per trial = (sweep wall seconds x cores - sum of epoch seconds) / trials

Ray's start-up (``ray.init``) is timed apart; the sweep's wall time runs from ``run_sweep`` to its return, so it
includes Tune's set-up, the workers' start (importing torch) and every checkpoint. Targets: efficiency >= 85 % once
Ray is up, overhead < 1 s per trial. Output: benchmarks/results/sweep-cpu.txt.

    .venv/bin/python benchmarks/bench_sweep.py [--runs 8] [--cores 2] [--step s003-model4] [--epochs 2]
"""

from __future__ import annotations

import argparse
import io
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
import torch

from cnn.data import load_mnist
from sweeps.runner import SweepConfig, run_sweep


def machine() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    return (
        f"machine: {model}, {torch.get_num_threads()} threads visible to torch, {mem} GiB RAM; "
        f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--step", default="s003-model4")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sweep-cpu.txt")
    args = p.parse_args()

    data = load_mnist(args.data_dir, download=False)
    start = time.perf_counter()
    ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        config = SweepConfig(steps=(args.step,), seeds=args.runs, quick=True, epochs=args.epochs, out=Path(tmp))
        start = time.perf_counter()
        summary = run_sweep(config, data=data, stream=io.StringIO())
        wall = time.perf_counter() - start
        rows = pd.read_parquet(Path(tmp) / "epochs")
    ray.shutdown()

    assert len(summary.trained) == args.runs and not summary.failed, summary
    busy = rows["epoch_seconds"].sum()
    lines = [
        machine(),
        f"sweep: {args.runs} runs of {args.step}, quick (6,000 train / 10,000 test images), {args.epochs} epochs each, "
        f"1 CPU per run, {args.cores} cores",
        f"ray.init (start a local Ray):           {ray_start:6.1f} s",
        f"sweep wall time (Ray up):               {wall:6.1f} s",
        f"sum of epoch seconds over all runs:     {busy:6.1f} s  (mean epoch {rows['epoch_seconds'].mean():.2f} s)",
        f"efficiency = busy / (wall x cores):     {busy / (wall * args.cores):6.1%}",
        f"overhead per trial:                     {(wall * args.cores - busy) / args.runs:6.2f} s",
        f"efficiency including ray.init:          {busy / ((wall + ray_start) * args.cores):6.1%}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
