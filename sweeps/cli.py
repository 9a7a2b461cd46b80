"""The ``sweep`` command line. Commands parse options and hand over to library functions; bad input is one line on
stderr and exit code 2. ``report`` is added to this app by ``analysis.cli``, the layer above, which owns the entry
point."""

from __future__ import annotations

import dataclasses
import enum
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from cnn.errors import BadInput
from sweeps import decide, export


class OneLineErrors(TyperGroup):
    """The one place where bad input becomes one line on stderr and exit code 2: the library's ``BadInput`` errors
    and typer's own usage errors alike."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # returns typer.Exit's code (130: Ctrl-C)
        except BadInput as e:
            typer.echo(f"error: {e}", err=True)
            code = 2
        except Exception as e:  # typer's usage errors (its vendored click's) format themselves
            if not hasattr(e, "format_message"):
                raise
            if e.format_message():  # empty after no_args_is_help has shown the help
                typer.echo(f"error: {e.format_message()}", err=True)
            code = 2
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=OneLineErrors,
    help="Multi-seed sweeps of the step models from the seed submissions, on Ray Tune, with a report that tells a "
    "lucky 99.4 % run from a consistent one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
OUT_HELP = "Results folder (a Parquet dataset)."
STEPS_FROM = typer.Option(
    help="A step file: Python that declares steps of your own with cnn.zoo.declare (README, 'Your own model'). Repeat "
    "for several. Installed packages' steps (entry-point group cnn_sweeps.steps) are always there.",
    show_default="the zoo and installed packages' steps",
)
Logger = enum.Enum("Logger", {name: name for name in export.LOGGERS}, type=str)  # sweep run --log-to


def _version(value: bool) -> None:
    if value:
        from sweeps import project_version

        typer.echo(f"sweep (cnn-sweeps) {project_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    pass


@app.command()
def steps(
    name: Annotated[str | None, typer.Argument(help="Show one step in full.")] = None,
    steps_from: Annotated[list[Path] | None, STEPS_FROM] = None,
) -> None:
    """List the step models of the zoo (and of your step files), or show one in full: recipe, claims, the seed's own
    target, assumptions, network."""
    from cnn import stepfiles, zoo

    with stepfiles.using(steps_from or ()):
        if name is None:
            _list_steps(zoo.select(["all"]))
        else:
            _describe(zoo.describe(zoo.get_step(name)))


def _list_steps(steps) -> None:
    from cnn import zoo

    typer.echo(f"{'step':<20} {'params':>9} {'epochs':>6} {'batch':>5} {'claimed':>7} {'assumed':>7}  source")
    for s in steps:
        claim = f"{s.claims.best_test:.2f}" if s.claims.best_test else "-"
        params = zoo.count_params(s.model())
        typer.echo(
            f"{s.name:<20} {params:>9,} {s.recipe.epochs:>6} {s.recipe.batch_size:>5} {claim:>7} "
            f"{len(s.assumptions):>7}  {s.source}" + (f" > {s.title}" if s.title else "")
        )


def _describe(d) -> None:
    s, c, t = d.step, d.step.claims, d.step.target
    title = f": {s.title}" if s.title else ""
    typer.echo(f"{s.name}{title}  ({s.source}, step {s.order} of submission {s.submission})")
    if s.origin:
        typer.echo(f"from: {s.origin.file} (sha256 {s.origin.sha256}; its network's code hashes to {s.origin.code})")
        if s.origin.block:
            typer.echo(f"trains one seed per trial: {s.origin.block}")
    typer.echo(f"params: {d.params:,}" + (f" (seed says {c.params:,})" if c.params else ""))
    typer.echo("recipe:")
    for field, value, assumed in d.recipe:
        typer.echo(f"  {field:<11} {value}{'  (assumed)' if assumed else ''}")
    typer.echo("claims (one run):")
    for label, v in (("best test", c.best_test), ("best train", c.best_train), ("best epoch", c.best_epoch)):
        typer.echo(f"  {label:<11} {v if v is not None else '-'}")
    if c.log:
        typer.echo(f"  log        {' '.join(f'{a:.2f}' for a in c.log)}")
    if c.note:
        typer.echo(f"  note       {c.note}")
    typer.echo(f"target (the {'step file' if s.origin else 'seed'}'s own):")
    for label, v in (("accuracy", t.accuracy), ("params <", t.params), ("epochs <=", t.epochs)):
        typer.echo(f"  {label:<11} {'-' if v is None else f'{v:,}'}")
    typer.echo(f"  source     {t.source or '-'}")
    typer.echo("assumptions:" if d.assumptions else "assumptions: none")
    for line in d.assumptions:
        typer.echo(f"  - {line}")
    typer.echo("network:")
    for kind, shape, params in d.layers:
        typer.echo(f"  {kind:<12} {str(list(shape)):<16} {params:>9,}")


@app.command()
def run(
    steps: Annotated[list[str], typer.Argument(help="Step names or glob patterns (quote them), or 'all'.")],
    steps_from: Annotated[list[Path] | None, STEPS_FROM] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per step.", show_default="5, or 2 with --quick")] = None,
    seed_start: Annotated[int, typer.Option(help="First seed; raise it to add seeds to an existing sweep.")] = 0,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("results"),
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for a local Ray.", show_default="all")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs for a local Ray.", show_default="all")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs (and torch threads) per run.")] = 1,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per run; fractions share a GPU. >0 trains on CUDA.")] = 0,
    address: Annotated[
        str | None, typer.Option(help="Join a running Ray cluster, e.g. 'auto' on its head.", show_default="local")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Where Tune keeps its state: a path or s3://….", show_default="OUT/tune")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Override every recipe's epochs (recorded).", show_default="the recipe's")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="MNIST folder (holding MNIST/raw).", show_default="$SWEEP_DATA_DIR or ~/.cache/cnn-sweeps"),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="10 % stratified train slice, 1 epoch, full test set; rows marked quick.")
    ] = False,
    bf16: Annotated[
        bool, typer.Option(help="Train under bf16 autocast (recorded with the rows) instead of fp32.")
    ] = False,
    tf32: Annotated[
        bool,
        typer.Option(
            help="On a GPU, let convolutions and matmuls run in TF32 (recorded with the rows, never pooled with fp32), "
            "instead of IEEE fp32."
        ),
    ] = False,
    max_failures: Annotated[
        int, typer.Option(help="Retries of a run whose worker fails, from its last checkpoint.")
    ] = 2,
    dry_run: Annotated[
        bool, typer.Option(help="Print what would be trained, resumed and kept; start nothing.")
    ] = False,
    vary: Annotated[
        str,
        typer.Option(
            help="Random streams the seed varies: all, none, or a comma list of init, order, augment, "
            "dropout; the others stay at --base-seed's."
        ),
    ] = "all",
    base_seed: Annotated[int, typer.Option(help="Seed of the streams --vary holds still.")] = 0,
    seeds_per_trial: Annotated[
        int | None,
        typer.Option(
            help="Seeds of one step trained together in one trial, as one batched network; "
            "each seed trains as it would alone.",
            show_default="1 on CPU, 16 with --gpus-per-trial",
        ),
    ] = None,
    until_decided: Annotated[
        bool,
        typer.Option(
            help="Add seeds to each step until its verdict is decided, by a rule that stays valid however often it "
            "looks (a confidence sequence), instead of a fixed --seeds.",
        ),
    ] = False,
    min_seeds: Annotated[int, typer.Option(help="With --until-decided: seeds each step starts with.")] = (
        decide.MIN_SEEDS
    ),
    max_seeds: Annotated[int, typer.Option(help="With --until-decided: seeds per step at most.")] = decide.MAX_SEEDS,
    target: Annotated[
        float, typer.Option(help="With --until-decided: the target test accuracy of the verdict, percent.")
    ] = decide.TARGET,
    last_k: Annotated[
        int, typer.Option(help="With --until-decided: a consistent run holds the target in each of its last K epochs.")
    ] = decide.LAST_K,
    gpu_memory: Annotated[
        float | None,
        typer.Option(
            help="GiB of memory of each GPU, so that blocks are sized to fit a trial's share (a cluster whose head "
            "has no GPU).",
            show_default="the local GPU's",
        ),
    ] = None,
    wait_for_nodes: Annotated[
        float,
        typer.Option(
            help="Seconds to wait, on a joined cluster where no node can hold a trial yet, for its autoscaler to "
            "add one; then give up, saying what to check."
        ),
    ] = 900,
    log_to: Annotated[
        list[Logger] | None,
        typer.Option(
            help="Also send every run's per-epoch metrics to TensorBoard (files under OUT/tune), MLflow "
            "($MLFLOW_TRACKING_URI, else OUT/mlruns) or W&B ($WANDB_PROJECT; WANDB_MODE=offline keeps it on disk); "
            "repeat for more than one.",
            show_default="none",
        ),
    ] = None,
) -> None:
    """Train every (step, seed) run that the results folder does not hold yet, spread over Ray.

    Re-running the same command finishes an interrupted sweep: finished runs are kept, unfinished ones continue from
    their last checkpoint, and raising --seeds adds only the new seeds.
    """
    from sweeps.runner import SweepConfig, prepare, run_sweep

    config = SweepConfig(
        steps=tuple(steps),
        steps_from=tuple(steps_from or ()),
        seeds=_seeds(seeds, quick, until_decided),
        seed_start=seed_start,
        out=out,
        data_dir=data_dir,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        address=address,
        storage=storage,
        epochs=epochs,
        quick=quick,
        precision=_precision(bf16, tf32),
        max_failures=max_failures,
        vary=vary,
        base_seed=base_seed,
        seeds_per_trial=seeds_per_trial,
        gpu_memory=gpu_memory,
        until_decided=until_decided,
        min_seeds=min_seeds,
        max_seeds=max_seeds,
        target=target,
        last_k=last_k,
        wait_for_nodes=wait_for_nodes,
        log_to=tuple(logger.value for logger in log_to or ()),
    )
    if dry_run:
        _print_plan(prepare(config))
        return
    summary = run_sweep(config)
    sweep = summary.plan
    _say_quarantined(sweep.folder.quarantined)
    typer.echo(
        f"sweep {summary.sweep_id}: {len(sweep.done) + summary.asked} runs asked, {len(sweep.done)} already in {out}, "
        f"{len(summary.trained)} trained now ({summary.resumed} resumed) in {summary.seconds:.0f} s, "
        f"{len(summary.failed)} failed"
    )
    for step, state in summary.states.items():
        typer.echo(f"  {step}: {state}")
    for line in summary.failed:
        typer.echo(f"  failed: {line}", err=True)
    if not summary.complete:
        again = shlex.join(["sweep", *sys.argv[1:]])
        typer.echo(
            f"interrupted: {summary.unfinished} of {summary.asked} runs unfinished (finished runs are "
            f"saved); continue with: {again}",
            err=True,
        )
        raise typer.Exit(130)
    if summary.failed:
        typer.echo("re-run the same command to retry the failed runs", err=True)
        raise typer.Exit(1)


def _seeds(seeds: int | None, quick: bool, until_decided: bool) -> int:
    if until_decided and seeds is not None:
        raise BadInput("--seeds and --until-decided both say how many seeds to train; choose one")
    return seeds if seeds is not None else (2 if quick else 5)


def _precision(bf16: bool, tf32: bool) -> str:
    if bf16 and tf32:
        raise BadInput("--bf16 and --tf32 are two precisions; choose one")
    return "bf16" if bf16 else "tf32" if tf32 else "fp32"


def _print_plan(sweep) -> None:
    """Per step: seeds done, seeds that resume (from which epoch), seeds trained new; and the model-epochs."""
    from sweeps import layout

    _say_quarantined(sweep.folder.quarantined)
    typer.echo(f"plan for {sweep.out} (dry run: nothing started)")
    for note in sweep.notes:
        typer.echo(note)
    by_step: dict[str, list] = {}
    for run in sweep.runs:
        key = layout.key(run)
        by_step.setdefault(f"{run.step} [{key.tag}]" if key.tag else run.step, []).append((run, key))
    width = max([17, *map(len, by_step)])  # a step and its tag
    typer.echo(f"{'step':<{width}} {'done':<12} {'resume (epochs held)':<24} new")
    for step, runs in by_step.items():
        done = [r.seed for r, key in runs if key in sweep.done]
        resume = [f"{r.seed} ({sweep.held(r)}/{r.recipe.epochs})" for r, key in runs if key in sweep.resume]
        new = [r.seed for r, key in runs if key not in sweep.done and key not in sweep.resume]
        typer.echo(f"{step:<{width}} {_ranges(done):<12} {', '.join(resume) or '-':<24} {_ranges(new)}")
    todo = sweep.todo
    total = sum(r.recipe.epochs for r in sweep.runs)
    typer.echo(
        f"{len(todo)} of {len(sweep.runs)} runs to train: {sum(r.recipe.epochs - sweep.held(r) for r in todo)} "
        f"model-epochs of {total} in all"
    )


def _say_quarantined(moved) -> None:
    for source, target in moved:
        typer.echo(f"moved damaged {source} to {target} (with its run's other file); the run trains again", err=True)


@app.command()
def status(
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("results"),
    json_: Annotated[bool, typer.Option("--json", help="Print the status as JSON, for scripts.")] = False,
    steps_from: Annotated[
        list[Path] | None,
        typer.Option(
            help="A step file of your own (as for `sweep run`): its steps are listed even without runs, and a note "
            "names any whose rows here came from an earlier version of the file. Repeat for several."
        ),
    ] = None,
) -> None:
    """Show per step the seeds done, unfinished (running or interrupted) and failed, and any quarantined files.
    Reads only the results folder (and moves damaged files aside), and the step files it is given."""
    from sweeps import layout
    from sweeps.results import StepStatus
    from sweeps.results import status as read_status

    if out.is_file():
        raise BadInput(f"{out} is a file, not a results folder")
    if not out.is_dir():
        raise BadInput(f"no results folder at {out}")
    folder = layout.read(out)
    _say_quarantined(folder.quarantined)
    table, aside = read_status(out, folder), layout.quarantined(out)
    notes = []
    if steps_from:
        from sweeps.plan import changed_steps

        rows = [
            (k.step, *(t[c][0].as_py() for c in ("recipe_hash", "quick", "epochs")))
            for k, t in folder.epochs.items()
            if t.num_rows
        ]
        names, notes = changed_steps(rows, steps_from)
        table |= {name: StepStatus() for name in names if name not in table}
    if json_:
        steps = {step: dataclasses.asdict(s) for step, s in table.items()}
        quarantined = [str(p) for p in aside]
        typer.echo(json.dumps({"out": str(out), "steps": steps, "quarantined": quarantined, "notes": notes}, indent=1))
        return
    width = max([17, *map(len, table)])  # a step and its tag
    if not table:
        typer.echo(f"no runs in {out} yet")
    else:
        typer.echo(f"{'step':<{width}} {'done':>4} {'unfinished':>10} {'failed':>6}  seeds done")
    for step, s in table.items():
        typer.echo(f"{step:<{width}} {len(s.done):>4} {len(s.partial):>10} {len(s.failed):>6}  {_ranges(s.done)}")
        for seed, state in sorted(s.partial.items()):
            typer.echo(f"    seed {seed}: {state}")
        for seed, error in sorted(s.failed.items()):
            typer.echo(f"    seed {seed}: failed: {error}")
    for path in aside:
        typer.echo(f"quarantined: {path}")
    for note in notes:
        typer.echo(f"note: {note}")


def _ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(f"{start}-{s}" if s != start else f"{s}")
            start = None
    return ", ".join(parts) or "-"


@app.command("check-cuda")
def check_cuda() -> None:
    """Exit 0 if torch can train on CUDA on this machine; else say why in one line (a CPU-only torch, no NVIDIA
    driver, a driver older than torch's CUDA build) and exit 2. cluster.yaml's GPU workers run it at boot."""
    from sweeps.cluster import check_device

    check_device("cuda")
    typer.echo("CUDA works here")
