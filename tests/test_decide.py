"""sweeps.decide: the confidence sequence against the mixture integrated numerically and against exact fractions, its
validity at every n by an exact walk, cases worked out by hand, the runs judged as the report judges them, and a
seeded simulation of the rule until decided against Clopper-Pearson re-checked after every seed."""

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.integrate
import scipy.special

from analysis import stats
from analysis.load import load_results
from analysis.stats import Options, rate_interval, summarize
from benchmarks import sim_until_decided as sim
from sweeps.decide import (
    MAX_SEEDS,
    MIN_SEEDS,
    Run,
    Tally,
    add_seed,
    describe,
    fewest_to_decide,
    judge,
    leaves_half,
    sequence,
    verdict,
)
from tests.fixtures_analysis import write_demo, write_run

ALPHA = 0.05


def log_likelihood(p, k, n):
    return scipy.special.xlogy(k, p) + scipy.special.xlog1py(n - k, -p)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 8), (8, 8), (3, 10), (17, 34), (1, 200), (150, 200)])
def test_sequence_against_the_integrated_mixture(k, n):
    """The mixture's integral by quadrature, not the Beta function: at each end inside (0, 1),
    M(p) = int q^k (1 - q)^(n - k) dq / (p^k (1 - p)^(n - k)) is 1 / alpha, and a fine grid keeps exactly the rates
    between the ends."""
    top = log_likelihood(k / n, k, n)  # scale the integrand to at most 1
    mixture = scipy.integrate.quad(
        lambda q: np.exp(log_likelihood(q, k, n) - top), 0, 1, points=[k / n], epsabs=0, epsrel=1e-12, limit=200
    )[0]
    low, high = sequence(k, n)

    def m(p):
        return mixture * np.exp(top - log_likelihood(p, k, n))

    for end, edge in ((low, 0.0), (high, 1.0)):
        if end == edge:  # an edge is kept: k = 0 keeps 0, k = n keeps 1
            assert m(edge) < 1 / ALPHA
        else:
            assert m(end) == pytest.approx(1 / ALPHA, rel=1e-7)
    grid = np.linspace(0, 1, 200_001)
    kept = grid[log_likelihood(grid, k, n) - top > np.log(ALPHA * mixture)]
    assert kept.min() == pytest.approx(low, abs=1e-5) and kept.max() == pytest.approx(high, abs=1e-5)


def test_leaves_half_against_exact_fractions():
    """0.5 leaves the sequence when (1/2)^n <= alpha B(k + 1, n - k + 1) = alpha k! (n - k)! / (n + 1)!, in rationals;
    and the ends agree with it for every k <= n <= 200."""
    for n in range(41):
        for k in range(n + 1):
            beta = Fraction(math.factorial(k) * math.factorial(n - k), math.factorial(n + 1))
            assert bool(leaves_half(k, n)) == (Fraction(1, 2**n) <= Fraction(1, 20) * beta), (k, n)
    n, k = np.meshgrid(np.arange(1, 201), np.arange(201), indexing="ij")
    n, k = n[k <= n], k[k <= n]
    low, high = sequence(k, n)
    assert np.array_equal(leaves_half(k, n), (low >= 0.5) | (high <= 0.5))
    assert np.all((low <= k / n) & (k / n <= high))


def test_all_consistent_needs_8_seeds_where_clopper_pearson_needs_6():
    # k = n keeps p while p^n > alpha / (n + 1): the lower end is (alpha / (n + 1))^(1/n)
    assert sequence(7, 7)[0] == pytest.approx((ALPHA / 8) ** (1 / 7))  # 0.484: 7 of 7 keeps 0.5
    assert sequence(8, 8)[0] == pytest.approx((ALPHA / 9) ** (1 / 8))  # 0.523: 8 of 8 leaves it
    assert sequence(0, 8)[1] == pytest.approx(1 - (ALPHA / 9) ** (1 / 8))
    assert [n for n in range(1, 20) if leaves_half(n, n)][0] == 8
    assert [n for n in range(1, 20) if rate_interval(n, n)[0] >= 0.5][0] == 6  # Clopper-Pearson: 0.025^(1/6) = 0.541
    assert sequence(8, 8)[0] < rate_interval(8, 8)[0]  # wider at every n: the price of peeking
    assert all(np.isnan(sequence(0, 0)))


def test_sequence_covers_at_every_n_at_once():
    """Ville's inequality, checked exactly: the probability that the sequence ever excludes the true rate within 200
    seeds is at most alpha. Clopper-Pearson re-checked after every seed excludes it far more often."""
    horizon = 200
    seq, cp = sim.interval_tables(sequence, horizon), sim.interval_tables(rate_interval, horizon)
    for rate in (0.03, 0.2, 0.5, 0.7, 0.95):
        assert sim.ever_excluded(rate, seq, horizon)[-1] <= ALPHA
    assert sim.ever_excluded(0.5, cp, horizon)[33] > 2 * ALPHA  # by 34 seeds: 13.8 %


@pytest.mark.parametrize(
    "tally, expected",
    [
        (Tally(), "UNDECIDED"),  # no run yet
        (Tally(7, 7, 7, 7), "UNDECIDED"),  # 2^7 B(8, 1) = 128 / 8 = 16 < 1 / alpha = 20
        (Tally(8, 8, 8, 8), "CONSISTENT"),  # 2^8 / 9 = 28.4 >= 20
        (Tally(8, 8, 0, 0), "NEVER"),
        (Tally(8, 8, 2, 0), "LUCKY"),  # hits, none consistent
        (Tally(9, 9, 8, 8), "UNDECIDED"),  # 2^9 B(9, 2) = 512 / 90 = 5.7
        (Tally(12, 12, 11, 11), "CONSISTENT"),  # 2^12 B(12, 2) = 4096 / 156 = 26.3
        (Tally(12, 12, 11, 1), "LUCKY"),  # mirror image
        (Tally(8, 5, 0, 0), "NEVER"),  # the hit rate's sequence, 0 of 8, leaves 0.5; the consistent rate's, 0 of 5, not
        (Tally(8, 5, 1, 0), "UNDECIDED"),  # a hit: only the consistent rate's sequence can decide, and 0 of 5 does not
        (Tally(3, 0, 2, 0), "TOO SHORT"),
    ],
)
def test_verdict_by_hand(tally, expected):
    assert verdict(tally) == expected


def test_fewest_to_decide_against_every_outcome():
    """The fewest more runs after which some outcome (consistent, lucky or missing runs, in any numbers) decides."""
    limit = 10

    def brute(t: Tally):
        for j in range(1, limit + 1):
            for c in range(j + 1):
                for lucky in range(j - c + 1):
                    if verdict(Tally(t.seeds + j, t.judged + j, t.hits + c + lucky, t.consistent + c)) != "UNDECIDED":
                        return j
        return None

    for n in range(13):
        for k in range(n + 1):
            for hits in {k, min(n, k + 1)}:
                t = Tally(n, n, hits, k)
                assert fewest_to_decide(t, limit) == brute(t), t
    assert fewest_to_decide(Tally(), 40) == MIN_SEEDS == 8  # nothing decides before 8 at 95 %


def test_add_seed_and_describe():
    # from nothing: start MIN_SEEDS at once, then wait for them
    assert [add_seed(Tally(), f) for f in range(10)] == [True] * 8 + [False] * 2
    assert add_seed(Tally(8, 8, 8, 8), 0) is False  # decided
    assert add_seed(Tally(8, 8, 8, 8), 0, min_seeds=10) is True  # the minimum comes first
    undecided = Tally(8, 8, 6, 6)
    fewest = fewest_to_decide(undecided, MAX_SEEDS - 8)
    assert [add_seed(undecided, f) for f in range(fewest + 1)] == [True] * fewest + [False]
    assert describe(undecided) == "sampling: 6 of 8 consistent"
    assert add_seed(Tally(33, 33, 16, 16), 1) is False  # 34 started
    # 15 of 30: even 4 more consistent (19 of 34) keep 0.5, so the step stops before the maximum
    assert fewest_to_decide(Tally(30, 30, 15, 15), 4) is None and add_seed(Tally(30, 30, 15, 15), 0) is False
    assert (
        describe(Tally(30, 30, 15, 15)) == "UNDECIDED at 30 seeds: no outcome of 4 more decides (15 of 30 consistent)"
    )
    assert describe(Tally(34, 34, 17, 17)) == "UNDECIDED at the maximum (17 of 34 consistent)"
    assert describe(Tally(8, 8, 0, 0)) == "NEVER at 8 seeds"


# --- runs judged as the report judges them ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [Options(), Options(target=99.30, last_k=1), Options(target=99.45, last_k=5, epoch_budget=8), Options(last_k=16)],
)
def test_judge_agrees_with_the_report(tmp_path, options):
    write_demo(tmp_path, sizes=(3, 2), seeds=8)
    for seed in range(3):  # quick runs: two epochs, too short for K >= 3
        write_run(tmp_path, "s009-quick", seed, [99.1 + 0.2 * seed, 99.35 + 0.05 * seed], quick=True)
    results = load_results(tmp_path)
    summary = summarize(results, options)
    budget = summary.steps.set_index("group")["budget"]
    accs = results.epochs.sort_values("epoch").groupby(["group", "seed"])["test_acc"].apply(list)
    runs = summary.runs.set_index(["group", "seed"])
    judged = [judge(accs[key], options.target, summary.options.last_k, int(budget[key[0]])) for key in runs.index]
    assert judged == [Run(*r) for r in runs[["hit", "consistent", "too_short"]].itertuples(index=False)]
    assert len(set(judged)) >= 2  # the case tells runs apart
    steps = summary.steps.set_index("group")
    for group in steps.index:
        tally = Tally.of(j for j, key in zip(judged, runs.index) if key[0] == group)
        assert tally == Tally(*steps.loc[group, ["n_seeds", "n_judged", "n_hit", "n_consistent"]])


# --- the simulation --------------------------------------------------------------------------------------------

PATHS = 20_000


def simulate(rate: float, lucky_share: float, table, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts and seeds used of PATHS steps with true consistent rate `rate`; a run that is not consistent is lucky
    (hits, not consistent) with probability `lucky_share`. `table(n, k, hit)` -> (stop, verdict)."""
    rng = np.random.default_rng(random_state)
    draw = rng.random((PATHS, MAX_SEEDS))
    consistent = np.cumsum(draw < rate, axis=1)
    hit = np.cumsum(draw < rate + (1 - rate) * lucky_share, axis=1) > 0
    n = np.broadcast_to(np.arange(1, MAX_SEEDS + 1), draw.shape)
    stop, verdicts = table
    first = np.argmax(stop[n, consistent, hit.astype(int)], axis=1)  # every path stops by MAX_SEEDS
    rows = np.arange(PATHS)
    return verdicts[n[rows, first], consistent[rows, first], hit[rows, first].astype(int)], first + 1


def until_decided() -> tuple[np.ndarray, np.ndarray]:
    """(stop, verdict) of the rule over [n, k consistent, any hit], one seed at a time; hits count k, or 1 for a lucky
    hit alone (only the absence of hits matters)."""
    size = MAX_SEEDS + 1
    stop, verdicts = np.zeros((size, size, 2), bool), np.full((size, size, 2), "UNDECIDED", dtype=object)
    for n in range(1, size):
        for k in range(n + 1):
            for hit in (0, 1) if k == 0 else (1,):
                t = Tally(n, n, max(k, hit), k)
                verdicts[n, k, hit], stop[n, k, hit] = verdict(t), not add_seed(t)
    return stop, verdicts


def wrong(verdicts, rate, hit_rate) -> float:
    bad = (verdicts == "CONSISTENT") if rate < 0.5 else np.isin(verdicts, ["LUCKY", "NEVER"])
    return float(np.mean(bad | ((verdicts == "NEVER") & (hit_rate >= 0.5))))


def test_simulated_until_decided_is_right_and_clopper_pearson_rechecked_is_not():
    """For true consistent rates 0, 0.1, ..., 1, with and without lucky runs, the rule until decided gives a wrong
    verdict at most alpha of the time; Clopper-Pearson, re-checked after every seed from MIN_SEEDS on, more than
    alpha at 0.5. The simulation agrees with the exact walk of benchmarks/sim_until_decided.py."""
    until = until_decided()
    exact = sim.rule_tables("sequence", MIN_SEEDS, MAX_SEEDS), sim.rule_tables("clopper-pearson", MIN_SEEDS, MAX_SEEDS)
    peeking = tuple(np.stack([table, table], axis=-1) for table in exact[1])  # without lucky runs, a hit is k > 0
    for n in range(1, 13):  # the walk's Clopper-Pearson verdicts are the report's where its interval leaves 0.5
        for k in range(n + 1):
            assert sim.cp_verdicts(k, n) == (stats.verdict(k, k, n) if stats.decided(k, n) else "UNDECIDED")
    for i, rate in enumerate(np.round(np.linspace(0, 1, 11), 1)):
        for lucky_share in (0.0, 0.5):
            hit_rate = rate + (1 - rate) * lucky_share
            v, seeds = simulate(rate, lucky_share, until, random_state=i)
            assert wrong(v, rate, hit_rate) <= ALPHA, (rate, lucky_share)
            walked = sim.walk(rate, *exact[0])  # lucky runs change which of LUCKY and NEVER, not when
            assert seeds.mean() == pytest.approx(walked["seeds"], abs=4 * seeds.std() / math.sqrt(PATHS) + 1e-9)
            if lucky_share == 0:
                se = math.sqrt(walked["wrong"] * (1 - walked["wrong"]) / PATHS) + 1e-4
                assert wrong(v, rate, hit_rate) == pytest.approx(walked["wrong"], abs=4 * se)
                v, _ = simulate(rate, 0.0, peeking, random_state=100 + i)
                assert wrong(v, rate, rate) == pytest.approx(sim.walk(rate, *exact[1])["wrong"], abs=0.006)
                if rate == 0.5:
                    assert wrong(v, rate, rate) > ALPHA  # exactly 6.3 %
