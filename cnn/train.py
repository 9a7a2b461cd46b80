"""Train the seeds of one step: a generator of per-epoch, per-seed records, with no printing, no files and no Ray.

One loop trains S seeds of one step as one batched network (:mod:`cnn.block`); one seed is a block of one, which is
the step's own network. Each seed trains exactly as it would alone:

* its initialisation is built from its own init seed (PyTorch's default initialisation, drawn from the global
  generator right after seeding it);
* its data order (``randperm``, as ``DataLoader(shuffle=True, drop_last=False)``) and rotation angles come from CPU
  generators of its own, and its dropout masks from the counter-based draws of :mod:`cnn.draws` with its own key: no
  draw depends on the device or on the other seeds of its block;
* its loss is its own batch mean; the block minimises the sum, whose gradient for one seed's rows is that seed's own
  gradient;
* SGD momentum is elementwise, so per seed; each seed steps with its own learning rate, and its schedule (StepLR,
  ReduceLROnPlateau on its own test accuracy) is the torch scheduler of a one-parameter bookkeeping SGD of its own.

The data stays on the device as uint8 tensors; each batch is gathered, rotated and normalised there
(:mod:`cnn.data`). Four random streams drive the four sources of randomness, each seeded from the run seed or, for
the streams a ``--vary`` run holds still, from its base seed (:attr:`Run.seeds`).

On a CPU the same runs give bit-identical records twice, and runs resumed from the states of epoch k give the
records of runs never stopped. A block of one computes with exactly the single network's kernels; from two seeds on,
grouped kernels sum in another order, so a seed's numbers agree with its run alone to float rounding, which training
amplifies over the epochs. A seed whose training loss is not finite at the end of an epoch fails alone
(:attr:`Epoch.failed`): its rows are zeroed and frozen (learning rate 0) and the other seeds carry on. A seed's
:meth:`SeedEpoch.state` is the same whatever block it trained in, so it can resume in any block.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnn import zoo
from cnn.block import per_seed, seed_rows, stack
from cnn.data import MNIST, random_angles, stratified_slice, to_device, to_input
from cnn.draws import Masks

# --quick: stratified share of the training set, and epochs. One epoch because the two 6.3M-param baselines cost
# ~180 core-seconds per quick epoch each on a 2-core CPU (benchmarks/), and `sweep run all --quick` must fit 10 min.
QUICK = {"fraction": 0.1, "epochs": 1}
EVAL_BATCH = 1000  # test images per loss sum (evaluation forwards at most a training batch at a time)
# what two runs of one step and seed must repeat exactly on a CPU (epoch_seconds and images_per_sec vary by nature)
METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_correct", "test_total", "lr")
CHANNELS_LAST = torch.channels_last  # 1.1-2.1x faster than NCHW for these small convs on CPU (oneDNN)
PRECISIONS = ("fp32", "tf32", "bf16")  # IEEE fp32; TF32 convolutions and matmuls (CUDA only); bf16 autocast
DETERMINISTIC = True  # on CUDA: deterministic cuDNN and torch algorithms (benchmarks/ flip it to time the cost)


@dataclass(frozen=True)
class Seeds:
    """Seeds of the four random streams of a run."""

    init: int
    order: int
    augment: int
    dropout: int

    @classmethod
    def of(cls, seed: int) -> Seeds:
        """Four independent 32-bit seeds derived from one run seed (numpy's SeedSequence)."""
        return cls(*(int(s) for s in np.random.SeedSequence(seed).generate_state(4)))


STREAMS = tuple(f.name for f in dataclasses.fields(Seeds))  # init, order, augment, dropout


def parse_vary(text: str) -> str:
    """``--vary``'s canonical form: ``all``, ``none``, or the named streams comma-joined in :data:`STREAMS` order.
    Raises ValueError naming what is not a stream."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names in ({"all"}, {"none"}):
        return names.pop()
    unknown = names - set(STREAMS)
    if unknown or not names:
        raise ValueError(f"--vary takes all, none, or a comma list of {', '.join(STREAMS)}; not {text!r}")
    return "all" if names == set(STREAMS) else ",".join(s for s in STREAMS if s in names)


@dataclass(frozen=True)
class Run:
    """One (step, seed) run, worked out once when it is planned (:meth:`plan`): the step, its effective recipe, recipe
    hash, parameter count and stream seeds. Everything downstream reads it; nothing recomputes it. The step itself
    travels with the run, so a worker trains it without looking it up by name."""

    spec: zoo.Step = field(repr=False)
    seed: int
    recipe: zoo.Recipe  # the step's recipe with this run's overrides (--epochs, --quick) applied
    recipe_hash: str  # zoo.recipe_hash: what makes two runs' rows comparable
    params: int  # trainable parameters of the network
    quick: bool = False
    overrides: str = "{}"  # JSON of the recipe fields overridden on the command line
    precision: str = "fp32"  # PRECISIONS: fp32 is IEEE fp32 on every device; tf32 and bf16 are opt-ins
    device: str = "cpu"
    threads: int | None = None  # CPU threads; None: torch's default
    vary: str = "all"  # the streams this run's seed drives (parse_vary); the others come from base_seed
    base_seed: int = 0  # the seed of the streams held still; 0 where vary is "all"
    seeds: Seeds = field(init=False, repr=False, compare=False)  # the four stream seeds

    @classmethod
    def plan(cls, step: str, seed: int, *, epochs: int | None = None, quick: bool = False, **options) -> Run:
        """The run of ``step`` with ``seed``: ``epochs`` and ``quick`` override the recipe; ``options`` are the other
        fields. Builds the network once, for its layers and parameter count; the seeds of a step share the result
        (``dataclasses.replace(run, seed=...)``)."""
        spec = zoo.get_step(step)
        override = epochs or (min(QUICK["epochs"], spec.recipe.epochs) if quick else None)
        recipe = dataclasses.replace(spec.recipe, epochs=override) if override else spec.recipe
        model = spec.build(recipe)
        return cls(
            spec,
            seed,
            recipe,
            zoo.recipe_hash(spec, recipe, repr(model), quick),
            zoo.count_params(model),
            quick=quick,
            overrides=json.dumps({"epochs": epochs} if epochs else {}),
            **options,
        )

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        object.__setattr__(self, "vary", parse_vary(self.vary))
        if self.vary == "all":  # every stream comes from the run seed: the base seed plays no part
            object.__setattr__(self, "base_seed", 0)
        own, base = Seeds.of(self.seed), Seeds.of(self.base_seed)
        varied = STREAMS if self.vary == "all" else self.vary.split(",")
        object.__setattr__(self, "seeds", Seeds(**{s: getattr(own if s in varied else base, s) for s in STREAMS}))

    @property
    def step(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Record:
    """One seed's epoch: what it measured, and how long it took."""

    epoch: int  # from 1
    train_loss: float  # mean over the epoch's training images
    train_acc: float  # percent, on augmented images with dropout on
    test_loss: float  # mean over the test set
    test_acc: float  # percent
    test_correct: int
    test_total: int
    lr: float  # the learning rate of this epoch
    epoch_seconds: float  # wall time of the block's epoch, train + test
    images_per_sec: float  # this seed's training images per second (the block trains block_size times as many)
    block_size: int  # seeds trained together in this epoch, this one included
    precision: str | None = None  # the precision actually used (tf32 on a GPU without it is fp32); None in records
    # kept from before it was recorded, whose rows then take the run's


@dataclass
class SeedEpoch:
    """One seed's finished epoch: its record, its test-set predictions and a maker of its checkpoint state."""

    record: Record
    predictions: torch.Tensor  # (n_test,) uint8 predicted labels, test-set order, on the CPU
    correct: torch.Tensor  # (n_test,) bool: predictions == labels
    state: Callable[[], dict[str, Any]] = field(repr=False)  # a copy; take it before the trainer moves on


@dataclass
class Epoch:
    """One finished epoch of the block: a :class:`SeedEpoch` per seed still training, and the seeds that failed in
    this epoch with a one-line reason each."""

    epoch: int
    seeds: dict[int, SeedEpoch]
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
            raise ValueError(f"seeds {r.seed} and {first.seed} differ in {', '.join(differ)}: not one block")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a block trains each seed once, not {seeds}")


def train(
    runs: Sequence[Run],
    data: MNIST,
    resume: Mapping[int, dict[str, Any]] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> Iterator[Epoch]:
    """Yield one :class:`Epoch` per epoch of ``runs`` (seeds of one step, trained together; one run is a block of
    one). ``resume`` maps each seed to a :meth:`SeedEpoch.state`, all of one epoch; training continues after it.
    ``on_batch(epoch, batches done, batches per epoch)`` is called after every optimizer step."""
    check_block(runs)
    run, S = runs[0], len(runs)
    recipe = run.recipe
    device = torch.device(run.device)
    if run.threads:
        torch.set_num_threads(run.threads)
    precision = configure(device, run.precision)
    data = data.to(device)
    train_idx = stratified_slice(data.train_y, QUICK["fraction"]) if run.quick else None
    n_train = len(train_idx) if train_idx is not None else len(data.train_y)
    n_steps = -(-n_train // recipe.batch_size)
    seeds = [r.seeds for r in runs]

    singles = []
    for s in seeds:
        torch.manual_seed(s.init)  # the network is built right after seeding the global generator
        singles.append(run.spec.build(recipe))
    model = stack(singles).to(device, memory_format=CHANNELS_LAST)
    del singles
    params = list(model.parameters())
    masks = Masks([s.dropout for s in seeds], device)
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
        held = {st["epoch"] for st in states}
        if len(held) != 1:
            raise ValueError(f"a block resumes its seeds from one epoch, not from {sorted(held)}")
        first = held.pop() + 1
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
                angles = torch.stack([random_angles(b, recipe.rotation, g, "cpu") for g in augments], 1)
                angles = to_device(angles.reshape(-1), device)  # (b*S,)
            x = to_input(data.train_x[idx.reshape(-1)], recipe.mean, recipe.std, angles, recipe.fill)  # (b*S, 1, H, W)
            x = x.view(b, S, *x.shape[2:]).contiguous(memory_format=CHANNELS_LAST)
            y = data.train_y[idx]  # (b, S)
            masks.at(epoch, step)
            with autocast:
                out = per_seed(model(x), S).float()  # (b, S, 10)
            losses = seed_losses(out, y)  # (S,) each seed's own batch mean
            for p in params:
                p.grad = None
            losses.sum().backward()
            _sgd(params, momenta, lrs, recipe.momentum)
            loss_sum += losses.detach() * b
            correct += (out.detach().argmax(2) == y).sum(0)
            if on_batch is not None:
                on_batch(epoch, step + 1, n_steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the clock reads the work done, not the work queued
        train_seconds = time.perf_counter() - start

        failed = {}
        finite = torch.isfinite(loss_sum).tolist()
        for s, r in enumerate(runs):
            if live[s] and not finite[s]:
                failed[r.seed] = f"training loss {loss_sum[s].item() / n_train} in epoch {epoch}"
                live[s] = False
                _freeze(model, momenta, s, S)
        test_loss, test_correct, predictions = evaluate(model, data, recipe, autocast, S)
        n_test = len(data.test_y)
        labels = data.test_y.cpu()
        seconds = time.perf_counter() - start
        trained: dict[int, SeedEpoch] = {}
        for s, r in enumerate(runs):
            if not live[s]:
                continue
            test_acc = 100.0 * test_correct[s] / n_test
            books[s].step(test_acc)
            record = Record(
                epoch=epoch,
                train_loss=loss_sum[s].item() / n_train,
                train_acc=100.0 * correct[s].item() / n_train,
                test_loss=test_loss[s],
                test_acc=test_acc,
                test_correct=test_correct[s],
                test_total=n_test,
                lr=lrs[s],
                epoch_seconds=seconds,
                images_per_sec=n_train / train_seconds,
                block_size=S,
                precision=precision,
            )

            def state(epoch=epoch, s=s) -> dict[str, Any]:  # copies, in torch's own state-dict formats
                return {
                    "epoch": epoch,
                    "model": {k: seed_rows(v, S, s).clone() for k, v in model.state_dict().items()},
                    "optimizer": books[s].optimizer_state([seed_rows(m, S, s).clone() for m in momenta], len(params)),
                    "scheduler": books[s].scheduler_state(),
                    "rng": {"order": orders[s].get_state(), "augment": augments[s].get_state()},
                }

            trained[r.seed] = SeedEpoch(record, predictions[s], predictions[s].long() == labels, state)
        yield Epoch(epoch, trained, failed)
        if not any(live):
            return


def seed_losses(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Each seed's negative log-likelihood over its images, their ``mean`` or ``sum``: ``out`` (b, S, 10)
    log-probabilities, ``y`` (b, S) labels -> (S,). On a CPU through ``nll_loss`` seed by seed, whose cascade sum
    every CPU row was computed with (a plain sum of the gathered values differs in the last bit about every other
    batch); elsewhere through ``gather``, deterministic on CUDA, where ``nll_loss`` is not (it accumulates with
    atomicAdd, and ``use_deterministic_algorithms`` refuses it). The gradients agree bit for bit."""
    if out.device.type == "cpu":
        return torch.stack([F.nll_loss(out[:, s], y[:, s], reduction=reduction) for s in range(out.shape[1])])
    picked = -out.gather(2, y.unsqueeze(2)).squeeze(2)  # (b, S)
    return picked.mean(0) if reduction == "mean" else picked.sum(0)


def evaluate(model: nn.Module, data: MNIST, recipe: zoo.Recipe, autocast, S: int):
    """Per seed: mean test loss, correct count, and predicted labels (uint8, CPU), as lists of S. Each forward takes
    at most a training batch of images (``recipe.batch_size`` per seed), so evaluation never needs more memory than
    a training step; the loss is summed per :data:`EVAL_BATCH` images, and a network's outputs do not depend on how
    its images are batched, so the sums are the same whatever the chunk."""
    model.eval()
    loss = torch.zeros(S, device=data.test_y.device)
    preds = []
    with torch.inference_mode(), autocast:
        for i in range(0, len(data.test_y), EVAL_BATCH):
            chunks = []
            for j in range(i, min(i + EVAL_BATCH, len(data.test_y)), recipe.batch_size):
                x = to_input(data.test_x[j : min(j + recipe.batch_size, i + EVAL_BATCH)], recipe.mean, recipe.std)
                x = x.expand(-1, S, -1, -1).contiguous(memory_format=CHANNELS_LAST)  # every seed sees the same images
                chunks.append(per_seed(model(x), S).float())  # (c, S, 10)
            out = torch.cat(chunks)
            y = data.test_y[i : i + EVAL_BATCH]
            loss += seed_losses(out, y[:, None].expand(-1, S), reduction="sum")
            preds.append(out.argmax(2))
    pred = torch.cat(preds).t()  # (S, n)
    n = pred.shape[1]
    correct = (pred == data.test_y).sum(1).tolist()
    return [v / n for v in loss.tolist()], correct, list(pred.to("cpu", torch.uint8))


def configure(device: torch.device, precision: str) -> str:
    """Set torch's numerics for ``precision`` on ``device`` and return the precision actually used. fp32 is IEEE
    fp32 everywhere: on a GPU, cuDNN's convolutions would otherwise run in TF32 (its default on Ampere and newer), so
    TF32 is its own precision, asked for by name. On CUDA, every kernel is a deterministic one (cuDNN's deterministic
    algorithms, ``use_deterministic_algorithms``, cuBLAS's fixed workspace), so a run repeats bit for bit."""
    if device.type != "cuda":
        return "fp32" if precision == "tf32" else precision
    tf32 = precision == "tf32" and torch.cuda.get_device_capability(device) >= (8, 0)
    try:
        torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = (
            "tf32" if tf32 else "ieee"
        )
    except AttributeError:  # torch before the fp32_precision API
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    if DETERMINISTIC:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts in the process
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = DETERMINISTIC, False
    torch.use_deterministic_algorithms(DETERMINISTIC)
    return "tf32" if tf32 else "fp32" if precision == "tf32" else precision


def scheduler(recipe: zoo.Recipe, optimizer: torch.optim.Optimizer):
    """The recipe's learning-rate schedule over ``optimizer``, or None."""
    if recipe.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=recipe.gamma, patience=recipe.patience
        )
    return None


class _Book:
    """One seed's learning rate: a torch SGD over one placeholder parameter, driven by the step's torch scheduler,
    so StepLR and ReduceLROnPlateau keep their exact semantics and state format per seed. It never moves a weight."""

    def __init__(self, recipe: zoo.Recipe):
        self.optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr, momentum=recipe.momentum)
        self.scheduler = scheduler(recipe, self.optimizer)

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
        """``torch.optim.SGD.state_dict()`` of the seed's network alone (a copy)."""
        group = copy.deepcopy(dict(self.optimizer.state_dict()["param_groups"][0], params=list(range(n_params))))
        return {"state": {i: {"momentum_buffer": m} for i, m in enumerate(momenta)}, "param_groups": [group]}

    def scheduler_state(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts[0].dim() else parts[0]


@torch.no_grad()
def _sgd(params, momenta, lrs: list[float], momentum: float) -> None:
    """torch's SGD step (no dampening, weight decay or Nesterov), ``buf = momentum * buf + grad``, then
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
