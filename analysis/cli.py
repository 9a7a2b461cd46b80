"""The `sweep` command: `sweeps.cli`'s app (run, steps, status) with `report` added here, the top layer, so that no
module imports a layer above its own (cnn < sweeps < analysis). The report's work is in `analysis.load`,
`analysis.stats`, `analysis.report` and `analysis.terminal`.

Importing this module is cheap (typer only), so that `sweep --help` stays fast; pandas and matplotlib load when the
command runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from analysis import ReportError
from sweeps.cli import app


def report(
    out: Annotated[Path, typer.Option("--out", help="Results folder written by `sweep run`.")] = Path("results"),
    html: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the HTML report; the CSV tables go next to it.", show_default="OUT/report.html"
        ),
    ] = None,
    target: Annotated[float, typer.Option(help="Target test accuracy, percent.")] = 99.40,
    last_k: Annotated[
        int | None,
        typer.Option(
            help="A consistent run stays at or above the target in each of its last K epochs. Where every run is "
            "shorter than 3 epochs (a quick sweep's count 1), K is the longest run's count unless set; a K set "
            "longer than every run is refused.",
            show_default="3, or the longest run's epochs",
        ),
    ] = None,
    epoch_budget: Annotated[
        int | None, typer.Option(help="Epochs that count, for every step.", show_default="each step's recipe epochs")
    ] = None,
    max_params: Annotated[int, typer.Option(help="Parameter budget: a step passes with fewer parameters.")] = 8_000,
    max_epochs: Annotated[int, typer.Option(help="Epoch budget: a step passes with at most this many epochs.")] = 15,
    confidence: Annotated[float, typer.Option(help="Level of every interval.")] = 0.95,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples, and Mann-Whitney permutations.")] = 2_000,
    bootstrap_seed: Annotated[int, typer.Option(help="Seed of the bootstrap, for reproducible intervals.")] = 0,
    split: Annotated[
        list[str] | None,
        typer.Option(
            help="Report apart the runs of each value of a column that is otherwise pooled: engine, block_size or "
            "device. Repeat to split by several.",
            show_default="pooled",
        ),
    ] = None,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            metavar="A B",
            help="Compare B with A, from any submissions: step names, group labels as the report prints them, or "
            "glob patterns. P(B > A) with its interval, the Mann-Whitney p and the image test, in words too.",
        ),
    ] = None,
    steps_from: Annotated[
        list[Path] | None,
        typer.Option(
            help="A step file of your own (as for `sweep run`): a note names any of its steps whose rows here came "
            "from an earlier version of the file. Repeat for several."
        ),
    ] = None,
    json_: Annotated[
        bool,
        typer.Option("--json", help="Only print the per-step summary as JSON, for scripts: no report is written."),
    ] = False,
) -> None:
    """Tell lucky from consistent: write the HTML report of a results folder and print its verdict table."""
    from analysis.load import load_results
    from analysis.report import write_report
    from analysis.stats import Options, summarize
    from analysis.terminal import verdict_text

    options = Options(
        target=target,
        last_k=last_k,
        epoch_budget=epoch_budget,
        max_params=max_params,
        max_epochs=max_epochs,
        confidence=confidence,
        n_bootstrap=bootstrap,
        random_state=bootstrap_seed,
        split=tuple(split or ()),
        compare=compare,
    )
    results = load_results(out, options.split)
    if steps_from:
        from sweeps.plan import changed_steps

        rows = results.epochs[["step", "recipe_hash", "quick", "epochs"]].drop_duplicates()
        _, notes = changed_steps(rows.itertuples(index=False, name=None), steps_from)
        results = replace(results, notes=notes)
    for damaged, moved_to in results.quarantined:
        typer.echo(
            f"moved damaged {damaged} to {moved_to} (with its run's other file); the next sweep run trains the "
            "run again",
            err=True,
        )
    summary = summarize(results, options)
    if json_:
        typer.echo(summary.steps.to_json(orient="records", indent=1, default_handler=str))
        return
    try:
        paths = write_report(results, summary, html or out / "report.html")
    except OSError as e:
        raise ReportError(f"cannot write the report: {e}") from None
    typer.echo(verdict_text(results, summary))
    tables = ", ".join(
        p.name
        for p in (paths.steps_csv, paths.runs_csv, paths.progression_csv, paths.sources_csv, paths.comparison_csv)
        if p
    )
    typer.echo(f"\nreport: {paths.html}\ntables beside it: {tables}")


app.command("report")(report)


def main() -> None:
    """Console entry point."""
    app()
