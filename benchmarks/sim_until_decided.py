"""Seeds until decided: how often each rule gives a wrong verdict, how often it decides, and how many seeds it spends,
for true consistent rates 0, 0.1, ..., 1. Rules, at 95 %:

- until decided: `sweep run --until-decided` (sweeps.decide): Robbins' confidence sequence, a seed at a time from
  MIN_SEEDS to MAX_SEEDS, stopping when `add_seed` says no (decided, or no outcome left could decide);
- Clopper-Pearson re-checked after every seed: the report's fixed-N interval with the same MIN_SEEDS and MAX_SEEDS,
  stopping as soon as it leaves 0.5 (optional stopping; re-checked from the first seed it is worse still);
- Clopper-Pearson at a fixed N, decided only where its interval leaves 0.5: N = 10, and the N that decides as often as
  the rule until decided does at that rate (the fixed N with the same power).

A run is consistent with probability p, the true rate, independently of the others, and the walk counts consistent
runs only: a decision below 0.5 reads NEVER without hits and LUCKY with them, but when a rule decides does not depend
on which (tests/test_decide.py simulates lucky runs too). A verdict is wrong when it is CONSISTENT and p < 0.5, or
LUCKY / NEVER and p >= 0.5; power is the probability of a right verdict. The numbers are exact, not sampled: a walk
over every count of consistent runs after each seed, carrying the probability of the paths not yet stopped
(tests/test_decide.py checks them against a seeded simulation).

Output: benchmarks/results/until-decided.txt and until-decided-errors.png, until-decided-seeds.png. Usage:
``.venv/bin/python benchmarks/sim_until_decided.py [--min-seeds 8] [--max-seeds 34]``. About a minute.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import scipy.stats
from matplotlib.figure import Figure

from analysis import stats
from sweeps import decide

RATES = np.round(np.linspace(0, 1, 11), 1)
CONFIDENCE = decide.CONFIDENCE
VERDICTS = ("CONSISTENT", "LUCKY", "NEVER", "UNDECIDED")
RESULTS = Path(__file__).parent / "results"


def rule_tables(rule: str, min_seeds: int, max_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """(stop, verdict), each (max_seeds + 1, max_seeds + 1) over [n runs, k consistent]: whether the rule stops there,
    and its verdict. rule: "sequence" (until decided) or "clopper-pearson" (re-checked after every seed)."""
    n, k = np.meshgrid(np.arange(max_seeds + 1), np.arange(max_seeds + 1), indexing="ij")
    if rule == "sequence":
        tallies = [decide.Tally(*t) for t in zip(n.flat, n.flat, k.flat, k.flat)]
        verdict = np.array([decide.verdict(t, CONFIDENCE) for t in tallies], dtype=object).reshape(n.shape)
        go_on = [decide.add_seed(t, 0, min_seeds, max_seeds, CONFIDENCE) for t in tallies]
        stop = ~np.array(go_on).reshape(n.shape)
    else:
        verdict = cp_verdicts(np.minimum(k, n), n)
        stop = (n >= min_seeds) & (verdict != "UNDECIDED")
    stop[max_seeds] = True
    return stop, verdict  # entries with k > n are never reached


def cp_verdicts(k, n) -> np.ndarray:
    """The report's fixed-N verdict (analysis.stats.verdict, with hits = k) where Clopper-Pearson's interval leaves
    0.5, else UNDECIDED; elementwise."""
    k, n = np.asarray(k), np.asarray(n)
    low, high = stats.rate_interval(k, n, CONFIDENCE)
    return np.select([low >= 0.5, (high < 0.5) & (k > 0), high < 0.5], ["CONSISTENT", "LUCKY", "NEVER"], "UNDECIDED")


def walk(rate: float, stop: np.ndarray, verdict: np.ndarray) -> dict:
    """Exact outcome of a rule at one true rate: P(each verdict), P(wrong), power, expected seeds."""
    paths = np.zeros(len(stop))  # [k]: probability of k consistent runs so far on paths not yet stopped
    paths[0] = 1.0
    out = dict.fromkeys(VERDICTS, 0.0) | {"seeds": 0.0}
    for n in range(1, len(stop)):
        paths = paths * (1 - rate) + np.concatenate([[0.0], paths[:-1]]) * rate
        for v in VERDICTS:
            out[v] += paths[stop[n] & (verdict[n] == v)].sum()
        out["seeds"] += n * paths[stop[n]].sum()
        paths = np.where(stop[n], 0.0, paths)
    return out | judged(out, rate)


def judged(p: dict, rate: float) -> dict:
    """Wrong-verdict rate and power from the verdicts' probabilities."""
    above, below = p["CONSISTENT"], p["LUCKY"] + p["NEVER"]
    return {"wrong": below, "power": above} if rate >= 0.5 else {"wrong": above, "power": below}


def fixed(rate: float, n: int) -> dict:
    """Exact outcome of Clopper-Pearson at a fixed n."""
    k = np.arange(n + 1)
    pmf = scipy.stats.binom.pmf(k, n, rate)
    calls = cp_verdicts(k, np.full_like(k, n))
    p = {v: pmf[calls == v].sum() for v in VERDICTS}
    return p | {"seeds": float(n)} | judged(p, rate)


def same_power(rate: float, power: float, limit: int = 500) -> int | None:
    """The smallest fixed N whose Clopper-Pearson verdict is right and decided at least as often as `power`."""
    return next((n for n in range(1, limit + 1) if fixed(rate, n)["power"] >= power - 1e-12), None)


def ever_excluded(rate: float, ends, horizon: int) -> np.ndarray:
    """[n - 1]: P(the interval excluded the true rate, 0 < rate < 1, after some number of seeds up to n), for n = 1 ..
    horizon; `ends`: (low, high) tables over [n, k]."""
    low, high = ends
    paths, out, missed = np.zeros(horizon + 1), [], 0.0
    paths[0] = 1.0
    for n in range(1, horizon + 1):
        paths = paths * (1 - rate) + np.concatenate([[0.0], paths[:-1]]) * rate
        excluded = (rate <= low[n]) | (rate >= high[n])
        missed += paths[excluded].sum()
        paths = np.where(excluded, 0.0, paths)
        out.append(missed)
    return np.array(out)


def interval_tables(interval, horizon: int):
    """(low, high) of `interval(k, n, confidence)` over [n, k] for n, k <= horizon (junk where k > n or n = 0)."""
    n, k = np.meshgrid(np.arange(horizon + 1), np.arange(horizon + 1), indexing="ij")
    with np.errstate(invalid="ignore"):
        low, high = interval(np.minimum(k, n), np.maximum(n, 1), CONFIDENCE)
    return np.asarray(low), np.asarray(high)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-seeds", type=int, default=decide.MIN_SEEDS)
    p.add_argument("--max-seeds", type=int, default=decide.MAX_SEEDS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    lo, hi = args.min_seeds, args.max_seeds

    sequence = [walk(r, *rule_tables("sequence", lo, hi)) for r in RATES]
    peeking = [walk(r, *rule_tables("clopper-pearson", lo, hi)) for r in RATES]
    ten = [fixed(r, 10) for r in RATES]
    matched = [same_power(r, s["power"]) for r, s in zip(RATES, sequence)]

    text = io.StringIO()
    w = text.write
    w("Seeds until decided: wrong verdicts, power and seeds of the rule of sweep run --until-decided (sweeps.decide)\n")
    w(f"95 %, min {lo} and max {hi} seeds; exact (every outcome walked), no sampling noise\n\n")
    w("rate | wrong verdicts: until decided, CP re-checked, CP fixed 10 | power: until decided, CP fixed 10 | ")
    w("seeds: until decided, fixed N with the same power\n")
    for r, s, c, t, m in zip(RATES, sequence, peeking, ten, matched):
        w(
            f"{r:4.1f} | {s['wrong']:7.2%} {c['wrong']:7.2%} {t['wrong']:7.2%} | {s['power']:6.1%} {t['power']:6.1%} | "
            f"{s['seeds']:5.1f} {m if m is not None else '-':>4}\n"
        )
    from_first = max(walk(r, *rule_tables("clopper-pearson", 1, hi))["wrong"] for r in RATES)
    w(f"worst wrong-verdict rate: until decided {max(s['wrong'] for s in sequence):.2%}, CP re-checked ")
    w(f"{max(c['wrong'] for c in peeking):.2%} ({from_first:.2%} re-checked from the first seed; alpha ")
    w(f"{1 - CONFIDENCE:.0%})\n")
    mean = np.mean([s["seeds"] for s in sequence])
    w(f"mean seeds over the 11 rates: until decided {mean:.1f}, fixed 10, fixed N with the same power ")
    w(f"{np.mean([m for m in matched if m is not None]):.1f} (a different N at each rate, which only knowing the rate ")
    w(f"could choose); the one fixed N with that power at every rate: {max(m for m in matched if m is not None)}\n")
    w("fewest seeds with every run consistent: the sequence ")
    w(f"{next(n for n in range(1, 100) if decide.leaves_half(n, n, CONFIDENCE))}, Clopper-Pearson at a fixed n ")
    w(f"{next(n for n in range(1, 100) if stats.decided(n, n, CONFIDENCE))}\n\n")

    w("choice of the maximum (min fixed): power at 0.8 (= at 0.2) and 0.9, expected seeds at 0.5 and over the rates\n")
    for top in range(max(lo, 20), 51):
        tables = rule_tables("sequence", lo, top)
        runs = [walk(r, *tables) for r in (0.5, 0.8, 0.9)]
        means = np.mean([walk(r, *tables)["seeds"] for r in RATES])
        mark = "  <- default" if top == hi else ""
        w(
            f"max {top:2d}: power 0.8 {runs[1]['power']:6.1%}, 0.9 {runs[2]['power']:7.2%}; seeds at 0.5 "
            f"{runs[0]['seeds']:4.1f}, mean {means:4.1f}{mark}\n"
        )

    horizon = 200
    seq_ends, cp_ends = interval_tables(decide.sequence, horizon), interval_tables(stats.rate_interval, horizon)
    w("\nP(the interval excludes the true rate after some n <= N seeds), re-checked after every seed from the first\n")
    ever = {r: (ever_excluded(r, seq_ends, horizon), ever_excluded(r, cp_ends, horizon)) for r in (0.5, 0.2)}
    for r, (s, c) in ever.items():
        points = ", ".join(f"N={n}: {s[n - 1]:.2%} vs {c[n - 1]:.2%}" for n in (10, 34, 100, 200))
        w(f"rate {r}: sequence vs Clopper-Pearson: {points}\n")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "until-decided.txt").write_text(text.getvalue())
    print(text.getvalue(), end="")

    fig = Figure(figsize=(11, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    for rows, label, style in (
        (sequence, "until decided (confidence sequence)", "o-"),
        (peeking, "Clopper-Pearson re-checked after every seed", "s--"),
        (ten, "Clopper-Pearson at a fixed 10", "^:"),
    ):
        a.plot(RATES, [x["wrong"] for x in rows], style, label=label)
    a.axhline(1 - CONFIDENCE, color="grey", lw=1)
    a.set(xlabel="true consistent rate", ylabel="P(wrong verdict)", title=f"Wrong verdicts ({lo} to {hi} seeds)")
    a.legend(fontsize=8, loc="upper left")
    n = np.arange(1, horizon + 1)
    for r, (s, c) in ever.items():
        b.plot(n, s, label=f"sequence, rate {r}")
        b.plot(n, c, "--", label=f"Clopper-Pearson, rate {r}")
    b.axhline(1 - CONFIDENCE, color="grey", lw=1)
    b.set(xlabel="seeds N", ylabel="P(true rate excluded at some n <= N)", title="The price of peeking")
    b.legend(fontsize=8)
    fig.savefig(args.out / "until-decided-errors.png", dpi=110)

    fig = Figure(figsize=(11, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    a.plot(RATES, [s["seeds"] for s in sequence], "o-", label="until decided: expected seeds")
    a.plot(RATES, [np.nan if m is None else m for m in matched], "s--", label="fixed N with the same power")
    a.axhline(10, color="grey", ls=":", label="fixed 10")
    every = max(m for m in matched if m is not None)
    a.axhline(every, color="grey", ls="-.", label=f"fixed {every}: the same power at every rate")
    a.set(xlabel="true consistent rate", ylabel="seeds per step", title="Seeds spent", ylim=(0, every + 10))
    a.legend(fontsize=8, loc="upper center", ncol=2)
    b.plot(RATES, [s["power"] for s in sequence], "o-", label="until decided")
    b.plot(RATES, [t["power"] for t in ten], "^:", label="Clopper-Pearson at a fixed 10")
    b.set(xlabel="true consistent rate", ylabel="P(right verdict, decided)", title="Power")
    b.legend(fontsize=8)
    fig.savefig(args.out / "until-decided-seeds.png", dpi=110)


if __name__ == "__main__":
    main()
