"""The ``sweep`` command line. Commands parse options and hand over to library functions; bad input is one line on
stderr and exit code 2."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Multi-seed sweeps of the step models from the seed submissions, on Ray Tune, with a report that tells a "
    "lucky 99.4 % run from a consistent one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

OUT_HELP = "Results folder (a Parquet dataset)."


def one_line_errors(fn):
    """Turn the library's bad-input errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from cnn import BadInput

        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@one_line_errors
def steps(name: Annotated[Optional[str], typer.Argument(help="Show one step in full.")] = None) -> None:
    """List the step models of the zoo, or show one in full: recipe, claims, the seed's own target, assumptions."""
    from cnn import zoo

    if name is None:
        typer.echo(f"{'step':<20} {'params':>9} {'epochs':>6} {'batch':>5} {'claimed':>7} {'assumed':>7}  source")
        for s in zoo.select(["all"]):
            claim = f"{s.claims.best_test:.2f}" if s.claims.best_test else "-"
            params = zoo.count_params(s.model())
            typer.echo(
                f"{s.name:<20} {params:>9,} {s.recipe.epochs:>6} {s.recipe.batch_size:>5} {claim:>7} "
                f"{len(s.assumptions):>7}  {s.source} > {s.title}"
            )
        return
    d = zoo.describe(zoo.get_step(name))
    s, c, t = d.step, d.step.claims, d.step.target
    typer.echo(f"{s.name}: {s.title}  ({s.source}, step {s.order} of submission {s.submission})")
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
    typer.echo("target (the seed's own):")
    for label, v in (("accuracy", t.accuracy), ("params <", t.params), ("epochs <=", t.epochs)):
        typer.echo(f"  {label:<11} {'-' if v is None else f'{v:,}'}")
    typer.echo(f"  source     {t.source}")
    typer.echo("assumptions:" if d.assumptions else "assumptions: none")
    for line in d.assumptions:
        typer.echo(f"  - {line}")
    typer.echo("network:")
    for kind, shape, params in d.layers:
        typer.echo(f"  {kind:<12} {str(list(shape)):<16} {params:>9,}")


@app.command()
@one_line_errors
def run(
    steps: Annotated[list[str], typer.Argument(help="Step names or glob patterns (quote them), or 'all'.")],
    seeds: Annotated[Optional[int], typer.Option(help="Seeds per step [default: 5, or 2 with --quick].")] = None,
    seed_start: Annotated[int, typer.Option(help="First seed; raise it to add seeds to an existing sweep.")] = 0,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("results"),
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs for a local Ray [default: all].")] = None,
    num_gpus: Annotated[Optional[int], typer.Option(help="GPUs for a local Ray [default: all].")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs (and torch threads) per run.")] = 1,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per run; fractions share a GPU. >0 trains on CUDA.")] = 0,
    address: Annotated[Optional[str], typer.Option(help="Join a running Ray cluster, e.g. 'auto' on its head.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Where Tune keeps its state: a path or s3://… [default: OUT/tune].")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override every recipe's epochs (recorded as an override).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="MNIST folder (holding MNIST/raw) [default: $SWEEP_DATA_DIR or ~/.cache/cnn-sweeps].")] = None,
    quick: Annotated[bool, typer.Option(help="10 % stratified train slice, 1 epoch, full test set; rows marked quick.")] = False,
    bf16: Annotated[bool, typer.Option(help="Train under bf16 autocast (recorded with the rows) instead of fp32.")] = False,
    max_failures: Annotated[int, typer.Option(help="Retries of a run whose worker fails, from its last checkpoint.")] = 2,
) -> None:
    """Train every (step, seed) run that the results folder does not hold yet, spread over Ray.

    Re-running the same command finishes an interrupted sweep: finished runs are kept, unfinished ones continue from
    their last checkpoint, and raising --seeds adds only the new seeds.
    """
    from sweeps.runner import SweepConfig, run_sweep

    config = SweepConfig(
        steps=tuple(steps), seeds=seeds if seeds is not None else (2 if quick else 5), seed_start=seed_start,
        out=out, data_dir=data_dir, num_cpus=num_cpus, num_gpus=num_gpus, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, address=address, storage=storage, epochs=epochs, quick=quick,
        precision="bf16" if bf16 else "fp32", max_failures=max_failures,
    )  # fmt: skip
    summary = run_sweep(config)
    typer.echo(f"sweep {summary.sweep_id}: {summary.planned} runs asked, {summary.already_done} already in {out}, "
               f"{summary.trained} trained now in {summary.seconds:.0f} s, {len(summary.failed)} failed")  # fmt: skip
    for line in summary.failed:
        typer.echo(f"  failed: {line}", err=True)
    if summary.failed:
        typer.echo("re-run the same command to retry the failed runs", err=True)
        raise typer.Exit(1)


@app.command()
@one_line_errors
def status(out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("results")) -> None:
    """Show per step the seeds done, unfinished (running or interrupted) and failed. Reads only the results folder."""
    from sweeps.results import status as read_status

    if not out.is_dir():
        typer.echo(f"error: no results folder at {out}", err=True)
        raise typer.Exit(2)
    table = read_status(out)
    if not table:
        typer.echo(f"no runs in {out} yet")
        return
    typer.echo(f"{'step':<17} {'done':>4} {'unfinished':>10} {'failed':>6}  seeds done")
    for step, s in table.items():
        typer.echo(f"{step:<17} {len(s.done):>4} {len(s.partial):>10} {len(s.failed):>6}  {_ranges(s.done)}")
        for seed, state in sorted(s.partial.items()):
            typer.echo(f"    seed {seed}: {state}")
        for seed, error in sorted(s.failed.items()):
            typer.echo(f"    seed {seed}: failed: {error}")


def _ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(f"{start}-{s}" if s != start else f"{s}")
            start = None
    return ", ".join(parts) or "-"


def _register_report() -> None:
    try:
        from analysis.cli import report
    except ImportError:  # the analysis package is not there yet
        return
    app.command("report")(report)


_register_report()


def main() -> None:
    """Console entry point: typer's own usage errors become one line and exit code 2, too."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code instead of exiting
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click's UsageError family (vendored inside newer typer) formats itself
        if not hasattr(e, "format_message"):
            raise
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
