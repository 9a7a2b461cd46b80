"""The report's words: every sentence that says what a number means, kept apart from the numbers (`analysis.stats`
computes them). The HTML (`analysis.report`) and the terminal (`analysis.terminal`) print what this module returns,
so the statistics and the way they are said can change one without the other.

Functions over a step take a row of `Summary.steps` (an itertuples row) and the options the summary used.
"""

from __future__ import annotations

import shlex

import numpy as np
import pandas as pd

from analysis.load import Results
from analysis.stats import (
    LAST_K,
    MAX_VARIANCE,
    MORE_SEEDS,
    UNTIL_DECIDED,
    Options,
    Summary,
    binomial_se,
    listed,
    median_ci_min_n,
    prob_at_least,
)
from sweeps import layout

DASH = "–"


def num(x, fmt: str = ".2f") -> str:
    """`x` as `fmt`, never "-0.00": a value that rounds to zero prints without a sign."""
    if pd.isna(x):
        return DASH
    digits = int(fmt.rstrip("f%").split(".")[-1] or 0) + (2 if fmt.endswith("%") else 0)
    return f"{round(float(x), digits) + 0.0:{fmt}}"  # round(-1.4e-14, 2) is -0.0; adding 0.0 makes it 0.0


def window(k: int) -> str:
    """The last-K window: 'the last 3 epochs', or 'the last epoch'."""
    return "the last epoch" if k == 1 else f"the last {k} epochs"


def in_window(k: int) -> str:
    """Where a consistent run holds the target: 'in each of the last 3 epochs', or 'in the last epoch'."""
    return f"in {window(k)}" if k == 1 else f"in each of {window(k)}"


def plural(n, word: str, many: str = "") -> str:
    """'1 epoch', '3 epochs', '1,000 epochs'; `many` for an irregular plural."""
    n = int(n)
    return f"{n:,} {word if n == 1 else many or word + 's'}"


# --- the glossary ----------------------------------------------------------------------------------------------

COMPARABLE_WORDS = {  # each column of sweeps.layout.COMPARABLE, as the glossary names it
    "recipe_hash": "recipe hash",
    "quick": "--quick flag",
    "precision": "precision",
    "vary": "--vary setting",
    "base_seed": "base seed",
}


def comparable() -> str:
    """What the rows of one comparable group share: the step and each column of `sweeps.layout.COMPARABLE`."""
    parts = ["one step", *(f"one {COMPARABLE_WORDS[column]}" for column in layout.COMPARABLE)]
    return f"{', '.join(parts[:-1])} and {parts[-1]}, and with --split one value of each split column"


def definitions(o: Options = Options()) -> dict[str, str]:
    """Every term of the report, as the code computes it; the report prints these and the README's table is
    `definitions_markdown()` (a test checks both)."""
    se, p = float(binomial_se(o.target, o.n_test)), float(prob_at_least(o.target, o.target - 0.05, o.n_test))
    level, k = f"{o.confidence:.0%}", o.last_k or LAST_K
    return {
        "target": f"{o.target:.2f} % test accuracy.",
        "epoch budget": "the step's recipe epochs"
        + (f", here set to {o.epoch_budget}" if o.epoch_budget else "")
        + ". Statistics count epochs 1 … budget, or fewer where the runs trained fewer (--quick, "
        "--epochs); the epochs column then reads 'counted of budget'.",
        "hit run": "test accuracy at or above the target at some epoch within the budget.",
        "consistent run": f"test accuracy at or above the target {in_window(k)}.",
        "too short": f"a run that counts fewer epochs than the last-K window ({plural(k, 'epoch')}): it can be judged "
        "neither consistent nor lucky, and the consistent rate leaves it out. The last-K window is "
        f"{LAST_K} epochs unless --last-k sets it; where every run is shorter, it is the longest run's count (1 for a "
        "quick sweep), and a --last-k longer than every run is refused.",
        "lucky run": "a hit run that is long enough to judge and not consistent.",
        "luck gap": f"the best epoch's accuracy minus the mean of {window(k)} (runs long enough to judge; none for "
        "a run of one epoch, whose gap is 0 by definition).",
        "rates": f"hit rate: hit runs / seeds; consistent rate: consistent runs / runs long enough to judge; each with "
        f"its {level} Clopper-Pearson interval, which covers the true rate at least {level} of the time for "
        "every rate and every number of seeds fixed in advance. A step with runs of `sweep run --until-decided` "
        "(rule until-decided) is judged instead with Robbins' confidence sequence (the beta-binomial mixture, "
        f"sweeps/decide.py), which covers the true rate {level} of the time at every number of seeds at once, so "
        "that stopping when a verdict is reached leaves it valid.",
        "CONSISTENT": "the consistent rate's interval lies at or above 0.5.",
        "LUCKY": "some seed hits, and the consistent rate's interval lies below 0.5.",
        "NEVER": "no seed hits.",
        "TOO SHORT": "no run is long enough to judge.",
        "UNDECIDED": "otherwise. The report gives the probability that "
        + ", ".join(map(str, MORE_SEEDS))
        + " more seeds decide it: the extra consistent runs are Beta-binomial, from the posterior of the "
        "consistent rate (uniform prior, updated with the runs judged), and an outcome decides when "
        "the interval over all runs leaves 0.5.",
        "median and interval": f"median over seeds, with the exact distribution-free {level} interval from order "
        "statistics: [x(l), x(n+1-l)], l the "
        f"{(1 - o.confidence) / 2:.3g} quantile of Binomial(n, 1/2); none with fewer than "
        f"{median_ci_min_n(o.confidence)} seeds, where even [min, max] covers less than "
        f"{level}.",
        "budgets": f"parameters < {o.max_params:,}; the step's epoch budget ≤ {o.max_epochs}.",
        "own target": "what the seed file itself set out to reach with the step (steps.parquet's target_* columns, "
        "with the seed's line in target_source): the accuracy passes when half or more of the seeds "
        "reach it at some epoch within the budget, parameters when below it, epochs when the budget "
        "is at most it; blank where the seed sets no number.",
        "test-set noise": f"one test of a fixed model on {o.n_test:,} images has a binomial standard error of "
        f"{se:.3f} percentage points at {o.target:.2f} %: a model truly at {o.target - 0.05:.2f} % "
        f"still scores ≥ {o.target:.2f} % with probability {p:.2f}.",
        "spread": "the sample variance of final accuracy across seeds, split into what the test set alone explains "
        "and genuine variance between the seeds' models (after Jordan 2024). Test set alone: with per-image "
        "predictions of two or more seeds, the sum over images of each image's variance of correctness "
        "across seeds, over the number of images squared: what the seeds would scatter if each image "
        "flipped independently; an image every seed gets right, or wrong, adds nothing. Without them, the "
        "binomial a(100 - a)/(n - 1) averaged over seeds, which treats every image as equally hard and so "
        "overstates the test set's part. Genuine: the difference, floored at 0, with the chi-square "
        f"{level} interval of the variance (final accuracies taken as normal) minus the test set's part; "
        "'consistent with 0' when that interval reaches 0. The interval has no upper end where the chi-square "
        f"one passes {MAX_VARIANCE:,.0f} pp² (an SD of {MAX_VARIANCE**0.5:.0f} pp), the most an accuracy can "
        "vary: so few seeds cannot bound it (2 seeds put it at 1,018 times the observed variance). "
        "Share: test set / (test set + genuine). "
        "Spread 'test set' when genuine is consistent with 0 and the test set explains at least half even "
        "at the interval's end; 'models differ' when the interval excludes 0; 'too few seeds' otherwise. "
        "A step whose spread is test-set noise has no lucky seeds: one true accuracy, read with a noisy "
        "ruler.",
        "claims": "percentile of the seed file's claimed best accuracy among our seeds' best epochs, and of the final "
        "epoch of its logged run among our final epochs (ties count one half); only for full runs of the "
        "unchanged recipe. With an epoch budget shorter than the recipe, both come from the seed file's "
        "own log cut at the budget (best within it, and its value at the budget), and are left out "
        "without a log that long.",
        "progression": f"each step against the one before it in its submission, on final accuracy: P(after > before) "
        f"over all pairs of seeds (ties one half, as in rliable) with its {level} BCa bootstrap "
        f"interval ({o.n_bootstrap:,} resamples of each step's seeds, seed {o.random_state}; none "
        "with one seed, or where resampling cannot move it, as when one step's seeds all beat the "
        "other's); the two-sided Mann-Whitney p "
        f"from the permutation distribution (exact up to {o.n_bootstrap:,} arrangements); change: "
        f"improved or got worse when p < {1 - o.confidence:.2f}, too few seeds to tell when even "
        "complete separation could not get there, no clear change otherwise.",
        "comparison": "sweep report --compare A B: each group of B against each group of A with the same --quick "
        "flag, from any submissions, with the statistics of the progression (B in the place of the later step, A of "
        "the earlier); A and B are step names, group labels, or glob patterns over them.",
        "image test": "over the seeds of both steps with per-image predictions: per image, d = share of the later "
        "step's seeds right - share of the earlier step's seeds right. Images fixed / broken: right "
        "for a random seed of the later step and wrong for one of the earlier, and the reverse. p: "
        "clustered McNemar test (Durkalski et al. 2003), chi-square(1) of (sum d)² / sum d², with "
        "images as clusters, so that an image counts once however many seeds see it and seeds need no "
        "pairing; with one seed a step it is McNemar's test. It treats the trained models as given "
        "and the test images as the sample; Mann-Whitney treats the seeds as the sample.",
        "comparable group": f"rows of {comparable()}; never pooled with others.",
    }


def definitions_markdown(o: Options = Options()) -> str:
    """The README's definitions table."""
    return "\n".join(
        [
            "| term | meaning |",
            "| --- | --- |",
            *(f"| {term} | {meaning} |" for term, meaning in definitions(o).items()),
        ]
    )


def option_value(name: str, value):
    """An option's value as the options table shows it."""
    if name == "epoch_budget" and value is None:
        return "each step's recipe epochs"
    if name == "split":
        return ", ".join(value) or "none: engines, block sizes and devices pooled"
    if name == "compare":
        return f"{value[1]} against {value[0]}" if value else "none"
    return value


STEPS_COLUMNS = {
    "group": f"comparable group: {comparable()} (its label names the step, and more only where needed)",
    "step": "step name",
    "submission": "seed file prefix of the step, or the stem of the step file it comes from",
    "order": "the step's place within its submission",
    "title": "the step's heading in its seed file",
    "source": "seed file and section the step comes from, or its step file",
    "recipe_hash": "hash of the network and the effective recipe",
    "quick": "runs trained with --quick",
    "overridden": "some run had command-line recipe overrides",
    "faithful": "full runs of the unchanged recipe (not quick, not overridden); only these are compared with claims",
    "params": "trainable parameters",
    "params_ok": "params < the parameter budget (--max-params)",
    "recipe_epochs": "epochs of the step's recipe",
    "run_epochs": "most epochs a run of the group trained for",
    "epoch_budget": "epochs that count: the recipe's, or --epoch-budget",
    "epochs_ok": "epoch_budget <= the epoch limit (--max-epochs)",
    "budget": "epochs counted: the smaller of epoch_budget and run_epochs",
    "n_seeds": "finished runs (one per seed)",
    "n_judged": "runs long enough to judge: budget >= K (--last-k)",
    "n_too_short": "runs with budget < K: neither consistent nor lucky, and left out of the consistent rate",
    "n_hit": "runs at or above the target at some epoch within the budget",
    "hit_rate": "n_hit / n_seeds",
    "hit_lo": "lower end of the hit rate's interval (Clopper-Pearson, or the confidence sequence: see rule)",
    "hit_hi": "upper end of the hit rate's interval",
    "n_consistent": "judged runs at or above the target in each of their last K epochs",
    "consistent_rate": "n_consistent / n_judged (empty when no run can be judged)",
    "consistent_lo": "lower end of the consistent rate's interval (Clopper-Pearson, or the confidence sequence)",
    "consistent_hi": "upper end of the consistent rate's interval",
    "verdict": "CONSISTENT, LUCKY, UNDECIDED, NEVER or TOO SHORT (see the definitions)",
    "rule": "how the verdict and the rates' intervals are computed: fixed (Clopper-Pearson, seeds fixed in advance) or "
    "until-decided (the anytime-valid confidence sequence: some run came from sweep run --until-decided)",
    "n_until_decided": "runs collected under --until-decided; between 0 and n_seeds when a fixed sweep was extended "
    "adaptively, or the reverse",
    **{
        f"p_decided_{m}": f"UNDECIDED only: probability that {m} more seeds decide the verdict (Beta-binomial "
        "predictive)"
        for m in MORE_SEEDS
    },
    "luck_gap_median": "median over judged runs of the luck gap: best epoch - mean of the last K epochs (pp; empty for "
    "runs of one epoch)",
    "final_median": "median final accuracy over seeds (%)",
    "final_q25": "25th percentile of final accuracy over seeds (%)",
    "final_q75": "75th percentile of final accuracy over seeds (%)",
    "final_median_lo": "lower end of the median's exact order-statistic interval (empty with too few seeds)",
    "final_median_hi": "upper end of the median's exact order-statistic interval (empty with too few seeds)",
    "final_mean": "mean final accuracy over seeds (%)",
    "best_median": "median over seeds of the best epoch's accuracy (%)",
    "best_q25": "25th percentile of the best epoch's accuracy (%)",
    "best_q75": "75th percentile of the best epoch's accuracy (%)",
    "best_median_lo": "lower end of that median's exact order-statistic interval (empty with too few seeds)",
    "best_median_hi": "upper end of that median's exact order-statistic interval (empty with too few seeds)",
    "claimed_params": "parameters the seed file claims",
    "claimed_best_test": "best test accuracy the seed file claims (%)",
    "claimed_best_train": "best training accuracy the seed file claims (%)",
    "claimed_best_epoch": "epoch of the seed file's claimed best test accuracy",
    "claimed_log": "test accuracy per epoch of the seed file's own logged run (JSON list, %)",
    "claim_note": "note on the claim",
    "assumptions": "recipe values the seed file does not state, with their reasons (separated by '; ')",
    "claim_basis": "what our seeds are compared with: the claims as made, the seed file's log cut at the budget, "
    "or nothing (and why)",
    "claim_best": "the best accuracy compared: claimed_best_test, or the best of the log within the budget (%)",
    "claim_final": "the final accuracy compared: the log's last epoch, or its epoch at the budget (%)",
    "claim_best_pct": "percentile of claim_best among our seeds' best epochs (ties count one half)",
    "claim_final_pct": "percentile of claim_final among our seeds' final epochs (ties count one half)",
    "claim_best_above_max": "claim_best is above every seed's best epoch",
    "claim_final_above_max": "claim_final is above every seed's final epoch",
    "n_predicted": "seeds whose per-image predictions of the last counted epoch are used",
    "var_observed": "sample variance of final accuracy across seeds (pp^2)",
    "var_test": "variance expected from the test set alone (pp^2), as var_test_source says",
    "var_test_source": "per-image (from the predictions of 2 or more seeds) or binomial (without them)",
    "var_model": "genuine variance between the seeds' models: var_observed - var_test, floored at 0 (pp^2)",
    "var_model_lo": "lower end of var_model's chi-square interval, floored at 0 (pp^2)",
    "var_model_hi": f"upper end of var_model's chi-square interval (pp^2); empty where the seeds cannot bound it "
    f"(beyond {MAX_VARIANCE:,.0f} pp^2, the most an accuracy can vary)",
    "var_model_zero": "var_model's interval reaches 0: the spread is consistent with test-set noise alone",
    "test_share": "share of the spread the test set explains: var_test / (var_test + var_model)",
    "test_share_lo": "lower end of test_share's interval (from the same chi-square interval; empty where that has "
    "no upper end)",
    "test_share_hi": "upper end of test_share's interval",
    "spread": "test set (consistent with 0 and the test set explains at least half even at the interval's end), "
    "models differ (var_model's interval excludes 0), too few seeds (neither), or one seed",
    "in_plain_words": "the verdict and the spread in words, as in the report",
}


def steps_columns_markdown() -> str:
    """The README's table of the columns of steps_summary.csv."""
    return "\n".join(
        ["| column | meaning |", "| --- | --- |", *(f"| `{c}` | {meaning} |" for c, meaning in STEPS_COLUMNS.items())]
    )


# --- one step ----------------------------------------------------------------------------------------------------


def lead(s, o: Options) -> str:
    """The verdict and why, in one sentence."""
    target, held = f"{o.target:.2f} %", f"through {window(o.last_k)}"
    if s.verdict == "TOO SHORT":
        return (
            f"Too short: its runs count {plural(s.budget, 'epoch')}, fewer than the last {o.last_k} that a consistent "
            "run must hold the target through, so none can be judged."
        )
    if s.verdict == "NEVER":
        return (
            f"Never: none of {plural(s.n_seeds, 'seed')} reached {target} within {plural(s.budget, 'epoch')} "
            f"(median best epoch {num(s.best_median)} %)."
        )
    reached = f"{s.n_hit} of {plural(s.n_seeds, 'seed')} reached {target} at some epoch"
    if s.verdict == "CONSISTENT":
        return f"Consistent: {s.n_consistent} of {plural(s.n_judged, 'seed')} held {target} {held}, so most seeds do."
    if s.verdict == "LUCKY":
        kept = "none" if s.n_consistent == 0 else f"only {s.n_consistent} of {s.n_judged}"
        return f"Lucky: {reached}, but {kept} held it {held}, so most seeds do not."
    return (
        f"Undecided: {reached} and {s.n_consistent} of {s.n_judged} held it {held}: too few seeds to tell whether "
        "most do."
    )


def spread_words(s) -> str:
    """What the step's seed-to-seed spread of final accuracy means for luck."""
    if s.spread == "one seed":
        return "One seed: no spread across seeds to split."
    if s.var_observed == 0:
        return "Every seed scored the same final accuracy."

    def sd(v):
        return num(np.sqrt(v), ".3f")

    text = (
        f"Final accuracy scatters across seeds by {sd(s.var_observed)} pp (SD); the test set alone would make it "
        f"scatter by {sd(s.var_test)} pp."
    )
    seeds = plural(s.n_seeds, "seed")
    if s.spread == "test set":
        return (
            f"{text} That is all test-set noise: no seed is luckier than another. The step has one true accuracy, "
            f"about {num(s.final_mean)} %, read with a noisy ruler"
            + (", and its hits of the target are the ruler's noise, not lucky seeds." if s.verdict == "LUCKY" else ".")
        )
    if s.spread == "too few seeds":
        bound = (
            f"cannot rule out models that genuinely differ by up to {sd(s.var_model_hi)} pp (SD)"
            if pd.notna(s.var_model_hi)
            else "cannot bound how much the seeds' models genuinely differ"
        )
        return (
            f"{text} The test set may explain all of it, but {seeds} {bound}, so they cannot yet say whether some "
            "seeds are lucky."
        )
    upper = f"to {sd(s.var_model_hi)}" if pd.notna(s.var_model_hi) else f"or more; {seeds} cannot bound it above"
    return (
        f"{text} The seeds' models genuinely differ by about {sd(s.var_model)} pp (SD; {sd(s.var_model_lo)} "
        f"{upper}) beyond the test set, which explains {num(s.test_share, '.0%')} of the spread: some seeds train "
        "better models than others, so a seed can be lucky."
    )


def in_plain_words(s, o: Options) -> str:
    """The verdict and the spread in words: steps_summary.csv's column."""
    return f"{lead(s, o)} {spread_words(s)}"


def details(s, progression: pd.DataFrame, o: Options) -> str:
    """The statistics behind the verdict, in sentences: more seeds, the spread, the median, the step before it,
    the claims."""
    parts = []
    if s.verdict == "UNDECIDED":
        chances = ", ".join(f"{num(getattr(s, f'p_decided_{m}'), '.0%')} with {m}" for m in MORE_SEEDS)
        parts.append(f"More seeds would decide it with probability {chances} more.")
    if s.n_too_short and s.verdict != "TOO SHORT":
        left = "is" if s.n_too_short == 1 else "are"
        parts.append(f"{plural(s.n_too_short, 'run')} too short to judge {left} left out of the consistent rate.")
    parts.append(spread_words(s))
    parts.append(f"Median final accuracy {num(s.final_median)} % ({median_interval(s, o)}).")
    for p in progression[progression["after"] == s.group].itertuples():
        median = num(p.median_diff, "+.2f")
        parts.append(f"Against {p.before}: P(better) = {better(p, o)}: {p.change}; median change {median} pp.")
        parts += per_image(p, "it")
    if pd.notna(s.claim_best_pct):
        claim = "claim" if s.claim_basis == "as claimed" else f"log (best to epoch {s.budget})"
        parts.append(
            f"The seed file's {claim} of {s.claim_best:.2f} % sits at percentile {s.claim_best_pct:.0f} of our "
            "seeds' best epochs" + (", above all of them." if s.claim_best_above_max else ".")
        )
    if s.claim_final_above_max:
        parts.append(
            f"The seed file's logged run, at {s.claim_final:.2f} % in its last epoch counted, is above all our final "
            "epochs."
        )
    if s.claim_best_above_max or s.claim_final_above_max:
        assumed = "; ".join(map(str, listed(s.assumptions)))
        parts.append(
            "Either the student's run was very lucky or our reconstruction of the recipe differs; this step assumes "
            f"{assumed or 'nothing the seed does not state'}."
        )
    return " ".join(parts)


def better(p, o: Options) -> str:
    """P(after > before) with its interval, and the Mann-Whitney p (a row of `Summary.progression` or
    `Summary.comparison`)."""
    return f"{num(p.p_improve)} ({improvement_interval(p, o)}), Mann-Whitney p {p_value(p.mann_whitney_p, '= ')}"


def per_image(p, it: str) -> list[str]:
    """The image test of a row of `Summary.progression` or `Summary.comparison`, where there is one; `it` names the
    later group."""
    if not p.images_before:
        return []
    return [
        f"Per image, a seed of {it} fixes {num(p.fixed, '.1f')} test images that a seed of {p.before} gets wrong and "
        f"breaks {num(p.broken, '.1f')} (image test p {p_value(p.image_p, '= ')})."
    ]


def comparison_words(p, o: Options) -> str:
    """A row of `Summary.comparison` (B = after, A = before) in words: what it adds up to, then the numbers."""
    a, b, alpha = p.before, p.after, f"{1 - o.confidence:.2f}"
    said = {
        "improved": f"{b} is better than {a} (Mann-Whitney p below {alpha}).",
        "got worse": f"{b} is worse than {a} (Mann-Whitney p below {alpha}).",
        "no clear change": f"No clear difference between {b} and {a}: with these seeds, Mann-Whitney p is not below "
        f"{alpha}.",
        "too few seeds to tell": f"Too few seeds to tell {b} from {a}: even if every seed of one beat every seed of "
        f"the other, {p.n_after} and {p.n_before} seeds could not bring Mann-Whitney p below {alpha}.",
    }[p.change]
    odds = (
        f"A seed of {b} ends above a seed of {a} {num(p.p_improve, '.0%')} of the time (ties count half): "
        f"P({b} > {a}) = {better(p, o)}; median difference {num(p.median_diff, '+.2f')} pp."
    )
    return " ".join([f"{b} against {a}: {said}", odds, *per_image(p, b)])


def median_interval(s, o: Options) -> str:
    if pd.notna(s.final_median_lo):
        return f"{o.confidence:.0%} CI {num(s.final_median_lo)} to {num(s.final_median_hi)}"
    return f"no {o.confidence:.0%} interval with fewer than {median_ci_min_n(o.confidence)} seeds"


def improvement_interval(p, o: Options) -> str:
    """P(after > before)'s interval, or why there is none (a row of `Summary.progression`)."""
    if pd.notna(p.p_improve_lo):
        return f"{o.confidence:.0%} CI {num(p.p_improve_lo)} to {num(p.p_improve_hi)}"
    if min(p.n_before, p.n_after) < 2:
        return "no interval with one seed"
    if p.p_improve in (0, 1):
        return "no interval: the seeds of one step all beat the other's, nothing to resample"
    return "no interval: too few distinct values to resample"


def p_value(p, equals: str = "") -> str:
    return DASH if pd.isna(p) else "< 0.001" if p < 0.001 else f"{equals}{p:.3f}"


# --- the whole folder ----------------------------------------------------------------------------------------------


def meta(results: Results, summary: Summary) -> str:
    """The line under the title: what the report rests on."""
    runs, steps = summary.runs, summary.steps
    seeds = steps["n_seeds"]
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    latest = pd.to_datetime(results.epochs.get("wall_time", pd.Series(dtype="datetime64[us, UTC]"))).max()
    newest = f" · newest row {latest:%Y-%m-%d %H:%M} UTC" if pd.notna(latest) else ""
    return (
        f"Results folder {results.out} · {plural(len(runs), 'finished run')} · {plural(len(steps), 'step')} · "
        f"{seed_range} seeds per step{newest}"
    )


def notices(results: Results, summary: Summary) -> list[str]:
    """What the reader must know before the verdicts: what a quick sweep can tell, short runs, pooling, runs still
    missing, and the command's own notes (`Results.notes`: rows of an earlier version of a step file). Commands are in
    backticks."""
    steps, o, said = summary.steps, summary.options, []
    quick = steps["quick"].astype(bool)
    if quick.all():
        said.append(quick_sweep(steps, results.out, o))
    elif quick.any():
        said.append(
            "This folder holds both --quick and full runs. They are never pooled: quick rows appear as "
            "separate steps marked [quick], and progressions compare quick with quick, full with full."
        )
    longest = int(steps["budget"].max())
    if longest < LAST_K:
        said.append(
            f"Every run counts {plural(longest, 'epoch')}, fewer than the usual last-K window of {LAST_K}: the window "
            f"here is {plural(o.last_k, 'epoch')}, so a run is consistent when "
            + ("its final epoch reaches the target." if o.last_k == 1 else f"its last {o.last_k} epochs do.")
        )
    elif steps["n_too_short"].any():
        said.append(
            f"Some runs count fewer epochs than the last-K window of {o.last_k}: they are too short to "
            "be judged consistent or lucky, and the consistent rates leave them out (verdict TOO SHORT "
            "where no run is long enough)."
        )
    cut = steps["faithful"] & (steps["budget"] < steps["recipe_epochs"])
    if cut.any():
        said.append(
            f"The epoch budget ({o.epoch_budget}) cuts {plural(cut.sum(), 'step')} short of their recipe: their "
            "claims are compared with the seed file's own log at that epoch where it has one, and left "
            "out where not (claims table, column 'compared with')."
        )
    if steps["group"].str.contains(" @").any():
        said.append(
            "Some steps have rows under more than one recipe hash (e.g. recipe overrides); each hash is "
            "reported as its own row, marked @<hash>."
        )
    if steps["n_seeds"].nunique() > 1:
        said.append(
            "Steps have different numbers of seeds (a sweep still running reports the seeds finished so "
            "far); the seeds column says how many each verdict rests on."
        )
    adaptive = steps.loc[steps["rule"] == UNTIL_DECIDED, "group"].tolist()
    if adaptive:
        extended = steps.loc[(steps["rule"] == UNTIL_DECIDED) & (steps["n_until_decided"] < steps["n_seeds"]), "group"]
        said.append(
            f"Seeds until decided: {', '.join(adaptive)} were swept with `sweep run --until-decided`, so their "
            "verdicts and rates' intervals come from the anytime-valid confidence sequence, not Clopper-Pearson"
            + (f" (also for the fixed runs that {', '.join(extended)} already had)." if len(extended) else ".")
        )
    if results.unfinished:
        counts = ", ".join(f"{step} {n}" for step, n in sorted(results.unfinished.items()))
        n = sum(results.unfinished.values())
        said.append(
            f"Not in these numbers yet: {plural(n, 'unfinished run')} ({counts}): running, interrupted or failed; "
            "`sweep status` tells which."
        )
    predicted = set(zip(results.predictions["group"], results.predictions["seed"]))
    missing = sum(run not in predicted for run in zip(summary.runs["group"], summary.runs["seed"]))
    if missing:
        have = "has" if missing == 1 else "have"
        said.append(
            f"{plural(missing, 'finished run')} {have} no predictions file yet; the image test and the per-image "
            "variance split use the seeds that have one."
        )
    return said + results.notes


def quick_sweep(steps: pd.DataFrame, out, o: Options) -> str:
    """What a folder of quick runs can tell and what it cannot, and the command that gets the answer: the same steps,
    full runs, in a folder of their own (so that their report is not interleaved with the quick rows)."""
    names = steps["step"].unique().tolist()
    which = " ".join(names) if len(names) <= 6 else "all"  # many steps: the whole zoo, as the README's quick sweep
    files = steps.loc[steps["step_package"].isna(), "step_file"].dropna().unique()  # packages' steps are always there
    which += "".join(f" --steps-from {shlex.quote(str(f))}" for f in files)
    full = shlex.quote(f"{str(out).rstrip('/')}-full")
    compare = f" --compare {shlex.join(o.compare)}" if o.compare else ""
    return (
        f"A quick sweep: every run trained {plural(steps['run_epochs'].max(), 'epoch')} on a tenth of the training "
        "images. It tells that each step trains, how far it gets that fast, how much its seeds scatter and whether "
        f"it keeps the parameter budget. It cannot tell whether a step reaches {o.target:.2f} % consistently, nor "
        "check the seed files' claims: that takes the full recipes. For the answer, train them (`--dry-run` first "
        f"says how much): `sweep run {which} --out {full} && sweep report --out {full}{compare}`"
    )


def verdict_legend(o: Options) -> str:
    """Under the HTML verdict table."""
    return (
        f"Rates give their {o.confidence:.0%} interval (Clopper-Pearson; the confidence sequence for a step with "
        "runs of --until-decided); the consistent rate counts only runs long enough to judge. "
        "Median final accuracy and luck gap are medians over seeds, in % and percentage points. "
        "Spread: how much of the seed-to-seed spread of final accuracy the test set alone explains. ✓/✗: parameter "
        f"budget (< {o.max_params:,}) and epoch budget (≤ {o.max_epochs}). The words below say why each verdict "
        "holds; the claims table compares each step with its seed file."
    )


def terminal_legend(o: Options, undecided: bool) -> str:
    """Under the terminal's verdict table; `undecided`: it has the decide column."""
    decide = f"; decide: chance that {'/'.join(map(str, MORE_SEEDS))} more seeds decide an UNDECIDED step"
    return (
        f"hit / consistent: seeds at {o.target:.2f} % at some epoch / {in_window(o.last_k)} (of the runs that "
        "long); final: median final test accuracy (%); spread: the test set's share of the seed-to-seed spread; "
        f"budgets: params < {o.max_params:,} and epochs <= {o.max_epochs}{decide if undecided else ''}. Intervals "
        "and the reasons are in the HTML report."
    )


# --- figures -------------------------------------------------------------------------------------------------------

CAPTIONS = {
    "distributions": "Each point is one seed. Red stars mark the best accuracy the seed file claimed; red crosses the "
    "last epoch of the seed file's own logged run. Claims are drawn only for full runs of the unchanged recipe. "
    "Where every run counts one epoch, its best epoch is its final one and only that is drawn.",
    "trajectories": "Blue: median across seeds with the band holding the middle 80 % of seeds. Red: the run the seed "
    "file logged, where it logged one (beside full runs of the unchanged recipe only). Steps whose runs count one "
    "epoch have no trajectory and are left out.",
    "rates": "A step is CONSISTENT when the consistent rate's interval lies at or above 0.5, LUCKY when it lies below "
    "0.5 (and some seed hits), NEVER when no seed hits, TOO SHORT when no run counts the last-K epochs, and UNDECIDED "
    "otherwise.",
    "spread": "Orange: the variance that re-testing on the test set alone explains (from per-image predictions where "
    "two or more seeds have them, else the binomial). Blue: what is left, genuine variation between the seeds' "
    "models, with its interval (an arrow where it runs off the axis or the seeds cannot bound it); black tick: the "
    "observed variance. A step whose spread is all orange has no lucky seeds: one true accuracy, read with a noisy "
    "ruler.",
    "ladder": "P(↑) is the probability that a random seed of the later step ends above a random seed of the earlier "
    "one (ties count one half); 0.5 means no difference.",
    "luck": "A large luck gap means the best epoch was a spike, not a level the run kept. Runs that count one epoch "
    "have no gap, and seeds that never reach the target no first epoch at it.",
    "sources": "Each box holds one --vary setting's seeds: only that stream changes from seed to seed, the others "
    "stay at the base seed's; 'all' varies every stream, 'none' none. The widest box names the source that makes "
    "seeds lucky or unlucky.",
    "noise": "A fixed model would score differently on another draw of test images: the binomial standard error of "
    "one test is the half-width of the orange band on every accuracy plot.",
}
NOT_DRAWN = {  # why a figure is missing, where its data are
    "trajectories": "No trajectories per epoch: every run counts one epoch.",
    "spread": "No spread to split: every step has one seed.",
    "luck": "No luck gaps and no first epochs at the target: no run counts more than one epoch, and no seed reached "
    "the target.",
}


# --- which source of randomness (sweep run --vary) -------------------------------------------------------------------

STREAM_NAMES = {"init": "weight init", "order": "data order", "augment": "augmentation", "dropout": "dropout"}


def source_words(table: pd.DataFrame) -> str:
    """Which single source drives one step's spread, in plain words (`table`: that step's rows of `stats.sources`)."""
    single = table[table["vary"].isin(list(STREAM_NAMES))].dropna(subset=["final_sd"])
    if single.empty:
        return "No single-source sweep (--vary init, order, augment or dropout) of this step yet."
    ranked = single.sort_values("var_observed", ascending=False)
    top = ranked.iloc[0]
    name = STREAM_NAMES[top.vary]
    floor = ranked["var_test"].max()
    if (ranked["var_observed"] <= floor).all():
        return (
            f"Varying any single source spreads final accuracy no more than the test set alone would "
            f"(≤ {floor:.4f} pp²): none of them makes a seed lucky here."
        )
    second = ranked.iloc[1] if len(ranked) > 1 else None
    if second is not None and second.var_observed > top.var_observed / 2:
        text = (
            f"The spread is shared: {name} (SD {top.final_sd:.2f} pp) and {STREAM_NAMES[second.vary]} "
            f"(SD {second.final_sd:.2f} pp) each move final accuracy about as much."
        )
    else:
        text = f"Most of the spread comes from {name} (SD {top.final_sd:.2f} pp)."
    if top.vary == "init":
        return text + " Fixing the init seed would remove most of it: a lucky initialisation can be kept."
    return text + f" Fixing the init seed would not make this step consistent: luck in {name} cannot be kept."
