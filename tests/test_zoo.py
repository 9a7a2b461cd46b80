"""The zoo against the seeds themselves: the torchsummary tables are parsed from ../shared/seeds."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from cnn import zoo

SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"
ROW = re.compile(r"^\s*(\w+)-(\d+)\s+\[-1, ([\d, ]+)\]\s+([\d,]+)\s*$")

# step -> (seed file prefix, index of its table among the file's tables, rows the seed's table leaves out)
TABLES = {
    "s000-model1": ("000", 0, 0),
    "s001-model1": ("001", 0, 0),
    "s001-model2": ("001", 1, 0),
    "s001-model3": ("001", 2, 0),
    "s001-model3-aws": ("001", 3, 0),
    "s002-net1": ("002", 0, 0),
    "s003-model1": ("003", 0, 0),
    "s003-model2": ("003", 1, 0),
    "s003-model3": ("003", 2, 0),
    "s003-model3-skip": ("003", 2, 0),
    "s003-model3-aug": ("003", 2, 0),
    "s003-model3-aug-skip": ("003", 2, 0),
    "s003-model4": ("003", 3, 0),
    "s003-model4-plain": ("003", 3, 0),
    "s004-init": ("004", 0, 0),
    "s004-net1": ("004", 1, 3),
    "s004-net2": ("004", 2, 0),
    "s004-exp1": ("004", 3, 0),
    "s004-exp2": ("004", 3, 0),
    "s004-exp3": ("004", 3, 0),
}


def seed_tables(prefix: str) -> list[list[tuple[str, tuple[int, ...], int]]]:
    """Every torchsummary table in a seed file, as (type, shape, params) rows; a repeated row index starts a new
    table."""
    text = next(SEEDS.glob(f"{prefix}_*.txt")).read_text(encoding="utf-8")
    tables, last = [], None
    for line in text.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        kind, idx, shape, params = m.group(1), int(m.group(2)), m.group(3), int(m.group(4).replace(",", ""))
        if last is None or idx <= last:
            tables.append([])
        tables[-1].append((kind, tuple(int(v) for v in shape.split(",")), params))
        last = idx
    return [t for t in tables if len(t) > 2]  # drop the repeated two-row footer in seed 001


def test_every_step_is_registered():
    # 16 steps; s003 model 3 before and after augmentation + StepLR; s001 model 3's second (AWS) run; the second
    # reading of s003 model 3 (both runs) and model 4
    assert len(zoo.list_steps()) == 21
    assert set(TABLES) | {"s002-step2"} == set(zoo.list_steps())


@pytest.mark.parametrize("name", sorted(TABLES))
def test_layers_match_the_seed_table(name):
    prefix, index, missing = TABLES[name]
    seed = seed_tables(prefix)[index]
    ours = zoo.summary(zoo.get_step(name).model())
    if missing:  # the seed's table skips rows: ours must contain it in order, with exactly `missing` extra rows
        it = iter(ours)
        assert all(row in it for row in seed), f"{name}: seed rows are not a subsequence of ours"
        assert len(ours) == len(seed) + missing
    else:
        assert ours == seed


@pytest.mark.parametrize("name", zoo.list_steps())
def test_params_and_forward(name):
    step = zoo.get_step(name)
    model = step.model()
    if step.claims.params is not None:
        assert zoo.count_params(model) == step.claims.params
    out = model.eval()(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-5)  # log-probabilities


def test_step2_of_002_counts_from_its_code():
    assert zoo.count_params(zoo.get_step("s002-step2").model()) == 9_950


def test_unknown_step_names_the_closest():
    with pytest.raises(zoo.UnknownStep, match="s001-model3"):
        zoo.get_step("s001-modle3")
    with pytest.raises(zoo.UnknownStep, match="matches no step"):
        zoo.select(["s9*"])


def test_select_globs_in_progression_order():
    assert [s.name for s in zoo.select(["s004-*"])] == [
        "s004-init",
        "s004-net1",
        "s004-net2",
        "s004-exp1",
        "s004-exp2",
        "s004-exp3",
    ]
    assert len(zoo.select(["all"])) == 21
    assert [s.name for s in zoo.select(["s001-model2", "s001-*"])] == [
        "s001-model1",
        "s001-model2",
        "s001-model3",
        "s001-model3-aws",
    ]
    assert [s.name for s in zoo.select(["s003-model3*"])] == [  # a variant sits beside its base
        "s003-model3",
        "s003-model3-skip",
        "s003-model3-aug",
        "s003-model3-aug-skip",
    ]


def test_assumptions_show_the_recipe_values():
    lines = zoo.get_step("s004-exp2").assumption_lines()
    assert "lr = 0.1: the seed says only that it changed the learning rate 'to high'; 10x the class code's" in lines
    for name in zoo.list_steps():
        step = zoo.get_step(name)
        assert set(step.assumptions) <= {f.name for f in dataclasses.fields(zoo.Recipe)} | {"network"}


def test_values_no_seed_states_are_assumptions_everywhere():
    """No seed has transform code; only seed 004 names its optimizer; none says it ran without a scheduler."""
    for name in zoo.list_steps():
        step = zoo.get_step(name)
        for key in ("mean", "std", "fill"):
            assert "session-7 class code" in step.assumptions[key] and "in the seeds" not in step.assumptions[key]
        assert ("optimizer" in step.assumptions) == (step.submission != "004"), name
        if step.recipe.scheduler == "none":
            assert "scheduler" in step.assumptions, name
    assert "network" in zoo.get_step("s003-model1").assumptions  # rebuilt from its table, like the others
    assert "goal" in zoo.get_step("s004-net2").assumptions["epochs"]
    assert zoo.get_step("s002-step2").assumptions["rotation"].startswith("no augmentation")
    assert zoo.get_step("s002-step2").recipe.rotation == 0


# step -> (accuracy, params, epochs) of the seed's own target; steps whose seed sets no number are absent
TARGETS = {
    "s001-model2": (None, 8_000, None),
    "s001-model3": (99.41, 8_000, 15),
    "s001-model3-aws": (99.41, 8_000, 15),
    "s002-net1": (99.4, 10_000, 20),
    "s002-step2": (99.4, 10_000, 20),
    "s003-model1": (None, None, 20),
    "s003-model2": (None, 20_000, 20),
    "s003-model3": (99.40, 10_000, 20),
    "s003-model3-skip": (99.40, 10_000, 20),
    "s003-model3-aug": (99.40, 10_000, 20),
    "s003-model3-aug-skip": (99.40, 10_000, 20),
    "s003-model4": (99.0, 8_000, 15),
    "s003-model4-plain": (99.0, 8_000, 15),
    "s004-net2": (99.4, None, 20),
    "s004-exp1": (None, 8_000, None),
}


@pytest.mark.parametrize("name", zoo.list_steps())
def test_target_is_the_seeds_own_and_quotes_its_line(name):
    target = zoo.get_step(name).target
    assert (target.accuracy, target.params, target.epochs) == TARGETS.get(name, (None, None, None))
    m = re.match(r"(\d{3}) lines? (\d+)(?:-(\d+))?: ", target.source)
    assert m and m.group(1) == name[1:4], target.source
    lines = next(SEEDS.glob(f"{m.group(1)}_*.txt")).read_text(encoding="utf-8").splitlines()
    cited = " ".join(lines[int(m.group(2)) - 1 : int(m.group(3) or m.group(2))])
    quotes = re.findall(r"'([^']+)'", target.source)
    assert quotes
    for piece in (p.strip(" ()") for q in quotes for p in q.split("...")):
        assert piece in cited, (name, piece)


def test_claims_read_as_the_seeds_evidence_supports():
    m4 = zoo.get_step("s003-model4").claims
    assert (m4.best_test, m4.best_train, m4.best_epoch) == (99.34, 98.94, 8)  # the Result block's labels swapped back
    assert "'Best Test Accuracy: 98.94%'" in m4.note and 99.34 in m4.log
    assert zoo.get_step("s003-model3").claims.best_epoch == 16  # "15th epoch", counted from 0 like "epoch 13th"
    assert zoo.get_step("s002-net1").claims.best_epoch is None  # the seed names no epoch
    assert zoo.get_step("s003-model3-aug").claims.best_train == 99.17  # stated none: the log's highest
    aws = zoo.get_step("s001-model3-aws").claims
    assert (aws.best_test, aws.best_train, aws.best_epoch, len(aws.log), aws.log[-1]) == (99.44, 98.66, 14, 15, 99.43)
    assert zoo.get_step("s001-model3-aws").recipe.batch_size == 128  # 469/469 batches


@pytest.mark.parametrize("name", [n for n in zoo.list_steps() if zoo.get_step(n).claims.log])
def test_a_logged_best_is_in_the_log_at_its_epoch(name):
    c = zoo.get_step(name).claims
    assert len(c.log) == zoo.get_step(name).recipe.epochs
    if c.best_epoch is not None and name not in ("s003-model4", "s003-model4-plain"):  # its prose is another run
        assert c.log[c.best_epoch - 1] == c.best_test
        assert max(c.log) == c.best_test


def test_variants_differ_from_their_base_only_in_the_forward():
    for base, variant in [
        ("s003-model3", "s003-model3-skip"),
        ("s003-model3-aug", "s003-model3-aug-skip"),
        ("s003-model4", "s003-model4-plain"),
    ]:
        a, b = zoo.get_step(base), zoo.get_step(variant)
        assert (a.recipe, a.claims, a.target, a.order) == (b.recipe, b.claims, b.target, b.order)
        torch.manual_seed(0)
        ma = a.model()
        torch.manual_seed(0)
        mb = b.model()
        assert all(torch.equal(p, q) for p, q in zip(ma.state_dict().values(), mb.state_dict().values()))
        x = torch.randn(4, 1, 28, 28)
        assert not torch.allclose(ma.eval()(x), mb.eval()(x))


def test_describe_is_what_sweep_steps_shows():
    step = zoo.get_step("s003-model4-plain")
    d = zoo.describe(step)
    assert d.params == 7_616 and d.layers == seed_tables("003")[3]
    assert [f for f, _, assumed in d.recipe if assumed] == [
        f.name for f in dataclasses.fields(zoo.Recipe) if f.name in step.assumptions
    ]
    assert d.assumptions == step.assumption_lines()
