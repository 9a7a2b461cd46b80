"""Trainer speed: the seeds' DataLoader loop against ``cnn.train.train``, one model-epoch each, same process.

Result on a 2-core AMD EPYC (KVM, AVX2 only), torch 2.14.1, 2026-11-22 (benchmarks/results/trainer-cpu.txt), median
seconds per model-epoch, seeds / ours:

* s003-model4 (7,616 params, batch 64): 50.4 / 23.6 s = 2.13x fp32 (3 reps: 2.41, 2.05, 1.83x).
* s004-exp1 (7,958 params, batch 128): 47.4 / 27.4 s = 1.73x fp32 (3 reps: 2.23, 1.73, 1.14x).
* s002-net1 (6.38M params, batch 128, 60 of 469 batches, extrapolated): 599 / 570 s = 1.05x (reps 1.02, 1.09x).
* bf16 autocast, s003-model4 (100 batches, extrapolated): 60.8 / 159.0 s = 0.38x: no bf16 hardware on this CPU.
* Where our 22 s go (s003-model4): forward+backward+step 19.1 s (87 %), test 7 %, batch gather+rotate+normalize
  ~4 %. With data and test free the ratio could reach only 2.6x: convolution backward (32 %), convolution (13 %),
  batch norm (20 %) and the dropout mask (12 %, down from 21 % with ``bernoulli_``) are the rest.

Each case alternates the two paths (seeds, ours, seeds, ours, ...) in one process so that load from other work on the
machine hits both, and reports median seconds per model-epoch (train + test) and the ratio seeds / ours:

* (a) the seeds' loop, as the student notebooks run it: ``torchvision.datasets.MNIST`` with per-sample
  ``RandomRotation((-7, 7), fill=(1,)) -> ToTensor -> Normalize`` for training (``ToTensor -> Normalize`` for test),
  ``DataLoader(batch_size=<recipe>, shuffle=True, num_workers=2, pin_memory=False)`` for both sets, the classic
  ``train()`` (zero_grad, forward, nll_loss, backward, step, running correct count) and ``test()`` (no_grad, summed
  nll_loss, argmax correct), the model in default NCHW, SGD(lr, momentum) from the recipe, ``torch.set_num_threads(2)``.
  Dropout is torch's ``nn.Dropout`` (``bernoulli_``), as in the notebooks: the zoo's ``Dropout`` without a mask source.
  The rotation is applied whether or not the recipe uses one: it is what the seeds' class code does (s002-net1's
  recipe has none, so for it path (a) does a little more work than path (b)).
* (b) ``list(cnn.train.train([Run.plan(step, 0, epochs=1, threads=2, precision=...)], data))``: one seed, a block of
  one.

Excluded from both: reading MNIST from disk (``load_mnist`` for (b), the two torchvision datasets for (a)). Included:
model construction, and for (a) the DataLoader worker start-up, which the seeds pay twice every epoch.

``--batches N`` times only the first N training batches (the first N x batch images, ``Subset`` for (a), sliced
tensors for (b)) and the same share of the test set, then extrapolates each path to a full epoch as
``fixed + (measured - fixed) * full / part``, where ``fixed`` is what a run pays once whatever its length (model build;
for (a) also the two ``iter(loader)`` calls that fork the workers). The 6.38M-param baseline runs this way because a
full epoch of it costs ~9-10 min per path on 2 cores.

The breakdown runs ``cnn.train.train`` itself under ``torch.profiler`` for up to 100 training batches and the test
set, and sums the ops' self CPU time by what they do (convolutions, batch norm, dropout masks, the optimizer, the
batch's gather, rotation and normalisation, ...); the convolutions' share bounds what any other saving could buy.

Usage: ``.venv/bin/python benchmarks/bench_trainer.py`` runs every case below and writes the results file;
``--step NAME [--batches N] [--bf16] [--profile] [--out FILE]`` runs one step. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnn import data as cdata  # noqa: E402
from cnn import train as ctrain  # noqa: E402
from cnn import zoo  # noqa: E402

DATA_DIR = Path(os.environ.get("SWEEP_DATA_DIR", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "trainer-cpu.txt"
THREADS = 2  # the target machine's cores; both paths get the same
FULL_TRAIN, FULL_TEST = 60_000, 10_000  # MNIST images


@dataclass(frozen=True)
class Case:
    step: str
    batches: int | None = None  # None: a full epoch; N: the first N training batches, extrapolated
    precisions: tuple[str, ...] = ("fp32",)  # of path (b); path (a) is always fp32
    reps: int = 3  # of each path, alternating; 3 lets the median drop one run hit by a burst of other work
    profile: bool = False  # also print where our trainer's time goes


CASES = (
    Case("s003-model4", profile=True),  # 7,616 params, batch 64
    # bf16 autocast runs ~16x slower than fp32 on this AVX2-only CPU, so it gets a partial epoch, beside fp32 again.
    Case("s003-model4", batches=100, precisions=("fp32", "bf16"), reps=2),
    Case("s004-exp1"),  # 7,958 params, batch 128
    Case("s002-net1", batches=60, reps=2),  # 6,379,786 params, batch 128; ~2.5 min per path and rep
)


# ---- (a) the seeds' loop ------------------------------------------------------------------------------------------


def seeds_datasets():
    """The seeds' two torchvision datasets with their per-sample transforms (built once, outside the timing)."""
    norm = [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    train_tf = transforms.Compose([transforms.RandomRotation((-7.0, 7.0), fill=(1,)), *norm])
    return (
        torchvision.datasets.MNIST(str(DATA_DIR), train=True, download=False, transform=train_tf),
        torchvision.datasets.MNIST(str(DATA_DIR), train=False, download=False, transform=transforms.Compose(norm)),
    )


def seeds_train(model, loader, optimizer, device: str = "cpu") -> int:
    model.train()
    correct = 0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        y_pred = model(data)
        loss = F.nll_loss(y_pred, target)
        loss.backward()
        optimizer.step()
        pred = y_pred.argmax(dim=1, keepdim=True)
        correct += pred.eq(target.view_as(pred)).sum().item()
    return correct


def seeds_test(model, loader, device: str = "cpu") -> tuple[float, int]:
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return test_loss, correct


def seeds_epoch(step: str, train_set, test_set, device: str = "cpu") -> tuple[float, float, float]:
    """One epoch of the seeds' loop: (seconds, fixed seconds, test accuracy %). On a GPU, as the notebooks run it
    there: the model on the device, each batch copied to it (``.to(device)``)."""
    recipe = zoo.get_step(step).recipe
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    model = zoo.get_step(step).model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    kwargs = dict(batch_size=recipe.batch_size, shuffle=True, num_workers=2, pin_memory=False)
    train_loader, test_loader = DataLoader(train_set, **kwargs), DataLoader(test_set, **kwargs)
    fixed = time.perf_counter() - start
    # `for ... in loader` calls iter(loader), which forks the 2 workers: once per loader per epoch in the seeds.
    t = time.perf_counter()
    train_it = iter(train_loader)
    fixed += time.perf_counter() - t
    seeds_train(model, train_it, optimizer, device)
    t = time.perf_counter()
    test_it = iter(test_loader)
    fixed += time.perf_counter() - t
    _, correct = seeds_test(model, test_it, device)
    del train_it, test_it
    return time.perf_counter() - start, fixed, 100.0 * correct / len(test_set)


# ---- (b) this project's trainer -----------------------------------------------------------------------------------


def ours_epoch(step: str, data: cdata.MNIST, precision: str) -> tuple[float, float, float]:
    """One epoch of ``cnn.train.train``, one seed: (seconds, fixed seconds, test accuracy %)."""
    start = time.perf_counter()
    (epoch,) = list(ctrain.train([ctrain.Run.plan(step, 0, epochs=1, threads=THREADS, precision=precision)], data))
    seconds = time.perf_counter() - start
    record = epoch.seeds[0].record
    return seconds, seconds - record.epoch_seconds, record.test_acc


# ---- the comparison -----------------------------------------------------------------------------------------------


def subsets(case: Case, full: cdata.MNIST, seeds_sets):
    """The data of a case for both paths, and the factor from it to a full epoch (1 for a full epoch)."""
    if case.batches is None:
        return full, seeds_sets, 1.0
    n = min(case.batches * zoo.get_step(case.step).recipe.batch_size, FULL_TRAIN)
    m = round(FULL_TEST * n / FULL_TRAIN)  # the same share of the test set
    part = cdata.MNIST(full.train_x[:n], full.train_y[:n], full.test_x[:m], full.test_y[:m])
    return part, (Subset(seeds_sets[0], range(n)), Subset(seeds_sets[1], range(m))), FULL_TRAIN / n


def run_case(case: Case, full: cdata.MNIST, seeds_sets, say) -> dict[str, float]:
    step, recipe = zoo.get_step(case.step), zoo.get_step(case.step).recipe
    data, (train_set, test_set), scale = subsets(case, full, seeds_sets)
    n_batches = -(-len(data.train_y) // recipe.batch_size)
    what = (
        f"{n_batches} batches + {len(data.test_y):,} test images"
        if case.batches is None
        else f"PARTIAL: first {n_batches} of {-(-FULL_TRAIN // recipe.batch_size)} batches + "
        f"{len(data.test_y):,} of 10,000 test images, extrapolated x{scale:.3f} to a full epoch"
    )
    say(f"\n{case.step} ({zoo.count_params(step.model()):,} params, batch {recipe.batch_size}, {what})")
    # Warm-up, untimed: first-call costs (oneDNN primitives, thread pools, imports in the workers).
    warm, warm_sets, _ = subsets(Case(case.step, batches=3), full, seeds_sets)
    seeds_epoch(case.step, *warm_sets)
    for p in case.precisions:
        ours_epoch(case.step, warm, p)

    times: dict[str, list[float]] = {"seeds": [], **{p: [] for p in case.precisions}}
    for rep in range(1, case.reps + 1):
        line = []
        for path in times:
            secs, fixed, acc = (
                seeds_epoch(case.step, train_set, test_set) if path == "seeds" else ours_epoch(case.step, data, path)
            )
            epoch = fixed + (secs - fixed) * scale
            times[path].append(epoch)
            name = "seeds fp32" if path == "seeds" else f"ours {path}"
            measured = "" if scale == 1 else f" (measured {secs:.1f} s, fixed {fixed:.2f} s)"
            line.append(f"{name} {epoch:.1f} s{measured}, test acc {acc:.2f} %")
        say(f"  rep {rep}: " + "; ".join(line))
    med = {path: statistics.median(t) for path, t in times.items()}
    say(
        "  median s/model-epoch"
        + (" (extrapolated)" if scale != 1 else "")
        + ": "
        + ", ".join(f"{'seeds fp32' if k == 'seeds' else 'ours ' + k} {v:.1f}" for k, v in med.items())
    )
    for p in case.precisions:
        per_rep = ", ".join(f"{a / b:.2f}x" for a, b in zip(times["seeds"], times[p]))
        say(f"  ratio seeds fp32 / ours {p}: {med['seeds'] / med[p]:.2f}x  (per rep: {per_rep})")
    if case.profile:
        breakdown(case.step, data, med["seeds"], med["fp32"], say)
    return med


# What an op does, by the first pattern its name contains (torch.profiler's aten names).
KINDS = (
    ("convolution", ("convolution",)),
    ("batch norm", ("batch_norm",)),
    ("activations", ("gelu", "relu", "threshold", "sigmoid", "clamp")),
    ("pooling and resizing", ("pool", "upsample")),
    ("data: gather, rotate, normalize", ("index", "grid_sampler", "affine_grid", "where", "div", "sub", "rand")),
    ("optimizer (SGD, foreach)", ("_foreach",)),
    ("loss and log-softmax", ("nll_loss", "log_softmax", "gather")),
    ("copies and layout", ("copy_", "contiguous", "clone", "to", "empty", "zeros", "fill_")),
    ("elementwise (masks, skips)", ("mul", "add")),
)


def breakdown(step_name: str, data: cdata.MNIST, seeds_seconds: float, ours_seconds: float, say, S: int = 1) -> None:
    """Where an fp32 epoch of ``cnn.train.train`` with S seeds goes: the trainer itself under torch.profiler, up to
    100 training batches and the test set, ops summed by kind, and what the convolutions' share leaves for anything
    else. ``ours_seconds``: our seconds per model-epoch."""
    recipe = zoo.get_step(step_name).recipe
    n = min(len(data.train_y), 100 * recipe.batch_size)
    part = cdata.MNIST(data.train_x[:n], data.train_y[:n], data.test_x, data.test_y)
    base = ctrain.Run.plan(step_name, 0, epochs=1, threads=THREADS)
    runs = [dataclasses.replace(base, seed=s) for s in range(S)]
    from cnn import draws

    masks = draws.multiplier
    mask_seconds = [0.0]

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return masks(*args, **kwargs)
        finally:
            mask_seconds[0] += time.perf_counter() - t

    draws.multiplier = timed  # the dropout masks, timed where the trainer calls them
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            list(ctrain.train(runs, part))
            wall = time.perf_counter() - start
    finally:
        draws.multiplier = masks
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    kinds = dict.fromkeys([k for k, _ in KINDS] + ["other"], 0.0)
    for e in events:
        kind = next((k for k, names in KINDS if any(p in e.key for p in names)), "other")
        kinds[kind] += e.self_cpu_time_total
    say(f"  where an fp32 epoch of {S} seed(s) goes ({step_name}, {n // recipe.batch_size} training batches + the test")
    say(f"  set under torch.profiler, {wall:.1f} s; self CPU time of aten ops by kind):")
    for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1]):
        say(f"    {kind:<34}{100 * us / total:5.1f} %")
    say(f"    dropout masks (cnn.draws, timed around the call) {100 * mask_seconds[0] / wall:5.1f} % of the wall time")
    conv = kinds["convolution"] / total
    say(
        f"  ceiling: convolutions are {100 * conv:.0f} % of the ops' time; with everything else free, ours would run "
        f"{seeds_seconds / (conv * ours_seconds):.1f}x the seeds' loop (now {seeds_seconds / ours_seconds:.2f}x)"
    )
    say("  heaviest ops by self CPU time:")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]:
        say(f"    {e.key:<44}{100 * e.self_cpu_time_total / total:5.1f} %  ({e.count} calls)")


# ---- report -------------------------------------------------------------------------------------------------------


def write(out: Path, lines: list[str]) -> None:
    """A benchmark's printed lines, as its committed output file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")


def git_commit(tree: Path = ROOT) -> str:
    """The checkout's commit, with '+changes' when its tracked files differ from it."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=tree).returncode
    return sha.strip() + ("+changes" if dirty else "")


def machine() -> list[str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    flags = field.get("Flags", "").split()
    mem_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    bf16_hw = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return [
        f"machine: {field.get('Model name', '?')}, {field.get('CPU(s)', '?')} cores"
        f"{' (' + field['Hypervisor vendor'] + ' guest)' if 'Hypervisor vendor' in field else ''}, "
        f"{mem_kb / 2**20:.1f} GiB RAM; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"bf16 hardware: {', '.join(bf16_hw) or 'none (no AVX-512, no AMX)'}",
        f"code {git_commit()}; python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}; "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", help="one step instead of the default cases")
    parser.add_argument("--batches", type=int, help="time only the first N training batches (and the same test share)")
    parser.add_argument("--bf16", action="store_true", help="with --step: also time our trainer in bf16")
    parser.add_argument("--profile", action="store_true", help="with --step: also print where our time goes")
    parser.add_argument("--reps", type=int, help="repetitions of each path, alternating (default 3; 2 for partial)")
    parser.add_argument("--out", type=Path, help=f"also write the report here (default without --step: {OUT})")
    args = parser.parse_args()
    if args.step:
        reps = args.reps or (2 if args.batches else 3)
        cases = [Case(args.step, args.batches, ("fp32", "bf16") if args.bf16 else ("fp32",), reps, args.profile)]
    else:
        cases = [Case(c.step, args.batches or c.batches, c.precisions, args.reps or c.reps, c.profile) for c in CASES]
    out = args.out or (None if args.step else OUT)

    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    say(
        "Trainer speed, CPU: the seeds' DataLoader loop (a) vs cnn.train.train (b), seconds per model-epoch "
        "(train + test)"
    )
    for line in machine():
        say(line)
    say(
        f"both paths: torch.set_num_threads({THREADS}), same batch size, seed 0; (a) fp32 NCHW with 2 DataLoader "
        "workers; (b) channels_last; alternating a, b per rep; ratio = median(a) / median(b)"
    )
    full = cdata.load_mnist(DATA_DIR, download=False)
    seeds_sets = seeds_datasets()
    for case in cases:
        run_case(case, full, seeds_sets, say)
    if out:
        write(out, lines)


if __name__ == "__main__":
    main()
