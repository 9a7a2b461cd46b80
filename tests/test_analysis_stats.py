"""analysis.stats on tiny fixtures whose answers are worked out by hand, and a coverage simulation of every interval
the report prints."""

import itertools
import math
import re
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar

from analysis import ReportError
from analysis.load import load_results
from analysis.stats import (
    FIXED,
    UNTIL_DECIDED,
    Options,
    binomial_se,
    claim_percentile,
    claims,
    correctness,
    image_test,
    mann_whitney_min_p,
    mann_whitney_p,
    median_ci,
    median_ci_min_n,
    own_target,
    p_decided,
    prob_at_least,
    probability_of_improvement,
    probability_of_improvement_ci,
    rate_interval,
    run_summary,
    summarize,
    variance_split,
    verdict,
)
from sweeps.decide import leaves_half
from tests.fixtures_analysis import write_run, write_steps


def epochs_frame(runs: dict) -> pd.DataFrame:
    """Epoch rows of runs {(group, seed): accs}, accuracies computed as the trainer does: 100 * correct / 10,000."""
    rows = [
        {
            "group": g,
            "step": g,
            "seed": s,
            "epoch": i + 1,
            "epochs": len(accs),
            "test_acc": round(a * 100) / 10_000 * 100,
            "test_total": 10_000,
            "recipe_hash": "h",
            "quick": False,
        }
        for (g, s), accs in runs.items()
        for i, a in enumerate(accs)
    ]
    return pd.DataFrame(rows)


def test_run_summary_by_hand():
    epochs = epochs_frame(
        {
            ("a", 0): [99.30, 99.45, 99.38, 99.41, 99.42],  # lucky: hits at epoch 2, dips to 99.38 in the last 3
            ("a", 1): [99.10, 99.40, 99.41, 99.40, 99.40, 99.00],  # consistent at exactly 99.40; epoch 6 is past budget
            ("a", 2): [98.00, 99.50],  # trained 2 epochs only (quick): fewer than K = 3, too short to judge
            ("b", 0): [99.00, 99.10, 99.20],  # never
        }
    )
    runs = run_summary(epochs, pd.Series({"a": 5, "b": 3}), target=99.40, last_k=3).set_index(["group", "seed"])
    expected = pd.DataFrame(
        {
            "budget": [5, 5, 2, 3],
            "best_acc": [99.45, 99.41, 99.50, 99.20],
            "best_epoch": [2, 3, 2, 3],
            "final_acc": [99.42, 99.40, 99.50, 99.20],
            "lastk_min": [99.38, 99.40, np.nan, 99.00],
            "first_epoch_at_target": [2, 2, 2, np.nan],
            "hit": [True, True, True, False],
            "too_short": [False, False, True, False],
            "consistent": [False, True, False, False],
            "lucky": [True, False, False, False],
            "luck_gap": [
                99.45 - (99.38 + 99.41 + 99.42) / 3,
                99.41 - (99.41 + 99.40 + 99.40) / 3,
                np.nan,
                99.20 - 99.10,
            ],
        },
        index=runs.index,
    )
    pd.testing.assert_frame_equal(runs[expected.columns], expected, check_dtype=False, atol=1e-9)
    assert runs.loc[("a", 0), "final_se"] == pytest.approx(100 * math.sqrt(0.9942 * 0.0058 / 10_000))


def test_rate_interval_is_clopper_pearson():
    # k = 0 and k = n have closed forms: (1 - a/2)-quantile of Beta(1, n) = 1 - (a/2)^(1/n), and its mirror
    assert rate_interval(0, 5)[1] == pytest.approx(1 - 0.025 ** (1 / 5))  # 0.522
    assert rate_interval(5, 5)[0] == pytest.approx(0.025 ** (1 / 5))  # 0.478: 5 of 5 does not exclude 0.5
    assert rate_interval(6, 6)[0] == pytest.approx(0.025 ** (1 / 6))  # 0.541
    low, high = rate_interval(2, 7)  # in general, each end leaves exactly 2.5 % in its binomial tail
    assert scipy.stats.binom.sf(1, 7, low) == pytest.approx(0.025) and scipy.stats.binom.cdf(2, 7, high) == (
        pytest.approx(0.025)
    )
    assert all(np.isnan(rate_interval(0, 0)))


@pytest.mark.parametrize(
    "consistent, hits, n, expected",
    [
        (6, 6, 6, "CONSISTENT"),  # lower bound 0.025^(1/6) = 0.541
        (5, 5, 5, "UNDECIDED"),  # lower bound 0.025^(1/5) = 0.478
        (0, 1, 6, "LUCKY"),  # upper bound 1 - 0.025^(1/6) = 0.459
        (0, 1, 5, "UNDECIDED"),  # upper bound 0.522
        (0, 0, 5, "NEVER"),
        (1, 2, 0, "TOO SHORT"),  # hits, but no run is long enough to judge
    ],
)
def test_verdict_boundaries(consistent, hits, n, expected):
    assert verdict(consistent, hits, n) == expected


def beta_binomial_exact(x: int, more: int, a: int, b: int) -> Fraction:
    """C(N, x) B(x + a, N - x + b) / B(a, b) with integer a, b, where B(p, q) = (p-1)! (q-1)! / (p+q-1)!."""

    def beta(p, q):
        return Fraction(math.factorial(p - 1) * math.factorial(q - 1), math.factorial(p + q - 1))

    return math.comb(more, x) * beta(x + a, more - x + b) / beta(a, b)


def test_p_decided_by_hand():
    # 1 of 3 consistent; uniform prior, so the rate's posterior is Beta(2, 3).
    # +5 seeds (8 in all): 1/8 has upper bound 0.527 and 7/8 lower bound 0.473: no outcome decides.
    assert p_decided(1, 3, 5) == 0
    # +10 seeds (13 in all): decided at <= 2 of 13 (upper 0.454) or >= 11 of 13 (lower 0.546), i.e. x <= 1 or x = 10:
    # P = 12 B(2, 13) + 12 * 10 B(3, 12) + 12 B(12, 3) = 6/91 + 10/91 + 1/91
    assert p_decided(1, 3, 10) == pytest.approx(17 / 91, rel=1e-12)


@pytest.mark.parametrize("consistent, n, more", [(2, 4, 5), (3, 5, 10), (1, 6, 20), (4, 5, 20)])
def test_p_decided_against_exact_fractions(consistent, n, more):
    decides = [x for x in range(more + 1) if verdict(consistent + x, 1, n + more) != "UNDECIDED"]
    exact = sum(beta_binomial_exact(x, more, 1 + consistent, 1 + n - consistent) for x in decides)
    assert p_decided(consistent, n, more) == pytest.approx(float(exact), rel=1e-12)


def test_p_decided_until_decided_by_hand():
    # 7 of 7 consistent, posterior Beta(8, 1). The next seed is consistent with probability 8/9, and 8 of 8 decides.
    # Otherwise 7 of 8 first decides at 11 of 12 (2^12 B(12, 2) = 26.3 >= 1 / alpha = 20; 8 of 9, 9 of 10 and 10 of 11
    # do not): the next four consistent, (8/10)(9/11)(10/12)(11/13) = 6/13. P = 8/9 + (1/9)(6/13) = 110/117.
    assert p_decided(7, 7, 5, rule=UNTIL_DECIDED) == pytest.approx(110 / 117, rel=1e-12)
    assert p_decided(7, 7, 5) > 110 / 117  # Clopper-Pearson, judged once at 12 seeds, is narrower


@pytest.mark.parametrize("consistent, n, more", [(7, 7, 5), (4, 8, 10), (1, 9, 12), (10, 12, 8)])
def test_p_decided_until_decided_against_every_path(consistent, n, more):
    """Every sequence of `more` runs, with its exact probability under the posterior (exchangeable: it depends only on
    how many are consistent), counted when the sequence leaves 0.5 after any of them."""
    a, b = 1 + consistent, 1 + n - consistent
    exact = Fraction(0)
    for path in itertools.product((0, 1), repeat=more):
        if leaves_half(consistent + np.cumsum(path), n + np.arange(1, more + 1)).any():
            s = sum(path)
            exact += beta_binomial_exact(s, more, a, b) / math.comb(more, s)
    assert p_decided(consistent, n, more, rule=UNTIL_DECIDED) == pytest.approx(float(exact), rel=1e-12)


def test_median_ci_is_the_order_statistic_interval():
    x = [99.31, 99.20, 99.45, 99.38, 99.40, 99.29, 99.50, 99.35, 99.42, 99.33]  # sorted: 99.20, 99.29, ..., 99.50
    # n = 10: [x(2), x(9)] covers 1 - 2 P(B <= 1) = 1 - 2 * 11/1024 = 0.979; [x(3), x(8)] only 1 - 2 * 56/1024 = 0.891
    assert median_ci(x) == (99.29, 99.45)
    assert median_ci(x, confidence=0.89) == (99.31, 99.42)
    # n = 5: even [min, max] covers 1 - 2/32 = 0.9375 < 0.95: no interval; n = 6: [min, max] covers 0.969
    assert all(np.isnan(median_ci(x[:5]))) and median_ci(x[:6]) == (99.20, 99.45)
    assert median_ci_min_n(0.95) == 6 and median_ci_min_n(0.90) == 5


def test_test_set_noise():
    assert binomial_se(99.4, 10_000) == pytest.approx(0.0772, abs=1e-4)
    # exact binomial by hand: P(at least 9,940 of 10,000 right | p = 0.9935)
    log_pmf = [
        math.lgamma(10_001)
        - math.lgamma(k + 1)
        - math.lgamma(10_001 - k)
        + k * math.log(0.9935)
        + (10_000 - k) * math.log(0.0065)
        for k in range(9_940, 10_001)
    ]
    by_hand = sum(math.exp(x) for x in log_pmf)
    assert prob_at_least(99.40, 99.35, 10_000) == pytest.approx(by_hand, rel=1e-9)
    assert by_hand == pytest.approx(0.29, abs=0.01)


def four_images(rows) -> np.ndarray:
    return np.array(rows, dtype=bool)


def test_variance_split_identical_models_is_all_test_set():
    # One model, re-run: images 1-2 always right, images 3-4 flip independently, and the four seeds see all four
    # combinations. Accuracies 100, 75, 75, 50: sample variance (625 + 0 + 0 + 625) / 3 = 416.67 pp^2.
    correct = four_images([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 1], [1, 1, 0, 0]])
    acc = 100 * correct.mean(axis=1)
    split = variance_split(acc, 4, correct)
    # per image: images 3-4 each have variance 1/3 across seeds (ddof 1): 1e4 * (2/3) / 4^2 = 416.67 as well
    assert split["var_observed"] == pytest.approx(1250 / 3) and split["var_test"] == pytest.approx(1250 / 3)
    assert split["var_test_source"] == "per-image"
    assert split["var_model"] == pytest.approx(0, abs=1e-9) and split["var_model_zero"]
    assert split["test_share"] == pytest.approx(1.0)
    # without predictions: the binomial a (100 - a) / (n - 1) averaged over seeds: (0 + 625 + 625 + 833.33) / 4
    binomial = variance_split(acc, 4)
    assert binomial["var_test"] == pytest.approx(520.8333, abs=1e-4) and binomial["var_test_source"] == "binomial"
    assert binomial["var_model"] == 0 and binomial["test_share"] == 1  # floored: the binomial overstates here


def test_variance_split_models_that_differ():
    # Seed 2 gets images 1 and 2 wrong together: accuracies 100 and 50, sample variance 1250 pp^2. Per image,
    # images 1-2 have variance 1/2 each: 1e4 * 1 / 16 = 625 from the test set, and 625 between the two models.
    split = variance_split([100, 50], 4, four_images([[1, 1, 1, 1], [0, 0, 1, 1]]))
    assert (split["var_observed"], split["var_test"], split["var_model"]) == pytest.approx((1250, 625, 625))
    assert split["test_share"] == pytest.approx(0.5)
    # chi-square interval of the total with 1 df: 1250 / 5.0239 = 248.8 and 1250 / 0.000982 = 1.27e6 pp^2, past the
    # 2,500 pp^2 that an accuracy can vary at most: no upper end, and no lower end of the test set's share
    assert split["var_model_lo"] == 0 and np.isnan(split["var_model_hi"]) and np.isnan(split["test_share_lo"])
    assert split["var_model_zero"] and split["spread"] == "too few seeds"
    assert split["test_share_hi"] == 1
    # seeds as close as a real sweep's: the upper end 0.005 / 0.000982 = 5.09 pp^2, minus the test set's part
    near = variance_split([99.40, 99.30], 10_000)
    assert near["var_model_hi"] == pytest.approx(0.005 / 0.000982069 - near["var_test"], rel=1e-5)
    assert near["test_share_lo"] == pytest.approx(near["var_test"] / (0.005 / 0.000982069), rel=1e-5)
    assert variance_split([99.4], 10_000)["spread"] == "one seed"


def test_probability_of_improvement_counts_ties_half():
    # pairs (x, y): (99.40, 99.40) tie 1/2, (99.40, 99.30) 1, (99.45, 99.40) 1, (99.45, 99.30) 1  ->  3.5 / 4
    assert probability_of_improvement([99.40, 99.45], [99.40, 99.30]) == 0.875
    assert probability_of_improvement([99.40, 99.30], [99.40, 99.45]) == 0.125
    assert probability_of_improvement([1, 2], [1, 2]) == 0.5


def test_probability_of_improvement_interval_and_mann_whitney():
    x, y = [99.42, 99.30, 99.45, 99.38], [99.35, 99.28, 99.40, 99.25]
    lo, hi = probability_of_improvement_ci(x, y, random_state=1)
    assert 0 <= lo <= probability_of_improvement(x, y) <= hi <= 1
    assert (lo, hi) == probability_of_improvement_ci(x, y, random_state=1)  # seeded
    # complete separation: every resample gives 1, BCa has nothing to work with; one seed: nothing to resample
    assert all(np.isnan(probability_of_improvement_ci([2, 3, 4], [0, 1, 1.5])))
    assert all(np.isnan(probability_of_improvement_ci([2], [0, 1])))
    # exact permutation p: complete separation of 3 and 3 is 2 of the C(6, 3) = 20 arrangements
    assert mann_whitney_p([2, 3, 4], [0, 1, 1.5]) == pytest.approx(0.1)
    assert mann_whitney_min_p(3, 3) == pytest.approx(0.1) and mann_whitney_min_p(4, 4) == pytest.approx(2 / 70)
    assert np.isnan(mann_whitney_p([1], [2, 3]))


def test_claim_percentile():
    ours = [99.30, 99.40, 99.50, 99.60]
    assert claim_percentile(ours, 99.40) == 37.5  # 1 below, 1 tie counted half: (25 + 50) / 2
    assert claim_percentile(ours, 99.70) == 100.0
    assert np.isnan(claim_percentile(ours, np.nan))


def test_claims_with_a_budget_cut_short():
    log = [99.0, 99.3, 99.2, 99.5]
    group = dict(faithful=True, recipe_epochs=4, claimed_best_test=99.5, claimed_log=log)
    assert claims(SimpleNamespace(**group, budget=4)) == {
        "claim_best": 99.5,
        "claim_final": 99.5,
        "claim_basis": "as claimed",
    }
    assert claims(SimpleNamespace(**group, budget=3)) == {
        "claim_best": 99.3,
        "claim_final": 99.2,
        "claim_basis": "seed file's log to epoch 3",
    }
    cut = claims(SimpleNamespace(**(group | {"claimed_log": None}), budget=3))
    assert np.isnan(cut["claim_best"]) and cut["claim_basis"].startswith("none: budget cut to 3 of 4 epochs")
    assert claims(SimpleNamespace(**(group | {"faithful": False}), budget=4))["claim_basis"].startswith("none")


def test_correctness_decodes_packbits():
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0], bool)  # 13 images: two bytes, 3 padding bits
    assert correctness(np.packbits(bits).tobytes(), 13).tolist() == bits.tolist()


def test_image_test_with_one_seed_a_side_is_mcnemar():
    before = np.array([1] * 10 + [0] * 10, bool)  # 20 images
    after = before.copy()
    after[0] = False  # 1 broken
    after[10:15] = True  # 5 fixed
    result = image_test(before[None], after[None])
    assert (result["fixed"], result["broken"]) == (5, 1)
    # (5 - 1)^2 / (5 + 1) = 2.667 on 1 df
    assert result["image_p"] == pytest.approx(scipy.stats.chi2.sf(16 / 6, 1), rel=1e-12)
    table = [[9, 1], [5, 5]]  # before right/wrong x after right/wrong
    assert result["image_p"] == pytest.approx(mcnemar(table, exact=False, correction=False).pvalue, rel=1e-12)


def test_image_test_pools_seeds_by_image():
    before = four_images([[1, 1, 0, 0], [1, 0, 0, 1]])  # share right per image: 1, 1/2, 0, 1/2
    after = four_images([[1, 1, 1, 0], [1, 1, 1, 1]])  # 1, 1, 1, 1/2
    result = image_test(before, after)
    # d = (0, 1/2, 1, 0): sum 1.5, sum of squares 1.25, chi2 = 2.25 / 1.25 = 1.8
    # fixed = sum a (1 - b) = 0 + 1/2 + 1 + 1/4, broken = sum b (1 - a) = 1/4; fixed - broken = sum d
    assert (result["fixed"], result["broken"]) == (1.75, 0.25)
    assert result["image_p"] == pytest.approx(scipy.stats.chi2.sf(1.8, 1), rel=1e-12)
    # ten copies of each seed add no evidence: the same images, so the same p
    assert image_test(np.repeat(before, 10, 0), np.repeat(after, 10, 0))["image_p"] == pytest.approx(result["image_p"])
    assert image_test(before, before)["image_p"] == 1.0


def correct_for(acc: float, n: int = 10_000, offset: int = 0) -> np.ndarray:
    """Per-image correctness with exactly acc % right: the wrong images are a block starting at `offset`."""
    wrong = round((100 - acc) * n / 100)
    correct = np.ones(n, bool)
    correct[offset : offset + wrong] = False
    return correct


@pytest.fixture
def two_steps(tmp_path):
    """s1 then s2 in one submission, 3 seeds each, 3 epochs; seed 2 of s2 has no predictions yet."""
    claim = {"claimed_best_test": 99.70, "claimed_log": [99.0, 99.2, 99.45]}
    write_steps(
        tmp_path,
        [
            {"step": "s1", "submission": "000", "order": 1, "params": 9_000, "epochs": 3} | claim,
            {"step": "s2", "submission": "000", "order": 2, "params": 7_000, "epochs": 3},
        ],
    )
    for seed, accs in enumerate([[99.0, 99.45, 99.3], [99.4, 99.4, 99.41], [99.0, 99.1, 99.2]]):
        write_run(tmp_path, "s1", seed, accs, params=9_000, correct=correct_for(accs[-1], offset=seed))
    for seed, accs in enumerate([[99.1, 99.42, 99.44], [99.4, 99.5, 99.45], [99.2, 99.3, 99.41]]):
        write_run(
            tmp_path,
            "s2",
            seed,
            accs,
            params=7_000,
            correct=None if seed == 2 else correct_for(accs[-1], offset=20 + seed),
        )
    return tmp_path


def test_step_summary_on_files(two_steps):
    s = summarize(load_results(two_steps)).steps.set_index("group")
    # s1: seed 0 hits at epoch 2 then drops, seed 1 holds >= 99.40, seed 2 never gets there
    assert s.loc["s1", ["n_seeds", "n_judged", "n_hit", "n_consistent"]].tolist() == [3, 3, 2, 1]
    assert s.loc["s2", ["n_seeds", "n_judged", "n_hit", "n_consistent"]].tolist() == [3, 3, 3, 1]
    assert s.loc["s1", "hit_rate"] == pytest.approx(2 / 3)
    assert (s.loc["s1", "hit_lo"], s.loc["s1", "hit_hi"]) == pytest.approx(rate_interval(2, 3))
    assert (s.loc["s1", "consistent_lo"], s.loc["s1", "consistent_hi"]) == pytest.approx(rate_interval(1, 3))
    assert s.loc["s1", "final_median"] == pytest.approx(99.3) and s.loc["s2", "final_median"] == pytest.approx(99.44)
    assert s["final_median_lo"].isna().all()  # 3 seeds: no order-statistic interval reaches 95 %
    assert s.loc["s1", "verdict"] == "UNDECIDED" and s.loc["s2", "verdict"] == "UNDECIDED"
    assert s.loc["s1", "p_decided_5"] == 0 and s.loc["s1", "p_decided_10"] == pytest.approx(17 / 91)
    assert s["params_ok"].tolist() == [False, True] and s["epochs_ok"].all()
    # s1's claim 99.70 is above every best epoch (99.45, 99.41, 99.2); its log ends at 99.45: above every final
    assert s.loc["s1", "claim_best_pct"] == 100 and s.loc["s1", "claim_best_above_max"]
    assert s.loc["s1", "claim_final_pct"] == 100 and s.loc["s1", "claim_final_above_max"]
    assert pd.isna(s.loc["s2", "claim_best_pct"]) and not s.loc["s2", "claim_best_above_max"]


def test_rule_picks_the_interval_and_the_verdict(tmp_path, two_steps):
    """Runs of --until-decided are judged with the confidence sequence, the other runs with Clopper-Pearson; a group
    with any run of --until-decided is judged with the sequence, and files without the column are fixed."""
    good = [99.5, 99.5, 99.5]  # consistent
    out = tmp_path / "rules"
    for seed in range(8):
        write_run(out, "old", seed, good, rule=None)  # no rule column, as before it existed
        write_run(out, "fixed", seed, good, rule=FIXED)
        write_run(out, "adaptive", seed, good, rule=UNTIL_DECIDED)
        write_run(out, "extended", seed, good, rule=FIXED if seed < 5 else UNTIL_DECIDED)
    for seed in range(7):
        write_run(out, "seven", seed, good, rule=UNTIL_DECIDED)
    summary = summarize(load_results(out))
    s = summary.steps.set_index("step")
    assert s["rule"].to_dict() == {
        "adaptive": UNTIL_DECIDED,
        "extended": UNTIL_DECIDED,
        "fixed": FIXED,
        "old": FIXED,
        "seven": UNTIL_DECIDED,
    }
    assert s["n_until_decided"].to_dict() == {"adaptive": 8, "extended": 3, "fixed": 0, "old": 0, "seven": 7}
    assert summary.runs.groupby("step")["rule"].agg(set).to_dict()["extended"] == {FIXED, UNTIL_DECIDED}
    cp, sequence = 0.025 ** (1 / 8), (0.05 / 9) ** (1 / 8)  # 8 of 8: 0.631 and 0.523
    for step, low in (("old", cp), ("fixed", cp), ("adaptive", sequence), ("extended", sequence)):
        assert s.loc[step, ["consistent_lo", "hit_lo"]].tolist() == pytest.approx([low, low])
        assert s.loc[step, ["consistent_hi", "hit_hi", "verdict"]].tolist() == [1.0, 1.0, "CONSISTENT"]
    # 7 of 7: Clopper-Pearson would say CONSISTENT (lower end 0.025^(1/7) = 0.590); the sequence keeps 0.5
    assert s.loc["seven", "verdict"] == "UNDECIDED"
    assert s.loc["seven", "p_decided_5"] == pytest.approx(110 / 117)
    assert set(summarize(load_results(two_steps)).steps["rule"]) == {FIXED}


def test_variance_split_on_files(two_steps):
    s = summarize(load_results(two_steps)).steps.set_index("group")
    # s1 finals 99.30, 99.41, 99.20 (mean 99.303): sample variance (0.0033^2 + 0.1067^2 + 0.1033^2) / 2
    assert s.loc["s1", "var_observed"] == pytest.approx(np.var([99.30, 99.41, 99.20], ddof=1))
    # s1's seeds are wrong on images 0-69, 1-59 and 2-81. Wrong in 1 of 3 seeds (variance across seeds, ddof 1:
    # 1/3): images 0 and 70-81; in 2 of 3 (also 1/3): images 1 and 60-69; in all 3 (0): images 2-59.
    by_hand = 1e4 * (1 + 12 + 1 + 10) / 3 / 10_000**2
    assert s.loc["s1", "var_test"] == pytest.approx(by_hand) and s.loc["s1", "var_test_source"] == "per-image"
    assert s.loc["s2", "n_predicted"] == 2 and s.loc["s2", "var_test_source"] == "per-image"


def test_progression_on_files(two_steps):
    p = summarize(load_results(two_steps)).progression
    assert p[["submission", "before", "after"]].values.tolist() == [["000", "s1", "s2"]]
    # finals s2 (99.44, 99.45, 99.41) vs s1 (99.3, 99.41, 99.2): 8 wins, 1 tie (99.41) -> 8.5 / 9
    assert p["p_improve"].iloc[0] == pytest.approx(8.5 / 9)
    assert p["median_diff"].iloc[0] == pytest.approx(99.44 - 99.3)
    assert p["change"].iloc[0] == "too few seeds to tell"  # 3 vs 3 seeds: the smallest p is 0.1
    # images: all 3 seeds of s1 against the 2 of s2 with predictions; fixed - broken = 10,000 * mean accuracy gain
    row = p.iloc[0]
    assert (row["images_before"], row["images_after"]) == (3, 2)
    gain = np.mean([99.44, 99.45]) - np.mean([99.30, 99.41, 99.20])
    assert row["fixed"] - row["broken"] == pytest.approx(100 * gain)


def test_quick_rows_are_too_short_and_not_compared(two_steps):
    write_run(two_steps, "s2", 5, [97.0, 98.0], quick=True, recipe_hash="ffffffffffff", correct=np.ones(100, bool))
    summary = summarize(load_results(two_steps))
    s = summary.steps.set_index("group")
    assert s.loc["s2 [quick]", "n_seeds"] == 1 and s.loc["s2", "n_seeds"] == 3
    # 2 epochs < K = 3: cannot be judged consistent or lucky
    assert s.loc["s2 [quick]", ["verdict", "budget", "n_judged", "n_too_short"]].tolist() == ["TOO SHORT", 2, 0, 1]
    assert summary.progression["after"].tolist() == ["s2"]  # no full step before the quick one to compare with


def test_last_k_longer_than_every_run_is_refused(two_steps):
    with pytest.raises(
        ReportError,
        match=r"^last-K window of 4 epochs is longer than every run \(the longest "
        r"counts 3\): .*; use --last-k 3 or less$",
    ) as e:
        summarize(load_results(two_steps), Options(last_k=4))
    assert "\n" not in str(e.value)


def test_without_last_k_the_window_is_3_or_the_longest_run(two_steps):
    assert summarize(load_results(two_steps)).options.last_k == 3  # 3-epoch runs
    short = summarize(load_results(two_steps), Options(epoch_budget=2))  # every run counts 2 epochs
    assert short.options.last_k == 2 and short.steps["n_too_short"].sum() == 0
    # s1 over its last 2 epochs: 99.45/99.3, 99.4/99.41 and 99.1/99.2: one seed holds 99.40 through both
    assert short.steps.set_index("group").loc["s1", "n_consistent"] == 1


def test_epoch_budget_option_cuts_every_step_and_the_claims(two_steps):
    s = summarize(load_results(two_steps), Options(epoch_budget=2, last_k=1)).steps.set_index("group")
    # s1 at epoch 2: 99.45, 99.4, 99.1 -> 2 consistent with K = 1
    assert s.loc["s1", ["budget", "n_consistent"]].tolist() == [2, 2]
    # the claim is the seed file's own log at epoch 2 (99.2), not its 3-epoch claims; 1 of our 3 seeds is below
    assert s.loc["s1", ["claim_best", "claim_final", "claim_basis"]].tolist() == [
        99.2,
        99.2,
        "seed file's log to epoch 2",
    ]
    assert s.loc["s1", "claim_best_pct"] == pytest.approx(100 / 3)
    # predictions are of epoch 3, not of the epoch counted: the variance split falls back to the binomial
    assert s.loc["s1", "n_predicted"] == 0 and s.loc["s1", "var_test_source"] == "binomial"


# --- coverage -----------------------------------------------------------------------------------------------------
# Each interval the report prints, on data simulated as our runs are: a seed's model has true accuracy
# N(99.3 %, sd) and scores Binomial(10,000, true) on the test set, or, per image, flips hard images independently.
# Each must cover its truth at least 93 % of the time (nominal 95 % minus 2 points) where it gives an interval.
# Fixed seeds, and few enough repetitions to run in a few seconds.

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(40)  # E[f(Z)], Z ~ N(0, 1), as sum(WEIGHTS * f(NODES))
WEIGHTS = WEIGHTS / WEIGHTS.sum()
COUNTS = np.arange(9_800, 10_001)  # correct images: the support that matters around 99.3 %


def finals(rng, size, mean, sd):
    true = np.clip(rng.normal(mean, sd, size), 0, 100) / 100
    return rng.binomial(10_000, true) / 100


def pmf(mean, sd):
    """Distribution of the final accuracy (over COUNTS) under the binomial model, by quadrature over the model."""
    return WEIGHTS @ scipy.stats.binom.pmf(COUNTS[None], 10_000, (mean + sd * NODES[:, None]) / 100)


def coverage(intervals, truth) -> tuple[float, float]:
    """(share covering the truth among those given, share given)."""
    lo, hi = np.asarray(intervals, dtype=float).T
    shown = ~np.isnan(lo)
    covered = (lo - 1e-12 <= truth) & (truth <= hi + 1e-12)
    return (covered[shown].mean() if shown.any() else np.nan), shown.mean()


def simulated_coverage(n: int, o: Options = Options()) -> dict[str, tuple[float, float]]:
    """Per interval and truth: (share of intervals covering it among those given, share given), at n seeds."""
    rng, results = np.random.default_rng(n), {}
    for rate in (0.05, 0.2, 0.5, 0.8, 0.95):  # hit and consistent rates
        k = rng.binomial(n, rate, 2_000)
        results[f"rate {rate}"] = coverage(np.column_stack(rate_interval(k, n, o.confidence)), rate)
    p = pmf(99.3, 0.05)  # median of final accuracy
    median = COUNTS[np.searchsorted(np.cumsum(p), 0.5)] / 100
    results["median"] = coverage([median_ci(finals(rng, n, 99.3, 0.05), o.confidence) for _ in range(300)], median)
    for shift in (0.0, 0.1):  # P(after > before), ties one half
        pa, pb = pmf(99.3 + shift, 0.05), p
        truth = pa @ (np.cumsum(pb) - pb / 2)
        results[f"P(X>Y) +{shift}"] = coverage(
            [
                probability_of_improvement_ci(
                    finals(rng, n, 99.3 + shift, 0.05), finals(rng, n, 99.3, 0.05), o.confidence, 500, seed
                )
                for seed in range(120)
            ],
            truth,
        )
    for sd in (0.0, 0.1):  # genuine between-model variance, binomial model: it is sd^2, the test set 99.3 * 0.7 / 1e4
        splits = [variance_split(finals(rng, n, 99.3, sd), 10_000, confidence=o.confidence) for _ in range(1_000)]
        share = 99.3 * 0.7 / 1e4 / (99.3 * 0.7 / 1e4 + sd**2)
        results[f"var_model sd {sd}"] = coverage([(s["var_model_lo"], s["var_model_hi"]) for s in splits], sd**2)
        results[f"test_share sd {sd}"] = coverage([(s["test_share_lo"], s["test_share_hi"]) for s in splits], share)
    # per image, on a 1,000-image test set to keep it fast: 300 hard images of probit difficulty `hard`, the rest
    # always right; a seed shifts every hard image by N(0, tau), which makes genuine variance between models
    hard = rng.normal(1.5, 1.2, 300)
    for tau in (0.0, 0.3):
        q = scipy.stats.norm.cdf(hard[None] + tau * NODES[:, None])  # (nodes, images)
        acc = 100 * (700 + q.sum(1)) / 1_000
        mean_q = WEIGHTS @ q
        test = 1e4 * (mean_q * (1 - mean_q)).sum() / 1e6  # what the per-image estimate targets
        genuine = WEIGHTS @ (acc - WEIGHTS @ acc) ** 2 + WEIGHTS @ (1e4 * (q * (1 - q)).sum(1) / 1e6) - test
        splits = []
        for _ in range(1_000):
            flips = rng.random((n, 300)) < scipy.stats.norm.cdf(hard + rng.normal(0, tau, (n, 1)))
            correct = np.hstack([np.ones((n, 700), bool), flips])
            splits.append(variance_split(100 * correct.mean(1), 1_000, correct, o.confidence))
        results[f"var_model per image tau {tau}"] = coverage(
            [(s["var_model_lo"], s["var_model_hi"]) for s in splits], max(genuine, 0.0)
        )
    return results


@pytest.mark.parametrize("n", [3, 5, 10])
def test_coverage_of_every_interval(n):
    results = simulated_coverage(n)
    failing = {name: c for name, c in results.items() if c[0] < 0.95 - 0.02}
    assert not failing, failing
    assert results["median"][1] == (0 if n < median_ci_min_n(0.95) else 1)  # no interval below 6 seeds


def test_own_target_by_hand():
    """a: 2 of 3 seeds reach 99.40, under 10,000 params, but 20 epochs > 15; b: no accuracy target, 12,000 params
    over 10,000; c: half its seeds reach 99.0 (99.00 counts), and it sets no params or epochs target."""
    steps = pd.DataFrame(
        {
            "group": ["a", "b", "c"],
            "params": [9_000, 12_000, 7_000],
            "epoch_budget": [20, 20, 15],
            "target_accuracy": [99.40, np.nan, 99.0],
            "target_params": [10_000, 10_000, np.nan],
            "target_epochs": [15, 20, np.nan],
        }
    )
    runs = pd.DataFrame({"group": ["a", "a", "a", "b", "c", "c"], "best_acc": [99.41, 99.40, 99.39, 99.5, 98.99, 99.0]})
    t = own_target(steps, runs)
    assert t["own_acc_rate"].iloc[0] == pytest.approx(2 / 3) and pd.isna(t["own_acc_rate"].iloc[1])
    assert t["own_acc_rate"].iloc[2] == 0.5
    assert t["own_acc_ok"].tolist() == [True, pd.NA, True]
    assert t["own_params_ok"].tolist() == [True, False, pd.NA]
    assert t["own_epochs_ok"].tolist() == [False, True, pd.NA]
    bare = own_target(steps[["group", "params", "epoch_budget"]], runs)  # a folder written before the targets
    assert bare[["own_acc_ok", "own_params_ok", "own_epochs_ok"]].isna().all().all()


def test_compare_any_two_groups_across_submissions(two_steps):
    for seed, acc in enumerate([99.1, 99.0, 99.2]):  # t1, of another submission, below every seed of s2
        write_run(two_steps, "t1", seed, [98.9, 99.0, acc], submission="001", correct=correct_for(acc, offset=40))
    c = summarize(load_results(two_steps), Options(compare=("t1", "s2"))).comparison
    row = c.iloc[0]
    assert len(c) == 1 and (row["before"], row["after"], row["n_before"], row["n_after"]) == ("t1", "s2", 3, 3)
    # finals s2 (99.44, 99.45, 99.41) all above t1 (99.1, 99.0, 99.2): P = 1, no interval to resample, and 3 against 3
    # seeds cannot get Mann-Whitney below 0.1
    assert row["p_improve"] == 1.0 and np.isnan(row["p_improve_lo"]) and row["mann_whitney_p"] == pytest.approx(0.1)
    assert row["change"] == "too few seeds to tell" and row["median_diff"] == pytest.approx(99.44 - 99.1)
    gain = np.mean([99.44, 99.45]) - np.mean([99.1, 99.0, 99.2])  # the seeds of each with predictions
    assert (row["images_before"], row["images_after"]) == (3, 2)
    assert row["fixed"] - row["broken"] == pytest.approx(100 * gain)
    # the same statistics as the progression, for the pair it compares
    s = summarize(load_results(two_steps), Options(compare=("s1", "s2")))
    progression = s.progression.drop(columns="submission")
    pd.testing.assert_frame_equal(s.comparison, progression[progression["before"] == "s1"].reset_index(drop=True))
    # a glob pattern names every group it matches
    c = summarize(load_results(two_steps), Options(compare=("t1", "s*"))).comparison
    assert c[["before", "after"]].values.tolist() == [["t1", "s1"], ["t1", "s2"]]


def test_compare_refuses_what_it_cannot_compare_in_one_line(two_steps):
    write_run(two_steps, "q1", 0, [97.0], quick=True, recipe_hash="ffffffffffff")
    results = load_results(two_steps)
    for pair, says in [
        (("s1", "s3"), "no step or group 's3' in this folder; did you mean "),
        (("s1", "s1"), "--compare s1 s1 names one group twice"),
        (("s1", "q1"), "pairs quick runs only with full ones"),
    ]:
        with pytest.raises(ReportError, match=re.escape(says)):
            summarize(results, Options(compare=pair))
