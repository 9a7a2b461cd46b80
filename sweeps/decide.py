"""When a step's verdict is decided: the anytime-valid rule behind `sweep run --until-decided`.

Numbers only (numpy and scipy), so that both the sweep's driver and the report (`analysis.stats`) can use it.

A step's runs are Bernoulli draws: each run is consistent or not, and hits the target or not. The report's
Clopper-Pearson interval is valid only for a number of seeds fixed in advance: re-checked after every seed from 8 to 34
and stopped once it leaves 0.5, it gives a wrong verdict 6.3 % of the time at 95 % where the true rate is 0.5
(benchmarks/results/until-decided.txt), and the chance that it ever excludes the true rate grows with every look (14 %
by 34 seeds, 28 % by 200, on towards 1). That is optional stopping. Here the interval is instead Robbins' confidence
sequence from the beta-binomial mixture (Robbins 1970, "Statistical methods related to the law of the iterated
logarithm", Ann. Math. Statist. 41(5), 1397-1409; see also Howard, Ramdas, McAuliffe and Sekhon 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), 1055-1080). After k successes in n runs it
keeps every rate p with

    p^k (1 - p)^(n - k) > alpha * B(k + 1, n - k + 1),      equivalently  (n + 1) * Binomial(n, p).pmf(k) > alpha.

Why it holds at every n at once: M_n(p) = B(k + 1, n - k + 1) / (p^k (1 - p)^(n - k)) is the likelihood ratio of the
uniform mixture of all rates against p. Under the true p it is a martingale with mean 1, so by Ville's inequality it
reaches 1 / alpha at some n with probability at most alpha. The sequence therefore covers the true rate at whatever n
the sweep stops, however the stop was chosen, and a re-run may go on adding seeds. The price of that freedom: with
every seed consistent, the sequence leaves 0.5 at 8 seeds (95 %), where Clopper-Pearson at a fixed n needs 6.

The guarantee assumes that the order in which runs are judged says nothing of their outcomes. Every run of a step
trains the same epochs, so the order in which they finish is as good as random; a driver that would rather not rely
on it judges the longest run of finished seeds 0, 1, 2, ... instead.

Defaults, from the exact operating characteristics of benchmarks/sim_until_decided.py (until-decided.txt):
- MIN_SEEDS = 8: the fewest seeds with which the sequence can leave 0.5 at 95 % (all eight alike). Starting them
  together keeps a step's first decision from waiting on a chain of runs; a larger minimum only spends seeds on the
  steps that 8 decide.
- MAX_SEEDS = 34: the smallest maximum that decides a step whose true consistent rate is 0.2 or 0.8 (one seed in five
  the other way) at least 80 % of the time: 82.6 %, with 19.9 seeds on average; at 0.1 or 0.9, 99.7 % with 12.7. A fixed
  10 seeds decides them 38 % and 74 % of the time, and no fixed N below 25 matches the rule at every rate. The seeds the
  other way that a decision tolerates grow by one only at some n (none at 8, one at 12, ..., seven at 31, eight at 34,
  nine at 37), so a maximum between two of them buys seeds and no power. Steps nearer 0.5 stop UNDECIDED at the maximum,
  or as soon as no outcome of the seeds left could decide them (21 seeds on average at 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

TARGET = 99.40  # percent test accuracy: the report's default target
LAST_K = 3  # epochs in the final window of a consistent run: the report's default
EPS = 1e-9  # percent; "at or above the target" forgives the float rounding of 100 * correct / total
CONFIDENCE = 0.95  # of the sequence: a wrong verdict at most 5 % of the time
MIN_SEEDS = 8  # seeds per step to start with (module doc)
MAX_SEEDS = 34  # seeds per step at most (module doc)


# --- the confidence sequence -----------------------------------------------------------------------------------


def _kept(p, k, n, confidence: float):
    """Whether the sequence keeps the rate `p` after `k` successes in `n` runs (elementwise, in log space)."""
    from scipy.special import betaln, xlog1py, xlogy  # here, so that `sweep --help` (its defaults) stays fast

    log_likelihood = xlogy(k, p) + xlog1py(n - k, -p)
    return log_likelihood > np.log(1 - confidence) + betaln(k + 1, n - k + 1)


def leaves_half(k, n, confidence: float = CONFIDENCE):
    """Whether the sequence has left 0.5 after `k` successes in `n` runs: the rate is decided (elementwise)."""
    return ~_kept(0.5, np.asarray(k, dtype=float), np.asarray(n, dtype=float), confidence)


def sequence(k, n, confidence: float = CONFIDENCE):
    """(low, high): the ends of the rates the sequence keeps after `k` successes in `n` runs; elementwise; NaN where
    n is 0. The kept set is the open interval between them: the log-likelihood is concave in p, and k/n is always
    kept ((n + 1) times the largest binomial probability is at least 1). An end at 0 (k = 0) or 1 (k = n) is kept.

    Each end is found by bisection between k/n and its edge of [0, 1], which cannot fail to bracket the root and loses
    nothing to the tiny likelihoods of large n (log space)."""
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = np.where(n > 0, k / n, np.nan)

    def end(edge: float):
        kept, out = mid, np.full_like(mid, edge)
        for _ in range(64):  # halves a gap of at most 1 beyond float resolution
            half = (kept + out) / 2
            keep = _kept(half, k, n, confidence)
            kept, out = np.where(keep, half, kept), np.where(keep, out, half)
        return np.where(_kept(edge, k, n, confidence), edge, (kept + out) / 2)

    low, high = end(0.0), end(1.0)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


# --- runs, as the report judges them ---------------------------------------------------------------------------


class Run(NamedTuple):
    """One finished run, judged as the report judges it (`analysis.stats.run_summary`)."""

    hit: bool  # at or above the target at some epoch within the budget
    consistent: bool  # at or above the target in each of the last K epochs within the budget
    too_short: bool  # fewer than K epochs within the budget: neither consistent nor lucky


def judge(accs, target: float = TARGET, last_k: int = LAST_K, budget: int | None = None) -> Run:
    """Judge one run from its test accuracies (percent, epoch 1 first), counting epochs 1..budget only (all of them
    when None, or when the run trained fewer)."""
    a = np.asarray(accs, dtype=float)[:budget]
    too_short = len(a) < last_k
    return Run(
        hit=bool(len(a)) and bool(a.max() >= target - EPS),
        consistent=not too_short and bool(a[-last_k:].min() >= target - EPS),
        too_short=too_short,
    )


class Tally(NamedTuple):
    """A step's finished runs, counted: all its verdict rests on."""

    seeds: int = 0  # finished runs
    judged: int = 0  # runs long enough to judge
    hits: int = 0  # runs that hit the target
    consistent: int = 0  # judged runs that are consistent

    @classmethod
    def of(cls, runs: Iterable[Run]) -> Tally:
        runs = list(runs)
        return cls(
            len(runs), sum(not r.too_short for r in runs), sum(r.hit for r in runs), sum(r.consistent for r in runs)
        )


# --- the sequential verdict and the next seed ------------------------------------------------------------------


def verdict(t: Tally, confidence: float = CONFIDENCE) -> str:
    """The step's verdict under the anytime-valid rule.

    UNDECIDED before any run; TOO SHORT when no run is long enough to judge; NEVER when no run hits and the hit
    rate's sequence lies below 0.5; CONSISTENT / LUCKY when some run hits and the consistent rate's sequence lies at
    or above / below 0.5; UNDECIDED otherwise. Without hits the consistent rate's sequence (0 of the judged runs)
    cannot leave 0.5 before the hit rate's (0 of all runs), so NEVER is the only verdict the hit rate decides. A wrong
    NEVER takes 8 or more runs in a row without a hit where at least half of all runs hit (at most 0.5^8 = 0.4 %), on
    top of the consistent rate's alpha; the simulation in tests/test_decide.py finds at most 1 % wrong in all.
    """
    if t.seeds == 0:
        return "UNDECIDED"
    if t.judged == 0:
        return "TOO SHORT"
    if t.hits == 0:
        return "NEVER" if leaves_half(0, t.seeds, confidence) else "UNDECIDED"
    if not leaves_half(t.consistent, t.judged, confidence):
        return "UNDECIDED"
    return "CONSISTENT" if 2 * t.consistent > t.judged else "LUCKY"


def fewest_to_decide(t: Tally, limit: int, confidence: float = CONFIDENCE) -> int | None:
    """The fewest further runs, at most `limit`, after which the step could be decided: all of them consistent, or
    none of them hitting, decides soonest (B(k + 1, n - k + 1) is largest at the extremes of k). None when no outcome
    of `limit` more runs decides it."""
    for j in range(1, limit + 1):
        best = Tally(t.seeds + j, t.judged + j, t.hits + j, t.consistent + j)
        worst = Tally(t.seeds + j, t.judged + j, t.hits, t.consistent)
        if verdict(best, confidence) != "UNDECIDED" or verdict(worst, confidence) != "UNDECIDED":
            return j
    return None


def add_seed(
    t: Tally,
    in_flight: int = 0,
    min_seeds: int = MIN_SEEDS,
    max_seeds: int = MAX_SEEDS,
    confidence: float = CONFIDENCE,
) -> bool:
    """Whether to start another seed of a step whose finished runs are `t`, with `in_flight` more started.

    Yes below `min_seeds` started; never at `max_seeds` started or once decided; otherwise only while the seeds in
    flight are fewer than the fewest that could decide the step, so a step on its way to a verdict does not take
    seeds that its best case would waste, and a step that no outcome can decide within the maximum stops there. Any
    seed started is still valid to count: the sequence holds at every n.
    """
    started = t.seeds + in_flight
    if started >= max_seeds:
        return False
    if started < min_seeds:
        return True
    if verdict(t, confidence) != "UNDECIDED":
        return False
    fewest = fewest_to_decide(t, max_seeds - t.seeds, confidence)
    return fewest is not None and in_flight < fewest


def describe(
    t: Tally, in_flight: int = 0, min_seeds: int = MIN_SEEDS, max_seeds: int = MAX_SEEDS, confidence: float = CONFIDENCE
) -> str:
    """The step's state for the sweep's progress line: decided (with its verdict), still sampling (k of n
    consistent), or stopped undecided (at the maximum, or where no outcome of the seeds left could decide it)."""
    v = verdict(t, confidence)
    if v != "UNDECIDED":
        return f"{v} at {t.seeds} seeds"
    counts = f"{t.consistent} of {t.judged} consistent"
    if in_flight or add_seed(t, in_flight, min_seeds, max_seeds, confidence):
        return f"sampling: {counts}"
    if t.seeds >= max_seeds:
        return f"UNDECIDED at the maximum ({counts})"
    return f"UNDECIDED at {t.seeds} seeds: no outcome of {max_seeds - t.seeds} more decides ({counts})"
