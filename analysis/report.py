"""The report: one self-contained HTML file (figures as base64 PNG, inline CSS, no external requests) and the
per-step, per-run and progression tables as CSV next to it. The sentences come from `analysis.words`.

This is the only module of `analysis` that writes files. The page fits a 1,280 px window: tables wrap their cells
instead of growing past it, and what a reader needs only sometimes (the statistics behind each verdict, each step's
own assumptions, the CSV's columns) is folded away in <details>.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import words
from analysis.load import Results
from analysis.stats import Options, Summary, listed
from analysis.words import DASH, num


@dataclass(frozen=True)
class ReportPaths:
    """Where the report and its tables went."""

    html: Path
    steps_csv: Path
    runs_csv: Path
    progression_csv: Path
    sources_csv: Path | None = None  # only for steps swept under several --vary settings
    comparison_csv: Path | None = None  # only with `sweep report --compare`


def write_report(results: Results, summary: Summary, html_path: Path) -> ReportPaths:
    """Write the HTML report of `summary` (from `stats.summarize(results, ...)`) and its CSV tables next to it."""
    from analysis.figures import all_figures  # matplotlib only when a report is drawn

    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    figures = {name: None if fig is None else _png(fig) for name, fig in all_figures(summary, results.epochs).items()}
    html_path.write_text(render_html(results, summary, figures), encoding="utf-8")
    paths = ReportPaths(
        html_path,
        html_path.with_name("steps_summary.csv"),
        html_path.with_name("runs_summary.csv"),
        html_path.with_name("progression.csv"),
    )
    steps_csv(summary).to_csv(paths.steps_csv, index=False)
    summary.runs.to_csv(paths.runs_csv, index=False)
    summary.progression.to_csv(paths.progression_csv, index=False)
    if len(summary.sources):
        paths = replace(paths, sources_csv=html_path.with_name("sources.csv"))
        summary.sources.to_csv(paths.sources_csv, index=False)
    if len(summary.comparison):
        paths = replace(paths, comparison_csv=html_path.with_name("comparison.csv"))
        summary.comparison.to_csv(paths.comparison_csv, index=False)
    return paths


def steps_csv(summary: Summary) -> pd.DataFrame:
    """steps_summary.csv: exactly the words.STEPS_COLUMNS, list columns as text."""
    steps = summary.steps
    return steps.assign(
        claimed_log=[json.dumps([float(x) for x in listed(log)]) for log in steps["claimed_log"]],
        assumptions=[_join(a) for a in steps["assumptions"]],
        in_plain_words=[words.in_plain_words(s, summary.options) for s in steps.itertuples()],
    ).reindex(columns=list(words.STEPS_COLUMNS))


# --- HTML -------------------------------------------------------------------------------------------------------


def render_html(results: Results, summary: Summary, figures: dict[str, str | None]) -> str:
    """The whole page. `figures` maps a figure's name to its base64 PNG, or to None where it has nothing to draw."""
    steps, o = summary.steps, summary.options
    body = [
        "<h1>Lucky or consistent? Multi-seed sweep report</h1>",
        f'<p class="meta">{html.escape(words.meta(results, summary))}</p>',
        *(f'<p class="banner">{_prose(n)}</p>' for n in words.notices(results, summary)),
        "<h2>Verdicts</h2>",
        _table(_verdict_table(steps), "verdict-table", html_cols={"verdict", "params", "epochs"}),
        f'<p class="note">{html.escape(words.verdict_legend(o))}</p>',
        *(_comparison_html(summary) if len(summary.comparison) else []),
        "<h2>Why, per step</h2>",
        '<p class="note">Each line is the verdict and why; open it for the statistics behind it.</p>',
        *(_submission_html(sub, steps, summary.progression, o) for sub in steps["submission"].unique()),
        "<h2>Figures</h2>",
        *(_figure_html(name, figures[name]) for name in words.CAPTIONS if name in figures),
        "<h2>How much of the spread is the test set</h2>",
        _table(_spread_table(steps), "spread-table"),
        *(_sources_html(summary.sources) if len(summary.sources) else []),
        "<h2>Progression within each submission</h2>",
        _table(_progression_table(summary.progression), "progression-table")
        if len(summary.progression)
        else "<p>No submission has two steps with rows here yet.</p>",
        "<h2>Claims and assumptions</h2>",
        _table(_claims_table(steps), "claims-table", html_cols={"own target"}),
        *_assumptions_html(steps),
        "<h2>Definitions and options</h2>",
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in words.definitions(o).items())
        + "</dl>",
        _table(
            pd.DataFrame(
                {"option": list(o.as_dict()), "value": [words.option_value(k, v) for k, v in o.as_dict().items()]}
            ),
            "options-table",
        ),
        "<details><summary><h2>Columns of steps_summary.csv</h2></summary>",
        _table(
            pd.DataFrame({"column": list(words.STEPS_COLUMNS), "meaning": list(words.STEPS_COLUMNS.values())}),
            "columns-table",
        ),
        "</details>",
    ]
    return PAGE.format(title="Sweep report", style=STYLE, body="\n".join(body), script=SCRIPT)


def _prose(text: str) -> str:
    """Words as HTML: escaped, `commands` as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _figure_html(name: str, png: str | None) -> str:
    if png is None:
        return f'<p class="note" id="fig-{name}">{html.escape(words.NOT_DRAWN[name])}</p>'
    return (
        f'<figure id="fig-{name}"><img src="data:image/png;base64,{png}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(words.CAPTIONS[name])}</figcaption></figure>"
    )


def _verdict_table(steps: pd.DataFrame) -> pd.DataFrame:
    """The verdicts and the numbers they rest on, one row per step; the rest of each step is further down."""

    def rate(k, n, lo, hi):
        return f"{k}/{n} ({lo:.2f}{DASH}{hi:.2f})" if n else DASH

    table = pd.DataFrame(
        {
            "step": steps["group"],
            "verdict": [f'<span class="verdict {_css(v)}">{html.escape(v)}</span>' for v in steps["verdict"]],
            "seeds": [
                f"{n}" + (f" ({s} too short)" if s else "") for n, s in zip(steps["n_seeds"], steps["n_too_short"])
            ],
            "hit rate": [rate(*r) for r in zip(steps["n_hit"], steps["n_seeds"], steps["hit_lo"], steps["hit_hi"])],
            "consistent rate": [
                rate(*r)
                for r in zip(steps["n_consistent"], steps["n_judged"], steps["consistent_lo"], steps["consistent_hi"])
            ],
            "median final (%)": steps["final_median"].map(num),
            "luck gap (pp)": steps["luck_gap_median"].map(num),
            "spread: test-set share": [
                f"{s} ({num(share, '.0%')})" if pd.notna(share) else s
                for s, share in zip(steps["spread"], steps["test_share"])
            ],
            "params": [f"{p:,} {_mark(ok)}" for p, ok in zip(steps["params"], steps["params_ok"])],
            "epochs": [
                f"{'' if b == e else f'{b} of '}{e} {_mark(ok)}"
                for b, e, ok in zip(steps["budget"], steps["epoch_budget"], steps["epochs_ok"])
            ],
        }
    )
    return table.drop(columns="luck gap (pp)") if steps["luck_gap_median"].isna().all() else table  # one-epoch runs


def _submission_html(sub: str, steps: pd.DataFrame, progression: pd.DataFrame, o: Options) -> str:
    """Per step of one submission: its verdict and why in one line, the statistics behind it folded away."""
    items = []
    for s in steps[steps["submission"] == sub].itertuples():
        title = f" ({s.title})" if isinstance(s.title, str) and s.title else ""
        items.append(
            f'<details class="why"><summary><b>{html.escape(s.group)}</b>{html.escape(title)}: '
            f"{html.escape(words.lead(s, o))}</summary>"
            f"<p>{html.escape(words.details(s, progression, o))}</p></details>"
        )
    return f"<h3>Submission {html.escape(str(sub))}</h3>{''.join(items)}"


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
                f"{num(v, '.4f')} ({num(lo, '.4f')}–{num(hi, '.4f') if pd.notna(hi) else 'no upper end'})"
                for v, lo, hi in zip(table["var_model"], table["var_model_lo"], table["var_model_hi"])
            ],
        }
    )
    said = [
        f"<p><b>{html.escape(step)}</b>: {html.escape(words.source_words(rows))}</p>"
        for step, rows in table.groupby("step", sort=False)
    ]
    return ["<h2>Which source of randomness makes a step lucky</h2>", *said, _table(shown, "sources-table")]


def _comparison_html(summary: Summary) -> list[str]:
    """What `sweep report --compare A B` asked: each pair in words, then the table."""
    said = [
        "<p><b>{}</b>: {}</p>".format(*map(html.escape, words.comparison_words(p, summary.options).split(": ", 1)))
        for p in summary.comparison.itertuples()
    ]
    return ["<h2>Comparison</h2>", *said, _table(_progression_table(summary.comparison, "A", "B"), "comparison-table")]


def _progression_table(progression: pd.DataFrame, before: str = "before", after: str = "after") -> pd.DataFrame:
    """A row per pair of `Summary.progression`, or of `Summary.comparison` (which has no submission column), with the
    two groups called `before` and `after`."""
    p = progression
    return pd.DataFrame(
        {
            **({"submission": p["submission"]} if "submission" in p else {}),
            f"{before} → {after}": p["before"] + " → " + p["after"],
            "seeds": p["n_before"].astype(str) + " → " + p["n_after"].astype(str),
            f"P({after} > {before}), CI": [
                f"{num(v)} ({num(lo)}, {num(hi)})" if pd.notna(lo) else f"{num(v)} (no CI)"
                for v, lo, hi in zip(p["p_improve"], p["p_improve_lo"], p["p_improve_hi"])
            ],
            "Mann-Whitney p": p["mann_whitney_p"].map(words.p_value),
            "change": p["change"],
            "median change (pp)": p["median_diff"].map(lambda d: num(d, "+.3f")),
            "seeds with predictions": [
                f"{b} → {a}" if b else DASH for b, a in zip(p["images_before"], p["images_after"])
            ],
            "images fixed / broken": [
                f"{num(f, '.1f')} / {num(b, '.1f')}" if n else DASH
                for f, b, n in zip(p["fixed"], p["broken"], p["images_before"])
            ],
            "image test p": [words.p_value(q) if n else DASH for q, n in zip(p["image_p"], p["images_before"])],
        }
    )


def _spread_table(steps: pd.DataFrame) -> pd.DataFrame:
    """The variance split in SDs (pp); an interval the seeds cannot bound says so instead of printing its end."""

    def sd(v):
        return num(np.sqrt(v), ".3f")

    def genuine(s):
        if pd.isna(s.var_model):
            return DASH
        upper = sd(s.var_model_hi) if pd.notna(s.var_model_hi) else f"{DASH}: {s.n_seeds} seeds cannot bound it"
        return f"{sd(s.var_model)} ({sd(s.var_model_lo)} to {upper})" + (
            ", consistent with 0" if s.var_model_zero else ""
        )

    def share(s):
        if pd.isna(s.test_share):
            return DASH
        lower = num(s.test_share_lo, ".0%") if pd.notna(s.test_share_lo) else DASH
        return f"{num(s.test_share, '.0%')} ({lower} to {num(s.test_share_hi, '.0%')})"

    return pd.DataFrame(
        {
            "step": steps["group"],
            "seeds": steps["n_seeds"],
            "observed SD (pp)": steps["var_observed"].map(sd),
            "test set alone (pp)": [
                f"{sd(v)} ({src})" if src else DASH for v, src in zip(steps["var_test"], steps["var_test_source"])
            ],
            "genuine between models (pp), CI": [genuine(s) for s in steps.itertuples()],
            "test-set share, CI": [share(s) for s in steps.itertuples()],
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
            "own target": [_own_target(s) for s in steps.itertuples()],
            "note": steps["claim_note"].astype(object).fillna(""),
        }
    )
    return table.loc[:, (~table.isin(["", DASH])).any()]  # no empty columns


def _own_target(s) -> str:
    """The step against its seed's own target (stats.own_target), e.g. '99.40 ✓, <10,000 ✓, ≤20 ✗'."""
    parts = [
        f"{text} {_mark(good)}"
        for text, good in (
            (f"{getattr(s, 'target_accuracy', np.nan):.2f}", getattr(s, "own_acc_ok", pd.NA)),
            (f"&lt;{getattr(s, 'target_params', 0):,.0f}", getattr(s, "own_params_ok", pd.NA)),
            (f"≤{getattr(s, 'target_epochs', 0):.0f}", getattr(s, "own_epochs_ok", pd.NA)),
        )
        if pd.notna(good)
    ]
    return ", ".join(parts) or DASH


def _mark(ok) -> str:
    return '<span class="pass">✓</span>' if ok else '<span class="fail">✗</span>'


def _assumptions_html(steps: pd.DataFrame) -> list[str]:
    """What every step assumes, once; then, folded per step, what it assumes beyond that."""
    lists = {group: [str(a) for a in listed(a)] for group, a in zip(steps["group"], steps["assumptions"])}
    first, *rest = lists.values()
    shared = [a for a in first if all(a in other for other in rest)] if rest else []
    own = {group: [a for a in each if a not in shared] for group, each in lists.items()}
    out = ["<h3>Assumptions: recipe values the seed files do not state</h3>"]
    if shared:
        out.append(f"<p>Every step assumes:</p>{_list(shared)}")
    also, more = ("also ", "more ") if shared else ("", "")
    out += [
        f'<details class="assumed"><summary><b>{html.escape(group)}</b> {also}assumes '
        f"{html.escape(words.plural(len(each), more + 'value'))}</summary>{_list(each)}</details>"
        for group, each in own.items()
        if each
    ]
    bare = [group for group, each in own.items() if not each]
    if bare:
        out.append(f"<p>{'Nothing more' if shared else 'No assumptions'}: {html.escape(', '.join(bare))}.</p>")
    return out


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"


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


def _css(verdict: str) -> str:
    return verdict.replace(" ", "-")


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
code { font-size: .9em; background: #f4f4f4; padding: 0 .2rem; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .3rem .55rem; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
td:first-child { white-space: nowrap; } .fail { color: #c0392b; font-weight: 600; } .pass { color: #1a9850; }
th { background: #f4f4f4; } tbody tr:hover { background: #fafafa; }
.verdict { font-weight: 600; padding: .1rem .4rem; border-radius: 3px; color: white; white-space: nowrap; }
.CONSISTENT { background: #1a9850; } .LUCKY { background: #f46d43; } .UNDECIDED { background: #4f8fc0; }
.NEVER { background: #969696; } .TOO-SHORT { background: #8073ac; }
details { margin: .3rem 0; } summary { cursor: pointer; }
details > p, details > ul { margin: .3rem 0 .6rem 1.2rem; color: #333; }
summary h2 { display: inline; border: 0; }
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
