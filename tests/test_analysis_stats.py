"""analysis.stats on tiny fixtures whose answers are worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis.load import load_results
from analysis.stats import (
    Options, binomial_se, claim_percentile, correctness, mcnemar_by_seed, median_ci, median_difference_ci,
    own_target, prob_at_least, probability_of_improvement, run_summary, seeds_to_decide, summarize, verdict, wilson,
)
from tests.fixtures_analysis import write_run, write_steps

Z = scipy.stats.norm.ppf(0.975)


def wilson_by_hand(k, n, z=Z):
    centre, half = (k + z * z / 2) / (n + z * z), z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return centre - half, centre + half


def epochs_frame(runs: dict, run_epochs: dict = {}) -> pd.DataFrame:
    """Epoch rows of runs {(group, seed): accs}, accuracies computed as the trainer does: 100 * correct / 10,000."""
    rows = [{"group": g, "step": g, "seed": s, "epoch": i + 1, "epochs": run_epochs.get((g, s), len(accs)),
             "test_acc": round(a * 100) / 10_000 * 100, "test_total": 10_000, "recipe_hash": "h", "quick": False}
            for (g, s), accs in runs.items() for i, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_run_summary_by_hand():
    epochs = epochs_frame({
        ("a", 0): [99.30, 99.45, 99.38, 99.41, 99.42],  # lucky: hits at epoch 2, dips to 99.38 in the last 3
        ("a", 1): [99.10, 99.40, 99.41, 99.40, 99.40, 99.00],  # consistent at exactly 99.40; epoch 6 is past budget
        ("a", 2): [98.00, 99.50],  # trained 2 epochs only (quick): its budget is 2, its window both epochs
        ("b", 0): [99.00, 99.10, 99.20],  # never
    })
    runs = run_summary(epochs, pd.Series({"a": 5, "b": 3}), target=99.40, last_k=3).set_index(["group", "seed"])
    expected = pd.DataFrame({
        "budget": [5, 5, 2, 3], "best_acc": [99.45, 99.41, 99.50, 99.20], "best_epoch": [2, 3, 2, 3],
        "final_acc": [99.42, 99.40, 99.50, 99.20], "lastk_min": [99.38, 99.40, 98.00, 99.00],
        "first_epoch_at_target": [2, 2, 2, np.nan], "hit": [True, True, True, False],
        "consistent": [False, True, False, False], "lucky": [True, False, True, False],
        "luck_gap": [99.45 - (99.38 + 99.41 + 99.42) / 3, 99.41 - (99.41 + 99.40 + 99.40) / 3, 99.50 - 98.75,
                     99.20 - 99.10],
    }, index=runs.index)
    pd.testing.assert_frame_equal(runs[expected.columns], expected, check_dtype=False, atol=1e-9)
    assert runs.loc[("a", 0), "final_se"] == pytest.approx(100 * math.sqrt(0.9942 * 0.0058 / 10_000))


def test_wilson_interval_against_hand_and_known_value():
    assert wilson(2, 3) == pytest.approx(wilson_by_hand(2, 3))
    assert wilson(2, 3) == pytest.approx((0.2077, 0.9385), abs=1e-4)


@pytest.mark.parametrize("consistent, hits, n, expected", [
    (4, 4, 4, "CONSISTENT"),  # lower bound 4 / (4 + z^2) = 0.510
    (3, 3, 3, "UNDECIDED"),  # lower bound 3 / (3 + z^2) = 0.439
    (0, 1, 4, "LUCKY"),  # upper bound z^2 / (4 + z^2) = 0.490
    (0, 1, 3, "UNDECIDED"),  # upper bound z^2 / (3 + z^2) = 0.561
    (0, 0, 5, "NEVER"),
    (7, 9, 10, "UNDECIDED"),  # 0.397 to 0.892
])
def test_verdict_boundaries(consistent, hits, n, expected):
    low, high = wilson_by_hand(consistent, n)
    assert verdict(consistent, hits, n) == expected
    assert expected != "CONSISTENT" or low >= 0.5
    assert expected != "LUCKY" or high < 0.5


def test_seeds_to_decide():
    assert seeds_to_decide(0, 3) == 1  # 0 of 4: upper bound 0.490 < 0.5
    assert seeds_to_decide(3, 3) == 1  # 4 of 4: lower bound 0.510 >= 0.5
    m = seeds_to_decide(2, 3)  # the rate stays 2/3: decided once the lower bound reaches 0.5
    assert wilson_by_hand(round(2 / 3 * (3 + m)), 3 + m)[0] >= 0.5
    assert wilson_by_hand(round(2 / 3 * (2 + m)), 2 + m)[0] < 0.5
    assert seeds_to_decide(5, 10) is None  # a rate of 0.5 never decides


def test_test_set_noise():
    assert binomial_se(99.4, 10_000) == pytest.approx(0.0772, abs=1e-4)
    # exact binomial by hand: P(at least 9,940 of 10,000 right | p = 0.9935)
    log_pmf = [math.lgamma(10_001) - math.lgamma(k + 1) - math.lgamma(10_001 - k) + k * math.log(0.9935)
               + (10_000 - k) * math.log(0.0065) for k in range(9_940, 10_001)]
    by_hand = sum(math.exp(x) for x in log_pmf)
    assert prob_at_least(99.40, 99.35, 10_000) == pytest.approx(by_hand, rel=1e-9)
    assert by_hand == pytest.approx(0.29, abs=0.01)


def test_probability_of_improvement_counts_ties_half():
    # pairs (x, y): (99.40, 99.40) tie 1/2, (99.40, 99.30) 1, (99.45, 99.40) 1, (99.45, 99.30) 1  ->  3.5 / 4
    assert probability_of_improvement([99.40, 99.45], [99.40, 99.30]) == 0.875
    assert probability_of_improvement([99.40, 99.30], [99.40, 99.45]) == 0.125
    assert probability_of_improvement([1, 2], [1, 2]) == 0.5


def test_bootstrap_intervals_are_seeded_and_sane():
    x, y = [99.1, 99.3, 99.35, 99.4, 99.6], [99.0, 99.2, 99.25]
    lo, hi = median_ci(x, random_state=1)
    assert lo <= 99.35 <= hi and (lo, hi) == median_ci(x, random_state=1)
    assert median_ci([99.4, 99.4, 99.4]) == (99.4, 99.4)
    assert all(np.isnan(median_ci([99.4])))
    lo, hi = median_difference_ci(x, y, random_state=1)
    assert lo <= 99.35 - 99.2 <= hi and min(x) - max(y) <= lo and hi <= max(x) - min(y)


def test_claim_percentile():
    ours = [99.30, 99.40, 99.50, 99.60]
    assert claim_percentile(ours, 99.40) == 37.5  # 1 below, 1 tie counted half: (25 + 50) / 2
    assert claim_percentile(ours, 99.70) == 100.0
    assert np.isnan(claim_percentile(ours, np.nan))


def predictions(seed_to_correct: dict) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "n": len(c), "correct": np.packbits(np.asarray(c, bool)).tobytes()}
                         for s, c in seed_to_correct.items()])


def test_correctness_decodes_packbits():
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0], bool)  # 13 images: two bytes, 3 padding bits
    assert correctness(np.packbits(bits).tobytes(), 13).tolist() == bits.tolist()


def test_mcnemar_by_seed_by_hand():
    before = np.array([1] * 10 + [0] * 10, bool)  # 20 images
    after = before.copy()
    after[0] = False  # 1 broken
    after[10:15] = True  # 5 fixed
    result = mcnemar_by_seed(predictions({0: before, 1: before}), predictions({0: after, 2: after}))
    assert result[["seed", "fixed", "broken"]].values.tolist() == [[0, 5, 1]]  # only seed 0 has both
    assert result["p"].iloc[0] == pytest.approx(2 * (1 + 6) / 2 ** 6)  # exact: 2 P(X <= 1), X ~ Bin(6, 1/2)


@pytest.fixture
def two_steps(tmp_path):
    """s1 then s2 in one submission, 3 seeds each, 3 epochs; seed 2 of s2 has no predictions yet."""
    claim = {"claimed_best_test": 99.70, "claimed_log": [99.0, 99.2, 99.45]}
    write_steps(tmp_path, [{"step": "s1", "submission": "000", "order": 1, "params": 9_000, "epochs": 3} | claim,
                           {"step": "s2", "submission": "000", "order": 2, "params": 7_000, "epochs": 3}])
    good = np.ones(100, bool)
    for seed, accs in enumerate([[99.0, 99.45, 99.3], [99.4, 99.4, 99.41], [99.0, 99.1, 99.2]]):
        write_run(tmp_path, "s1", seed, accs, params=9_000, correct=good)
    for seed, accs in enumerate([[99.1, 99.42, 99.44], [99.4, 99.5, 99.45], [99.2, 99.3, 99.41]]):
        fixed = good.copy()
        fixed[:seed] = False
        write_run(tmp_path, "s2", seed, accs, params=7_000, correct=None if seed == 2 else fixed)
    return tmp_path


def test_step_summary_on_files(two_steps):
    s = summarize(load_results(two_steps)).steps.set_index("group")
    # s1: seed 0 hits at epoch 2 then drops, seed 1 holds >= 99.40, seed 2 never gets there
    assert s.loc["s1", ["n_seeds", "n_hit", "n_consistent"]].tolist() == [3, 2, 1]
    assert s.loc["s2", ["n_seeds", "n_hit", "n_consistent"]].tolist() == [3, 3, 1]
    assert s.loc["s1", "hit_rate"] == pytest.approx(2 / 3)
    assert (s.loc["s1", "hit_lo"], s.loc["s1", "hit_hi"]) == pytest.approx(wilson_by_hand(2, 3))
    assert (s.loc["s1", "consistent_lo"], s.loc["s1", "consistent_hi"]) == pytest.approx(wilson_by_hand(1, 3))
    assert s.loc["s1", "final_median"] == pytest.approx(99.3) and s.loc["s2", "final_median"] == pytest.approx(99.44)
    assert s.loc["s1", "verdict"] == "UNDECIDED" and s.loc["s2", "verdict"] == "UNDECIDED"
    assert s["params_ok"].tolist() == [False, True] and s["epochs_ok"].all()
    # s1's claim 99.70 is above every best epoch (99.45, 99.41, 99.2); its log ends at 99.45: above every final
    assert s.loc["s1", "claim_best_pct"] == 100 and s.loc["s1", "claim_best_above_max"]
    assert s.loc["s1", "claim_final_pct"] == 100 and s.loc["s1", "claim_final_above_max"]
    assert pd.isna(s.loc["s2", "claim_best_pct"]) and not s.loc["s2", "claim_best_above_max"]


def test_progression_on_files(two_steps):
    p = summarize(load_results(two_steps)).progression
    assert p[["submission", "before", "after"]].values.tolist() == [["000", "s1", "s2"]]
    # finals s2 (99.44, 99.45, 99.41) vs s1 (99.3, 99.41, 99.2): 8 wins, 1 tie (99.41) -> 8.5 / 9
    assert p["p_improve"].iloc[0] == pytest.approx(8.5 / 9)
    assert p["median_diff"].iloc[0] == pytest.approx(99.44 - 99.3)
    # McNemar on seeds 0 and 1 (seed 2 of s2 has no predictions): s2 broke 0 and 1 images, fixed none
    assert p[["mcnemar_seeds", "fixed", "broken"]].values.tolist() == [[2, 0, 0.5]]


def test_quick_rows_are_not_compared_with_claims_or_full_steps(two_steps):
    write_run(two_steps, "s2", 5, [97.0, 98.0], quick=True, recipe_hash="ffffffffffff", correct=np.ones(100, bool))
    summary = summarize(load_results(two_steps))
    s = summary.steps.set_index("group")
    assert s.loc["s2 [quick]", "n_seeds"] == 1 and s.loc["s2", "n_seeds"] == 3
    assert s.loc["s2 [quick]", "verdict"] == "NEVER" and s.loc["s2 [quick]", "budget"] == 2
    assert summary.progression["after"].tolist() == ["s2"]  # no full step before the quick one to compare with


def test_epoch_budget_option_cuts_every_step(two_steps):
    s = summarize(load_results(two_steps), Options(epoch_budget=2, last_k=1)).steps.set_index("group")
    # s1 at epoch 2: 99.45, 99.4, 99.1 -> 2 consistent with K = 1
    assert s.loc["s1", ["budget", "n_consistent"]].tolist() == [2, 2]


def test_own_target_by_hand():
    """a: 2 of 3 seeds reach 99.40, under 10,000 params, but 20 epochs > 15; b: no accuracy target, 12,000 params
    over 10,000; c: half its seeds reach 99.0 (99.00 counts), and it sets no params or epochs target."""
    steps = pd.DataFrame({"group": ["a", "b", "c"], "params": [9_000, 12_000, 7_000], "epoch_budget": [20, 20, 15],
                          "target_accuracy": [99.40, np.nan, 99.0], "target_params": [10_000, 10_000, np.nan],
                          "target_epochs": [15, 20, np.nan]})
    runs = pd.DataFrame({"group": ["a", "a", "a", "b", "c", "c"], "best_acc": [99.41, 99.40, 99.39, 99.5, 98.99, 99.0]})
    t = own_target(steps, runs)
    assert t["own_acc_rate"].iloc[0] == pytest.approx(2 / 3) and pd.isna(t["own_acc_rate"].iloc[1])
    assert t["own_acc_rate"].iloc[2] == 0.5
    assert t["own_acc_ok"].tolist() == [True, pd.NA, True]
    assert t["own_params_ok"].tolist() == [True, False, pd.NA]
    assert t["own_epochs_ok"].tolist() == [False, True, pd.NA]
    bare = own_target(steps[["group", "params", "epoch_budget"]], runs)  # a folder written before the targets
    assert bare[["own_acc_ok", "own_params_ok", "own_epochs_ok"]].isna().all().all()
