"""What a sweep asks for, planned against its results folder: the options (:class:`SweepConfig`), the runs
(:class:`cnn.train.Run`, each worked out once), what is done and what resumes (:class:`Plan`), and the blocks of seeds
that train together, one Tune trial each (:class:`Block`). Nothing here starts Ray or trains."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnn import memory, stepfiles, zoo
from cnn.block import unstackable
from cnn.train import PRECISIONS, Run, parse_vary
from sweeps import BadSweep, decide, export, layout, results
from sweeps.layout import RunKey
from sweeps.protocol import check_safe

# Seeds per trial when --seeds-per-trial is not given. CPU: 1, since blocks pay little and unevenly there
# (benchmarks/results/block-cpu.txt: best 1.7x one seed alone at S=4 for s001-model3, 1.15x at S=2 for s004-exp1,
# slower than it at S>=8; on one thread 1.15x and 0.92x at S=4); with one thread per run, N runs on N cores stay
# busy. GPU: not measured yet; 16 seeds give every kernel 16 models' work, and fractional --gpus-per-trial lets
# several blocks share one GPU.
SEEDS_PER_TRIAL = {"cpu": 1, "cuda": 16}


@dataclass(frozen=True)
class SweepConfig:
    """What ``sweep run`` was asked for. Every option is checked here, before anything starts."""

    steps: tuple[str, ...]  # names or glob patterns; "all" is every step
    steps_from: tuple[Path, ...] = ()  # step files whose steps can be named too (cnn.stepfiles)
    seeds: int = 5  # seeds per step
    seed_start: int = 0  # the first seed
    out: Path = Path("results")
    data_dir: Path | None = None
    num_cpus: int | None = None  # of a local Ray; None: all
    num_gpus: int | None = None  # of a local Ray; None: all
    cpus_per_trial: float = 1  # also the run's torch threads
    gpus_per_trial: float = 0  # > 0 trains on CUDA; fractions share a GPU
    address: str | None = None  # a running Ray cluster to join
    storage: str | None = None  # Tune's state; None: OUT/tune
    epochs: int | None = None  # overrides every recipe's epochs
    quick: bool = False
    precision: str = "fp32"  # cnn.train.PRECISIONS: fp32 | tf32 (CUDA only) | bf16
    max_failures: int = 2  # retries of a trial whose worker fails
    vary: str = "all"  # the random streams the seed drives: all, none, or a comma list (cnn.train.parse_vary)
    base_seed: int = 0  # the seed of the streams not varied
    seeds_per_trial: int | None = None  # seeds of one step per trial, trained as one network; None: per device
    gpu_memory: float | None = None  # GiB of each GPU; None: the local GPU's, if one is visible
    until_decided: bool = False  # seeds per step chosen by sweeps.decide's rule, not fixed at `seeds`
    min_seeds: int = decide.MIN_SEEDS  # with until_decided: seeds to start each step with
    max_seeds: int = decide.MAX_SEEDS  # with until_decided: seeds per step at most
    target: float = decide.TARGET  # with until_decided: the verdict's target accuracy, percent
    last_k: int = decide.LAST_K  # with until_decided: the epochs a consistent run holds the target through
    wait_for_nodes: float = 900  # s, that a joined cluster's autoscaler may take to add a node that holds a trial
    log_to: tuple[str, ...] = ()  # where else every run's metrics go: tensorboard, mlflow, wandb (sweeps.export)

    @property
    def block_size(self) -> int:
        """``seeds_per_trial``, or the device's default: :data:`SEEDS_PER_TRIAL`."""
        return self.seeds_per_trial or SEEDS_PER_TRIAL["cuda" if self.gpus_per_trial > 0 else "cpu"]

    def trial_memory(self) -> int | None:
        """Bytes of GPU memory a trial may use (its share of one GPU), or None: on the CPU, or where the size of the
        GPUs is unknown (a cluster joined from a head without one, and no --gpu-memory)."""
        if not self.gpus_per_trial:
            return None
        if self.gpu_memory is not None:
            total = self.gpu_memory * 2**30
        elif torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
        else:
            return None
        return int(self.gpus_per_trial * total)

    def __post_init__(self):
        try:
            object.__setattr__(self, "vary", parse_vary(self.vary))
        except ValueError as e:
            raise BadSweep(str(e)) from None
        checks = [
            (self.seeds >= 1, f"--seeds must be at least 1, not {self.seeds}"),
            (self.seed_start >= 0, f"--seed-start must be 0 or more, not {self.seed_start}"),
            (self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be positive, not {self.cpus_per_trial:g}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must not be negative, not {self.gpus_per_trial:g}"),
            (
                self.gpus_per_trial <= 1,
                f"--gpus-per-trial {self.gpus_per_trial:g} gives a trial GPUs it cannot use: a trial trains on one "
                "GPU; train more seeds per trial with --seeds-per-trial",
            ),
            (
                self.gpu_memory is None or self.gpu_memory > 0,
                f"--gpu-memory must be positive (GiB), not {self.gpu_memory}",
            ),
            (self.min_seeds >= 1, f"--min-seeds must be at least 1, not {self.min_seeds}"),
            (self.max_seeds >= self.min_seeds, f"--max-seeds must be at least --min-seeds, not {self.max_seeds}"),
            (0 < self.target <= 100, f"--target must be above 0 and at most 100 (percent), not {self.target:g}"),
            (self.last_k >= 1, f"--last-k must be at least 1, not {self.last_k}"),
            (self.num_cpus is None or self.num_cpus >= 1, f"--num-cpus must be at least 1, not {self.num_cpus}"),
            (self.num_gpus is None or self.num_gpus >= 0, f"--num-gpus must not be negative, not {self.num_gpus}"),
            (self.max_failures >= 0, f"--max-failures must be 0 or more, not {self.max_failures}"),
            (self.base_seed >= 0, f"--base-seed must be 0 or more, not {self.base_seed}"),
            (self.wait_for_nodes >= 0, f"--wait-for-nodes must be 0 or more, not {self.wait_for_nodes:g}"),
            (
                self.seeds_per_trial is None or self.seeds_per_trial >= 1,
                f"--seeds-per-trial must be at least 1, not {self.seeds_per_trial}",
            ),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"),
            (
                self.precision != "tf32" or self.gpus_per_trial > 0,
                "--tf32 is a GPU precision: give --gpus-per-trial, or train in fp32 on the CPU",
            ),
            (
                self.out.expanduser().resolve() != Path.cwd(),
                f"--out '{self.out}' is the current folder; name a results folder of its own, e.g. --out results",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise BadSweep(message)
        export.check(self.log_to)


def plan(config: SweepConfig) -> list[Run]:
    """The runs a sweep asks for, in zoo order: ``seeds`` per step, or with ``until_decided`` every seed the rule may
    start (``max_seeds``). Each step's network is built once, for all its seeds. Steps come from the zoo, the installed
    packages and the files ``steps_from`` (:mod:`cnn.stepfiles`); each run carries its step from here on."""
    device, threads = ("cuda" if config.gpus_per_trial > 0 else "cpu"), max(1, int(config.cpus_per_trial))
    runs = []
    with stepfiles.using(config.steps_from):
        for step in zoo.select(list(config.steps)):
            first = Run.plan(
                step.name,
                config.seed_start,
                epochs=config.epochs,
                quick=config.quick,
                precision=config.precision,
                device=device,
                threads=threads,
                vary=config.vary,
                base_seed=config.base_seed,
            )
            n = config.max_seeds if config.until_decided else config.seeds
            too_long = config.until_decided and first.recipe.epochs < config.last_k
            if too_long:
                raise BadSweep(
                    f"--last-k {config.last_k} is longer than {step.name}'s {first.recipe.epochs} epoch(s): every run "
                    "would be too short to judge, and no number of seeds could decide it"
                )
            runs += [dataclasses.replace(first, seed=s) for s in range(config.seed_start, config.seed_start + n)]
    return runs


def changed_steps(rows: Iterable[tuple[str, str, bool, int]], paths: Iterable[Path]) -> tuple[list[str], list[str]]:
    """The names of the steps of the files ``paths`` and of the installed packages, loaded as ``sweep run`` loads
    them; and a line for each recipe hash under which one of them has rows (``rows``: the step, recipe hash, quick flag
    and epochs of each finished run) that the step as it is now would not give: its code, its network or its recipe
    has changed since."""
    lines = []
    with stepfiles.using(paths) as steps:
        names = [s.name for s in steps]
        for step, old, quick, epochs in sorted(set(rows)):
            now = Run.plan(step, 0, epochs=int(epochs), quick=bool(quick)).recipe_hash if step in names else old
            if now != old:
                lines.append(
                    f"{step}: its rows under recipe {old} come from an earlier version of "
                    f"{zoo.get_step(step).source} (the step now hashes to {now}): they stay as they are, and the new "
                    "version needs a results folder of its own"
                )
    return names, lines


@dataclass(frozen=True)
class Plan:
    """What a sweep will do in its results folder: the runs asked for, those done, those that resume."""

    out: Path
    runs: list[Run]
    folder: layout.Folder  # what was read of the results folder
    done: frozenset[RunKey]  # the runs asked for that have rows in the folder
    resume: dict[RunKey, results.Resume]  # the runs asked for, not done, whose marker names a checkpoint
    sizes: dict[str, int]  # step -> seeds per trial (block_sizes)
    notes: list[str]  # why a step's blocks are smaller than asked
    marked: frozenset[RunKey]  # the runs asked for, not done, that an earlier sweep started (they have a marker)

    @property
    def todo(self) -> list[Run]:
        return [r for r in self.runs if layout.key(r) not in self.done]

    def held(self, run: Run) -> int:
        """Epochs the run's checkpoint holds (0: none)."""
        resume = self.resume.get(layout.key(run))
        return resume.epoch if resume else 0


def prepare(config: SweepConfig) -> Plan:
    """Plan the sweep against its results folder: move damaged files aside, refuse incompatible rows, and find what
    is done and what resumes. Starts nothing; ``sweep run --dry-run`` prints this."""
    out = config.out.expanduser().resolve()
    folder = layout.read(out)
    runs, done = plan(config), results.finished(folder)
    results.check_compatible(out, done, runs)
    asked = {layout.key(r) for r in runs}
    resume = {key: r for key, r in results.resumable(out).items() if key in asked and key not in done}
    for r in resume.values():
        if "://" not in r.checkpoint:  # remote checkpoints are checked by the worker that loads them
            check_safe(Path(r.checkpoint))
    sizes, notes = block_sizes(config, runs)
    marked = frozenset(f.key for f in layout.markers(out)) & asked - set(done)
    return Plan(out, runs, folder, frozenset(done) & asked, resume, sizes, notes, marked)


def block_sizes(config: SweepConfig, runs: list[Run]) -> tuple[dict[str, int], list[str]]:
    """Seeds per trial for each step: ``config.block_size``, made smaller (halved until it fits) where a block that
    large would not fit in a trial's share of GPU memory (:mod:`cnn.memory`), with a note saying so. Raises BadSweep
    where not even one seed fits. A step whose seeds cannot train as one block network (:func:`_apart`) trains one
    seed per trial, and a note says why."""
    budget, size = config.trial_memory(), config.block_size
    sizes, notes = {}, []
    for run in {r.step: r for r in runs}.values():
        apart = _apart(run) if size > 1 else ""
        if apart:  # a network whose seeds cannot train as one block network trains one seed per trial
            sizes[run.step] = 1
            notes.append(f"{run.step}: 1 seed per trial, not {size}: {apart}")
            continue
        sizes[run.step] = size if budget is None else memory.largest_block(run, size, budget)
        if sizes[run.step] == size:
            continue
        share = f"a trial's {budget / 2**30:.1f} GiB ({config.gpus_per_trial:g} of a GPU)"
        if not sizes[run.step]:
            need = memory.peak_bytes(run, 1) / 2**30
            raise BadSweep(
                f"{run.step}: one seed needs about {need:.1f} GiB of GPU memory, more than {share}; raise "
                "--gpus-per-trial"
            )
        notes.append(
            f"{run.step}: {sizes[run.step]} seeds per trial, not {size}: a block of {size} needs about "
            f"{memory.peak_bytes(run, size) / 2**30:.1f} GiB of GPU memory, more than {share}"
        )
    return sizes, notes


def _apart(run: Run) -> str:
    """Why the seeds of a run's step cannot train as one block network: a layer that :func:`cnn.block.stack` cannot
    split, or, for a step from a step file, a forward that mixes the seeds (``Origin.block``); "" where they can."""
    layer = unstackable(run.spec.build(run.recipe))
    return f"its {layer} cannot be split per seed" if layer else run.spec.origin.block if run.spec.origin else ""


@dataclass(frozen=True)
class Block:
    """The runs one Tune trial trains together: seeds of one step (and one ``--vary`` setting) that start from the
    same epoch, with the checkpoint each resumes from, if any."""

    runs: tuple[Run, ...]
    resume: dict[int, str] = field(default_factory=dict)  # seed -> checkpoint URI

    @property
    def name(self) -> str:
        """The trial's name: the run's name for one run, else ``<step>#<seed>+<seed>+...[-<tag>]``."""
        first = layout.key(self.runs[0])
        if len(self.runs) == 1:
            return first.name
        return f"{first.step}#{'+'.join(str(r.seed) for r in self.runs)}" + (f"-{first.tag}" if first.tag else "")

    @property
    def recipe(self):
        return self.runs[0].recipe

    @property
    def params(self) -> int:
        return self.runs[0].params

    @property
    def config(self) -> dict:
        """The trial's config: its name and its runs' keys, as plain lists (Tune copies configs)."""
        return {"run": self.name, "keys": [list(layout.key(r)) for r in self.runs]}

    @classmethod
    def of(cls, config: dict, runs: dict[RunKey, Run], resume: dict[RunKey, str]) -> Block:
        """The block of a trial's config, from the sweep's runs and their checkpoints (as a worker rebuilds it)."""
        keys = [RunKey(*k) for k in config["keys"]]
        return cls(tuple(runs[k] for k in keys), {k.seed: resume[k] for k in keys if k in resume})


def form_blocks(sweep: Plan, runs: list[Run] | None = None) -> list[Block]:
    """The runs left to train (or ``runs``), in blocks of up to their step's size (``sweep.sizes``): per step and
    ``--vary`` setting, the seeds that hold the same epoch (0, or their checkpoint's), in seed order."""
    groups: dict[tuple, list[Run]] = {}
    for run in sweep.todo if runs is None else runs:
        groups.setdefault((run.step, layout.key(run).tag, sweep.held(run)), []).append(run)
    blocks = [g[i : i + n] for g in groups.values() for n in [sweep.sizes[g[0].step]] for i in range(0, len(g), n)]
    return [
        Block(tuple(b), {r.seed: sweep.resume[layout.key(r)].checkpoint for r in b if sweep.held(r)}) for b in blocks
    ]
