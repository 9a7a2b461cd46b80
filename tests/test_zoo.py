"""The zoo against the seeds themselves: the torchsummary tables are parsed from ../shared/seeds."""

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
    "s002-net1": ("002", 0, 0),
    "s003-model1": ("003", 0, 0),
    "s003-model2": ("003", 1, 0),
    "s003-model3": ("003", 2, 0),
    "s003-model3-aug": ("003", 2, 0),
    "s003-model4": ("003", 3, 0),
    "s004-init": ("004", 0, 0),
    "s004-net1": ("004", 1, 3),
    "s004-net2": ("004", 2, 0),
    "s004-exp1": ("004", 3, 0),
    "s004-exp2": ("004", 3, 0),
    "s004-exp3": ("004", 3, 0),
}


def seed_tables(prefix: str) -> list[list[tuple[str, tuple[int, ...], int]]]:
    """Every torchsummary table in a seed file, as (type, shape, params) rows; a repeated row index starts a new table."""
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
    assert len(zoo.list_steps()) == 17  # 16 steps, and s003 model 3 before and after augmentation + StepLR
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
        "s004-init", "s004-net1", "s004-net2", "s004-exp1", "s004-exp2", "s004-exp3"]
    assert len(zoo.select(["all"])) == 17
    assert [s.name for s in zoo.select(["s001-model2", "s001-*"])] == ["s001-model1", "s001-model2", "s001-model3"]


def test_assumptions_show_the_recipe_values():
    lines = zoo.get_step("s004-exp2").assumption_lines()
    assert "lr = 0.1: the seed says only that it changed the learning rate 'to high'; 10x the class default" in lines
    for name in zoo.list_steps():
        step = zoo.get_step(name)
        assert set(step.assumptions) <= {f.name for f in __import__("dataclasses").fields(zoo.Recipe)} | {"network"}
