"""What `sweep report` prints: the verdict table, in ASCII and at most `WIDTH` columns, a legend, and the notices a
reader must not miss (what a quick sweep can tell, and the command that gets the answer). Intervals, the reasons
behind each verdict and the figures are in the HTML report.
"""

from __future__ import annotations

import re
import textwrap

import pandas as pd

from analysis.load import Results
from analysis.stats import MORE_SEEDS, Summary
from analysis.words import comparison_words, notices, num, terminal_legend

WIDTH = 120
NBSP = "\xa0"  # textwrap never breaks a line there


def verdict_table(steps: pd.DataFrame) -> pd.DataFrame:
    """One row of strings per step of `Summary.steps`; the decide column only where some step is UNDECIDED."""

    def budgets(params_ok, epochs_ok):
        over = [name for name, ok in (("params", params_ok), ("epochs", epochs_ok)) if not ok]
        return "+".join(over) + " over" if over else "ok"

    table = pd.DataFrame(
        {
            "step": steps["group"],
            "verdict": steps["verdict"],
            "seeds": steps["n_seeds"].astype(str),
            "hit": [f"{k}/{n}" for k, n in zip(steps["n_hit"], steps["n_seeds"])],
            "consistent": [f"{k}/{n}" if n else "-" for k, n in zip(steps["n_consistent"], steps["n_judged"])],
            "final %": steps["final_median"].map(num),
            "spread": [
                f"{s} ({num(share, '.0%')})" if pd.notna(share) else s
                for s, share in zip(steps["spread"], steps["test_share"])
            ],
            "budgets": [budgets(p, e) for p, e in zip(steps["params_ok"], steps["epochs_ok"])],
        }
    )
    undecided = steps["verdict"] == "UNDECIDED"
    if undecided.any():
        table["decide +" + "/".join(map(str, MORE_SEEDS))] = [
            "/".join(num(getattr(s, f"p_decided_{m}"), ".0%").rstrip("%") for m in MORE_SEEDS) + " %" if u else "-"
            for s, u in zip(steps.itertuples(), undecided)
        ]
    return table


def verdict_text(results: Results, summary: Summary) -> str:
    """The table, its legend and the notices, as `sweep report` prints them."""
    table = verdict_table(summary.steps)
    widths = [max(len(c), table[c].str.len().max()) for c in table]
    rows = [table.columns.tolist(), *table.itertuples(index=False)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    legend = terminal_legend(summary.options, undecided=(summary.steps["verdict"] == "UNDECIDED").any())
    compared = [f"Comparison: {comparison_words(p, summary.options)}" for p in summary.comparison.itertuples()]
    paragraphs = [legend, *compared, *(f"Note: {n}" for n in notices(results, summary))]
    return "\n".join(lines) + "\n\n" + "\n\n".join(map(_wrap, paragraphs))


def _wrap(text: str) -> str:
    """`text` in lines of at most WIDTH columns, a `command` kept whole on one line so that it can be copied."""
    whole = re.sub(r"`[^`]+`", lambda m: m.group(0).replace(" ", NBSP), text)
    return textwrap.fill(whole, WIDTH, break_long_words=False, break_on_hyphens=False).replace(NBSP, " ")
