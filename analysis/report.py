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
from analysis.stats import Options, Summary, binomial_se, listed, prob_at_least, summarize

DASH = "–"


@dataclass(frozen=True)
class ReportPaths:
    """Where the report went, and the summary it shows."""

    html: Path
    steps_csv: Path
    runs_csv: Path
    progression_csv: Path
    summary: Summary


def write_report(results: Results, html_path: Path, options: Options = Options()) -> ReportPaths:
    """Summarize `results` and write the HTML report and its CSV tables (next to `html_path`)."""
    from analysis.figures import all_figures  # matplotlib only when a report is drawn

    summary = summarize(results, options)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    figures = {name: (_png(fig), caption) for name, (fig, caption) in all_figures(summary, results.epochs).items()}
    html_path.write_text(render_html(results, summary, figures), encoding="utf-8")
    paths = ReportPaths(html_path, html_path.with_name("steps_summary.csv"), html_path.with_name("runs_summary.csv"),
                        html_path.with_name("progression.csv"), summary)
    _flat(summary.steps).to_csv(paths.steps_csv, index=False)
    summary.runs.to_csv(paths.runs_csv, index=False)
    summary.progression.to_csv(paths.progression_csv, index=False)
    return paths


def verdict_table(steps: pd.DataFrame, plain: bool = False) -> pd.DataFrame:
    """The verdict table as strings, one row per step; `plain` keeps it ASCII for any terminal."""
    ok, fail, dash = ("ok", "OVER", "-") if plain else ("✓", "✗", DASH)

    def rate(k, n, lo, hi):
        return f"{k}/{n} ({lo:.2f}{dash}{hi:.2f})"

    def claim(row):
        if pd.isna(row.claim_best_pct):
            return dash
        return f"{row.claim_best:.2f}: p{row.claim_best_pct:.0f}" + (" >max" if row.claim_best_above_max else "")

    return pd.DataFrame({
        "step": steps["group"],
        "params": [f"{p:,} {ok if good else fail}" for p, good in zip(steps["params"], steps["params_ok"])],
        "epochs": [f"{'' if b == e else f'{b} of '}{e} {ok if good else fail}"
                   for b, e, good in zip(steps["budget"], steps["epoch_budget"], steps["epochs_ok"])],
        "seeds": steps["n_seeds"],
        "hit rate": [rate(*r) for r in zip(steps["n_hit"], steps["n_seeds"], steps["hit_lo"], steps["hit_hi"])],
        "consistent rate": [rate(*r) for r in zip(steps["n_consistent"], steps["n_seeds"], steps["consistent_lo"],
                                                  steps["consistent_hi"])],
        "median final": [f"{m:.2f}" for m in steps["final_median"]],
        "luck gap": [f"{g:.2f}" for g in steps["luck_gap_median"]],
        "claim, percentile": [claim(r) for r in steps.itertuples()],
        "own target": [_own_target(r, plain) for r in steps.itertuples()],
        "verdict": [_verdict_label(v, m) for v, m in zip(steps["verdict"], steps["more_seeds"])],
    })


def _own_target(row, plain: bool) -> str:
    """The step against its seed's own target (stats.own_target), e.g. '99.40 ok, <10,000 ok, <=20 ok'."""
    ok, fail, dash, le = ("ok", "NO", "-", "<=") if plain else ("✓", "✗", DASH, "≤")
    parts = [f"{text} {ok if good else fail}" for text, good in (
        (f"{getattr(row, 'target_accuracy', np.nan):.2f}", getattr(row, "own_acc_ok", pd.NA)),
        (f"<{getattr(row, 'target_params', 0):,.0f}", getattr(row, "own_params_ok", pd.NA)),
        (f"{le}{getattr(row, 'target_epochs', 0):.0f}", getattr(row, "own_epochs_ok", pd.NA))) if pd.notna(good)]
    return ", ".join(parts) or dash


def _verdict_label(verdict: str, more_seeds: float) -> str:
    if verdict != "UNDECIDED":
        return verdict
    if pd.isna(more_seeds):
        return f"{verdict} (many more seeds)"
    return f"{verdict} (~{more_seeds:.0f} more seed{'s' * (more_seeds > 1)})"


def verdict_text(summary: Summary) -> str:
    """The compact verdict table for the terminal: ASCII, columns left-aligned."""
    table = verdict_table(summary.steps, plain=True).astype(str)
    widths = [max(len(c), table[c].str.len().max()) for c in table]
    lines = [table.columns.tolist(), *table.itertuples(index=False)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


# --- HTML -------------------------------------------------------------------------------------------------------


def render_html(results: Results, summary: Summary, figures: dict[str, tuple[str, str]]) -> str:
    """The whole page; `figures` maps a name to (base64 PNG, caption)."""
    steps, o = summary.steps, summary.options
    table = verdict_table(steps)
    table["verdict"] = [f'<span class="verdict {v}">{html.escape(t)}</span>' for v, t in zip(steps["verdict"],
                                                                                             table["verdict"])]
    marks = {"✓": '<span class="pass">✓</span>', "✗": '<span class="fail">✗</span>'}
    for col in ("params", "epochs"):
        table[col] = [" ".join(marks.get(w, html.escape(w)) for w in t.split(" ")) for t in table[col]]
    body = [
        "<h1>Lucky or consistent? Multi-seed sweep report</h1>",
        f'<p class="meta">{html.escape(_meta(results, summary))}</p>',
        *(f'<p class="banner">{html.escape(b)}</p>' for b in _banners(results, summary)),
        "<h2>Verdicts</h2>",
        _table(table, "verdict-table", html_cols={"verdict", "params", "epochs"}),
        '<p class="note">Rates give their ' + f"{o.confidence:.0%}" + " Wilson interval. Median final accuracy "
        "and luck gap are medians over seeds, in % and percentage points. Claim: the best accuracy the seed file "
        "reported and its percentile among our seeds' best epochs (&gt;max: above all of them). ✓/✗: parameter "
        f"budget (&lt; {o.max_params:,}) and epoch budget (≤ {o.max_epochs}).</p>",
        "<h2>What it says, per submission</h2>",
        *(_submission_html(sub, steps, summary.progression, o) for sub in steps["submission"].unique()),
        "<h2>Figures</h2>",
        *(f'<figure id="fig-{name}"><img src="data:image/png;base64,{png}" alt="{html.escape(name)}">'
          f"<figcaption>{html.escape(caption)}</figcaption></figure>" for name, (png, caption) in figures.items()),
        "<h2>Progression within each submission</h2>",
        _table(_progression_table(summary.progression), "progression-table") if len(summary.progression)
        else "<p>No submission has two steps with rows here yet.</p>",
        "<h2>Claims and assumptions</h2>",
        _table(_claims_table(steps), "claims-table"),
        "<h2>Definitions and options</h2>",
        _definitions(o),
        _table(pd.DataFrame({"option": list(o.as_dict()),
                             "value": ["each step's recipe epochs" if v is None else v for v in o.as_dict().values()]}),
               "options-table"),
    ]
    return PAGE.format(title="Sweep report", style=STYLE, body="\n".join(body), script=SCRIPT)


def _meta(results: Results, summary: Summary) -> str:
    runs, steps = summary.runs, summary.steps
    seeds = steps["n_seeds"]
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    latest = pd.to_datetime(results.epochs.get("wall_time", pd.Series(dtype="datetime64[us, UTC]"))).max()
    newest = f" · newest row {latest:%Y-%m-%d %H:%M} UTC" if pd.notna(latest) else ""
    return (f"Results folder {results.out} · {len(runs)} finished runs · {len(steps)} steps · "
            f"{seed_range} seeds per step{newest}")


def _banners(results: Results, summary: Summary) -> list[str]:
    steps, banners = summary.steps, []
    quick = steps["quick"].astype(bool)
    if quick.all():
        banners.append("All runs here are --quick runs (a tenth of the training images, a short run). They show that "
                       "the pipeline works, not what the recipes reach; claims are not compared with them.")
    elif quick.any():
        banners.append("This folder holds both --quick and full runs. They are never pooled: quick rows appear as "
                       "separate steps marked [quick], and progressions compare quick with quick, full with full.")
    if steps["group"].str.contains(" @").any():
        banners.append("Some steps have rows under more than one recipe hash (e.g. recipe overrides); each hash is "
                       "reported as its own row, marked @<hash>.")
    if steps["n_seeds"].nunique() > 1:
        banners.append("Steps have different numbers of seeds (a sweep still running reports the seeds finished so "
                       "far); the seeds column says how many each verdict rests on.")
    if results.unfinished:
        counts = ", ".join(f"{step} {n}" for step, n in sorted(results.unfinished.items()))
        banners.append(f"Not in these numbers yet: {sum(results.unfinished.values())} unfinished run(s) ({counts}): "
                       "running, interrupted or failed; `sweep status` tells which.")
    predicted = set(zip(results.predictions["group"], results.predictions["seed"]))
    missing = sum(run not in predicted for run in zip(summary.runs["group"], summary.runs["seed"]))
    if missing:
        banners.append(f"{missing} finished run(s) have no predictions file yet; McNemar tests use the seeds where "
                       "both steps have one.")
    return banners


def _submission_html(sub: str, steps: pd.DataFrame, progression: pd.DataFrame, o: Options) -> str:
    """A plain-language line per step of one submission."""
    items = []
    for s in steps[steps["submission"] == sub].itertuples():
        text = (f"{s.group}{f' ({s.title})' if isinstance(s.title, str) and s.title else ''}: {s.verdict}. "
                f"{s.n_hit} of {s.n_seeds} seeds reached {o.target:.2f} % at some epoch and {s.n_consistent} held it "
                f"through the last {o.last_k} epochs; median final accuracy {s.final_median:.2f} % "
                f"({o.confidence:.0%} CI {_range(s.final_median_lo, s.final_median_hi)}).")
        if s.verdict == "UNDECIDED":
            text += (f" About {s.more_seeds:.0f} more seed(s) would likely decide it." if pd.notna(s.more_seeds)
                     else " Its consistent rate is close to 0.5: it takes many more seeds to decide.")
        for p in progression[progression["after"] == s.group].itertuples():
            text += (f" Against {p.before}: P(better) = {p.p_improve:.2f}, median change {p.median_diff:+.2f} pp "
                     f"(CI {_range(p.median_diff_lo, p.median_diff_hi, '+.2f')}): {_change(p)}.")
        if pd.notna(s.claim_best_pct):
            text += (f" The seed file's claim of {s.claim_best:.2f} % sits at percentile {s.claim_best_pct:.0f} of "
                     "our seeds' best epochs" + (", above all of them" if s.claim_best_above_max else "") + ".")
        if s.claim_final_above_max:
            text += (f" The last epoch of the seed file's logged run, {s.claim_final:.2f} %, is above all our final "
                     "epochs.")
        if s.claim_best_above_max or s.claim_final_above_max:
            text += (" Either the student's run was very lucky or our reconstruction of the recipe differs; this "
                     f"step assumes {_join(s.assumptions) or 'nothing the seed does not state'}.")
        items.append(f"<li>{html.escape(text)}</li>")
    return f"<h3>Submission {html.escape(str(sub))}</h3><ul>{''.join(items)}</ul>"


def _change(p) -> str:
    if p.median_diff_lo > 0:
        return "improved"
    if p.median_diff_hi < 0:
        return "got worse"
    return "no clear change" if pd.notna(p.median_diff_lo) else "too few seeds to tell"


def _range(lo, hi, fmt: str = ".2f", sep: str = " to ") -> str:
    return f"{lo:{fmt}}{sep}{hi:{fmt}}" if pd.notna(lo) else "n/a"


def _progression_table(progression: pd.DataFrame) -> pd.DataFrame:
    p = progression
    return pd.DataFrame({
        "submission": p["submission"], "before → after": p["before"] + " → " + p["after"],
        "seeds": p["n_before"].astype(str) + " → " + p["n_after"].astype(str),
        "P(after > before)": p["p_improve"].map("{:.2f}".format),
        "median change (pp), CI": [f"{d:+.3f} ({_range(lo, hi, '+.3f', ', ')})" for d, lo, hi in
                               zip(p["median_diff"], p["median_diff_lo"], p["median_diff_hi"])],
        "change": [_change(r) for r in p.itertuples()],
        "McNemar: paired seeds": p["mcnemar_seeds"],
        "images fixed / broken per seed": [f"{f:.1f} / {b:.1f}" if n else DASH
                                           for f, b, n in zip(p["fixed"], p["broken"], p["mcnemar_seeds"])],
        "median p; seeds p < 0.05": [f"{q:.3f}; {k}/{n}" if n else DASH
                                     for q, k, n in zip(p["mcnemar_p"], p["mcnemar_significant"], p["mcnemar_seeds"])],
    })


def _claims_table(steps: pd.DataFrame) -> pd.DataFrame:
    def pct(value, p):
        return f"{value:.2f} % (p{p:.0f})" if pd.notna(p) else DASH

    table = pd.DataFrame({
        "step": steps["group"],
        "claimed best → percentile of our best epochs": [pct(v, p) for v, p in zip(steps["claim_best"],
                                                                                   steps["claim_best_pct"])],
        "seed file's logged final → percentile of our finals": [pct(v, p) for v, p in zip(steps["claim_final"],
                                                                                     steps["claim_final_pct"])],
        "above our max": [", ".join(name for name, above in (("best", b), ("final", f)) if above)
                          for b, f in zip(steps["claim_best_above_max"], steps["claim_final_above_max"])],
        "note": steps["claim_note"].fillna(""),
        "assumptions": [_join(a) for a in steps["assumptions"]],
    })
    return table.loc[:, (table != "").any()]  # no empty columns


def _definitions(o: Options) -> str:
    se, p = float(binomial_se(o.target, o.n_test)), float(prob_at_least(o.target, o.target - 0.05, o.n_test))
    terms = {
        "Target": f"{o.target:.2f} % test accuracy.",
        "Epoch budget": "the step's recipe epochs" + (f", here set to {o.epoch_budget}" if o.epoch_budget else "")
                        + ". Statistics count epochs 1 … budget, or fewer where the runs trained fewer (--quick, "
                          "--epochs); the epochs column then reads 'counted of budget'.",
        "Hit run": "test accuracy at or above the target at some epoch within the budget.",
        "Consistent run": f"test accuracy at or above the target in each of the last {o.last_k} epochs.",
        "Lucky run": "a hit run that is not consistent.",
        "Luck gap": f"the best epoch's accuracy minus the mean of the last {o.last_k} epochs.",
        "Verdict": f"from the consistent rate's {o.confidence:.0%} Wilson interval over seeds: CONSISTENT when its "
                   "lower bound is ≥ 0.5; LUCKY when some seed hits and its upper bound is < 0.5; NEVER when no "
                   "seed hits; UNDECIDED otherwise, with a rough count of the extra seeds after which the interval "
                   "would leave 0.5 if the rate stayed as it is.",
        "Budgets": f"parameters < {o.max_params:,}; the step's epoch budget ≤ {o.max_epochs}.",
        "Own target": "what the seed file itself set out to reach with the step (steps.parquet's target_* columns, "
                      "with the seed's line in target_source): the accuracy passes when half or more of the seeds "
                      "reach it at some epoch within the budget, parameters when below it, epochs when the budget "
                      "is at most it; blank where the seed sets no number.",
        "Test-set noise": f"one test of a fixed model on {o.n_test:,} images has a binomial standard error of "
                          f"{se:.3f} percentage points at {o.target:.2f} %: a model truly at {o.target - 0.05:.2f} % "
                          f"still scores ≥ {o.target:.2f} % with probability {p:.2f}.",
        "Claims": "percentile of the seed file's claimed best accuracy among our seeds' best epochs, and of the final "
                  "epoch of its logged run among our final epochs (ties count one half); only for full runs of the "
                  "unchanged recipe.",
        "Progression": f"P(after > before) over all pairs of seeds (ties one half, as in rliable); a "
                       f"{o.confidence:.0%} percentile-bootstrap interval ({o.n_bootstrap:,} resamples, seed "
                       f"{o.random_state}) of the difference of median final accuracies; an exact McNemar test on "
                       "the per-image predictions of each seed run in both steps.",
        "Comparable group": "rows of one step with one recipe hash and one --quick flag; never pooled with others.",
    }
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in terms.items()) + "</dl>"


def _table(frame: pd.DataFrame, table_id: str, html_cols: set[str] = frozenset()) -> str:
    """An HTML table; cells are escaped except in `html_cols`, which already hold HTML."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{v if c in html_cols else html.escape(str(v))}</td>"
                                    for c, v in zip(frame.columns, row)) + "</tr>" for row in frame.itertuples(False))
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _flat(steps: pd.DataFrame) -> pd.DataFrame:
    """The steps table with its list columns as text, for CSV."""
    return steps.assign(claimed_log=[json.dumps([float(x) for x in listed(log)]) for log in steps["claimed_log"]],
                        assumptions=[_join(a) for a in steps["assumptions"]])


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
#verdict-table td, #progression-table td { white-space: nowrap; }
.verdict { font-weight: 600; padding: .1rem .4rem; border-radius: 3px; color: white; }
.CONSISTENT { background: #1a9850; } .LUCKY { background: #f46d43; } .UNDECIDED { background: #4f8fc0; }
.NEVER { background: #969696; }
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
