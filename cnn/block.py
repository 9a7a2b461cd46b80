"""Train a block of S seeds of one step as one batched network: a generator of per-epoch, per-seed records.

The block is the step's own network with every layer widened S times and split into S groups (:func:`stack`): a
``Conv2d(cin, cout)`` becomes ``Conv2d(S*cin, S*cout, groups=S)``, a ``BatchNorm2d(c)`` becomes
``BatchNorm2d(S*c)`` (so each seed's channels keep their own batch statistics and running averages), a
``Linear`` becomes a batched matmul. Seed s owns channels ``s*c ... s*c + c - 1`` of every activation, its own image
batch enters as input channel s, and the step's own ``forward`` runs unchanged on ``(B, S*c, H, W)``: every other
layer (activations, pools, interpolation, the channel gate, the skips) acts per channel. Every kernel does S
models' work for one call, and every parameter keeps one leading "rows" axis that splits into S equal chunks, one
per seed.

Why grouped convolutions and not ``torch.func.stack_module_state`` + ``vmap``: vmap's batching rule turns a
convolution with batched weights into this same grouped convolution, but on NCHW tensors (a copy in and out of
channels_last per layer), needs BatchNorm's running statistics and the dropout masks threaded through by hand, and
on this CPU ran 0.38-0.83x the speed of S separate models where the grouped channels_last block ran 0.77-1.94x
(S = 2, 4, 8 on 1 and 2 threads, s001-model3 and s004-exp1; benchmarks/results/batching-cpu.txt). With S*c
channels, channels_last BatchNorm and elementwise layers vectorise over a wide last axis: BatchNorm's share fell
from 10.5 to 4.7 ms per model-step at S=8.

Each seed trains exactly as :func:`cnn.train.train` would train it alone:

* its initialisation is built by the single-seed code from its own init seed, then copied into its rows;
* its data order and rotation angles come from its own CPU generators, in the same calls as the single-seed
  trainer's, and its dropout masks from the counter-based draws of :mod:`cnn.draws` with its own keys: no draw
  depends on the block (its size, the seed's position, the device);
* its loss is its own batch mean; the block minimises the sum, whose gradient for one seed's rows is that seed's
  own gradient;
* SGD momentum is elementwise, so per seed; each seed's rows step with its own learning rate, and each seed's
  schedule (StepLR, ReduceLROnPlateau on its own test accuracy) is the torch scheduler of a one-parameter
  bookkeeping SGD of its own.

A seed whose training loss is not finite at the end of an epoch is reported failed (:attr:`BlockEpoch.failed`),
its rows are zeroed and frozen (learning rate 0), and the other seeds carry on. A block of one seed gives the
single-seed trainer's records bit for bit; from two seeds on, grouped kernels sum in another order, the numbers
differ in the last bits, and training amplifies that over the epochs. A repeated block on a CPU gives
bit-identical records. ``BlockEpoch.epochs[seed].state()`` is in :func:`cnn.train.train`'s checkpoint format, so a
seed can resume in either engine, in any block.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnn import zoo
from cnn.data import MNIST, random_angles, to_input
from cnn.draws import Masks
from cnn.train import CHANNELS_LAST, EVAL_BATCH, Epoch, Run, _scheduler, place

ENGINE = "block"


class GroupedLinear(nn.Module):
    """S independent ``Linear(n_in, n_out)`` layers. Input ``(B, S*n_in)`` (seed-major, as a grouped conv's output
    flattens) or ``(B, S, n_in)``; output ``(B, S, n_out)``, so a following ``log_softmax(dim=-1)`` stays per seed.
    Weight ``(S*n_out, n_in)`` and bias ``(S*n_out,)``: seed s's rows are its ``nn.Linear`` weight and bias."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        self.groups, self.n_in, self.n_out = len(linears), linears[0].in_features, linears[0].out_features
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]))
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears])) if linears[0].bias is not None else None

    def forward(self, x):
        S = self.groups
        x = x.reshape(x.shape[0], S, self.n_in).transpose(0, 1)  # (S, B, n_in)
        w = self.weight.view(S, self.n_out, self.n_in).transpose(1, 2)  # (S, n_in, n_out)
        out = torch.bmm(x, w) if self.bias is None else torch.baddbmm(self.bias.view(S, 1, self.n_out), x, w)
        return out.transpose(0, 1)  # (B, S, n_out)


def stack(models: Sequence[nn.Module]) -> nn.Module:
    """One network computing ``len(models)`` networks of one architecture side by side (see the module docstring).

    Input ``(B, S, H, W)``: channel s is seed s's image. Output: the architecture's own output for ``(B, S*10, 1,
    1)`` logits, which is ``(B*S, 10)`` (``view(-1, 10)``) or ``(B, S, 10)`` (after a :class:`GroupedLinear`);
    :func:`per_seed` reshapes either to ``(B, S, 10)``. Raises on a layer with parameters or buffers it cannot split.
    """
    S = len(models)
    block = copy.deepcopy(models[0])
    named = [dict(m.named_modules()) for m in models]
    for name, module in list(block.named_modules()):
        parts = [n[name] for n in named]
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                module.in_channels * S,
                module.out_channels * S,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                groups=module.groups * S,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(module.num_features * S, module.eps, module.momentum, module.affine)
        elif isinstance(module, nn.Linear):
            new = GroupedLinear(parts)
        elif next(module.parameters(recurse=False), None) is None and next(module.buffers(recurse=False), None) is None:
            continue
        else:
            raise TypeError(f"cannot stack {type(module).__name__} ({name}): no per-seed split for its parameters")
        with torch.no_grad():
            for key, t in new.state_dict().items():
                rows = [p.state_dict()[key] for p in parts]
                t.copy_(torch.cat(rows) if t.dim() else rows[0])
        parent, _, attr = name.rpartition(".")
        setattr(block.get_submodule(parent) if parent else block, attr, new)
    return block


def per_seed(out: torch.Tensor, S: int) -> torch.Tensor:
    """The block's output as ``(B, S, 10)``."""
    return out.reshape(-1, S, out.shape[-1])


def seed_rows(t: torch.Tensor, S: int, s: int) -> torch.Tensor:
    """Seed s's part of a block tensor: its chunk of the leading axis; a 0-dim tensor (BatchNorm's batch count) is
    shared."""
    return t.chunk(S)[s] if t.dim() else t


@dataclass
class BlockEpoch:
    """One finished epoch of a block: an :class:`cnn.train.Epoch` per seed still training, and the seeds that failed
    in this epoch with a one-line reason each."""

    epoch: int
    epochs: dict[int, Epoch]
    failed: dict[int, str]


def check_block(runs: Sequence[Run]) -> None:
    """Raise ValueError unless ``runs`` can train as one block: one step, recipe and set of options, distinct seeds."""
    if not runs:
        raise ValueError("a block needs at least one run")
    first = runs[0]
    same = ("step", "recipe", "recipe_hash", "quick", "precision", "device", "threads", "vary", "base_seed")
    for r in runs[1:]:
        differ = [f for f in same if getattr(r, f) != getattr(first, f)]
        if differ:
            raise ValueError(f"{r.name} and {first.name} differ in {', '.join(differ)}: not one block")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a block trains each seed once, not {seeds}")
    if first.recipe.optimizer != "sgd":
        raise ValueError(f"the block engine trains SGD recipes, not {first.recipe.optimizer}")


def train_block(
    runs: Sequence[Run], data: MNIST, resume: dict[int, dict[str, Any]] | None = None
) -> Iterator[BlockEpoch]:
    """Yield one :class:`BlockEpoch` per epoch of the runs of one step, trained together.

    ``resume`` maps each run's seed to an ``Epoch.state()`` of either engine, all of one epoch; the block continues
    after it. Each record is :func:`cnn.train.train`'s, with ``engine = "block"`` and ``block_size = S``;
    ``epoch_seconds`` and ``images_per_sec`` are the whole block's wall time and its per-seed image rate.
    """
    check_block(runs)
    run, S = runs[0], len(runs)
    recipe = run.recipe
    device, data, train_idx, n_train = place(run, data)
    seeds = [r.seeds for r in runs]
    spec = zoo.get_step(run.step)

    singles = []
    for s in seeds:
        torch.manual_seed(s.init)  # as cnn.train.train: the network is built right after seeding the global generator
        singles.append(spec.build(recipe))
    model = stack(singles).to(device, memory_format=CHANNELS_LAST)
    del singles
    params = list(model.parameters())
    masks = Masks([s.dropout for s in seeds])
    masks.attach(model)
    orders = [torch.Generator().manual_seed(s.order) for s in seeds]
    augments = [torch.Generator().manual_seed(s.augment) for s in seeds]
    books = [_Book(recipe) for _ in runs]  # per-seed learning rate and schedule
    momenta = [torch.zeros_like(p) for p in params]  # 0 * momentum + grad = grad: torch's first step exactly
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16")
    live = [True] * S

    first = 1
    if resume is not None:
        states = [resume[r.seed] for r in runs]
        epochs = {st["epoch"] for st in states}
        if len(epochs) != 1:
            raise ValueError(f"a block resumes its seeds from one epoch, not from {sorted(epochs)}")
        first = epochs.pop() + 1
        model.load_state_dict({k: _cat([st["model"][k] for st in states]) for k in model.state_dict()})
        for i, buf in enumerate(momenta):
            buf.copy_(_cat([st["optimizer"]["state"][i]["momentum_buffer"] for st in states]))
        for book, st, order, augment in zip(books, states, orders, augments):
            book.load(st)
            order.set_state(st["rng"]["order"])
            augment.set_state(st["rng"]["augment"])

    for epoch in range(first, recipe.epochs + 1):
        start = time.perf_counter()
        lrs = [book.lr if ok else 0.0 for book, ok in zip(books, live)]
        model.train()
        perms = torch.stack([torch.randperm(n_train, generator=g) for g in orders])  # (S, n)
        if train_idx is not None:
            perms = train_idx[perms]
        perms = perms.to(device)
        loss_sum = torch.zeros(S, device=device)
        correct = torch.zeros(S, dtype=torch.long, device=device)
        for step, i in enumerate(range(0, n_train, recipe.batch_size)):
            idx = perms[:, i : i + recipe.batch_size].t()  # (b, S): batch-major, as the block's input channels
            b = len(idx)
            angles = None
            if recipe.rotation:
                angles = torch.stack([random_angles(b, recipe.rotation, g, "cpu") for g in augments], 1).to(device)
                angles = angles.reshape(-1)
            x = to_input(data.train_x[idx.reshape(-1)], recipe.mean, recipe.std, angles, recipe.fill)  # (b*S, 1, H, W)
            x = x.view(b, S, *x.shape[2:]).contiguous(memory_format=CHANNELS_LAST)
            y = data.train_y[idx]  # (b, S)
            masks.at(epoch, step)
            with autocast:
                out = per_seed(model(x), S).float()  # (b, S, 10)
            losses = -out.gather(2, y.unsqueeze(2)).squeeze(2).mean(0)  # (S,) each seed's own batch mean
            for p in params:
                p.grad = None
            losses.sum().backward()
            _sgd(params, momenta, lrs, recipe.momentum)
            loss_sum += losses.detach() * b
            correct += (out.detach().argmax(2) == y).sum(0)
        train_seconds = time.perf_counter() - start

        failed = {}
        finite = torch.isfinite(loss_sum).tolist()
        for s, r in enumerate(runs):
            if live[s] and not finite[s]:
                failed[r.seed] = f"{r.name}: training loss {loss_sum[s].item() / n_train} in epoch {epoch}"
                live[s] = False
                _freeze(model, momenta, s, S)
        test_loss, test_correct, predictions = evaluate_block(model, data, recipe, autocast, S)
        n_test = len(data.test_y)
        seconds = time.perf_counter() - start
        epochs: dict[int, Epoch] = {}
        for s, r in enumerate(runs):
            if not live[s]:
                continue
            test_acc = 100.0 * test_correct[s] / n_test
            books[s].step(test_acc)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum[s].item() / n_train,
                "train_acc": 100.0 * correct[s].item() / n_train,
                "test_loss": test_loss[s],
                "test_acc": test_acc,
                "test_correct": test_correct[s],
                "test_total": n_test,
                "lr": lrs[s],
                "epoch_seconds": seconds,
                "images_per_sec": n_train / train_seconds,
                "engine": ENGINE,
                "block_size": S,
            }

            def state(epoch=epoch, s=s) -> dict[str, Any]:  # copies, in cnn.train.train's format
                return {
                    "epoch": epoch,
                    "model": {k: seed_rows(v, S, s).clone() for k, v in model.state_dict().items()},
                    "optimizer": books[s].optimizer_state([seed_rows(m, S, s).clone() for m in momenta], len(params)),
                    "scheduler": books[s].scheduler_state(),
                    "rng": {"order": orders[s].get_state(), "augment": augments[s].get_state()},
                }

            epochs[r.seed] = Epoch(record, predictions[s], state)
        yield BlockEpoch(epoch, epochs, failed)
        if not any(live):
            return


def evaluate_block(model, data: MNIST, recipe: zoo.Recipe, autocast, S: int):
    """Per seed: mean test loss, correct count, and predicted labels (uint8, CPU), as lists of S."""
    model.eval()
    loss = torch.zeros(S, device=data.test_y.device)
    preds = []
    with torch.inference_mode(), autocast:
        for i in range(0, len(data.test_y), EVAL_BATCH):
            x = to_input(data.test_x[i : i + EVAL_BATCH], recipe.mean, recipe.std)  # (b, 1, H, W)
            x = x.expand(-1, S, -1, -1).contiguous(memory_format=CHANNELS_LAST)  # every seed sees the same images
            out = per_seed(model(x), S).float()  # (b, S, 10)
            y = data.test_y[i : i + EVAL_BATCH]
            loss += torch.stack([F.nll_loss(out[:, s], y, reduction="sum") for s in range(S)])  # as train's sums
            preds.append(out.argmax(2))
    pred = torch.cat(preds).t()  # (S, n)
    n = pred.shape[1]
    correct = (pred == data.test_y).sum(1).tolist()
    return [v / n for v in loss.tolist()], correct, list(pred.to("cpu", torch.uint8))


class _Book:
    """One seed's learning rate: a torch SGD over one placeholder parameter, driven by the step's torch scheduler,
    so StepLR and ReduceLROnPlateau keep their exact semantics and state format per seed. It never moves a weight."""

    def __init__(self, recipe: zoo.Recipe):
        self.optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr, momentum=recipe.momentum)
        self.scheduler = _scheduler(recipe, self.optimizer)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, test_acc: float) -> None:
        self.optimizer.step()  # a no-op (no gradient); tells the scheduler the optimizer has stepped this epoch
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(test_acc)
        elif self.scheduler is not None:
            self.scheduler.step()

    def load(self, state: dict[str, Any]) -> None:
        group = dict(state["optimizer"]["param_groups"][0], params=[0])
        self.optimizer.load_state_dict({"state": {}, "param_groups": [group]})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def optimizer_state(self, momenta: list[torch.Tensor], n_params: int) -> dict[str, Any]:
        """``torch.optim.SGD.state_dict()`` of the seed's single-seed optimizer (a copy)."""
        group = copy.deepcopy(dict(self.optimizer.state_dict()["param_groups"][0], params=list(range(n_params))))
        return {"state": {i: {"momentum_buffer": m} for i, m in enumerate(momenta)}, "param_groups": [group]}

    def scheduler_state(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts[0].dim() else parts[0]


@torch.no_grad()
def _sgd(params, momenta, lrs: list[float], momentum: float) -> None:
    """torch's CPU SGD step (no dampening, weight decay or Nesterov), ``buf = momentum * buf + grad``, then
    ``p.add_(buf, alpha=-lr)`` with each seed's own lr: one call per tensor while the block's seeds share one lr,
    one per seed's rows once their schedules part. The same elementwise formula either way, and torch's."""
    torch._foreach_mul_(momenta, momentum)
    torch._foreach_add_(momenta, [p.grad for p in params])
    if len(set(lrs)) == 1:
        torch._foreach_add_(params, momenta, alpha=-lrs[0])
        return
    S = len(lrs)
    for p, buf in zip(params, momenta):
        for lr, rows, buf_rows in zip(lrs, p.chunk(S), buf.chunk(S)):
            rows.add_(buf_rows, alpha=-lr)


@torch.no_grad()
def _freeze(model: nn.Module, momenta: list[torch.Tensor], s: int, S: int) -> None:
    """Zero seed s's parameters, momentum and running statistics (variance 1), so its slot computes finite zeros that
    no longer move (its learning rate is 0 from now on) and cannot slow or touch the other seeds."""
    for name, t in model.state_dict().items():
        if t.dim():
            seed_rows(t, S, s).fill_(1.0 if name.endswith("running_var") else 0.0)
    for m in momenta:
        seed_rows(m, S, s).zero_()
