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
  Dropout is torch's ``nn.Dropout`` (``bernoulli_``), as in the notebooks: the zoo's ``Dropout`` without a mask source
  (since issue 9; before, this path borrowed our cheaper CPU mask).
  The rotation is applied whether or not the recipe uses one: it is what the seeds' class code does (s002-net1's
  recipe has none, so for it path (a) does a little more work than path (b)).
* (b) ``list(cnn.train.train(Run.plan(step, 0, epochs=1, threads=2, precision=...), data))``.

Excluded from both: reading MNIST from disk (``load_mnist`` for (b), the two torchvision datasets for (a)). Included:
model construction, and for (a) the DataLoader worker start-up, which the seeds pay twice every epoch.

``--batches N`` times only the first N training batches (the first N x batch images, ``Subset`` for (a), sliced
tensors for (b)) and the same share of the test set, then extrapolates each path to a full epoch as
``fixed + (measured - fixed) * full / part``, where ``fixed`` is what a run pays once whatever its length (model build;
for (a) also the two ``iter(loader)`` calls that fork the workers). The 6.38M-param baseline runs this way because a
full epoch of it costs ~9-10 min per path on 2 cores.

The breakdown re-times one full epoch of our trainer with ``time.perf_counter`` around each phase of the same calls
``cnn.train.train`` makes (on a CPU every op is synchronous, so the phase times are exact), then lists the heaviest
ops from ``torch.profiler`` over a few training batches. It copies the loop of ``cnn/train.py``; keep them in step.

Usage: ``.venv/bin/python benchmarks/bench_trainer.py`` runs every case below and writes the results file;
``--step NAME [--batches N] [--bf16] [--profile] [--out FILE]`` runs one step. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
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
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnn import data as cdata  # noqa: E402
from cnn import train as ctrain  # noqa: E402
from cnn import zoo  # noqa: E402
from cnn.draws import Masks  # noqa: E402

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


def seeds_train(model, loader, optimizer) -> int:
    model.train()
    correct = 0
    for data, target in loader:
        optimizer.zero_grad()
        y_pred = model(data)
        loss = F.nll_loss(y_pred, target)
        loss.backward()
        optimizer.step()
        pred = y_pred.argmax(dim=1, keepdim=True)
        correct += pred.eq(target.view_as(pred)).sum().item()
    return correct


def seeds_test(model, loader) -> tuple[float, int]:
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return test_loss, correct


def seeds_epoch(step: str, train_set, test_set) -> tuple[float, float, float]:
    """One epoch of the seeds' loop: (seconds, fixed seconds, test accuracy %)."""
    recipe = zoo.get_step(step).recipe
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    model = zoo.get_step(step).model()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    kwargs = dict(batch_size=recipe.batch_size, shuffle=True, num_workers=2, pin_memory=False)
    train_loader, test_loader = DataLoader(train_set, **kwargs), DataLoader(test_set, **kwargs)
    fixed = time.perf_counter() - start
    # `for ... in loader` calls iter(loader), which forks the 2 workers: once per loader per epoch in the seeds.
    t = time.perf_counter()
    train_it = iter(train_loader)
    fixed += time.perf_counter() - t
    seeds_train(model, train_it, optimizer)
    t = time.perf_counter()
    test_it = iter(test_loader)
    fixed += time.perf_counter() - t
    _, correct = seeds_test(model, test_it)
    del train_it, test_it
    return time.perf_counter() - start, fixed, 100.0 * correct / len(test_set)


# ---- (b) this project's trainer -----------------------------------------------------------------------------------


def ours_epoch(step: str, data: cdata.MNIST, precision: str) -> tuple[float, float, float]:
    """One epoch of ``cnn.train.train``: (seconds, fixed seconds, test accuracy %)."""
    start = time.perf_counter()
    (epoch,) = list(ctrain.train(ctrain.Run.plan(step, 0, epochs=1, threads=THREADS, precision=precision), data))
    seconds = time.perf_counter() - start
    return seconds, seconds - epoch.record["epoch_seconds"], epoch.record["test_acc"]


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
    seeds_measured = []  # seconds on the data actually used (= times["seeds"] for a full epoch)
    for rep in range(1, case.reps + 1):
        line = []
        for path in times:
            secs, fixed, acc = (
                seeds_epoch(case.step, train_set, test_set) if path == "seeds" else ours_epoch(case.step, data, path)
            )
            epoch = fixed + (secs - fixed) * scale
            times[path].append(epoch)
            if path == "seeds":
                seeds_measured.append(secs)
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
        breakdown(case.step, data, statistics.median(seeds_measured), med["fp32"] / scale, say)
    return med


def breakdown(step_name: str, data: cdata.MNIST, seeds_seconds: float, ours_seconds: float, say) -> None:
    """Where one fp32 epoch of our trainer goes: the loop of cnn.train.train with a timer around each phase."""
    step, recipe = zoo.get_step(step_name), zoo.get_step(step_name).recipe
    seeds = ctrain.Seeds.of(0)
    torch.set_num_threads(THREADS)
    cl = ctrain.CHANNELS_LAST
    phases = dict.fromkeys(
        (
            "setup",
            "gather+rotate+normalize",
            "forward+loss",
            "zero_grad+backward",
            "optimizer step",
            "loss/correct bookkeeping",
            "test evaluation",
        ),
        0.0,
    )
    t = time.perf_counter()
    torch.manual_seed(seeds.init)
    model = step.build(recipe).to(memory_format=cl)
    masks = Masks([seeds.dropout])  # counter-based dropout masks, as cnn.train.train attaches them
    masks.attach(model)
    order, augment = torch.Generator().manual_seed(seeds.order), torch.Generator().manual_seed(seeds.augment)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=False)
    model.train()
    n = len(data.train_y)
    perm = torch.randperm(n, generator=order)
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    phases["setup"] += time.perf_counter() - t

    def batch(i):
        masks.at(1, i // recipe.batch_size)
        idx = perm[i : i + recipe.batch_size]
        angles = cdata.random_angles(len(idx), recipe.rotation, augment, "cpu") if recipe.rotation else None
        x = cdata.to_input(data.train_x[idx], recipe.mean, recipe.std, angles, recipe.fill)
        return idx, x.contiguous(memory_format=cl), data.train_y[idx]

    start = time.perf_counter()
    for i in range(0, n, recipe.batch_size):
        t0 = time.perf_counter()
        idx, x, y = batch(i)
        t1 = time.perf_counter()
        with autocast:
            out = model(x)
            loss = F.nll_loss(out.float(), y)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        loss_sum += loss.detach() * len(idx)
        correct += (out.detach().argmax(1) == y).sum()
        t5 = time.perf_counter()
        for key, dt in zip(list(phases)[1:6], (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            phases[key] += dt
    train_wall = time.perf_counter() - start
    t = time.perf_counter()
    ctrain.evaluate(model, data, recipe, autocast)
    phases["test evaluation"] = time.perf_counter() - t
    total = sum(phases.values())

    say(f"  where our fp32 epoch goes ({step_name}; the loop of cnn.train.train re-timed phase by phase, one epoch):")
    for key, secs in phases.items():
        say(f"    {key:<26}{secs:7.2f} s  {100 * secs / total:5.1f} %")
    say(
        f"    {'total':<26}{total:7.2f} s  (timed run above: {ours_seconds:.2f} s; "
        f"loop overhead outside the timers {train_wall - sum(list(phases.values())[1:6]):.2f} s)"
    )
    compute = phases["forward+loss"] + phases["zero_grad+backward"] + phases["optimizer step"]
    say(
        f"  forward+backward+step alone: {compute:.1f} s, so even with data and test free the ratio would be "
        f"at most {seeds_seconds / compute:.2f}x against the seeds' median {seeds_seconds:.1f} s"
    )

    # Which ops, over up to 100 training batches (profiler overhead inflates tiny ops; read the ranking, not the sums).
    from torch.profiler import ProfilerActivity, profile

    profiled = range(0, min(n, 100 * recipe.batch_size), recipe.batch_size)
    model.train()  # evaluate() left it in eval mode
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in profiled:
            idx, x, y = batch(i)
            out = model(x)
            loss = F.nll_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    say(f"  heaviest ops by self CPU time over {len(profiled)} training batches (torch.profiler):")
    for e in events[:10]:
        say(f"    {e.key:<44}{100 * e.self_cpu_time_total / total_us:5.1f} %  ({e.count} calls)")


# ---- report -------------------------------------------------------------------------------------------------------


def write(out: Path, lines: list[str]) -> None:
    """A benchmark's printed lines, as its committed output file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")


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
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}; "
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
