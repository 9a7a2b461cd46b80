"""Which trials a sweep starts, and when: a Tune searcher. Tune asks it for a trial whenever it can start one, so the
cluster stays full and no straggler holds a round back.

* :class:`Fixed` (``--seeds N``): the planned blocks, the largest networks first, then done.
* :class:`UntilDecided` (``--until-decided``): per step, the next seeds (contiguous) while the anytime-valid rule of
  :mod:`sweeps.decide` asks for them. It starts the seeds an earlier sweep left unfinished first, counts the runs the
  results folder holds already, re-judges a step whenever one of its runs finishes, and stops a step once it is
  decided, at the maximum, or where no outcome of the seeds left could decide it. A seed whose run fails counts
  toward the maximum and is never judged; a re-run trains it again.

A trial's config is :attr:`sweeps.plan.Block.config`; every block suggested is also put in ``blocks`` (the driver's,
shared with the writer and the progress line). The sweep's state lives in its results folder, so these searchers
save nothing of their own to Tune's experiment state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ray.tune.search import Searcher

from cnn.train import Run
from sweeps import decide, layout
from sweeps.layout import RunKey
from sweeps.plan import Block, Plan, SweepConfig, form_blocks
from sweeps.protocol import Trained


def searcher(
    sweep: Plan, config: SweepConfig, blocks: dict[str, Block], earlier: dict[RunKey, list[Trained]], say
) -> Trials:
    """The searcher of a sweep (module doc). ``earlier``: the records of resumed runs' epochs; ``say``: where
    ``--until-decided`` reports a step's change of state."""
    if not config.until_decided:
        return Fixed(form_blocks(sweep), blocks)
    rule = {
        "target": config.target,
        "last_k": config.last_k,
        "min_seeds": config.min_seeds,
        "max_seeds": config.max_seeds,
        "confidence": decide.CONFIDENCE,
    }
    steps: dict[str, Step] = {}
    for run in sorted(sweep.runs, key=lambda r: -r.params):  # the largest networks first, as a fixed sweep's
        s = steps.setdefault(run.step, Step([], sweep.sizes[run.step]))
        key = layout.key(run)
        if key in sweep.done:
            accs = sweep.folder.epochs[key].sort_by("epoch")["test_acc"].to_pylist()
            s.judged[run.seed] = decide.judge(accs, config.target, config.last_k)
        elif key not in sweep.marked:
            s.new.append(run)
    for block in form_blocks(sweep, [r for r in sweep.runs if layout.key(r) in sweep.marked]):
        steps[block.runs[0].step].restart.append(block)
    accs = {key: {t.record.epoch: t.record.test_acc for t in ts} for key, ts in earlier.items()}
    return UntilDecided(steps, accs, blocks, rule, say)


class Trials(Searcher):
    finished = False  # True once it has said FINISHED: it would start no more

    def __init__(self, blocks: dict[str, Block]):
        super().__init__()
        self.blocks = blocks

    def start(self, block: Block) -> dict:
        self.blocks[block.name] = block
        return block.config

    def done(self):
        self.finished = True
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn from a finished trial, but for --until-decided."""

    def asked(self) -> int:
        """Runs this sweep set out to train: those it started, and those it would still start as planned."""
        return sum(len(b.runs) for b in self.blocks.values())

    def save(self, checkpoint_path: str) -> None:
        """Nothing: a re-run reads where the sweep stands from its results folder."""


class Fixed(Trials):
    def __init__(self, planned: list[Block], blocks: dict[str, Block]):
        super().__init__(blocks)
        self.queue = sorted(planned, key=lambda b: -b.params)  # the largest networks first

    def suggest(self, trial_id: str):
        return self.start(self.queue.pop(0)) if self.queue else self.done()

    def asked(self) -> int:
        return super().asked() + sum(len(b.runs) for b in self.queue)


@dataclass
class Step:
    """What the rule knows of one step."""

    new: list[Run]  # seeds it may still start, in seed order, up to the maximum
    size: int  # seeds per trial at most
    judged: dict[int, decide.Run] = field(default_factory=dict)  # seed -> its finished run, judged
    restart: list[Block] = field(default_factory=list)  # seeds an earlier sweep started and did not finish
    flight: int = 0  # seeds in trials now
    failed: int = 0  # seeds started in this sweep whose run failed

    def in_flight(self) -> int:
        """Seeds started and not yet judged, but for the failed ones."""
        return self.flight + sum(len(b.runs) for b in self.restart)

    def tally(self) -> decide.Tally:
        return decide.Tally.of(self.judged.values())


class UntilDecided(Trials):
    """``--until-decided`` (module doc). ``accs``: each run's test accuracy per epoch so far (the records of resumed
    runs); ``rule``: decide's target, last_k, min_seeds, max_seeds and confidence; ``say`` gets a line whenever a
    step's state changes."""

    def __init__(
        self,
        steps: dict[str, Step],
        accs: dict[RunKey, dict[int, float]],
        blocks: dict[str, Block],
        rule: dict,
        say: Callable[[str], None],
    ):
        super().__init__(blocks)
        self.steps, self.accs, self.rule, self.say = steps, accs, rule, say
        self.open: dict[str, dict[int, Run]] = {}  # trial id -> its seeds not yet judged or failed
        self.states = {name: self.state(name) for name in steps}

    def _limits(self, s: Step) -> dict:
        max_seeds = self.rule["max_seeds"] - s.failed  # failed seeds use up the maximum
        return {"min_seeds": self.rule["min_seeds"], "max_seeds": max_seeds, "confidence": self.rule["confidence"]}

    def state(self, name: str) -> str:
        """The step's state in words (decide.describe)."""
        s = self.steps[name]
        return decide.describe(s.tally(), s.in_flight(), **self._limits(s))

    def suggest(self, trial_id: str):
        for s in self.steps.values():
            block = s.restart.pop(0) if s.restart else self._next(s)
            if block is not None:
                s.flight += len(block.runs)
                self.open[trial_id] = {r.seed: r for r in block.runs}
                return self.start(block)
        return None if self.open else self.done()

    def _next(self, s: Step) -> Block | None:
        """The next seeds the rule asks for now, at most a trial's worth."""
        n = 0
        while n < min(s.size, len(s.new)) and decide.add_seed(s.tally(), s.in_flight() + n, **self._limits(s)):
            n += 1
        if not n:
            return None
        block, s.new[:n] = Block(tuple(s.new[:n])), []
        return block

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        report, open_ = result["report"], self.open.get(trial_id, {})
        for seed, run in list(open_.items()):
            key = layout.key(run)
            if seed in report.failed:
                self._end(trial_id, run, None)
                continue
            if seed in report.records:
                self.accs.setdefault(key, {})[report.epoch] = report.records[seed].test_acc
            accs = self.accs.get(key, {})
            if all(e in accs for e in range(1, run.recipe.epochs + 1)):
                judged = [accs[e] for e in range(1, run.recipe.epochs + 1)]
                self._end(trial_id, run, decide.judge(judged, self.rule["target"], self.rule["last_k"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        for run in list(self.open.get(trial_id, {}).values()):  # the trial ended before these were judged
            self._end(trial_id, run, None)
        self.open.pop(trial_id, None)

    def _end(self, trial_id: str, run: Run, judged: decide.Run | None) -> None:
        del self.open[trial_id][run.seed]
        s = self.steps[run.step]
        s.flight -= 1
        if judged is None:
            s.failed += 1
        else:
            s.judged[run.seed] = judged
        state = self.state(run.step)
        if state != self.states[run.step]:
            self.states[run.step] = state
            self.say(f"{run.step}: {state}")
