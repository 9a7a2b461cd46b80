"""The report: one self-contained HTML file (figures as base64 PNG, inline CSS, no external requests), the
per-step, per-run and progression tables as CSV next to it, and the compact verdict table for the terminal.

This is the only module of `analysis` that writes files.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import Results
from analysis.stats import (
    MORE_SEEDS,
    Options,
    Summary,
    binomial_se,
    listed,
    median_ci_min_n,
    prob_at_least,
    source_words,
)

DASH = "–"


@dataclass(frozen=True)
class ReportPaths:
    """Where the report went, and the summary it shows."""

    html: Path
    steps_csv: Path
    runs_csv: Path
    progression_csv: Path
    summary: Summary


def write_report(results: Results, summary: Summary, html_path: Path) -> ReportPaths:
    """Write the HTML report of `summary` (from `stats.summarize(results, ...)`) and its CSV tables next to it."""
    from analysis.figures import all_figures  # matplotlib only when a report is drawn

    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    figures = {name: (_png(fig), caption) for name, (fig, caption) in all_figures(summary, results.epochs).items()}
    html_path.write_text(render_html(results, summary, figures), encoding="utf-8")
    paths = ReportPaths(
        html_path,
        html_path.with_name("steps_summary.csv"),
        html_path.with_name("runs_summary.csv"),
        html_path.with_name("progression.csv"),
        summary,
    )
    steps_csv(summary).to_csv(paths.steps_csv, index=False)
    summary.runs.to_csv(paths.runs_csv, index=False)
    summary.progression.to_csv(paths.progression_csv, index=False)
    if len(summary.sources):  # only for steps swept under several --vary settings
        summary.sources.to_csv(html_path.with_name("sources.csv"), index=False)
    return paths


def num(x, fmt: str = ".2f") -> str:
    """`x` as `fmt`, never "-0.00": a value that rounds to zero prints without a sign."""
    if pd.isna(x):
        return DASH
    digits = int(fmt.rstrip("f%").split(".")[-1] or 0) + (2 if fmt.endswith("%") else 0)
    return f"{round(float(x), digits) + 0.0:{fmt}}"  # round(-1.4e-14, 2) is -0.0; adding 0.0 makes it 0.0


def verdict_table(steps: pd.DataFrame, plain: bool = False) -> pd.DataFrame:
    """The verdict table as strings, one row per step; `plain` keeps it ASCII for any terminal."""
    ok, fail, dash = ("ok", "OVER", "-") if plain else ("✓", "✗", DASH)

    def rate(k, n, lo, hi):
        return f"{k}/{n} ({lo:.2f}{dash}{hi:.2f})" if n else dash

    def claim(row):
        if pd.isna(row.claim_best_pct):
            return dash
        return f"{row.claim_best:.2f}: p{row.claim_best_pct:.0f}" + (" >max" if row.claim_best_above_max else "")

    return pd.DataFrame(
        {
            "step": steps["group"],
            "params": [f"{p:,} {ok if good else fail}" for p, good in zip(steps["params"], steps["params_ok"])],
            "epochs": [
                f"{'' if b == e else f'{b} of '}{e} {ok if good else fail}"
                for b, e, good in zip(steps["budget"], steps["epoch_budget"], steps["epochs_ok"])
            ],
            "seeds": [
                f"{n}" + (f" ({s} too short)" if s else "") for n, s in zip(steps["n_seeds"], steps["n_too_short"])
            ],
            "hit rate": [rate(*r) for r in zip(steps["n_hit"], steps["n_seeds"], steps["hit_lo"], steps["hit_hi"])],
            "consistent rate": [
                rate(*r)
                for r in zip(steps["n_consistent"], steps["n_judged"], steps["consistent_lo"], steps["consistent_hi"])
            ],
            "median final": [num(m) for m in steps["final_median"]],
            "luck gap": [num(g) if pd.notna(g) else dash for g in steps["luck_gap_median"]],
            "claim, percentile": [claim(r) for r in steps.itertuples()],
            "own target": [_own_target(r, plain) for r in steps.itertuples()],
            "verdict": steps["verdict"],
            "P(decided) +" + "/".join(map(str, MORE_SEEDS)): [
                "/".join(num(getattr(r, f"p_decided_{m}")) for m in MORE_SEEDS) if r.verdict == "UNDECIDED" else dash
                for r in steps.itertuples()
            ],
            "spread: test-set share": [
                f"{s} ({num(share, '.0%')})" if pd.notna(share) else s
                for s, share in zip(steps["spread"], steps["test_share"])
            ],
        }
    )


def _own_target(row, plain: bool) -> str:
    """The step against its seed's own target (stats.own_target), e.g. '99.40 ok, <10,000 ok, <=20 ok'."""
    ok, fail, dash, le = ("ok", "NO", "-", "<=") if plain else ("✓", "✗", DASH, "≤")
    parts = [
        f"{text} {ok if good else fail}"
        for text, good in (
            (f"{getattr(row, 'target_accuracy', np.nan):.2f}", getattr(row, "own_acc_ok", pd.NA)),
            (f"<{getattr(row, 'target_params', 0):,.0f}", getattr(row, "own_params_ok", pd.NA)),
            (f"{le}{getattr(row, 'target_epochs', 0):.0f}", getattr(row, "own_epochs_ok", pd.NA)),
        )
        if pd.notna(good)
    ]
    return ", ".join(parts) or dash


def verdict_text(summary: Summary) -> str:
    """The compact verdict table for the terminal: ASCII, columns left-aligned."""
    table = verdict_table(summary.steps, plain=True).astype(str)
    widths = [max(len(c), table[c].str.len().max()) for c in table]
    lines = [table.columns.tolist(), *table.itertuples(index=False)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def in_plain_words(s, o: Options) -> str:
    """What a step's verdict and its spread mean, in a few sentences (a row of the steps table)."""
    window = f"through the last {o.last_k} epochs"
    if s.verdict == "TOO SHORT":
        text = (
            f"Too short to judge: its runs count {s.budget} epoch(s), fewer than the last {o.last_k} that a "
            "consistent run must hold the target through."
        )
    elif s.verdict == "NEVER":
        text = f"Never: no seed reached {o.target:.2f} % within {s.budget} epochs."
    else:
        text = (
            f"{s.verdict.capitalize()}: {s.n_hit} of {s.n_seeds} seeds reached {o.target:.2f} % at some epoch "
            f"and {s.n_consistent} of {s.n_judged} held it {window}."
        )
        if s.verdict == "UNDECIDED":
            chances = ", ".join(f"{num(getattr(s, f'p_decided_{m}'), '.0%')} with {m}" for m in MORE_SEEDS)
            text += f" More seeds would decide it with probability {chances} more."
    if s.n_too_short and s.verdict != "TOO SHORT":
        text += f" {s.n_too_short} run(s) too short to judge are left out of the consistent rate."
    sd = {k: np.sqrt(getattr(s, k)) for k in ("var_observed", "var_test", "var_model", "var_model_lo", "var_model_hi")}
    ruler = f"the test set alone would make it scatter by {num(sd['var_test'], '.3f')} pp"
    if s.spread == "one seed":
        return text + " One seed: no spread across seeds to split."
    if s.var_observed == 0:
        return text + " Every seed scored the same final accuracy."
    spread = f"Final accuracy scatters across seeds by {num(sd['var_observed'], '.3f')} pp (SD); {ruler}."
    if s.spread == "test set":
        meaning = (
            f" That is all test-set noise: no seed is luckier than another. The step has one true accuracy, "
            f"about {num(s.final_mean)} %, read with a noisy ruler"
        )
        meaning += (
            ", and its hits of the target are the ruler's noise, not lucky seeds." if s.verdict == "LUCKY" else "."
        )
    elif s.spread == "too few seeds":
        meaning = (
            f" The test set may explain all of it, but {s.n_seeds} seeds cannot rule out models that "
            f"genuinely differ by up to {num(sd['var_model_hi'], '.3f')} pp (SD), so they cannot yet say "
            "whether some seeds are lucky."
        )
    else:
        meaning = (
            f" The seeds' models genuinely differ by about {num(sd['var_model'], '.3f')} pp (SD; "
            f"{num(sd['var_model_lo'], '.3f')} to {num(sd['var_model_hi'], '.3f')}) beyond the test set, which "
            f"explains {num(s.test_share, '.0%')} of the spread: some seeds train better models than others, "
            "so a seed can be lucky."
        )
    return f"{text} {spread}{meaning}"


# --- the steps table as CSV, every column documented -------------------------------------------------------------

STEPS_COLUMNS = {
    "group": "comparable group: one step, one recipe hash, one --quick flag, precision and --vary setting, and with "
    "--split one value of each split column (its label names the step, and more only where needed)",
    "step": "step name",
    "submission": "seed file prefix of the step",
    "order": "the step's place within its submission",
    "title": "the step's heading in its seed file",
    "source": "seed file and section the step comes from",
    "recipe_hash": "hash of the network and the effective recipe",
    "quick": "runs trained with --quick",
    "overridden": "some run had command-line recipe overrides",
    "faithful": "full runs of the unchanged recipe (not quick, not overridden); only these are compared with claims",
    "params": "trainable parameters",
    "params_ok": "params < the parameter budget (--max-params)",
    "recipe_epochs": "epochs of the step's recipe",
    "run_epochs": "most epochs a run of the group trained for",
    "epoch_budget": "epochs that count: the recipe's, or --epoch-budget",
    "epochs_ok": "epoch_budget <= the epoch limit (--max-epochs)",
    "budget": "epochs counted: the smaller of epoch_budget and run_epochs",
    "n_seeds": "finished runs (one per seed)",
    "n_judged": "runs long enough to judge: budget >= K (--last-k)",
    "n_too_short": "runs with budget < K: neither consistent nor lucky, and left out of the consistent rate",
    "n_hit": "runs at or above the target at some epoch within the budget",
    "hit_rate": "n_hit / n_seeds",
    "hit_lo": "lower end of the hit rate's Clopper-Pearson interval",
    "hit_hi": "upper end of the hit rate's Clopper-Pearson interval",
    "n_consistent": "judged runs at or above the target in each of their last K epochs",
    "consistent_rate": "n_consistent / n_judged (empty when no run can be judged)",
    "consistent_lo": "lower end of the consistent rate's Clopper-Pearson interval",
    "consistent_hi": "upper end of the consistent rate's Clopper-Pearson interval",
    "verdict": "CONSISTENT, LUCKY, UNDECIDED, NEVER or TOO SHORT (see the definitions)",
    **{
        f"p_decided_{m}": f"UNDECIDED only: probability that {m} more seeds decide the verdict (Beta-binomial "
        "predictive)"
        for m in MORE_SEEDS
    },
    "luck_gap_median": "median over judged runs of the luck gap: best epoch - mean of the last K epochs (pp)",
    "final_median": "median final accuracy over seeds (%)",
    "final_q25": "25th percentile of final accuracy over seeds (%)",
    "final_q75": "75th percentile of final accuracy over seeds (%)",
    "final_median_lo": "lower end of the median's exact order-statistic interval (empty with too few seeds)",
    "final_median_hi": "upper end of the median's exact order-statistic interval (empty with too few seeds)",
    "final_mean": "mean final accuracy over seeds (%)",
    "best_median": "median over seeds of the best epoch's accuracy (%)",
    "best_q25": "25th percentile of the best epoch's accuracy (%)",
    "best_q75": "75th percentile of the best epoch's accuracy (%)",
    "best_median_lo": "lower end of that median's exact order-statistic interval (empty with too few seeds)",
    "best_median_hi": "upper end of that median's exact order-statistic interval (empty with too few seeds)",
    "claimed_params": "parameters the seed file claims",
    "claimed_best_test": "best test accuracy the seed file claims (%)",
    "claimed_best_train": "best training accuracy the seed file claims (%)",
    "claimed_best_epoch": "epoch of the seed file's claimed best test accuracy",
    "claimed_log": "test accuracy per epoch of the seed file's own logged run (JSON list, %)",
    "claim_note": "note on the claim",
    "assumptions": "recipe values the seed file does not state, with their reasons (separated by '; ')",
    "claim_basis": "what our seeds are compared with: the claims as made, the seed file's log cut at the budget, "
    "or nothing (and why)",
    "claim_best": "the best accuracy compared: claimed_best_test, or the best of the log within the budget (%)",
    "claim_final": "the final accuracy compared: the log's last epoch, or its epoch at the budget (%)",
    "claim_best_pct": "percentile of claim_best among our seeds' best epochs (ties count one half)",
    "claim_final_pct": "percentile of claim_final among our seeds' final epochs (ties count one half)",
    "claim_best_above_max": "claim_best is above every seed's best epoch",
    "claim_final_above_max": "claim_final is above every seed's final epoch",
    "n_predicted": "seeds whose per-image predictions of the last counted epoch are used",
    "var_observed": "sample variance of final accuracy across seeds (pp^2)",
    "var_test": "variance expected from the test set alone (pp^2), as var_test_source says",
    "var_test_source": "per-image (from the predictions of 2 or more seeds) or binomial (without them)",
    "var_model": "genuine variance between the seeds' models: var_observed - var_test, floored at 0 (pp^2)",
    "var_model_lo": "lower end of var_model's chi-square interval, floored at 0 (pp^2)",
    "var_model_hi": "upper end of var_model's chi-square interval, floored at 0 (pp^2)",
    "var_model_zero": "var_model's interval reaches 0: the spread is consistent with test-set noise alone",
    "test_share": "share of the spread the test set explains: var_test / (var_test + var_model)",
    "test_share_lo": "lower end of test_share's interval (from the same chi-square interval)",
    "test_share_hi": "upper end of test_share's interval",
    "spread": "test set (consistent with 0 and the test set explains at least half even at the interval's end), "
    "models differ (var_model's interval excludes 0), too few seeds (neither), or one seed",
    "in_plain_words": "the verdict and the spread in words, as in the report",
}


def steps_csv(summary: Summary) -> pd.DataFrame:
    """steps_summary.csv: exactly the STEPS_COLUMNS, list columns as text."""
    steps = summary.steps
    return steps.assign(
        claimed_log=[json.dumps([float(x) for x in listed(log)]) for log in steps["claimed_log"]],
        assumptions=[_join(a) for a in steps["assumptions"]],
        in_plain_words=[in_plain_words(s, summary.options) for s in steps.itertuples()],
    ).reindex(columns=list(STEPS_COLUMNS))


# --- HTML -------------------------------------------------------------------------------------------------------


def render_html(results: Results, summary: Summary, figures: dict[str, tuple[str, str]]) -> str:
    """The whole page; `figures` maps a name to (base64 PNG, caption)."""
    steps, o = summary.steps, summary.options
    table = verdict_table(steps)
    table["verdict"] = [f'<span class="verdict {_css(v)}">{html.escape(v)}</span>' for v in steps["verdict"]]
    marks = {"✓": '<span class="pass">✓</span>', "✗": '<span class="fail">✗</span>'}
    for col in ("params", "epochs"):
        table[col] = [" ".join(marks.get(w, html.escape(w)) for w in t.split(" ")) for t in table[col]]
    body = [
        "<h1>Lucky or consistent? Multi-seed sweep report</h1>",
        f'<p class="meta">{html.escape(_meta(results, summary))}</p>',
        *(f'<p class="banner">{html.escape(b)}</p>' for b in _banners(results, summary)),
        "<h2>Verdicts</h2>",
        _table(table, "verdict-table", html_cols={"verdict", "params", "epochs"}),
        '<p class="note">'
        + html.escape(
            f"Rates give their {o.confidence:.0%} Clopper-Pearson interval; the consistent rate counts only runs long "
            f"enough to judge. Median final accuracy and luck gap are medians over seeds, in % and percentage points. "
            "Claim: the best accuracy the seed file reported and its percentile among our seeds' best epochs (>max: "
            "above all of them). P(decided): for an UNDECIDED step, the probability that "
            + ", ".join(map(str, MORE_SEEDS))
            + " more seeds decide it. Spread: how much of the seed-to-seed "
            f"spread of final accuracy the test set alone explains. ✓/✗: parameter budget (< {o.max_params:,}) and "
            f"epoch budget (≤ {o.max_epochs})."
        )
        + "</p>",
        "<h2>What it says, per submission</h2>",
        *(_submission_html(sub, steps, summary.progression, o) for sub in steps["submission"].unique()),
        "<h2>Figures</h2>",
        *(
            f'<figure id="fig-{name}"><img src="data:image/png;base64,{png}" alt="{html.escape(name)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            for name, (png, caption) in figures.items()
        ),
        "<h2>How much of the spread is the test set</h2>",
        _table(_spread_table(steps), "spread-table"),
        *(_sources_html(summary.sources) if len(summary.sources) else []),
        "<h2>Progression within each submission</h2>",
        _table(_progression_table(summary.progression), "progression-table")
        if len(summary.progression)
        else "<p>No submission has two steps with rows here yet.</p>",
        "<h2>Claims and assumptions</h2>",
        _table(_claims_table(steps), "claims-table"),
        "<h2>Definitions and options</h2>",
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in definitions(o).items())
        + "</dl>",
        _table(
            pd.DataFrame(
                {
                    "option": list(o.as_dict()),
                    "value": [_option_value(k, v) for k, v in o.as_dict().items()],
                }
            ),
            "options-table",
        ),
        "<h2>Columns of steps_summary.csv</h2>",
        _table(pd.DataFrame({"column": list(STEPS_COLUMNS), "meaning": list(STEPS_COLUMNS.values())}), "columns-table"),
    ]
    return PAGE.format(title="Sweep report", style=STYLE, body="\n".join(body), script=SCRIPT)


def _sources_html(table: pd.DataFrame) -> list[str]:
    """Which source of randomness drives each step's spread (sweep run --vary): words per step, then the table."""
    shown = pd.DataFrame(
        {
            "step": table["step"],
            "vary": table["vary"],
            "base seed": table["base_seed"],
            "seeds": table["n"],
            "SD (pp)": table["final_sd"].map(num),
            "IQR (pp)": table["final_iqr"].map(num),
            "consistent": [
                f"{num(r)} ({num(lo)}–{num(hi)})"
                for r, lo, hi in zip(table["consistent_rate"], table["consistent_lo"], table["consistent_hi"])
            ],
            "test-set floor (pp²)": table["var_test"].map(lambda v: num(v, ".4f")),
            "genuine (pp²)": [
                f"{num(v, '.4f')} ({num(lo, '.4f')}–{num(hi, '.4f')})"
                for v, lo, hi in zip(table["var_model"], table["var_model_lo"], table["var_model_hi"])
            ],
        }
    )
    words = [
        f"<p><b>{html.escape(step)}</b>: {html.escape(source_words(rows))}</p>"
        for step, rows in table.groupby("step", sort=False)
    ]
    return ["<h2>Which source of randomness makes a step lucky</h2>", *words, _table(shown, "sources-table")]


def _css(verdict: str) -> str:
    return verdict.replace(" ", "-")


def _meta(results: Results, summary: Summary) -> str:
    runs, steps = summary.runs, summary.steps
    seeds = steps["n_seeds"]
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    latest = pd.to_datetime(results.epochs.get("wall_time", pd.Series(dtype="datetime64[us, UTC]"))).max()
    newest = f" · newest row {latest:%Y-%m-%d %H:%M} UTC" if pd.notna(latest) else ""
    return (
        f"Results folder {results.out} · {len(runs)} finished runs · {len(steps)} steps · "
        f"{seed_range} seeds per step{newest}"
    )


def _banners(results: Results, summary: Summary) -> list[str]:
    steps, o, banners = summary.steps, summary.options, []
    quick = steps["quick"].astype(bool)
    if quick.all():
        banners.append(
            "All runs here are --quick runs (a tenth of the training images, a short run). They show that "
            "the pipeline works, not what the recipes reach; claims are not compared with them."
        )
    elif quick.any():
        banners.append(
            "This folder holds both --quick and full runs. They are never pooled: quick rows appear as "
            "separate steps marked [quick], and progressions compare quick with quick, full with full."
        )
    if steps["n_too_short"].any():
        banners.append(
            f"Some runs count fewer epochs than the last-K window of {o.last_k}: they are too short to "
            "be judged consistent or lucky, and the consistent rates leave them out (verdict TOO SHORT "
            "where no run is long enough)."
        )
    cut = steps["faithful"] & (steps["budget"] < steps["recipe_epochs"])
    if cut.any():
        banners.append(
            f"The epoch budget ({o.epoch_budget}) cuts {cut.sum()} step(s) short of their recipe: their "
            "claims are compared with the seed file's own log at that epoch where it has one, and left "
            "out where not (claims table, column 'compared with')."
        )
    if steps["group"].str.contains(" @").any():
        banners.append(
            "Some steps have rows under more than one recipe hash (e.g. recipe overrides); each hash is "
            "reported as its own row, marked @<hash>."
        )
    if steps["n_seeds"].nunique() > 1:
        banners.append(
            "Steps have different numbers of seeds (a sweep still running reports the seeds finished so "
            "far); the seeds column says how many each verdict rests on."
        )
    if results.unfinished:
        counts = ", ".join(f"{step} {n}" for step, n in sorted(results.unfinished.items()))
        banners.append(
            f"Not in these numbers yet: {sum(results.unfinished.values())} unfinished run(s) ({counts}): "
            "running, interrupted or failed; `sweep status` tells which."
        )
    predicted = set(zip(results.predictions["group"], results.predictions["seed"]))
    missing = sum(run not in predicted for run in zip(summary.runs["group"], summary.runs["seed"]))
    if missing:
        banners.append(
            f"{missing} finished run(s) have no predictions file yet; the image test and the per-image "
            "variance split use the seeds that have one."
        )
    return banners


def _submission_html(sub: str, steps: pd.DataFrame, progression: pd.DataFrame, o: Options) -> str:
    """A plain-language paragraph per step of one submission."""
    items = []
    for s in steps[steps["submission"] == sub].itertuples():
        title = f" ({s.title})" if isinstance(s.title, str) and s.title else ""
        text = (
            f"{s.group}{title}: {in_plain_words(s, o)} Median final accuracy {num(s.final_median)} % ({_median(s, o)})."
        )
        for p in progression[progression["after"] == s.group].itertuples():
            text += (
                f" Against {p.before}: P(better) = {num(p.p_improve)} ({_interval(p, o)}), Mann-Whitney "
                f"p {_p(p.mann_whitney_p, '= ')}: {p.change}; median change {num(p.median_diff, '+.2f')} pp."
            )
            if p.images_before:
                text += (
                    f" Per image, a seed of it fixes {num(p.fixed, '.1f')} test images that a seed of "
                    f"{p.before} gets wrong and breaks {num(p.broken, '.1f')} (image test p "
                    f"{_p(p.image_p, '= ')})."
                )
        if pd.notna(s.claim_best_pct):
            text += (
                f" The seed file's {_claim_name(s)} of {s.claim_best:.2f} % sits at percentile "
                f"{s.claim_best_pct:.0f} of our seeds' best epochs"
                + (", above all of them" if s.claim_best_above_max else "")
                + "."
            )
        if s.claim_final_above_max:
            text += (
                f" The seed file's logged run, at {s.claim_final:.2f} % in its last epoch counted, is above all "
                "our final epochs."
            )
        if s.claim_best_above_max or s.claim_final_above_max:
            text += (
                " Either the student's run was very lucky or our reconstruction of the recipe differs; this "
                f"step assumes {_join(s.assumptions) or 'nothing the seed does not state'}."
            )
        items.append(f"<li>{html.escape(text)}</li>")
    return f"<h3>Submission {html.escape(str(sub))}</h3><ul>{''.join(items)}</ul>"


def _claim_name(s) -> str:
    return "claim" if s.claim_basis == "as claimed" else f"log (best to epoch {s.budget})"


def _median(s, o: Options) -> str:
    if pd.notna(s.final_median_lo):
        return f"{o.confidence:.0%} CI {num(s.final_median_lo)} to {num(s.final_median_hi)}"
    return f"no {o.confidence:.0%} interval with fewer than {median_ci_min_n(o.confidence)} seeds"


def _interval(p, o: Options) -> str:
    if pd.notna(p.p_improve_lo):
        return f"{o.confidence:.0%} CI {num(p.p_improve_lo)} to {num(p.p_improve_hi)}"
    if min(p.n_before, p.n_after) < 2:
        return "no interval with one seed"
    if p.p_improve in (0, 1):
        return "no interval: the seeds of one step all beat the other's, nothing to resample"
    return "no interval: too few distinct values to resample"


def _p(p, equals: str = "") -> str:
    return DASH if pd.isna(p) else "< 0.001" if p < 0.001 else f"{equals}{p:.3f}"


def _progression_table(progression: pd.DataFrame) -> pd.DataFrame:
    p = progression
    return pd.DataFrame(
        {
            "submission": p["submission"],
            "before → after": p["before"] + " → " + p["after"],
            "seeds": p["n_before"].astype(str) + " → " + p["n_after"].astype(str),
            "P(after > before), CI": [
                f"{num(v)} ({num(lo)}, {num(hi)})" if pd.notna(lo) else f"{num(v)} (no CI)"
                for v, lo, hi in zip(p["p_improve"], p["p_improve_lo"], p["p_improve_hi"])
            ],
            "Mann-Whitney p": p["mann_whitney_p"].map(_p),
            "change": p["change"],
            "median change (pp)": p["median_diff"].map(lambda d: num(d, "+.3f")),
            "seeds with predictions": [
                f"{b} → {a}" if b else DASH for b, a in zip(p["images_before"], p["images_after"])
            ],
            "images fixed / broken": [
                f"{num(f, '.1f')} / {num(b, '.1f')}" if n else DASH
                for f, b, n in zip(p["fixed"], p["broken"], p["images_before"])
            ],
            "image test p": [_p(q) if n else DASH for q, n in zip(p["image_p"], p["images_before"])],
        }
    )


def _spread_table(steps: pd.DataFrame) -> pd.DataFrame:
    def sd(v):
        return num(np.sqrt(v), ".3f")

    return pd.DataFrame(
        {
            "step": steps["group"],
            "seeds": steps["n_seeds"],
            "observed SD (pp)": steps["var_observed"].map(sd),
            "test set alone (pp)": [
                f"{sd(v)} ({src})" if src else DASH for v, src in zip(steps["var_test"], steps["var_test_source"])
            ],
            "genuine between models (pp), CI": [
                f"{sd(v)} ({sd(lo)} to {sd(hi)})" + (", consistent with 0" if z else "") if pd.notna(v) else DASH
                for v, lo, hi, z in zip(
                    steps["var_model"], steps["var_model_lo"], steps["var_model_hi"], steps["var_model_zero"]
                )
            ],
            "test-set share, CI": [
                f"{num(v, '.0%')} ({num(lo, '.0%')} to {num(hi, '.0%')})" if pd.notna(v) else DASH
                for v, lo, hi in zip(steps["test_share"], steps["test_share_lo"], steps["test_share_hi"])
            ],
            "spread": steps["spread"],
        }
    )


def _claims_table(steps: pd.DataFrame) -> pd.DataFrame:
    def pct(value, p):
        return f"{value:.2f} % (p{p:.0f})" if pd.notna(p) else DASH

    table = pd.DataFrame(
        {
            "step": steps["group"],
            "compared with": steps["claim_basis"],
            "claimed best → percentile of our best epochs": [
                pct(v, p) for v, p in zip(steps["claim_best"], steps["claim_best_pct"])
            ],
            "seed file's logged final → percentile of our finals": [
                pct(v, p) for v, p in zip(steps["claim_final"], steps["claim_final_pct"])
            ],
            "above our max": [
                ", ".join(name for name, above in (("best", b), ("final", f)) if above)
                for b, f in zip(steps["claim_best_above_max"], steps["claim_final_above_max"])
            ],
            "note": steps["claim_note"].astype(object).fillna(""),
            "assumptions": [_join(a) for a in steps["assumptions"]],
        }
    )
    return table.loc[:, (table != "").any()]  # no empty columns


def _option_value(name: str, value):
    if name == "epoch_budget" and value is None:
        return "each step's recipe epochs"
    if name == "split":
        return ", ".join(value) or "none: engines, block sizes and devices pooled"
    return value


def definitions(o: Options = Options()) -> dict[str, str]:
    """Every term of the report, as the code computes it; the report prints these and the README's table is
    `definitions_markdown()` (a test checks both)."""
    se, p = float(binomial_se(o.target, o.n_test)), float(prob_at_least(o.target, o.target - 0.05, o.n_test))
    level, k = f"{o.confidence:.0%}", o.last_k
    return {
        "target": f"{o.target:.2f} % test accuracy.",
        "epoch budget": "the step's recipe epochs"
        + (f", here set to {o.epoch_budget}" if o.epoch_budget else "")
        + ". Statistics count epochs 1 … budget, or fewer where the runs trained fewer (--quick, "
        "--epochs); the epochs column then reads 'counted of budget'.",
        "hit run": "test accuracy at or above the target at some epoch within the budget.",
        "consistent run": f"test accuracy at or above the target in each of the last {k} epochs.",
        "too short": f"a run that counts fewer than {k} epochs: it can be judged neither consistent nor lucky, and "
        f"the consistent rate leaves it out. A last-K window longer than every run is refused.",
        "lucky run": "a hit run that is long enough to judge and not consistent.",
        "luck gap": f"the best epoch's accuracy minus the mean of the last {k} epochs (runs long enough to judge).",
        "rates": f"hit rate: hit runs / seeds; consistent rate: consistent runs / runs long enough to judge; each with "
        f"its {level} Clopper-Pearson interval, which covers the true rate at least {level} of the time for "
        "every rate and every number of seeds.",
        "CONSISTENT": "the consistent rate's interval lies at or above 0.5.",
        "LUCKY": "some seed hits, and the consistent rate's interval lies below 0.5.",
        "NEVER": "no seed hits.",
        "TOO SHORT": "no run is long enough to judge.",
        "UNDECIDED": "otherwise. The report gives the probability that "
        + ", ".join(map(str, MORE_SEEDS))
        + " more seeds decide it: the extra consistent runs are Beta-binomial, from the posterior of the "
        "consistent rate (uniform prior, updated with the runs judged), and an outcome decides when "
        "the interval over all runs leaves 0.5.",
        "median and interval": f"median over seeds, with the exact distribution-free {level} interval from order "
        "statistics: [x(l), x(n+1-l)], l the "
        f"{(1 - o.confidence) / 2:.3g} quantile of Binomial(n, 1/2); none with fewer than "
        f"{median_ci_min_n(o.confidence)} seeds, where even [min, max] covers less than "
        f"{level}.",
        "budgets": f"parameters < {o.max_params:,}; the step's epoch budget ≤ {o.max_epochs}.",
        "own target": "what the seed file itself set out to reach with the step (steps.parquet's target_* columns, "
        "with the seed's line in target_source): the accuracy passes when half or more of the seeds "
        "reach it at some epoch within the budget, parameters when below it, epochs when the budget "
        "is at most it; blank where the seed sets no number.",
        "test-set noise": f"one test of a fixed model on {o.n_test:,} images has a binomial standard error of "
        f"{se:.3f} percentage points at {o.target:.2f} %: a model truly at {o.target - 0.05:.2f} % "
        f"still scores ≥ {o.target:.2f} % with probability {p:.2f}.",
        "spread": "the sample variance of final accuracy across seeds, split into what the test set alone explains "
        "and genuine variance between the seeds' models (after Jordan 2024). Test set alone: with per-image "
        "predictions of two or more seeds, the sum over images of each image's variance of correctness "
        "across seeds, over the number of images squared: what the seeds would scatter if each image "
        "flipped independently; an image every seed gets right, or wrong, adds nothing. Without them, the "
        "binomial a(100 - a)/(n - 1) averaged over seeds, which treats every image as equally hard and so "
        "overstates the test set's part. Genuine: the difference, floored at 0, with the chi-square "
        f"{level} interval of the variance (final accuracies taken as normal) minus the test set's part; "
        "'consistent with 0' when that interval reaches 0. Share: test set / (test set + genuine). "
        "Spread 'test set' when genuine is consistent with 0 and the test set explains at least half even "
        "at the interval's end; 'models differ' when the interval excludes 0; 'too few seeds' otherwise. "
        "A step whose spread is test-set noise has no lucky seeds: one true accuracy, read with a noisy "
        "ruler.",
        "claims": "percentile of the seed file's claimed best accuracy among our seeds' best epochs, and of the final "
        "epoch of its logged run among our final epochs (ties count one half); only for full runs of the "
        "unchanged recipe. With an epoch budget shorter than the recipe, both come from the seed file's "
        "own log cut at the budget (best within it, and its value at the budget), and are left out "
        "without a log that long.",
        "progression": f"each step against the one before it in its submission, on final accuracy: P(after > before) "
        f"over all pairs of seeds (ties one half, as in rliable) with its {level} BCa bootstrap "
        f"interval ({o.n_bootstrap:,} resamples of each step's seeds, seed {o.random_state}; none "
        "with one seed, or where resampling cannot move it, as when one step's seeds all beat the "
        "other's); the two-sided Mann-Whitney p "
        f"from the permutation distribution (exact up to {o.n_bootstrap:,} arrangements); change: "
        f"improved or got worse when p < {1 - o.confidence:.2f}, too few seeds to tell when even "
        "complete separation could not get there, no clear change otherwise.",
        "image test": "over the seeds of both steps with per-image predictions: per image, d = share of the later "
        "step's seeds right - share of the earlier step's seeds right. Images fixed / broken: right "
        "for a random seed of the later step and wrong for one of the earlier, and the reverse. p: "
        "clustered McNemar test (Durkalski et al. 2003), chi-square(1) of (sum d)² / sum d², with "
        "images as clusters, so that an image counts once however many seeds see it and seeds need no "
        "pairing; with one seed a step it is McNemar's test. It treats the trained models as given "
        "and the test images as the sample; Mann-Whitney treats the seeds as the sample.",
        "comparable group": "rows of one step with one recipe hash and one --quick flag; never pooled with others.",
    }


def definitions_markdown(o: Options = Options()) -> str:
    """The README's definitions table."""
    return "\n".join(
        [
            "| term | meaning |",
            "| --- | --- |",
            *(f"| {term} | {meaning} |" for term, meaning in definitions(o).items()),
        ]
    )


def steps_columns_markdown() -> str:
    """The README's table of the columns of steps_summary.csv."""
    return "\n".join(
        ["| column | meaning |", "| --- | --- |", *(f"| `{c}` | {meaning} |" for c, meaning in STEPS_COLUMNS.items())]
    )


def _table(frame: pd.DataFrame, table_id: str, html_cols: set[str] = frozenset()) -> str:
    """An HTML table; cells are escaped except in `html_cols`, which already hold HTML."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{v if c in html_cols else html.escape(str(v))}</td>" for c, v in zip(frame.columns, row))
        + "</tr>"
        for row in frame.itertuples(False)
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _join(cell) -> str:
    return "; ".join(map(str, listed(cell)))


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       max-width: 1200px; padding: 1rem 2rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta, .note, figcaption { color: #555; font-size: .9rem; }
.banner { background: #fff4e0; border-left: 4px solid #e66101; padding: .5rem .8rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .3rem .55rem; text-align: left; vertical-align: top; }
td:first-child { white-space: nowrap; } .fail { color: #c0392b; font-weight: 600; } .pass { color: #1a9850; }
th { background: #f4f4f4; } tbody tr:hover { background: #fafafa; }
#verdict-table td, #progression-table td, #spread-table td { white-space: nowrap; }
.verdict { font-weight: 600; padding: .1rem .4rem; border-radius: 3px; color: white; }
.CONSISTENT { background: #1a9850; } .LUCKY { background: #f46d43; } .UNDECIDED { background: #4f8fc0; }
.NEVER { background: #969696; } .TOO-SHORT { background: #8073ac; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; display: block; }
dt { font-weight: 600; margin-top: .4rem; } dd { margin-left: 1.2rem; }
"""

SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  for (const img of images) img.dataset.loaded = img.complete && img.naturalWidth > 0 ? "yes" : "no";
  document.body.dataset.figuresLoaded = images.filter(i => i.dataset.loaded === "yes").length + "/" + images.length;
});
"""

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
{body}
<script>{script}</script>
</body>
</html>
"""
