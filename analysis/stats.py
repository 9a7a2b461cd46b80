"""Pure statistics over the results' rows: no I/O, and randomness only through explicit `random_state` seeds.

Shapes (percent accuracies throughout):
- `epochs`: one row per (group, seed, epoch), as in `load.Results.epochs`;
- `predictions`: one row per run with per-image correctness, as in `load.Results.predictions`;
- `runs`: one row per run (group, seed), from `run_summary`;
- `steps`: one row per comparable group, from `step_summary`, ordered by submission, order, group;
- `progression`: one row per pair of consecutive steps within a submission, from `progression`;
- `comparison`: one row per pair of groups that `sweep report --compare A B` names, from `comparison`;
- `correct`: per-image correctness of one group's seeds, bool of shape (seeds, test images).

Every run statistic counts epochs 1..budget only, where a run's budget is the smaller of the step's epoch budget
(its recipe `epochs`, or `Options.epoch_budget`) and the epochs the run itself trained for (`--quick`, `--epochs`).

Every interval here was checked by simulation at 3, 5 and 10 seeds (tests/test_analysis_stats.py): each covers at
least its nominal level minus 2 points, or is not given (NaN) and the report says why.

Rates and verdicts follow the rule under which a group's seeds were collected (a run's `rule`; RULES): a fixed
number of seeds gets Clopper-Pearson's interval; a group with any run of `sweep run --until-decided`, whose seeds
were added while looking at the verdict, gets the anytime-valid confidence sequence of `sweeps.decide`.
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats
from statsmodels.stats.proportion import proportion_confint

from analysis import ReportError
from analysis.load import Results, check_split
from sweeps import decide
from sweeps.decide import EPS, LAST_K, TARGET

VERDICTS = ("CONSISTENT", "LUCKY", "UNDECIDED", "NEVER", "TOO SHORT")
MORE_SEEDS = (5, 10, 20)  # extra seeds for which the report gives the chance that they decide an UNDECIDED step
PRIOR = (1.0, 1.0)  # Beta prior of the consistent rate behind that chance: uniform, every rate equally likely
SPREADS = ("test set", "models differ", "too few seeds", "one seed")
FIXED, UNTIL_DECIDED = RULES = ("fixed", "until-decided")  # how a run's seeds were chosen; FIXED before the column
MAX_VARIANCE = 2_500.0  # pp^2: the most a percentage can vary (half the values at 0, half at 100)


@dataclass(frozen=True)
class Options:
    """Every definition the report rests on; the report prints them."""

    target: float = TARGET  # percent test accuracy
    last_k: int | None = None  # epochs in the final window of a consistent run; None: LAST_K, or the longest run
    epoch_budget: int | None = None  # epochs; None: each step's recipe epochs
    max_params: int = 8_000  # parameter budget: passes when params < max_params
    max_epochs: int = 15  # epoch budget: passes when the budget <= max_epochs
    n_test: int = 10_000  # test images behind the noise band around the target
    confidence: float = 0.95  # of every interval
    n_bootstrap: int = 2_000  # bootstrap resamples, and permutations of the Mann-Whitney test
    random_state: int = 0  # seed of every bootstrap and permutation
    split: tuple[str, ...] = ()  # pooled columns whose values are reported apart (analysis.load.SPLITTABLE)
    compare: tuple[str, str] | None = None  # (A, B): steps or groups, or glob patterns, compared B against A

    def __post_init__(self):
        """Every option is checked here, before anything is read; the messages name the `sweep report` options."""
        checks = [
            (0 < self.target <= 100, f"--target must be above 0 and at most 100 (percent), not {self.target:g}"),
            (self.last_k is None or self.last_k >= 1, f"--last-k must be at least 1, not {self.last_k}"),
            (
                self.epoch_budget is None or self.epoch_budget >= 1,
                f"--epoch-budget must be at least 1, not {self.epoch_budget}",
            ),
            (self.max_params >= 1, f"--max-params must be at least 1, not {self.max_params}"),
            (self.max_epochs >= 1, f"--max-epochs must be at least 1, not {self.max_epochs}"),
            (0.5 <= self.confidence < 1, f"--confidence must be at least 0.5 and below 1, not {self.confidence:g}"),
            (self.n_bootstrap >= 100, f"--bootstrap must be at least 100, not {self.n_bootstrap}"),
            (self.random_state >= 0, f"--bootstrap-seed must be 0 or more, not {self.random_state}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ReportError(message)
        check_split(self.split)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    runs: pd.DataFrame
    steps: pd.DataFrame
    progression: pd.DataFrame
    options: Options
    sources: pd.DataFrame  # from `sources`: empty unless a step was swept under several --vary settings
    comparison: pd.DataFrame  # from `comparison`: empty unless `options.compare` is set


# --- test-set noise --------------------------------------------------------------------------------------------


def binomial_se(acc, n=10_000):
    """Standard error, in percentage points, of an accuracy (percent) measured on `n` independent test images."""
    p = np.asarray(acc, dtype=float) / 100
    return 100 * np.sqrt(p * (1 - p) / n)


def prob_at_least(target: float, true_acc, n: int = 10_000):
    """P(measured accuracy >= target) on `n` images for a model of true accuracy `true_acc` (exact binomial)."""
    k = np.ceil(np.round(target / 100 * n, 6))  # fewest correct images that score >= target
    return scipy.stats.binom.sf(k - 1, n, np.asarray(true_acc, dtype=float) / 100)


def variance_split(final_acc, n_test, correct=None, confidence: float = 0.95) -> dict:
    """How much of the seed-to-seed variance of final accuracy (pp^2) the test set alone explains.

    final_acc: (seeds,) percent; n_test: test images (scalar or per seed); correct: optional (seeds with
    predictions, n_test) bool. Returns var_observed (sample variance), var_test (expected from the test set alone),
    var_test_source, var_model = var_observed - var_test floored at 0 (genuine between-model variance) with its
    interval var_model_lo/_hi, var_model_zero (the interval reaches 0), test_share (of the spread the test set
    explains) with test_share_lo/_hi, and spread (one of SPREADS).

    var_test is, with predictions of two or more seeds, the sum over images of each image's variance of correctness
    across seeds, over n_test^2 (Jordan 2024: seeds' spread if images flipped independently; an image every seed
    gets right adds nothing); otherwise the binomial p(1 - p)/(n_test - 1) averaged over seeds, which treats every
    image as equally hard and so is an upper bound. The interval is the chi-square interval of the total variance
    (normal final accuracies) minus var_test, floored at 0. Its upper end, and test_share_lo, are NaN where the
    chi-square one passes MAX_VARIANCE, the most an accuracy can vary: the seeds cannot bound it (2 seeds put it at
    1,018 times the observed variance).
    """
    a = np.asarray(final_acc, dtype=float)
    n = len(a)
    out = dict.fromkeys(
        [
            "var_observed",
            "var_test",
            "var_model",
            "var_model_lo",
            "var_model_hi",
            "test_share",
            "test_share_lo",
            "test_share_hi",
        ],
        np.nan,
    ) | {"var_test_source": "", "var_model_zero": False, "spread": "one seed"}
    if n < 2:
        return out
    c = None if correct is None else np.asarray(correct, dtype=float)
    if c is not None and len(c) >= 2:
        var_test, source = 1e4 * c.var(axis=0, ddof=1).sum() / c.shape[1] ** 2, "per-image"
    else:
        var_test, source = float(np.mean(a * (100 - a) / (np.asarray(n_test, dtype=float) - 1))), "binomial"
    var = float(a.var(ddof=1))
    alpha = 1 - confidence
    total_lo, total_hi = (n - 1) * var / scipy.stats.chi2.ppf([1 - alpha / 2, alpha / 2], n - 1)
    bounded = total_hi <= MAX_VARIANCE
    model_lo, model_hi = max(0.0, total_lo - var_test), max(0.0, total_hi - var_test) if bounded else np.nan
    zero = model_lo == 0
    out |= {
        "var_observed": var,
        "var_test": var_test,
        "var_test_source": source,
        "var_model": max(0.0, var - var_test),
        "var_model_lo": model_lo,
        "var_model_hi": model_hi,
        "var_model_zero": zero,
        "spread": ("models differ" if not zero else "test set" if model_hi <= var_test else "too few seeds"),
    }
    if var_test > 0:  # share = var_test / (var_test + var_model), from the same interval of the total
        out |= {
            "test_share": min(1.0, var_test / var) if var > 0 else 1.0,
            "test_share_lo": (var_test / total_hi if total_hi > 0 else 1.0) if bounded else np.nan,
            "test_share_hi": 1.0 if total_lo <= var_test else var_test / total_lo,
        }
    return out


# --- rates and verdicts ----------------------------------------------------------------------------------------


def rate_interval(k, n, confidence: float = 0.95, rule=FIXED):
    """Interval (low, high) of the rate k/n under `rule` (elementwise on arrays, `rule` too); NaN where n is 0.

    FIXED: Clopper-Pearson. Exact: it covers the true rate with at least the stated probability for every rate and
    every n fixed in advance. Wilson's interval would cover as little as 83 % at n = 3 to 10 for rates near 0 or
    1. UNTIL_DECIDED: the confidence sequence (`sweeps.decide.sequence`), which covers it at every n at once.
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = proportion_confint(k, np.where(n > 0, n, np.nan), alpha=1 - confidence, method="beta")
    adaptive = np.asarray(rule) == UNTIL_DECIDED
    sequence_low, sequence_high = decide.sequence(k, n, confidence)
    return np.where(adaptive, sequence_low, low)[()], np.where(adaptive, sequence_high, high)[()]  # scalars stay


def decided(consistent, n, confidence: float = 0.95):
    """Whether the consistent rate's interval has left 0.5 (elementwise)."""
    low, high = rate_interval(consistent, n, confidence)
    return (low >= 0.5) | (high < 0.5)


def verdict(consistent: int, hits: int, n: int, confidence: float = 0.95) -> str:
    """The step's verdict from its hits (any run) and its consistent runs among the `n` runs long enough to judge.

    TOO SHORT when no run is; NEVER when no run hits; CONSISTENT / LUCKY when the consistent rate's interval lies at or
    above / below 0.5; UNDECIDED otherwise.
    """
    if n == 0:
        return "TOO SHORT"
    if hits == 0:
        return "NEVER"
    low, high = rate_interval(consistent, n, confidence)
    if low >= 0.5:
        return "CONSISTENT"
    if high < 0.5:
        return "LUCKY"
    return "UNDECIDED"


def p_decided(consistent: int, n: int, more: int, confidence: float = 0.95, prior=PRIOR, rule: str = FIXED) -> float:
    """Probability that `more` extra seeds decide the verdict. The extra consistent runs are Beta-binomial, from the
    posterior Beta(prior + data) of the rate, so the rate's own uncertainty counts, not only the observed k/n.

    FIXED: that the consistent rate's interval over n + more runs leaves 0.5. UNTIL_DECIDED: that the confidence
    sequence leaves 0.5 after any of the extra seeds (the sweep stops there); the runs are drawn one at a time from
    the posterior, as from a Polya urn, whose draws taken together are that Beta-binomial."""
    a, b = prior[0] + consistent, prior[1] + n - consistent
    if rule == FIXED:
        extra = np.arange(more + 1)
        pmf = scipy.stats.betabinom.pmf(extra, more, a, b)
        return float(pmf[decided(consistent + extra, n + more, confidence)].sum())
    undecided, p = np.ones(1), 0.0  # (i + 1,): probability of i consistent among the extra runs so far, still undecided
    for j in range(more):
        up = (a + np.arange(j + 1)) / (a + b + j)  # P(the next run is consistent | i of the j drawn so far)
        undecided = np.append(undecided * (1 - up), 0) + np.insert(undecided * up, 0, 0)
        stop = decide.leaves_half(consistent + np.arange(j + 2), n + j + 1, confidence)
        p, undecided = p + undecided[stop].sum(), np.where(stop, 0, undecided)
    return float(p)


# --- distributions ---------------------------------------------------------------------------------------------


def median_ci(x, confidence: float = 0.95) -> tuple[float, float]:
    """Exact distribution-free interval of the median: order statistics [x_(l), x_(n+1-l)] with l the
    `(1 - confidence) / 2` quantile of Binomial(n, 1/2). NaN where no pair of order statistics reaches the level
    (fewer than 6 values at 95 %: even [min, max] covers only 1 - 2 / 2^n)."""
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return (np.nan, np.nan)
    ci = scipy.stats.quantile_test(x, p=0.5).confidence_interval(confidence)
    return (float(ci.low), float(ci.high))


def median_ci_min_n(confidence: float = 0.95) -> int:
    """Fewest values for which `median_ci` gives an interval."""
    return int(np.ceil(np.log2(2 / (1 - confidence))))  # [min, max] covers 1 - 2 / 2^n


def probability_of_improvement(x, y, axis: int = -1):
    """P(X > Y) for X drawn from x and Y from y, ties counting 1/2 (rliable's probability of improvement).

    Vectorized over the other axes, for the bootstrap."""
    x, y = np.moveaxis(np.asarray(x, dtype=float), axis, -1), np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    return ((np.sign(x[..., :, None] - y[..., None, :]) + 1) / 2).mean(axis=(-2, -1))


def probability_of_improvement_ci(
    x, y, confidence: float = 0.95, n_resamples: int = 2_000, random_state: int = 0
) -> tuple[float, float]:
    """BCa bootstrap interval of P(X > Y), resampling the seeds of each side apart (rliable's stratified bootstrap).

    NaN with fewer than two seeds a side, or when BCa cannot be computed: the seeds of one side all beat the other's,
    or the leave-one-out values are all equal. The percentile bootstrap, rliable's default, covers 25-94 % at 3-10
    seeds in our simulation; BCa covers at least 95 % wherever it gives an interval.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if min(len(x), len(y)) < 2:
        return (np.nan, np.nan)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # BCa's "degenerate" warning: NaN is the answer, and the report says why
        ci = scipy.stats.bootstrap(
            (x, y),
            probability_of_improvement,
            n_resamples=n_resamples,
            vectorized=True,
            confidence_level=confidence,
            method="BCa",
            rng=np.random.default_rng(random_state),
        ).confidence_interval
    return (float(ci.low), float(ci.high))


def mann_whitney_p(x, y, n_resamples: int = 2_000, random_state: int = 0) -> float:
    """Two-sided Mann-Whitney p-value from the permutation distribution (exact when it has at most `n_resamples`
    arrangements, as with 3-6 seeds a side; else that many random ones). NaN with fewer than two seeds a side."""
    if min(len(x), len(y)) < 2:
        return np.nan
    method = scipy.stats.PermutationMethod(n_resamples=n_resamples, rng=np.random.default_rng(random_state))
    return float(scipy.stats.mannwhitneyu(x, y, method=method).pvalue)


def mann_whitney_min_p(n: int, m: int) -> float:
    """The smallest two-sided Mann-Whitney p-value that n and m seeds can give (complete separation, no ties)."""
    return min(1.0, 2 / scipy.special.comb(n + m, n)) if min(n, m) > 0 else 1.0


def claim_percentile(ours, claim: float) -> float:
    """Percentile of `claim` within `ours`, ties counting half; NaN without a claim."""
    if claim is None or pd.isna(claim) or len(ours) == 0:
        return np.nan
    return float(scipy.stats.percentileofscore(ours, claim, kind="mean"))


# --- per-image predictions -------------------------------------------------------------------------------------


def correctness(correct: bytes, n: int) -> np.ndarray:
    """Per-image correctness (bool, shape (n,)) from the `np.packbits` bytes of the predictions file."""
    return np.unpackbits(np.frombuffer(correct, dtype=np.uint8))[:n].astype(bool)


def final_predictions(predictions: pd.DataFrame, runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per group, `correct` (seeds, images) of the runs whose predictions are of their last counted epoch on all their
    test images; predictions of a later epoch (a budget cut short) are not those of the accuracies counted."""
    if predictions.empty:
        return {}
    p = predictions.merge(runs[["group", "seed", "final_epoch", "n_test"]], on=["group", "seed"])
    p = p[(p["epoch"] == p["final_epoch"]) & (p["n"] == p["n_test"])]
    return {
        g: np.stack([correctness(c, n) for c, n in zip(rows["correct"], rows["n"])])
        for g, rows in p.groupby("group")
        if rows["n"].nunique() == 1
    }


def image_test(before, after) -> dict:
    """Does the later step fix more test images than it breaks? Pooled over all seeds of both steps.

    before, after: `correct` (seeds, images) of two steps on the same test images. For each image, d = (share of the
    after-seeds right) - (share of the before-seeds right). fixed / broken: images a random after-seed gets right
    and a random before-seed wrong, and the reverse; fixed - broken = sum of d. p: the clustered McNemar test
    (Durkalski et al. 2003) with images as clusters, chi2(1) of (sum d)^2 / sum d^2: each image counts once however
    many seeds see it, and seeds need no pairing. With one seed a side it is McNemar's test (no continuity
    correction). It treats the trained models as given and the test images as the sample.
    """
    b, a = np.asarray(before, dtype=float).mean(axis=0), np.asarray(after, dtype=float).mean(axis=0)
    d = a - b
    ss = float(np.sum(d * d))
    return {
        "fixed": float(np.sum(a * (1 - b))),
        "broken": float(np.sum(b * (1 - a))),
        "image_p": float(scipy.stats.chi2.sf(np.sum(d) ** 2 / ss, 1)) if ss > 0 else 1.0,
    }


# --- tables ----------------------------------------------------------------------------------------------------


def run_summary(epochs: pd.DataFrame, budget: pd.Series, target: float = TARGET, last_k: int = LAST_K) -> pd.DataFrame:
    """One row per run (group, seed) over its epochs 1..budget.

    budget: epoch budget per group (indexed by group); a run's budget is the smaller of it and the run's `epochs`.
    Columns: budget, best_acc, best_epoch (first epoch at the best), final_acc, final_epoch, n_test (test images),
    lastk_min, lastk_mean, first_epoch_at_target (NaN if never), hit, too_short (budget < K: cannot be judged
    consistent or lucky), consistent, lucky, luck_gap (best - mean of last K; NaN for one epoch), final_se, rule
    (UNTIL_DECIDED when any of its rows says so; FIXED for files without the column). The last-K statistics are NaN,
    and consistent and lucky False, for a run too short. `sweeps.decide.judge` judges one run the same way, for the
    sweep's driver.
    """
    rule = epochs["rule"] if "rule" in epochs else pd.Series(FIXED, index=epochs.index)
    e = epochs.assign(
        budget=np.minimum(epochs["group"].map(budget), epochs["epochs"]), until_decided=rule.eq(UNTIL_DECIDED)
    )
    e = e[e["epoch"] <= e["budget"]].sort_values(["group", "seed", "epoch"]).reset_index(drop=True)
    key = ["group", "seed"]
    runs = e.groupby(key)
    window = e[runs.cumcount(ascending=False) < last_k].groupby(key)["test_acc"]
    at_target = e[e["test_acc"] >= target - EPS].groupby(key)["epoch"].min()
    out = pd.DataFrame(
        {
            "step": runs["step"].first(),
            "recipe_hash": runs["recipe_hash"].first(),
            "quick": runs["quick"].first(),
            "budget": runs["budget"].first(),
            "best_acc": runs["test_acc"].max(),
            "best_epoch": e.loc[runs["test_acc"].idxmax(), key + ["epoch"]].set_index(key)["epoch"],
            "final_acc": runs["test_acc"].last(),
            "final_epoch": runs["epoch"].last(),
            "n_test": runs["test_total"].last(),
            "lastk_min": window.min(),
            "lastk_mean": window.mean(),
            "first_epoch_at_target": at_target.astype(float),
            "rule": runs["until_decided"].any().map({True: UNTIL_DECIDED, False: FIXED}),
        }
    )
    out["too_short"] = out["budget"] < last_k
    out.loc[out["too_short"], ["lastk_min", "lastk_mean"]] = np.nan
    out["hit"] = out["best_acc"] >= target - EPS
    out["consistent"] = out["lastk_min"] >= target - EPS  # False where NaN
    out["lucky"] = out["hit"] & ~out["consistent"] & ~out["too_short"]
    out["luck_gap"] = (out["best_acc"] - out["lastk_mean"]).where(out["budget"] > 1)  # one epoch: 0 by definition
    out["final_se"] = binomial_se(out["final_acc"], out["n_test"])
    return out.reset_index()


def group_table(results: Results, options: Options = Options()) -> pd.DataFrame:
    """One row per comparable group: its step's metadata, params as run, and epoch budget; in report order."""
    e = results.epochs
    overrides = e["overrides"] if "overrides" in e else pd.Series("{}", index=e.index)
    groups = (
        e.assign(overridden=~overrides.fillna("{}").isin(["{}", ""]))
        .groupby("group", as_index=False)
        .agg(
            step=("step", "first"),
            recipe_hash=("recipe_hash", "first"),
            quick=("quick", "first"),
            vary=("vary", "first"),
            base_seed=("base_seed", "first"),
            overridden=("overridden", "any"),
            params=("params", "first"),
            run_epochs=("epochs", "max"),
        )
    )
    meta = results.steps.drop(columns=["params", "recipe_hash"]).rename(columns={"epochs": "recipe_epochs"})
    groups = groups.merge(meta, on="step", how="left")
    groups["epoch_budget"] = groups["recipe_epochs"] if options.epoch_budget is None else options.epoch_budget
    groups["budget"] = np.minimum(groups["epoch_budget"], groups["run_epochs"]).astype(int)  # epochs counted
    groups["faithful"] = ~groups["quick"].astype(bool) & ~groups["overridden"]  # the seed file's recipe, as claimed
    return groups.sort_values(["submission", "order", "group"], na_position="last").reset_index(drop=True)


def claims(g) -> dict:
    """What our seeds are compared with, for one group (a row of `group_table`): claim_best, claim_final and
    claim_basis, which says where they come from.

    Only faithful groups (full runs of the recipe without overrides) are compared: a quick or overridden run is a
    different experiment from the one the seed reported. With a budget shorter than the recipe's epochs, the claims
    come from the seed file's own log, cut at the same epoch; without a log long enough, they are left out.
    """
    log = listed(g.claimed_log)
    if not g.faithful:
        return {"claim_best": np.nan, "claim_final": np.nan, "claim_basis": "none: quick or overridden runs"}
    if pd.isna(g.recipe_epochs) or g.budget >= g.recipe_epochs:
        return {
            "claim_best": g.claimed_best_test,
            "claim_final": float(log[-1]) if log else np.nan,
            "claim_basis": "as claimed",
        }
    if len(log) >= g.budget:
        cut = [float(x) for x in log[: g.budget]]
        return {"claim_best": max(cut), "claim_final": cut[-1], "claim_basis": f"seed file's log to epoch {g.budget}"}
    return {
        "claim_best": np.nan,
        "claim_final": np.nan,
        "claim_basis": f"none: budget cut to {g.budget} of {g.recipe_epochs:.0f} epochs and no log that long",
    }


def step_summary(
    runs: pd.DataFrame, groups: pd.DataFrame, options: Options = Options(), correct: dict[str, np.ndarray] | None = None
) -> pd.DataFrame:
    """One row per group: seeds, rates with exact intervals, medians with exact intervals, verdict and the chance
    that more seeds decide it, the test-set share of the spread, budgets, claims. Rates, intervals, verdict and that
    chance follow the group's `rule` (module doc): UNTIL_DECIDED when any of its `n_until_decided` runs has it.

    correct: per group, `correct` (seeds, images) for the variance split (see `final_predictions`); optional.
    """
    o, correct = options, correct or {}
    rows = []
    for g in groups.itertuples(index=False):
        r = runs[runs["group"] == g.group]
        judged = r[~r["too_short"]]
        n, hits, cons = len(r), int(r["hit"].sum()), int(judged["consistent"].sum())
        n_until_decided = int((r["rule"] == UNTIL_DECIDED).sum())
        rule = UNTIL_DECIDED if n_until_decided else FIXED
        if rule == FIXED:
            verdict_ = verdict(cons, hits, len(judged), o.confidence)
        else:
            verdict_ = decide.verdict(decide.Tally(n, len(judged), hits, cons), o.confidence)
        claim = claims(g)
        row = {
            "rule": rule,
            "n_until_decided": n_until_decided,
            "n_seeds": n,
            "n_judged": len(judged),
            "n_too_short": n - len(judged),
            "n_hit": hits,
            "n_consistent": cons,
            "hit_rate": hits / n,
            "consistent_rate": cons / len(judged) if len(judged) else np.nan,
            "luck_gap_median": judged["luck_gap"].median(),
            "verdict": verdict_,
        }
        for more in MORE_SEEDS:
            row[f"p_decided_{more}"] = (
                p_decided(cons, len(judged), more, o.confidence, rule=rule) if verdict_ == "UNDECIDED" else np.nan
            )
        row |= {
            "params_ok": g.params < o.max_params,
            "epochs_ok": g.epoch_budget <= o.max_epochs,
            **claim,
            "claim_best_pct": claim_percentile(r["best_acc"], claim["claim_best"]),
            "claim_final_pct": claim_percentile(r["final_acc"], claim["claim_final"]),
            "claim_best_above_max": bool(claim["claim_best"] > r["best_acc"].max() + EPS),
            "claim_final_above_max": bool(claim["claim_final"] > r["final_acc"].max() + EPS),
        }
        for metric in ("final", "best"):
            x = r[f"{metric}_acc"]
            row |= {
                f"{metric}_median": x.median(),
                f"{metric}_q25": x.quantile(0.25),
                f"{metric}_q75": x.quantile(0.75),
            }
            row[f"{metric}_median_lo"], row[f"{metric}_median_hi"] = median_ci(x, o.confidence)
        row |= {
            "final_mean": r["final_acc"].mean(),
            "n_predicted": len(correct.get(g.group, ())),
            **variance_split(r["final_acc"], r["n_test"], correct.get(g.group), o.confidence),
        }
        rows.append(row)
    out = pd.concat([groups.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    out["hit_lo"], out["hit_hi"] = rate_interval(out["n_hit"], out["n_seeds"], o.confidence, out["rule"])
    out["consistent_lo"], out["consistent_hi"] = rate_interval(
        out["n_consistent"], out["n_judged"], o.confidence, out["rule"]
    )
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
    rate = [
        float(np.mean(best[g] >= a - EPS)) if pd.notna(a) and g in best else np.nan for g, a in zip(steps["group"], acc)
    ]
    out = pd.DataFrame(
        {
            "own_params_ok": steps["params"] < params,
            "own_epochs_ok": steps["epoch_budget"] <= epochs,
            "own_acc_rate": rate,
        },
        index=steps.index,
    )
    out["own_acc_ok"] = out["own_acc_rate"] >= 0.5
    for flag, known in (("own_params_ok", params), ("own_epochs_ok", epochs), ("own_acc_ok", out["own_acc_rate"])):
        out[flag] = out[flag].astype("boolean").mask(known.isna())
    return out


PROGRESSION_COLUMNS = [
    "submission",
    "before",
    "after",
    "n_before",
    "n_after",
    "p_improve",
    "p_improve_lo",
    "p_improve_hi",
    "mann_whitney_p",
    "median_diff",
    "change",
    "images_before",
    "images_after",
    "fixed",
    "broken",
    "image_p",
]


def change(p_improve: float, p_value: float, n_before: int, n_after: int, confidence: float = 0.95) -> str:
    """improved / got worse (Mann-Whitney p below 1 - confidence), no clear change, or too few seeds to tell (even
    complete separation could not reach that p)."""
    alpha = 1 - confidence
    if mann_whitney_min_p(n_before, n_after) >= alpha or pd.isna(p_value):
        return "too few seeds to tell"
    if p_value < alpha:
        return "improved" if p_improve > 0.5 else "got worse"
    return "no clear change"


def progression(
    runs: pd.DataFrame, correct: dict[str, np.ndarray], steps: pd.DataFrame, options: Options = Options()
) -> pd.DataFrame:
    """Each step against the step before it in its submission (by `order`), on final accuracy (`versus`).

    Only groups with the same quick flag are compared; a step with several groups is compared group by group.
    correct: per group, `correct` (seeds, images), as from `final_predictions`. Columns: PROGRESSION_COLUMNS.
    """
    final = runs.groupby("group")["final_acc"].apply(np.asarray)
    rows = []
    for (sub, _), chunk in steps.dropna(subset=["order"]).groupby(["submission", "quick"], sort=False):
        by_step = [c["group"].tolist() for _, c in chunk.groupby("order", sort=True)]
        for earlier, later in zip(by_step, by_step[1:]):
            for before, after in itertools.product(earlier, later):
                rows.append({"submission": sub, **versus(before, after, final, correct, options)})
    return pd.DataFrame(rows, columns=PROGRESSION_COLUMNS)


COMPARISON_COLUMNS = PROGRESSION_COLUMNS[1:]  # B is `after`, A is `before`


def comparison(
    runs: pd.DataFrame, correct: dict[str, np.ndarray], steps: pd.DataFrame, options: Options = Options()
) -> pd.DataFrame:
    """`options.compare` = (A, B): each group of B against each group of A with the same quick flag (`versus`), from
    any submissions. A and B are step names, group labels, or glob patterns over either. Columns: COMPARISON_COLUMNS.
    Raises ReportError, naming the closest groups, where A or B matches nothing, and where no pair is left. Empty
    without `options.compare`."""
    if not options.compare:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    final, quick = runs.groupby("group")["final_acc"].apply(np.asarray), steps.set_index("group")["quick"]
    a, b = (_matching(steps, name) for name in options.compare)
    pairs = [(x, y) for x in a for y in b if x != y and quick[x] == quick[y]]
    if not pairs:
        why = "names one group twice" if a == b else "pairs quick runs only with full ones, which are never compared"
        raise ReportError(f"--compare {' '.join(options.compare)} {why}")
    return pd.DataFrame([versus(x, y, final, correct, options) for x, y in pairs], columns=COMPARISON_COLUMNS)


def _matching(steps: pd.DataFrame, name: str) -> list[str]:
    """The groups that `name` names: a group label or step name, or a glob pattern over them."""
    labels, names = steps["group"].tolist(), steps["step"].tolist()
    exact = [g for g, step in zip(labels, names) if name in (g, step)]
    found = exact or [
        g for g, step in zip(labels, names) if fnmatch.fnmatchcase(g, name) or fnmatch.fnmatchcase(step, name)
    ]
    if not found:
        close = difflib.get_close_matches(name, dict.fromkeys(labels + names), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; the groups here are {', '.join(labels)}"
        raise ReportError(f"--compare: no step or group {name!r} in this folder{hint}")
    return found


def versus(before: str, after: str, final: pd.Series, correct: dict[str, np.ndarray], o: Options) -> dict:
    """Group `after` against group `before` on final accuracy: P(after > before) with its BCa interval over seeds and
    the Mann-Whitney p, the difference of median final accuracies, the change it adds up to, and the pooled image test
    over the seeds with predictions (`image_test`). final: per group, its runs' final accuracies; correct: per group,
    `correct` (seeds, images), as from `final_predictions`. A row of PROGRESSION_COLUMNS without its submission."""
    x, y = final[after], final[before]
    lo, hi = probability_of_improvement_ci(x, y, o.confidence, o.n_bootstrap, o.random_state)
    p_improve, p_value = float(probability_of_improvement(x, y)), mann_whitney_p(x, y, o.n_bootstrap, o.random_state)
    b, a = correct.get(before), correct.get(after)
    paired = b is not None and a is not None and b.shape[1] == a.shape[1]
    return {
        "before": before,
        "after": after,
        "n_before": len(y),
        "n_after": len(x),
        "p_improve": p_improve,
        "p_improve_lo": lo,
        "p_improve_hi": hi,
        "mann_whitney_p": p_value,
        "median_diff": np.median(x) - np.median(y),
        "change": change(p_improve, p_value, len(y), len(x), o.confidence),
        "images_before": len(b) if paired else 0,
        "images_after": len(a) if paired else 0,
        **(image_test(b, a) if paired else dict.fromkeys(["fixed", "broken", "image_p"], np.nan)),
    }


def summarize(results: Results, options: Options = Options()) -> Summary:
    """All tables of the report from the loaded rows. Without a last-K window (`options.last_k` None) it takes
    LAST_K epochs, or the longest run's count where every run is shorter; it refuses a window set longer than every
    run. `Summary.options` holds the window used."""
    groups = group_table(results, options)
    if options.last_k is None:
        options = replace(options, last_k=int(min(LAST_K, groups["budget"].max())))
    runs = run_summary(results.epochs, groups.set_index("group")["budget"], options.target, options.last_k)
    if runs["too_short"].all():
        longest = runs["budget"].max()
        raise ReportError(
            f"last-K window of {options.last_k} epochs is longer than every run (the longest counts "
            f"{longest}): no run can be judged consistent or lucky; use --last-k {longest} or less"
        )
    correct = final_predictions(results.predictions, runs)
    steps = step_summary(runs, groups, options, correct)
    return Summary(
        runs=runs,
        steps=steps,
        progression=progression(runs, correct, steps, options),
        options=options,
        sources=sources(runs, steps),
        comparison=comparison(runs, correct, steps, options),
    )


# --- which source of randomness (sweep run --vary) ----------------------------------------------------------------

SOURCE_ORDER = ("init", "order", "augment", "dropout", "all", "none")  # single sources, then all and none
SOURCES_COLUMNS = [
    "step",
    "group",
    "vary",
    "base_seed",
    "n",
    "final_sd",
    "final_iqr",
    "consistent_rate",
    "consistent_lo",
    "consistent_hi",
    "var_observed",
    "var_test",
    "var_model",
    "var_model_lo",
    "var_model_hi",
    "spread",
]


def sources(runs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per group of every step swept under more than one `--vary` setting (same quick flag, precision and
    recipe): the spread of final accuracy (SD and IQR, pp), the consistent rate, and the variance split, per source.
    Empty when no step was."""
    frames = []
    for _, groups in steps.groupby(["step", "quick", "recipe_hash"], sort=False):
        if groups["vary"].nunique() < 2:
            continue
        sd = runs[runs["group"].isin(groups["group"])].groupby("group")["final_acc"].std()
        table = groups.assign(
            n=groups["n_seeds"], final_sd=groups["group"].map(sd), final_iqr=groups["final_q75"] - groups["final_q25"]
        )
        frames.append(table.sort_values("vary", key=lambda v: v.map(_source_order)))
    return pd.concat(frames, ignore_index=True)[SOURCES_COLUMNS] if frames else pd.DataFrame(columns=SOURCES_COLUMNS)


def _source_order(vary: str) -> int:
    """Single sources first, then all and none, then combinations."""
    return SOURCE_ORDER.index(vary) if vary in SOURCE_ORDER else len(SOURCE_ORDER)


def listed(cell) -> list:
    """A cell of a list column (claimed_log, assumptions) as a list; [] where it is missing."""
    return [] if cell is None or (np.ndim(cell) == 0 and pd.isna(cell)) else list(cell)
