"""Figures of the report. Each function takes the summary tables (see `analysis.stats`) and returns a Figure.

Every accuracy axis carries the target line and a band of +-1 binomial standard error around it: the scatter that
re-testing one fixed model on `Options.n_test` fresh images would show. Steps are ordered as in the steps table:
by submission, then by their order within it.
"""

from __future__ import annotations

import functools

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from analysis.stats import Options, Summary, binomial_se, prob_at_least  # noqa: E402
from analysis.words import in_window, window  # noqa: E402

VERDICT_COLORS = {
    "CONSISTENT": "#1a9850",
    "LUCKY": "#f46d43",
    "UNDECIDED": "#74add1",
    "NEVER": "#969696",
    "TOO SHORT": "#8073ac",
}
MODEL_COLOR = "#2166ac"
METRICS = {"best_acc": "best epoch", "final_acc": "final epoch", "lastk_min": "worst of last K"}
CLAIM = {"color": "#b2182b", "marker": "*", "s": 120, "zorder": 5, "edgecolor": "white", "linewidth": 0.5}
TARGET_COLOR, BAND_COLOR = "#e66101", "#fdb863"
ROW_INCH = 0.24  # inches of figure height per row of points


def _styled(plot):
    """Draw in the report's seaborn style without touching the global one."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs) -> Figure:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
            return plot(*args, **kwargs)

    return wrapper


def _target(ax, options: Options, axis: str = "y") -> None:
    """The target line and its +-1 SE noise band."""
    se = float(binomial_se(options.target, options.n_test))
    span, line = (ax.axhspan, ax.axhline) if axis == "y" else (ax.axvspan, ax.axvline)
    span(options.target - se, options.target + se, color=BAND_COLOR, alpha=0.25, lw=0, zorder=0)
    line(options.target, color=TARGET_COLOR, lw=1.2, ls="--", zorder=1)


def _target_handles(options: Options) -> list:
    se = float(binomial_se(options.target, options.n_test))
    return [
        Line2D([], [], color=TARGET_COLOR, ls="--", label=f"target {options.target:.2f} %"),
        Patch(color=BAND_COLOR, alpha=0.4, label=f"±1 SE of one test ({se:.3f} pp)"),
    ]


def _rows(steps: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The y axis of a figure with a row per step: each submission's heading on a row of its own, then its steps,
    so that no label sits on the data. Returns the labels, top to bottom, and each step's row (as `steps`)."""
    labels, at, last = [], [], None
    for sub, group in zip(steps["submission"], steps["group"]):
        if sub != last or not labels:
            labels.append(f"submission {sub}")
            last = sub
        at.append(len(labels))
        labels.append(group)
    return labels, np.array(at)


def _row_notes(ax, at, notes, colors=None, **style) -> None:
    """A note in the right margin on each step's row (`at`, from `_rows`)."""
    for y, note, color in zip(at, notes, colors if colors is not None else ["0.15"] * len(at)):
        ax.annotate(note, (1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=8, color=color, **style)


def _headings(ax, labels: list[str]) -> None:
    """Style the submission headings among the y tick labels (`_rows`), with a thin rule above each but the first."""
    ax.set_yticks(range(len(labels)), labels)
    for y, (label, tick) in enumerate(zip(labels, ax.get_yticklabels())):
        if label.startswith("submission "):
            tick.set(fontweight="bold", color="0.35", fontsize=8)
            if y > 0:
                ax.axhline(y - 0.5, color="0.3", lw=0.8)
    ax.set_ylim(len(labels) - 0.5, -0.5)


@_styled
def distributions(runs: pd.DataFrame, steps: pd.DataFrame, options: Options = Options()) -> Figure:
    """Per step, the seeds' best, final and worst-of-last-K accuracy: points over boxes, with the seed file's claims."""
    order, at = _rows(steps)
    metrics = [  # one-epoch runs: the best epoch and a last-K window of one are the final epoch
        m for m in METRICS if m == "final_acc" or (runs[m].notna().any() and not runs[m].equals(runs["final_acc"]))
    ]
    long = runs.melt(id_vars="group", value_vars=metrics, var_name="metric", value_name="acc").dropna()
    long["metric"] = long["metric"].map(METRICS).str.replace("K", str(options.last_k))
    fig, ax = plt.subplots(figsize=(10, 1.6 + ROW_INCH * len(metrics) * len(order)))
    palette = dict(zip([METRICS[m].replace("K", str(options.last_k)) for m in METRICS], sns.color_palette("deep")))
    common = {"data": long, "x": "acc", "y": "group", "hue": "metric", "order": order, "ax": ax, "palette": palette}
    sns.boxplot(**common, fill=False, showfliers=False, whis=(0, 100), linewidth=0.9, legend=False)
    sns.stripplot(**common, dodge=True, size=3.5, alpha=0.75, jitter=0.12)
    _target(ax, options, "x")
    _headings(ax, order)
    width = 0.8 / len(metrics)  # seaborn dodges the metrics over 0.8 of a row, in METRICS order from the top
    handles = ax.get_legend_handles_labels()[0]
    for name, label, marker, metric in (
        ("claim_best", "seed file's claimed best", "*", "best_acc"),
        ("claim_final", "seed file's logged final", "X", "final_acc"),
    ):
        claimed = steps[name].notna()
        if claimed.any():
            offset = (metrics.index(metric) - (len(metrics) - 1) / 2) * width if metric in metrics else 0.0
            ax.scatter(steps.loc[claimed, name], at[claimed.to_numpy()] + offset, **(CLAIM | {"marker": marker}))
            handles.append(Line2D([], [], ls="", label=label, **_marker(marker)))
    ax.legend(handles=handles + _target_handles(options), loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set(xlabel="test accuracy (%)", ylabel="", title="Accuracy across seeds, per step")
    fig.tight_layout()
    return fig


def _marker(marker: str) -> dict:
    return {"marker": marker, "color": CLAIM["color"], "markersize": 9 if marker == "*" else 7}


@_styled
def trajectories(epochs: pd.DataFrame, steps: pd.DataFrame, options: Options = Options()) -> Figure | None:
    """Test accuracy per epoch, per step: the seeds' median and 10-90 % band, and the seed file's own logged run
    (for full runs of the unchanged recipe only). Steps whose runs count one epoch have no trajectory; None where
    no step has one."""
    steps = steps[steps["budget"] >= 2]
    if steps.empty:
        return None
    e = epochs.merge(steps[["group", "budget"]], on="group")
    e = e[e["epoch"] <= e["budget"]]
    late = e[e["epoch"] >= e["budget"] / 2].groupby(["group", "epoch"])["test_acc"]
    logs = steps[steps["faithful"]].set_index("group")["claimed_log"].dropna()  # claims only beside the recipe
    claimed = np.concatenate([np.asarray(log, float) for log in logs] or [np.array([])])
    low = min(late.quantile(0.1).min(), options.target) - 0.1  # earlier epochs may run off the bottom
    high = max([late.quantile(0.9).max(), options.target, *claimed]) + 0.08
    cols = min(4, len(steps))
    grid = sns.FacetGrid(
        e,
        col="group",
        col_order=steps["group"].tolist(),
        col_wrap=cols,
        height=2.3,
        aspect=1.35,
        sharex=False,
        sharey=True,
        ylim=(low, high),
    )
    grid.map_dataframe(
        sns.lineplot, x="epoch", y="test_acc", estimator="median", errorbar=("pi", 80), color="#2166ac", lw=1.5
    )
    for group, ax in grid.axes_dict.items():
        _target(ax, options)
        if group in logs:
            log = np.asarray(logs[group], float)
            ax.plot(np.arange(1, len(log) + 1), log, color=CLAIM["color"], lw=1.1, ls="-", marker=".", ms=3)
    verdicts = steps.set_index("group")["verdict"]
    for group, ax in grid.axes_dict.items():
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{group}\n{verdicts[group]}", fontsize=9, color=VERDICT_COLORS[verdicts[group]])
    grid.set_axis_labels("epoch", "test accuracy (%)")
    handles = [
        Line2D([], [], color="#2166ac", label="median of seeds"),
        Patch(color="#2166ac", alpha=0.2, label="10–90 % of seeds"),
    ]
    if len(logs):
        handles.append(Line2D([], [], color=CLAIM["color"], marker=".", label="seed file's own logged run"))
    grid.figure.legend(
        handles=handles + _target_handles(options),
        loc="upper center",
        ncol=5 if cols > 2 else 2,
        frameon=False,
        bbox_to_anchor=(0.5, 0),
    )
    grid.figure.tight_layout()
    grid.figure.suptitle("Test accuracy per epoch (y axis cut below; early epochs may leave it)", y=1.0, va="bottom")
    return grid.figure  # legend and title lie outside the axes' box: save with bbox_inches="tight"


@_styled
def rates(steps: pd.DataFrame, options: Options = Options()) -> Figure:
    """Hit rate and consistent rate per step, with their intervals (stats.interval: Clopper-Pearson, or the confidence
    sequence for --until-decided runs) against the verdict line at 0.5."""
    labels, y = _rows(steps)
    fig, ax = plt.subplots(figsize=(10, 1.4 + ROW_INCH * 2 * len(labels)))
    for name, offset, color in (("hit", -0.17, "#92c5de"), ("consistent", 0.17, "#2166ac")):
        rate = steps[f"{name}_rate"]
        err = np.clip([rate - steps[f"{name}_lo"], steps[f"{name}_hi"] - rate], 0, None)  # float noise below 0
        ax.errorbar(
            rate,
            y + offset,
            xerr=err,
            fmt="o",
            color=color,
            capsize=3,
            label=f"{name} rate, {options.confidence:.0%} interval",
        )
    ax.axvline(0.5, color="0.2", lw=1, ls=":")
    notes = [f"{row.verdict}  (n={row.n_seeds})" for row in steps.itertuples()]
    _row_notes(ax, y, notes, steps["verdict"].map(VERDICT_COLORS), fontweight="bold")
    ax.set(
        xlim=(-0.02, 1.02),
        xlabel=f"share of seeds (hit: ≥ {options.target:.2f} % at some epoch; "
        f"consistent: {in_window(options.last_k)}, of the runs that long)",
        title="Hit rate vs consistent rate (verdict from the consistent rate's interval against 0.5)",
    )
    _headings(ax, labels)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.04 + 0.3 / len(labels)), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


@_styled
def ladder(runs: pd.DataFrame, steps: pd.DataFrame, progression: pd.DataFrame, options: Options = Options()) -> Figure:
    """Per submission, its steps in order with their final accuracies, and P(improvement) over the step before."""
    sizes = steps.groupby("submission", sort=False).size()  # one panel per submission, as wide as its steps
    subs = sizes.index.tolist()
    fig, axes = plt.subplots(
        1,
        len(subs),
        squeeze=False,
        sharey=True,
        width_ratios=sizes.tolist(),
        figsize=(min(14.0, 1.6 + 0.85 * len(steps)), 4.6),
    )
    palette = dict(zip(steps["group"], steps["verdict"].map(VERDICT_COLORS)))
    for ax, sub in zip(axes.flat, subs):
        order = steps.loc[steps["submission"] == sub, "group"].tolist()
        data = runs[runs["group"].isin(order)]
        common = {"data": data, "x": "group", "y": "final_acc", "order": order, "ax": ax}
        sns.boxplot(
            **common,
            hue="group",
            palette=palette,
            showfliers=False,
            width=0.55,
            whis=(0, 100),
            boxprops={"alpha": 0.35},
            legend=False,
        )
        sns.stripplot(**common, color="0.15", size=3.5, jitter=0.1)
        _target(ax, options)
        pairs = progression[progression["submission"] == sub]
        for k, pair in enumerate(pairs.itertuples()):
            x = (order.index(pair.before) + order.index(pair.after)) / 2
            ax.annotate(
                f"P(↑) = {pair.p_improve:.2f}",
                (x, 1.0 - 0.07 * (k % 2)),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="top",
                fontsize=7.5,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"},
            )
        ax.set(title=f"submission {sub}", xlabel="", ylabel="final test accuracy (%)")
        ax.tick_params(axis="x", labelrotation=35, labelsize=8)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    if len(progression):
        low, high = axes.flat[0].get_ylim()  # shared by all panels
        axes.flat[0].set_ylim(low, high + 0.2 * (high - low))  # headroom for the P(↑) labels
    fig.legend(
        handles=[Patch(color=c, alpha=0.5, label=v) for v, c in VERDICT_COLORS.items()] + _target_handles(options),
        loc="lower center",
        ncol=6,
        frameon=False,
    )
    fig.suptitle("Progression: final accuracy per step, and P(later step > earlier step) across seeds")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


@_styled
def luck(runs: pd.DataFrame, steps: pd.DataFrame, options: Options = Options()) -> Figure | None:
    """Per step, the luck gap (best - mean of last K) and the first epoch at the target, one point per seed. A panel
    with nothing to show is left out: the gap where no run counts two epochs, the first epoch where no seed reaches
    the target; None where neither has anything."""
    gaps = runs[runs["luck_gap"].notna()]
    panels = [panel for panel, shown in (("gap", len(gaps)), ("first", runs["hit"].any())) if shown]
    if not panels:
        return None
    order, at = _rows(steps)
    fig, axes = plt.subplots(
        1,
        len(panels),
        sharey=True,
        squeeze=False,
        figsize=(5 * len(panels), 1.4 + ROW_INCH * 1.6 * len(order)),
    )
    axes = dict(zip(panels, axes[0]))
    common = {"y": "group", "order": order, "color": "#4d4d4d", "size": 4, "jitter": 0.15}
    if "gap" in axes:
        gap = axes["gap"]
        sns.boxplot(
            gaps,
            x="luck_gap",
            y="group",
            order=order,
            ax=gap,
            color="#d9d9d9",
            showfliers=False,
            whis=(0, 100),
            width=0.5,
        )
        sns.stripplot(gaps, **common, x="luck_gap", ax=gap)
        gap.set(
            xlabel=f"luck gap: best − mean of {window(options.last_k)} (pp)",
            ylabel="",
            title="How far the best epoch sits above the end of the run",
        )
    if "first" in axes:
        first = axes["first"]
        sns.stripplot(runs, **common, x="first_epoch_at_target", ax=first)
        first.scatter(steps["budget"], at, marker="|", s=300, color=TARGET_COLOR)
        _row_notes(first, at, [f"never: {r.n_seeds - r.n_hit}/{r.n_seeds}" for r in steps.itertuples()])
        first.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        first.set(
            xlabel="epoch",
            ylabel="",
            xlim=(0, steps["budget"].max() + 1),
            title=f"First epoch at ≥ {options.target:.2f} % (orange bar: epoch budget)",
        )
    for ax in axes.values():
        _headings(ax, order)
    fig.tight_layout()
    return fig


@_styled
def spread(steps: pd.DataFrame, options: Options = Options()) -> Figure | None:
    """Per step, the variance of final accuracy across seeds: the part the test set alone explains, the genuine part
    between the seeds' models, and the interval of the genuine part (an arrow where it runs off the axis, or has no
    upper end). None where no step has two seeds."""
    if steps["var_observed"].isna().all():
        return None
    labels, y = _rows(steps)
    fig, ax = plt.subplots(figsize=(10, 1.4 + ROW_INCH * 1.6 * len(labels)))
    test, model = steps["var_test"].fillna(0), steps["var_model"].fillna(0)
    ax.barh(y, test, height=0.5, color=BAND_COLOR, label="expected from the test set alone")
    ax.barh(y, model, left=test, height=0.5, color=MODEL_COLOR, alpha=0.8, label="genuine, between models")
    right = 3 * np.nanmax([steps["var_observed"].max(), steps["var_test"].max(), 1e-6])  # upper ends run far
    lo = test + steps["var_model_lo"]
    hi = (test + steps["var_model_hi"]).where(steps["var_model_hi"].notna(), np.inf)  # NaN: no upper end
    hi = hi.where(lo.notna())
    ax.hlines(
        y,
        lo,
        np.minimum(hi, right),
        color="0.15",
        lw=1.2,
        label=f"{options.confidence:.0%} interval of the genuine part (on top of the test set's)",
    )
    cut = (hi > right).to_numpy()
    ax.scatter(np.full(cut.sum(), right), y[cut], marker=">", color="0.15", clip_on=False, zorder=3)
    ax.scatter(steps["var_observed"], y, marker="|", s=250, color="black", zorder=4, label="observed variance")
    notes = [
        f"{r.spread}" + (f", test set {r.test_share:.0%}" if pd.notna(r.test_share) else "") for r in steps.itertuples()
    ]
    colors = [MODEL_COLOR if spread == "models differ" else "0.25" for spread in steps["spread"]]
    _row_notes(ax, y, notes, colors)
    ax.set(
        xlim=(0, right),
        xlabel="variance of final accuracy across seeds (pp²)",
        title="How much of the seed-to-seed spread is only the test set",
    )
    _headings(ax, labels)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.04 + 0.3 / len(labels)), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


@_styled
def sources(runs: pd.DataFrame, table: pd.DataFrame, options: Options = Options()) -> Figure:
    """One row per step swept under several --vary settings, one box of final accuracies per setting: which source
    of randomness drives the spread. `table` is `stats.sources`."""
    steps = table["step"].unique().tolist()
    fig, axes = plt.subplots(
        len(steps), 1, figsize=(9, 0.8 + 0.45 * len(table) + 0.5 * len(steps)), squeeze=False, sharex=True
    )
    for ax, step in zip(axes[:, 0], steps):
        rows = table[table["step"] == step]
        data = runs[runs["group"].isin(rows["group"])].merge(rows[["group", "vary"]], on="group")
        common = {"data": data, "x": "final_acc", "y": "vary", "order": rows["vary"].tolist(), "ax": ax}
        sns.boxplot(**common, color="0.85", showfliers=False, whis=(0, 100), linewidth=0.9)
        sns.stripplot(**common, color=MODEL_COLOR, size=4, alpha=0.8, jitter=0.15)
        _target(ax, options, "x")
        ax.set(ylabel="", title=step, xlabel="")
    axes[-1, 0].set_xlabel("final test accuracy (%)")
    fig.suptitle("Which source of randomness spreads final accuracy (--vary)", y=1.0)
    fig.tight_layout()
    return fig


@_styled
def noise(options: Options = Options()) -> Figure:
    """How often one test of a model of a given true accuracy scores at or above the target."""
    se = float(binomial_se(options.target, options.n_test))
    true = np.linspace(options.target - 4 * se, options.target + 4 * se, 400)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(true, prob_at_least(options.target, true, options.n_test), color="#2166ac", lw=2)
    _target(ax, options, "x")
    for acc in (options.target - 0.05, options.target + 0.05):
        p = float(prob_at_least(options.target, acc, options.n_test))
        ax.plot([acc], [p], "o", color="0.2")
        ax.annotate(f"true {acc:.2f} % → {p:.0%}", (acc, p), xytext=(8, -4), textcoords="offset points", fontsize=8)
    ax.set(
        xlabel="true accuracy of a fixed model (%)",
        ylabel=f"P(score ≥ {options.target:.2f} %)",
        ylim=(-0.02, 1.02),
        title=f"One test on {options.n_test:,} images is a coin flip near the target",
    )
    ax.legend(handles=_target_handles(options), loc="upper left", frameon=True)
    fig.tight_layout()
    return fig


def all_figures(summary: Summary, epochs: pd.DataFrame) -> dict[str, Figure | None]:
    """Every figure of the report, in report order; None for a figure with nothing to draw (`analysis.words` says
    why). `sources` only where a step was swept under several --vary settings."""
    runs, steps, o = summary.runs, summary.steps, summary.options
    return {
        "distributions": distributions(runs, steps, o),
        "trajectories": trajectories(epochs, steps, o),
        "rates": rates(steps, o),
        "spread": spread(steps, o),
        "ladder": ladder(runs, steps, summary.progression, o),
        "luck": luck(runs, steps, o),
        **({"sources": sources(runs, summary.sources, o)} if len(summary.sources) else {}),
        "noise": noise(o),
    }
