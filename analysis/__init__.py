"""Read a sweep's Parquet results folder and tell a lucky 99.4 % hit from a consistent one.

- `analysis.load`: `load_results(out) -> Results`, the only reader of the results folder.
- `analysis.stats`: pure statistics over DataFrames and arrays; `summarize(results, options) -> Summary`.
- `analysis.words`: every sentence that says what a number means, and the glossary; no numbers computed there.
- `analysis.figures`: seaborn figures; each function takes data and returns a matplotlib Figure (or None: nothing
  to draw).
- `analysis.report`: `write_report(...)`, the only writer (HTML + CSV).
- `analysis.terminal`: what `sweep report` prints, at most 120 columns.
- `analysis.cli`: the `sweep` command: `sweeps.cli`'s app with `report` added.

Importing this package is cheap on purpose (no pandas, no matplotlib): `sweep --help` imports `analysis.cli`.
This package knows nothing of torch or ray.
"""

from cnn.errors import BadInput


class ReportError(BadInput):
    """Bad input for a report: no results, an unreadable file, rows that cannot be told apart. One-line message."""
