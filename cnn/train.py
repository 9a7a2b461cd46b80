"""Train one (step, seed) run: a generator of per-epoch records, with no printing and no Ray.

The data stays on the run's device as uint8 tensors; each batch is gathered, rotated and normalised there
(:mod:`cnn.data`). Four random streams drive the four sources of randomness. Each is seeded from the run seed, or,
for the streams a ``--vary`` run holds still, from its base seed (:attr:`Run.seeds`):

* ``init``: the global generator while the network is built (PyTorch's default initialisation);
* ``order``: a CPU generator for the per-epoch shuffle (``DataLoader(shuffle=True)``, ``drop_last=False``);
* ``augment``: a CPU generator for the per-image rotation angles (moved to the device after the draw);
* ``dropout``: the key of the counter-based dropout masks (:mod:`cnn.draws`), a function of (dropout seed, epoch,
  step, call, element).

So no draw depends on the device, and :mod:`cnn.block`, which trains several seeds of one step as one batched
network, draws exactly the same numbers for each of its seeds. (Until issue 9 the angles were drawn on the device
and the masks from the global generator: CPU rows then differ from today's only through the masks.)

On a CPU the same run gives bit-identical records twice, and a run resumed from the checkpoint of epoch k gives the
same records as one never stopped. A run whose training loss is not finite at the end of an epoch raises
:class:`Diverged`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnn import zoo
from cnn.data import MNIST, random_angles, stratified_slice, to_input
from cnn.draws import Masks

# --quick: stratified share of the training set, and epochs. One epoch because the two 6.3M-param baselines cost
# ~180 core-seconds per quick epoch each on a 2-core CPU (benchmarks/), and `sweep run all --quick` must fit 10 min.
QUICK = {"fraction": 0.1, "epochs": 1}
EVAL_BATCH = 1000  # test images per forward pass; does not change the metrics' meaning
METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_correct", "test_total", "lr")
TIMINGS = ("epoch_seconds", "images_per_sec")  # vary run to run; everything in METRICS must not on a CPU
CHANNELS_LAST = torch.channels_last  # 1.1-2.1x faster than NCHW for these small convs on CPU (oneDNN)
ENGINE = "single"  # the `engine` column of this trainer's rows; cnn.block's is "block"


class Diverged(ArithmeticError):
    """A run's training loss is not finite (NaN or inf) at the end of an epoch. The message is one line."""


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
    """One (step, seed) run, worked out once when it is planned (:meth:`plan`): its effective recipe, recipe hash and
    parameter count, and so the fixed columns of its rows. Everything downstream reads it; nothing recomputes it."""

    step: str
    seed: int
    recipe: zoo.Recipe  # the step's recipe with this run's overrides (--epochs, --quick) applied
    recipe_hash: str  # zoo.recipe_hash: what makes two runs' rows comparable
    params: int  # trainable parameters of the network
    quick: bool = False
    overrides: str = "{}"  # JSON of the recipe fields overridden on the command line
    precision: str = "fp32"  # fp32 | bf16 (autocast; an explicit opt-in, recorded with the run)
    device: str = "cpu"
    threads: int | None = None  # CPU threads; None: torch's default
    vary: str = "all"  # the streams this run's seed drives (parse_vary); the others come from base_seed
    base_seed: int = 0  # the seed of the streams held still; 0 where vary is "all"

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
            step,
            seed,
            recipe,
            zoo.recipe_hash(spec, recipe, repr(model), quick),
            zoo.count_params(model),
            quick=quick,
            overrides=json.dumps({"epochs": epochs} if epochs else {}),
            **options,
        )

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, not {self.precision!r}")
        object.__setattr__(self, "vary", parse_vary(self.vary))
        if self.vary == "all":  # every stream comes from the run seed: the base seed plays no part
            object.__setattr__(self, "base_seed", 0)

    @property
    def seeds(self) -> Seeds:
        """The four stream seeds: the run seed's for the streams it varies, the base seed's for the others."""
        own, base = Seeds.of(self.seed), Seeds.of(self.base_seed)
        varied = STREAMS if self.vary == "all" else self.vary.split(",")
        return Seeds(**{s: getattr(own if s in varied else base, s) for s in STREAMS})

    @property
    def tag(self) -> str:
        """'' for a run whose seed drives every stream; else ``vary-<streams joined by +>-b<base seed>``, which tells
        its files apart from the same seed's ``all`` run (sweeps.layout parses it)."""
        return "" if self.vary == "all" else f"vary-{self.vary.replace(',', '+')}-b{self.base_seed}"

    @property
    def key(self) -> tuple[str, int, str]:
        """What names the run's files: (step, seed, tag)."""
        return self.step, self.seed, self.tag

    @property
    def name(self) -> str:
        return f"{self.step}#{self.seed}" + (f"-{self.tag}" if self.tag else "")

    @property
    def columns(self) -> dict[str, Any]:
        """The columns that every row of this run shares (sweeps.layout.EPOCH_COLUMNS says what each means)."""
        seeds = self.seeds
        return {
            "submission": zoo.get_step(self.step).submission,
            "seed": self.seed,
            "epochs": self.recipe.epochs,
            "params": self.params,
            "run_id": "/".join(filter(None, (self.step, f"seed={self.seed}", self.recipe_hash, self.tag))),
            "recipe_hash": self.recipe_hash,
            "quick": self.quick,
            "overrides": self.overrides,
            "precision": self.precision,
            "vary": self.vary,
            "base_seed": self.base_seed,
            **{f"seed_{s}": getattr(seeds, s) for s in STREAMS},
        }


@dataclass
class Epoch:
    """One finished epoch: its record, the test-set predictions (uint8, test-set order) and a checkpoint maker."""

    record: dict[str, Any]
    predictions: torch.Tensor
    state: Callable[[], dict[str, Any]] = field(repr=False)


def place(run: Run, data: MNIST) -> tuple[torch.device, MNIST, torch.Tensor | None, int]:
    """Set torch's threads for ``run`` and put ``data`` on its device: (device, data there, the training images'
    indices (a stratified slice with ``--quick``; None: all), how many that is). Both engines start here."""
    device = torch.device(run.device)
    if run.threads:
        torch.set_num_threads(run.threads)
    data = data.to(device)
    train_idx = stratified_slice(data.train_y, QUICK["fraction"]) if run.quick else None
    return device, data, train_idx, len(train_idx) if train_idx is not None else len(data.train_y)


def train(run: Run, data: MNIST, resume: dict[str, Any] | None = None) -> Iterator[Epoch]:
    """Yield one :class:`Epoch` per epoch of ``run``; with ``resume`` (an ``Epoch.state()``), continue after it."""
    recipe, seeds = run.recipe, run.seeds
    device, data, train_idx, n_train = place(run, data)

    torch.manual_seed(seeds.init)
    model = zoo.get_step(run.step).build(recipe).to(device, memory_format=CHANNELS_LAST)
    masks = Masks([seeds.dropout])
    masks.attach(model)
    order = torch.Generator().manual_seed(seeds.order)
    augment = torch.Generator().manual_seed(seeds.augment)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    scheduler = _scheduler(recipe, optimizer)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16")

    first = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        order.set_state(resume["rng"]["order"])
        augment.set_state(resume["rng"]["augment"])
        first = resume["epoch"] + 1

    for epoch in range(first, recipe.epochs + 1):
        start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        model.train()
        perm = torch.randperm(n_train, generator=order)
        if train_idx is not None:
            perm = train_idx[perm]
        perm = perm.to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for step, i in enumerate(range(0, n_train, recipe.batch_size)):
            idx = perm[i : i + recipe.batch_size]
            angles = random_angles(len(idx), recipe.rotation, augment, "cpu").to(device) if recipe.rotation else None
            masks.at(epoch, step)
            x = to_input(data.train_x[idx], recipe.mean, recipe.std, angles, recipe.fill)
            x, y = x.contiguous(memory_format=CHANNELS_LAST), data.train_y[idx]
            with autocast:
                out = model(x)
                loss = F.nll_loss(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.detach().argmax(1) == y).sum()
        train_seconds = time.perf_counter() - start
        if not torch.isfinite(loss_sum):
            raise Diverged(f"{run.name}: training loss {loss_sum.item() / n_train} in epoch {epoch}")

        test_loss, test_correct, predictions = evaluate(model, data, recipe, autocast)
        n_test = len(data.test_y)
        test_acc = 100.0 * test_correct / n_test
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(test_acc)
        elif scheduler is not None:
            scheduler.step()
        record = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / n_train,
            "train_acc": 100.0 * correct.item() / n_train,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "test_correct": test_correct,
            "test_total": n_test,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - start,
            "images_per_sec": n_train / train_seconds,
            "engine": ENGINE,
            "block_size": 1,
        }

        def state(epoch=epoch) -> dict[str, Any]:  # a copy: valid after the generator moves on
            return copy.deepcopy(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": {"order": order.get_state(), "augment": augment.get_state()},
                }
            )

        yield Epoch(record, predictions, state)


def evaluate(model, data: MNIST, recipe: zoo.Recipe, autocast) -> tuple[float, int, torch.Tensor]:
    """Mean test loss, correct count and the predicted labels (uint8, on the CPU) over the whole test set."""
    model.eval()
    loss, preds = torch.zeros((), device=data.test_y.device), []
    with torch.inference_mode(), autocast:
        for i in range(0, len(data.test_y), EVAL_BATCH):
            x = to_input(data.test_x[i : i + EVAL_BATCH], recipe.mean, recipe.std)
            out = model(x.contiguous(memory_format=CHANNELS_LAST)).float()
            loss += F.nll_loss(out, data.test_y[i : i + EVAL_BATCH], reduction="sum")
            preds.append(out.argmax(1))
    pred = torch.cat(preds)
    return loss.item() / len(pred), int((pred == data.test_y).sum()), pred.to("cpu", torch.uint8)


def _scheduler(recipe: zoo.Recipe, optimizer):
    if recipe.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=recipe.gamma, patience=recipe.patience
        )
    return None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    torch.save(state, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
