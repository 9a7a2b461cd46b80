"""Pure statistics over the results' rows: no I/O, and randomness only through explicit `random_state` seeds.

Shapes (percent accuracies throughout):
- `epochs`: one row per (group, seed, epoch), as in `load.Results.epochs`;
- `runs`: one row per run (group, seed), from `run_summary`;
- `steps`: one row per comparable group, from `step_summary`, ordered by submission, order, group;
- `progression`: one row per pair of consecutive steps within a submission, from `progression`.

Every run statistic counts epochs 1..budget only, where a run's budget is the smaller of the step's epoch budget
(its recipe `epochs`, or `Options.epoch_budget`) and the epochs the run itself trained for (`--quick`, `--epochs`).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from analysis.load import Results

EPS = 1e-9  # percent; "at or above the target" forgives the float rounding of 100 * correct / total
VERDICTS = ("CONSISTENT", "LUCKY", "UNDECIDED", "NEVER")


@dataclass(frozen=True)
class Options:
    """Every definition the report rests on; the report prints them."""

    target: float = 99.40  # percent test accuracy
    last_k: int = 3  # epochs in the final window of a consistent run
    epoch_budget: int | None = None  # epochs; None: each step's recipe epochs
    max_params: int = 8_000  # parameter budget: passes when params < max_params
    max_epochs: int = 15  # epoch budget: passes when the budget <= max_epochs
    n_test: int = 10_000  # test images behind the noise band around the target
    confidence: float = 0.95  # of every interval
    n_bootstrap: int = 2_000  # bootstrap resamples
    random_state: int = 0  # seed of every bootstrap

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    runs: pd.DataFrame
    steps: pd.DataFrame
    progression: pd.DataFrame
    options: Options


# --- test-set noise --------------------------------------------------------------------------------------------


def binomial_se(acc, n=10_000):
    """Standard error, in percentage points, of an accuracy (percent) measured on `n` independent test images."""
    p = np.asarray(acc, dtype=float) / 100
    return 100 * np.sqrt(p * (1 - p) / n)


def prob_at_least(target: float, true_acc, n: int = 10_000):
    """P(measured accuracy >= target) on `n` images for a model of true accuracy `true_acc` (exact binomial)."""
    k = np.ceil(np.round(target / 100 * n, 6))  # fewest correct images that score >= target
    return scipy.stats.binom.sf(k - 1, n, np.asarray(true_acc, dtype=float) / 100)


# --- rates and verdicts ----------------------------------------------------------------------------------------


def wilson(k, n, confidence: float = 0.95):
    """Wilson score interval (low, high) of the rate k/n; works elementwise on arrays."""
    return proportion_confint(k, n, alpha=1 - confidence, method="wilson")


def verdict(consistent: int, hits: int, n: int, confidence: float = 0.95) -> str:
    """CONSISTENT / LUCKY / NEVER / UNDECIDED from the consistent-run rate's Wilson interval against 0.5."""
    if hits == 0:
        return "NEVER"
    low, high = wilson(consistent, n, confidence)
    if low >= 0.5:
        return "CONSISTENT"
    if high < 0.5:
        return "LUCKY"
    return "UNDECIDED"


def seeds_to_decide(consistent: int, n: int, confidence: float = 0.95, cap: int = 1_000) -> int | None:
    """Rough number of extra seeds after which the Wilson interval would leave 0.5, if the consistent rate stayed
    at consistent/n. None when more than `cap` would be needed (the rate is about 0.5)."""
    total = n + np.arange(1, cap + 1)
    low, high = wilson(np.round(consistent / n * total), total, confidence)
    decided = (low >= 0.5) | (high < 0.5)
    return int(np.argmax(decided)) + 1 if decided.any() else None


# --- distributions ---------------------------------------------------------------------------------------------


def median_ci(x, confidence: float = 0.95, n_resamples: int = 2_000, random_state: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of `x`; NaN for fewer than two values."""
    return _bootstrap((x,), np.median, confidence, n_resamples, random_state)


def median_difference_ci(x, y, confidence: float = 0.95, n_resamples: int = 2_000, random_state: int = 0):
    """Percentile-bootstrap interval of median(x) - median(y), x and y resampled independently."""
    return _bootstrap((x, y), lambda a, b, axis: np.median(a, axis) - np.median(b, axis),
                      confidence, n_resamples, random_state)


def _bootstrap(samples, statistic, confidence, n_resamples, random_state) -> tuple[float, float]:
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    if min(len(s) for s in samples) < 2:
        return (np.nan, np.nan)
    ci = scipy.stats.bootstrap(samples, statistic, confidence_level=confidence, n_resamples=n_resamples,
                               method="percentile", rng=np.random.default_rng(random_state)).confidence_interval
    return (float(ci.low), float(ci.high))


def probability_of_improvement(x, y) -> float:
    """P(X > Y) for X drawn from x and Y from y, ties counting 1/2 (rliable's probability of improvement)."""
    diff = np.subtract.outer(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return float(np.mean((np.sign(diff) + 1) / 2))


def claim_percentile(ours, claim: float) -> float:
    """Percentile of `claim` within `ours`, ties counting half; NaN without a claim."""
    if claim is None or pd.isna(claim) or len(ours) == 0:
        return np.nan
    return float(scipy.stats.percentileofscore(ours, claim, kind="mean"))


# --- per-example predictions -----------------------------------------------------------------------------------


def correctness(correct: bytes, n: int) -> np.ndarray:
    """Per-image correctness (bool, shape (n,)) from the `np.packbits` bytes of the predictions file."""
    return np.unpackbits(np.frombuffer(correct, dtype=np.uint8))[:n].astype(bool)


def mcnemar_by_seed(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Exact McNemar test per seed that has predictions in both frames (one row per run, columns seed, n, correct).

    Returns seed, fixed (images wrong before and right after), broken (right before, wrong after), p.
    """
    pairs = before.merge(after, on="seed", suffixes=("_b", "_a"))
    rows = []
    for pair in pairs.itertuples():
        if pair.n_b != pair.n_a:
            continue  # different test sets: nothing to pair
        b, a = correctness(pair.correct_b, pair.n_b), correctness(pair.correct_a, pair.n_a)
        table = [[np.sum(b & a), np.sum(b & ~a)], [np.sum(~b & a), np.sum(~b & ~a)]]
        rows.append({"seed": pair.seed, "fixed": table[1][0], "broken": table[0][1],
                     "p": mcnemar(table, exact=True).pvalue})
    return pd.DataFrame(rows, columns=["seed", "fixed", "broken", "p"])


# --- tables ----------------------------------------------------------------------------------------------------


def run_summary(epochs: pd.DataFrame, budget: pd.Series, target: float = 99.40, last_k: int = 3) -> pd.DataFrame:
    """One row per run (group, seed) over its epochs 1..budget.

    budget: epoch budget per group (indexed by group); a run's budget is the smaller of it and the run's `epochs`.
    Columns: best_acc, best_epoch (first epoch at the best), final_acc, final_epoch, lastk_min, lastk_mean,
    first_epoch_at_target (NaN if never), hit, consistent, lucky, luck_gap (best - mean of last K), final_se.
    The last-K window is the last min(K, epochs run) epochs.
    """
    e = epochs.assign(budget=np.minimum(epochs["group"].map(budget), epochs["epochs"]))
    e = e[e["epoch"] <= e["budget"]].sort_values(["group", "seed", "epoch"]).reset_index(drop=True)
    key = ["group", "seed"]
    runs = e.groupby(key)
    window = e[runs.cumcount(ascending=False) < last_k].groupby(key)["test_acc"]
    at_target = e[e["test_acc"] >= target - EPS].groupby(key)["epoch"].min()
    out = pd.DataFrame({
        "step": runs["step"].first(),
        "recipe_hash": runs["recipe_hash"].first(),
        "quick": runs["quick"].first(),
        "budget": runs["budget"].first(),
        "best_acc": runs["test_acc"].max(),
        "best_epoch": e.loc[runs["test_acc"].idxmax(), key + ["epoch"]].set_index(key)["epoch"],
        "final_acc": runs["test_acc"].last(),
        "final_epoch": runs["epoch"].last(),
        "lastk_min": window.min(),
        "lastk_mean": window.mean(),
        "first_epoch_at_target": at_target.astype(float),
    })
    out["hit"] = out["best_acc"] >= target - EPS
    out["consistent"] = out["lastk_min"] >= target - EPS
    out["lucky"] = out["hit"] & ~out["consistent"]
    out["luck_gap"] = out["best_acc"] - out["lastk_mean"]
    out["final_se"] = binomial_se(out["final_acc"], runs["test_total"].last())
    return out.reset_index()


def group_table(results: Results, options: Options = Options()) -> pd.DataFrame:
    """One row per comparable group: its step's metadata, params as run, and epoch budget; in report order."""
    e = results.epochs
    overrides = e["overrides"] if "overrides" in e else pd.Series("{}", index=e.index)
    groups = e.assign(overridden=~overrides.fillna("{}").isin(["{}", ""])).groupby("group", as_index=False).agg(
        step=("step", "first"), recipe_hash=("recipe_hash", "first"), quick=("quick", "first"),
        overridden=("overridden", "any"), params=("params", "first"), run_epochs=("epochs", "max"))
    meta = results.steps.drop(columns=["params", "recipe_hash"]).rename(columns={"epochs": "recipe_epochs"})
    groups = groups.merge(meta, on="step", how="left")
    groups["epoch_budget"] = (groups["recipe_epochs"] if options.epoch_budget is None else options.epoch_budget)
    groups["budget"] = np.minimum(groups["epoch_budget"], groups["run_epochs"]).astype(int)  # epochs counted
    groups["faithful"] = ~groups["quick"].astype(bool) & ~groups["overridden"]  # the seed file's recipe, as claimed
    return groups.sort_values(["submission", "order", "group"], na_position="last").reset_index(drop=True)


def step_summary(runs: pd.DataFrame, groups: pd.DataFrame, options: Options = Options()) -> pd.DataFrame:
    """One row per group: seeds, rates with Wilson intervals, medians with bootstrap CIs, verdict, budgets, claims.

    Claims are only compared with faithful groups (full runs of the recipe without overrides): a quick or
    overridden run is a different experiment from the one the seed reported.
    """
    o = options
    rows = []
    for g in groups.itertuples(index=False):
        r = runs[runs["group"] == g.group]
        n, hits, cons = len(r), int(r["hit"].sum()), int(r["consistent"].sum())
        verdict_ = verdict(cons, hits, n, o.confidence)
        log = listed(g.claimed_log)
        claimed_final = float(log[-1]) if log and g.faithful else np.nan
        claimed_best = g.claimed_best_test if g.faithful else np.nan
        row = {"n_seeds": n, "n_hit": hits, "n_consistent": cons,
               "hit_rate": hits / n, "consistent_rate": cons / n,
               "luck_gap_median": r["luck_gap"].median(),
               "verdict": verdict_,
               "more_seeds": seeds_to_decide(cons, n, o.confidence) if verdict_ == "UNDECIDED" else None,
               "params_ok": g.params < o.max_params, "epochs_ok": g.epoch_budget <= o.max_epochs,
               "claim_best": claimed_best, "claim_best_pct": claim_percentile(r["best_acc"], claimed_best),
               "claim_final": claimed_final, "claim_final_pct": claim_percentile(r["final_acc"], claimed_final),
               "claim_best_above_max": bool(claimed_best > r["best_acc"].max() + EPS),
               "claim_final_above_max": bool(claimed_final > r["final_acc"].max() + EPS)}
        for metric in ("final", "best"):
            x = r[f"{metric}_acc"]
            row |= {f"{metric}_median": x.median(), f"{metric}_q25": x.quantile(0.25),
                    f"{metric}_q75": x.quantile(0.75)}
            row[f"{metric}_median_lo"], row[f"{metric}_median_hi"] = median_ci(x, o.confidence, o.n_bootstrap,
                                                                               o.random_state)
        rows.append(row)
    out = pd.concat([groups.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    for rate in ("hit", "consistent"):
        out[f"{rate}_lo"], out[f"{rate}_hi"] = wilson(out[f"n_{rate}"], out["n_seeds"], o.confidence)
    return pd.concat([out, own_target(out, runs)], axis=1)


def own_target(steps: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each group against the target its own seed file set for the step (steps.parquet's `target_*` columns), beside
    the assignment's (`params_ok`, `epochs_ok`, the verdict). Columns, row for row with `steps`:

    - `own_params_ok`: params < target_params;
    - `own_epochs_ok`: the epoch budget <= target_epochs;
    - `own_acc_rate`: the share of seeds whose best epoch within the budget reaches target_accuracy;
    - `own_acc_ok`: own_acc_rate >= 0.5, i.e. the typical seed reaches the seed's own accuracy target.

    Each is missing (NA) where the seed sets no such target, or the folder predates the target columns.
    """
    def target(column):
        return pd.to_numeric(steps[column], errors="coerce") if column in steps else pd.Series(np.nan, steps.index)

    acc, params, epochs = target("target_accuracy"), target("target_params"), target("target_epochs")
    best = runs.groupby("group")["best_acc"].apply(np.asarray)
    rate = [float(np.mean(best[g] >= a - EPS)) if pd.notna(a) and g in best else np.nan
            for g, a in zip(steps["group"], acc)]
    out = pd.DataFrame({"own_params_ok": steps["params"] < params, "own_epochs_ok": steps["epoch_budget"] <= epochs,
                        "own_acc_rate": rate}, index=steps.index)
    out["own_acc_ok"] = out["own_acc_rate"] >= 0.5
    for flag, known in (("own_params_ok", params), ("own_epochs_ok", epochs), ("own_acc_ok", out["own_acc_rate"])):
        out[flag] = out[flag].astype("boolean").mask(known.isna())
    return out


def progression(runs: pd.DataFrame, predictions: pd.DataFrame, steps: pd.DataFrame,
                options: Options = Options()) -> pd.DataFrame:
    """Each step against the step before it in its submission (by `order`), on final accuracy.

    Only groups with the same quick flag are compared; a step with several groups is compared group by group.
    Columns: submission, before, after, p_improve = P(after > before), median_diff (after - before) with its
    bootstrap CI, and McNemar over seeds with predictions in both: mcnemar_seeds, fixed / broken (mean images per
    seed), mcnemar_p (median p over seeds), mcnemar_significant (seeds with p < 1 - confidence).
    """
    o = options
    final = runs.groupby("group")["final_acc"].apply(np.asarray)
    rows = []
    for (sub, _), chunk in steps.dropna(subset=["order"]).groupby(["submission", "quick"], sort=False):
        by_step = [c["group"].tolist() for _, c in chunk.groupby("order", sort=True)]
        for earlier, later in zip(by_step, by_step[1:]):
            for before, after in itertools.product(earlier, later):
                x, y = final[after], final[before]
                lo, hi = median_difference_ci(x, y, o.confidence, o.n_bootstrap, o.random_state)
                mc = mcnemar_by_seed(*(predictions[predictions["group"] == g] for g in (before, after)))
                rows.append({"submission": sub, "before": before, "after": after,
                             "n_before": len(y), "n_after": len(x),
                             "p_improve": probability_of_improvement(x, y),
                             "median_diff": np.median(x) - np.median(y), "median_diff_lo": lo, "median_diff_hi": hi,
                             "mcnemar_seeds": len(mc), "fixed": mc["fixed"].mean(), "broken": mc["broken"].mean(),
                             "mcnemar_p": mc["p"].median(),
                             "mcnemar_significant": int((mc["p"] < 1 - o.confidence).sum())})
    columns = ["submission", "before", "after", "n_before", "n_after", "p_improve", "median_diff", "median_diff_lo",
               "median_diff_hi", "mcnemar_seeds", "fixed", "broken", "mcnemar_p", "mcnemar_significant"]
    return pd.DataFrame(rows, columns=columns)


def summarize(results: Results, options: Options = Options()) -> Summary:
    """All tables of the report from the loaded rows."""
    groups = group_table(results, options)
    runs = run_summary(results.epochs, groups.set_index("group")["budget"], options.target, options.last_k)
    steps = step_summary(runs, groups, options)
    return Summary(runs=runs, steps=steps, progression=progression(runs, results.predictions, steps, options),
                   options=options)


def listed(cell) -> list:
    """A cell of a list column (claimed_log, assumptions) as a list; [] where it is missing."""
    return [] if cell is None or (np.ndim(cell) == 0 and pd.isna(cell)) else list(cell)
