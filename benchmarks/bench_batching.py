"""How to batch S seeds of one step: milliseconds per model-step (forward, backward, SGD) of four ways, same process.

Result: benchmarks/results/batching-cpu.txt. This decided cnn/block.py's design (grouped convolutions, channels_last).

* ``separate``: S networks, one after the other, channels_last (what S single-seed trials do);
* ``grouped CL``: :func:`cnn.block.stack` (grouped convolutions, S*c BatchNorm channels), channels_last;
* ``grouped NCHW``: the same network in the default memory format;
* ``vmap``: ``torch.func.stack_module_state`` + ``vmap(functional_call)`` over the S networks (the torch.func model
  ensembling recipe), NCHW; torch's batching rule turns each convolution into a grouped one.

Dropout is switched off in all four (p = 0): the masks are the same work in every way and are measured in
bench_block.py. Inputs are random (B, 1, 28, 28) batches, one per seed, each timed over ``--steps`` steps after two
warm-up steps, the ways alternating within a repetition; the median over ``--reps`` is reported, and the ratio
``separate / way`` (above 1: faster than separate networks).

Usage: ``.venv/bin/python benchmarks/bench_batching.py [--steps-list s001-model3,s004-exp1] [--sizes 4,8]
[--threads 1,2] [--out FILE]``. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_trainer as bt  # noqa: E402

from cnn import zoo  # noqa: E402
from cnn.block import per_seed, stack  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "batching-cpu.txt"
CL = torch.channels_last


def ways(step: str, S: int) -> dict:
    """name -> a function doing one training step of all S seeds."""
    spec = zoo.get_step(step)
    B = spec.recipe.batch_size
    nets = []
    for s in range(S):
        torch.manual_seed(s)
        nets.append(spec.build(spec.recipe))
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    xs, ys = torch.randn(S, B, 1, 28, 28), torch.randint(0, 10, (S, B))
    sgd = dict(lr=0.01, momentum=0.9)

    separate = [copy.deepcopy(n).to(memory_format=CL) for n in nets]
    opts = [torch.optim.SGD(n.parameters(), **sgd) for n in separate]
    xcl = [x.contiguous(memory_format=CL) for x in xs]

    def run_separate():
        for net, opt, x, y in zip(separate, opts, xcl, ys):
            opt.zero_grad(set_to_none=True)
            F.nll_loss(net(x), y).backward()
            opt.step()

    def grouped(fmt):
        block = stack(nets).to(memory_format=fmt)
        opt = torch.optim.SGD(block.parameters(), **sgd)
        x = xs[:, :, 0].transpose(0, 1).contiguous().contiguous(memory_format=fmt)  # (B, S, 28, 28)
        y = ys.t()

        def run():
            opt.zero_grad(set_to_none=True)
            out = per_seed(block(x), S)
            (-out.gather(2, y.unsqueeze(2)).squeeze(2).mean(0)).sum().backward()
            opt.step()

        return run

    params, buffers = stack_module_state(nets)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")
    vopt = torch.optim.SGD(params.values(), **sgd)

    def loss(p, b, x, y):
        return F.nll_loss(functional_call(base, (p, b), (x,)), y)

    def run_vmap():
        vopt.zero_grad(set_to_none=True)
        vmap(loss, randomness="different")(params, buffers, xs, ys).sum().backward()
        vopt.step()

    return {
        "separate": run_separate,
        "grouped CL": grouped(CL),
        "grouped NCHW": grouped(torch.contiguous_format),
        "vmap": run_vmap,
    }


def measure(step: str, S: int, threads: int, steps: int, reps: int, say) -> None:
    torch.set_num_threads(threads)
    fns = ways(step, S)
    for f in fns.values():  # warm-up: oneDNN primitives, vmap tracing
        f()
        f()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, f in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                f()
            times[name].append((time.perf_counter() - start) / steps / S * 1e3)
    med = {name: statistics.median(t) for name, t in times.items()}
    cells = "  ".join(f"{name} {ms:6.2f} ({med['separate'] / ms:.2f}x)" for name, ms in med.items())
    say(f"{step:<12} S={S:<2} {threads} thread(s): ms per model-step (vs separate): {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps-list", default="s001-model3,s004-exp1")
    parser.add_argument("--sizes", default="2,4,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timing")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    say("Batching S seeds of one step on the CPU: ms per model-step (forward + backward + SGD), dropout off")
    for line in bt.machine():
        say(line)
    for step in args.steps_list.split(","):
        for S in map(int, args.sizes.split(",")):
            for threads in map(int, args.threads.split(",")):
                measure(step, S, threads, args.steps, args.reps, say)
    say(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    bt.write(args.out, lines)


if __name__ == "__main__":
    main()
