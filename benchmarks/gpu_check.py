"""Everything a GPU must confirm, in one command, into one folder: ``python benchmarks/gpu_check.py --out DIR``.

Built for a bare GPU machine with Python, torch and the carried wheels (Ray among them), and for under 8 minutes on
one H200. In order, each part's output in ``DIR``:

1. ``pytest-gpu.txt``: ``pytest -m gpu`` (tests/test_gpu.py and the trainer tests' CUDA cases).
2. ``blocks.txt``: model-epochs per second of blocks of S = 1 ... 64 seeds against the seeds' own DataLoader loop
   on the same GPU (``bench_block.run_case``, partial epochs extrapolated), for a small step and a 6.38M baseline.
3. ``memory.txt``: each block's measured peak (``torch.cuda.max_memory_allocated``) against its estimate
   (``cnn.memory.peak_bytes``).
4. ``numerics.txt``: what the deterministic setting costs (a block's epoch with it and without), and TF32 against
   IEEE fp32 on the baseline, speed and test accuracy.
5. ``sweep/``: a quick sweep through Ray with fractional GPUs (``--gpus-per-trial 0.25``) and its report;
   ``sweep.txt`` what the command printed.
6. ``summary.txt``: the device, versions, each part's time and exit status.

``--tiny`` runs the same parts on the CPU in a few seconds each (a test runs it, so the script cannot rot between
GPU runs): tiny data, S up to 2, the CPU instead of CUDA. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_block as bb  # noqa: E402
import bench_trainer as bt  # noqa: E402
import torch  # noqa: E402

from cnn import data as cdata  # noqa: E402
from cnn import memory  # noqa: E402
from cnn import train as ctrain  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
    device: str
    steps: tuple[str, ...]  # the block table's and the memory table's steps
    sizes: tuple[int, ...]  # block sizes
    batches: int  # training batches per timed epoch (extrapolated to a full one)
    sweep: tuple[str, ...]  # the quick sweep's arguments


GPU = Setting(
    "cuda",
    ("s001-model3", "s002-net1"),
    (1, 2, 4, 8, 16, 32, 64),
    40,
    ("s001-model3", "s004-exp1", "s002-net1", "--quick", "--seeds", "4", "--gpus-per-trial", "0.25"),
)
TINY = Setting("cpu", ("s003-model4",), (1, 2), 2, ("s003-model4", "--quick", "--seeds", "2", "--num-cpus", "2"))


def part(name: str, summary: list[str]):
    """Time a part and record how it ended; a failing part is recorded and the others still run."""

    @contextlib.contextmanager
    def timed():
        start = time.perf_counter()
        status = "ok"
        try:
            yield
        except Exception as e:  # one part's failure is a finding, not the end of the check
            status = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        summary.append(f"{name:<12}{time.perf_counter() - start:8.1f} s  {status}")

    return timed()


def pytest_gpu(out: Path, tiny: bool) -> None:
    args = ["-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    args += ["tests/test_gpu.py"] if tiny else []
    res = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, capture_output=True, text=True)
    (out / "pytest-gpu.txt").write_text(res.stdout + res.stderr)


def blocks(out: Path, s: Setting, full: cdata.MNIST) -> None:
    lines = []
    seeds_sets = bt.seeds_datasets()
    for step in s.steps:
        case = bb.Case(step, batches=s.batches, sizes=s.sizes, reps=1 if s.device == "cpu" else 2)
        bb.run_case(case, full, seeds_sets, bt.THREADS, lines.append, None, False, s.device)
    (out / "blocks.txt").write_text("\n".join([*bt.machine(), *lines]) + "\n")


def peaks(out: Path, s: Setting, full: cdata.MNIST) -> None:
    """Measured peak against the estimate, per step and block size, over a few training batches and the test set."""
    lines = [f"{'step':<14}{'S':>4}{'measured GiB':>14}{'estimate GiB':>14}{'ratio':>8}"]
    for step in s.steps:
        base = ctrain.Run.plan(step, 0, epochs=1, device=s.device)
        n = min(len(full.train_y), s.batches * base.recipe.batch_size)
        data = cdata.MNIST(full.train_x[:n], full.train_y[:n], full.test_x, full.test_y)
        for S in s.sizes:
            if s.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            list(ctrain.train([dataclasses.replace(base, seed=i) for i in range(S)], data))
            measured = torch.cuda.max_memory_allocated() if s.device == "cuda" else 0
            estimate = memory.peak_bytes(base, S, n_train=n) - memory.OVERHEAD
            gib = f"{measured / 2**30:>14.2f}{estimate / 2**30:>14.2f}"
            lines.append(f"{step:<14}{S:>4}{gib}{measured / estimate:>8.2f}")
    (out / "memory.txt").write_text("\n".join(lines) + "\n")


def numerics(out: Path, s: Setting, full: cdata.MNIST) -> None:
    """The deterministic setting's cost, and TF32 against IEEE fp32: one partial epoch each, alternating."""
    lines = []
    step, S = s.steps[-1], s.sizes[-1] if s.device == "cpu" else 16
    base = ctrain.Run.plan(step, 0, epochs=1, device=s.device)
    n = min(len(full.train_y), s.batches * base.recipe.batch_size)
    data = cdata.MNIST(full.train_x[:n], full.train_y[:n], full.test_x, full.test_y)
    variants = {
        "fp32, deterministic": (True, "fp32"),
        "fp32, not deterministic": (False, "fp32"),
        "tf32, deterministic": (True, "tf32"),
    }
    for name, (deterministic, precision) in variants.items():
        ctrain.DETERMINISTIC = deterministic
        try:
            runs = [dataclasses.replace(base, seed=i, precision=precision) for i in range(S)]
            (epoch,) = list(ctrain.train(runs, data))
        finally:
            ctrain.DETERMINISTIC = True
        r = [e.record for e in epoch.seeds.values()]
        acc = sum(x.test_acc for x in r) / len(r)
        lines.append(
            f"{step} S={S}, {n} training images + test: {name:<26} {r[0].epoch_seconds:7.2f} s, mean test acc "
            f"{acc:.2f} %, precision recorded {r[0].precision}"
        )
    (out / "numerics.txt").write_text("\n".join(lines) + "\n")


def sweep(out: Path, s: Setting, data_dir: Path) -> None:
    results = out / "sweep"
    env = {**os.environ, "SWEEP_DATA_DIR": str(data_dir)}
    cli = [sys.executable, "-c", "from analysis.cli import main; main()"]  # no console script where wheels are carried
    log, codes = io.StringIO(), []
    for args in (["run", *s.sweep, "--out", str(results)], ["report", "--out", str(results), "--last-k", "1"]):
        res = subprocess.run([*cli, *args], cwd=ROOT, env=env, capture_output=True, text=True)
        log.write(f"$ sweep {' '.join(args)}\n{res.stdout}{res.stderr}exit {res.returncode}\n")
        codes.append(res.returncode)
    (out / "sweep.txt").write_text(log.getvalue())
    if any(codes):
        raise RuntimeError(f"exit codes {codes}; see sweep.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder for every part's output")
    parser.add_argument("--tiny", action="store_true", help="a few seconds per part, on the CPU")
    args = parser.parse_args()
    s = TINY if args.tiny else GPU
    if s.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device is visible; --tiny runs this check on the CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    full = cdata.load_mnist(bt.DATA_DIR, download=False)
    if args.tiny:
        full = cdata.MNIST(full.train_x[:600], full.train_y[:600], full.test_x[:200], full.test_y[:200])
    device = torch.cuda.get_device_name() if s.device == "cuda" else "cpu"
    summary = [f"gpu_check on {device}; torch {torch.__version__}; code {bt.git_commit()}", *bt.machine()]
    with part("pytest -m gpu", summary):
        pytest_gpu(args.out, args.tiny)
    with part("blocks", summary):
        blocks(args.out, s, full)
    with part("memory", summary):
        peaks(args.out, s, full)
    with part("numerics", summary):
        numerics(args.out, s, full)
    with part("sweep", summary):
        sweep(args.out, s, bt.DATA_DIR)
    (args.out / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
