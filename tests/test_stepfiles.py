"""Steps of one's own: step files and installed packages (cnn.stepfiles), their recipe hashes, and their code
reaching Ray workers that cannot import it."""

import dataclasses
import hashlib
import io
import json
import os
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from analysis.cli import app
from cnn import models, stepfiles, zoo
from cnn.train import Run
from sweeps import layout
from sweeps.plan import SweepConfig, block_sizes, plan
from sweeps.results import Incompatible

TINY = '''\
"""A tiny step for the tests."""
import torch.nn.functional as F
from torch import nn

from cnn.zoo import Claims, declare

WIDTH = 4  # channels


def act(x):
    return F.relu(x)


class Tiny(nn.Module):
    def __init__(self, recipe):
        super().__init__()
        self.conv = nn.Conv2d(1, WIDTH, 3, stride=2)  # 13
        self.bn = nn.BatchNorm2d(WIDTH)
        self.drop = nn.Dropout(recipe.dropout)
        self.head = nn.Conv2d(WIDTH, 10, 13)  # 1

    def forward(self, x):
        x = self.drop(act(self.bn(self.conv(x))))
        return F.log_softmax(self.head(x).view(-1, 10), dim=-1)


declare("tiny", Tiny, batch_size=64, dropout=0.1, title="Tiny", claims=Claims(best_test=98.0))
'''


def write(folder: Path, text: str, name: str = "tiny_steps.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def hashes(path: Path) -> tuple[str, str]:
    """The step tiny's code hash, and its recipe hash for a quick run."""
    with stepfiles.using([path]):
        return zoo.get_step("tiny").origin.code, Run.plan("tiny", 0, quick=True).recipe_hash


def test_a_step_file_declares_steps_as_the_zoo_does(tmp_path):
    path = write(tmp_path, TINY + 'declare("tiny-lr", Tiny, epochs=3, lr=0.05, assumptions={"lr": "a guess"})\n')
    steps = stepfiles.load([path])
    assert [(s.name, s.order, s.submission, s.source, s.title) for s in steps] == [
        ("tiny", 1, "tiny_steps", "tiny_steps.py", "Tiny"),
        ("tiny-lr", 2, "tiny_steps", "tiny_steps.py", ""),
    ]
    tiny, tiny_lr = steps
    # values left out take the defaults, each an assumption with its reason; values stated are not assumed
    assert (tiny.recipe.epochs, tiny.recipe.batch_size, tiny.recipe.lr, tiny.recipe.dropout) == (15, 64, 0.01, 0.1)
    left_out = ["epochs", "lr", "momentum", "optimizer", "scheduler", "rotation", "fill", "mean", "std"]
    assert list(tiny.assumptions) == left_out  # not step_size, gamma, patience: no scheduler uses them
    assert tiny.assumption_lines()[0] == "epochs = 15: the step file does not say; the assignment's epoch budget"
    assert "batch_size" in tiny_lr.assumptions and tiny_lr.assumptions["lr"] == "a guess"
    assert tiny.claims.best_test == 98.0
    origin = tiny.origin
    assert origin.file == str(path) and origin.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert origin.block == "" and origin.module in sys.modules
    # torch's nn.Dropout draws the trainer's masks, as the zoo's networks do
    assert isinstance(tiny.model().drop, models.Dropout)
    assert tiny.origin.code == tiny_lr.origin.code  # one network


def test_the_steps_are_there_only_while_a_command_uses_them(tmp_path):
    path = write(tmp_path, TINY)
    with stepfiles.using([path]):
        assert zoo.get_step("tiny").origin is not None and "tiny" in zoo.list_steps()
    assert "tiny" not in zoo.list_steps()
    with pytest.raises(zoo.UnknownStep, match="--steps-from FILE"):
        zoo.get_step("tiny")


ZOO_HASHES = {  # (full, quick) recipe hashes of every zoo step before step files existed: results folders keep them
    "s000-model1": ("de190e7e409c", "38e340eae0cf"),
    "s001-model1": ("b639ed39988a", "b0bf72a59e31"),
    "s001-model2": ("d673e17e8753", "6d7869a76dfd"),
    "s001-model3": ("baa08b9e8e4a", "2fbd5865b10d"),
    "s001-model3-aws": ("a06bc819b0bc", "6a090106b929"),
    "s002-net1": ("2997b894c13c", "dec06c99be16"),
    "s002-step2": ("6c9a1aea4e99", "825aa42ebffa"),
    "s003-model1": ("b33e633c70a5", "d42d22aac0e7"),
    "s003-model2": ("23a7baf8a1b7", "79f8c6b7a80e"),
    "s003-model3": ("e191b5fffa91", "784a6181e501"),
    "s003-model3-aug": ("637e8258f5cc", "8f02936a7f05"),
    "s003-model3-aug-skip": ("85fe1122fe4d", "49c30d50f500"),
    "s003-model3-skip": ("930c5ce8a551", "84bf3b006721"),
    "s003-model4": ("7a8bb144ce51", "da7d33ab0238"),
    "s003-model4-plain": ("6b0f74914d50", "2e0e83b167cf"),
    "s004-exp1": ("99f0330beb77", "0c309eb5a71b"),
    "s004-exp2": ("34f249a8ecef", "4ea5ff5c3095"),
    "s004-exp3": ("1dfe6d361b3a", "0f8fc09bff24"),
    "s004-init": ("6502a965f65d", "a554d0e05125"),
    "s004-net1": ("f6e7f6f7f4f8", "d60b82c3575f"),
    "s004-net2": ("d655ade82ef3", "4d4da4e1b541"),
}


def test_zoo_steps_keep_their_recipe_hashes():
    assert zoo.list_steps() == sorted(ZOO_HASHES)
    for name, (full, quick) in ZOO_HASHES.items():
        assert (Run.plan(name, 0).recipe_hash, Run.plan(name, 0, quick=True).recipe_hash) == (full, quick), name


SAME = {  # edits that leave the network's code alone
    "a comment": ("WIDTH = 4  # channels", "WIDTH = 4  # channels, fewer than the zoo's"),
    "a docstring": ('"""A tiny step for the tests."""', '"""Another docstring."""'),
    "the claims": ("best_test=98.0", "best_test=99.0"),
    "another step": ("\n\ndeclare(", '\n\ndeclare("other", lambda r: Tiny(r))\ndeclare('),
    "the layout": ("    return F.relu(x)", "    return F.relu(\n        x,\n    )"),
}
OTHER = {  # edits of the code the network runs, each invisible in its layers (repr)
    "its forward": ("x = self.drop(act(", "x = self.drop(2 * act("),
    "a helper it calls": ("return F.relu(x)", "return F.gelu(x)"),
    "a constant it reads": ("WIDTH = 4", "WIDTH = 4 + 0"),
}


def test_the_recipe_hash_follows_the_code_the_network_runs(tmp_path):
    code, recipe = hashes(write(tmp_path / "base", TINY))
    for what, (old, new) in SAME.items():
        assert old in TINY, what
        assert hashes(write(tmp_path / what, TINY.replace(old, new))) == (code, recipe), what
    for what, (old, new) in OTHER.items():
        assert old in TINY, what
        changed = hashes(write(tmp_path / what, TINY.replace(old, new)))
        assert changed[0] != code and changed[1] != recipe, what
    # the recipe counts too, and a network's layers: each in the recipe hash, not in the code's
    more = hashes(write(tmp_path / "dropout", TINY.replace("dropout=0.1", "dropout=0.2")))
    assert more[0] == code and more[1] != recipe


def test_every_zoo_network_passes_the_checks_and_trains_as_a_block():
    for name in zoo.list_steps():
        assert stepfiles.check_network(zoo.get_step(name), "zoo")[1] == "", name


def test_a_network_that_mixes_the_seeds_of_a_block_trains_one_seed_per_trial(tmp_path):
    mixing = TINY.replace("self.head(x).view(-1, 10)", "self.head(x).flatten(1)")  # (B, S*10): softmax over seeds
    path = write(tmp_path, mixing)
    (step,) = stepfiles.load([path])
    assert "mixes the seeds of a block network" in step.origin.block
    config = SweepConfig(("tiny",), steps_from=(path,), seeds=4, seeds_per_trial=4, out=tmp_path / "results")
    sizes, notes = block_sizes(config, plan(config))
    assert sizes == {"tiny": 1} and notes == [f"tiny: 1 seed per trial, not 4: {step.origin.block}"]


def test_a_steps_module_of_an_installed_package_is_found_by_its_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write(site / "tinypkg", "", "__init__.py")
    write(site / "tinypkg", TINY.replace('declare("tiny"', 'declare("pkg-tiny"'), "steps.py")
    write(site / "tinypkg-0.1.dist-info", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n", "METADATA")
    write(site / "tinypkg-0.1.dist-info", "[cnn_sweeps.steps]\ntiny = tinypkg.steps\n", "entry_points.txt")
    monkeypatch.syspath_prepend(str(site))
    try:
        res = CliRunner().invoke(app, ["steps"])
        assert res.exit_code == 0, res.output
        listed = "pkg-tiny 6,818 15 64 98.00 9 steps.py (tinypkg 0.1) > Tiny"
        assert res.stdout.splitlines()[-1].split() == listed.split()
        (step,) = stepfiles.load()
        assert (step.submission, step.origin.package, step.origin.module) == ("tiny", "tinypkg 0.1", "tinypkg")
        # a package's step clashes with a file's as a file's does
        res = CliRunner().invoke(
            app, ["steps", "--steps-from", str(write(tmp_path, TINY.replace('"tiny"', '"pkg-tiny"')))]
        )
        assert res.exit_code == 2 and "'pkg-tiny' is also declared in " in res.stderr, res.output
    finally:
        for name in [m for m in sys.modules if m.startswith("tinypkg")]:
            del sys.modules[name]


LOGGED = TINY.replace(
    "        super().__init__()\n",
    """        super().__init__()
        import importlib.util, json, os, sys
        with open(LOG, "a") as f:  # where this network is built, and what that process can import
            seen = {"pid": os.getpid(), "module": type(self).__module__ in sys.modules}
            seen |= {"by_name": importlib.util.find_spec("tiny_steps") is not None, "folder": FOLDER in sys.path}
            f.write(json.dumps(seen) + "\\n")
""",
)


def test_a_step_file_trains_on_ray_workers_that_cannot_import_it(tmp_path, ray_session, tiny):
    """The file lives in a folder on no one's path: the workers get its code inside the runs, train its step, and its
    rows land exactly once. Edited, the step gets another recipe hash and other rows, and never joins its old ones."""
    from sweeps.runner import run_sweep

    folder, log = tmp_path / "elsewhere", tmp_path / "built.jsonl"
    text = LOGGED.replace("WIDTH = 4", f"LOG, FOLDER = {str(log)!r}, {str(folder)!r}\nWIDTH = 4")
    path = write(folder, text)
    assert str(folder) not in sys.path
    out, stream = tmp_path / "results", io.StringIO()
    config = SweepConfig(("tiny",), steps_from=(path,), seeds=2, epochs=1, quick=True, out=out)
    summary = run_sweep(config, data=tiny, stream=stream)
    assert len(summary.trained) == 2 and not summary.failed, stream.getvalue()

    built = [json.loads(line) for line in log.read_text().splitlines()]
    workers = [b for b in built if b["pid"] != os.getpid()]
    assert workers, built  # built in other processes: the Ray workers that trained it
    assert not any(b["module"] or b["by_name"] or b["folder"] for b in workers), workers
    rows = pd.read_parquet(out / "epochs")
    assert len(rows) == 2 and not rows.duplicated(["step", "seed", "epoch"]).any()
    assert (rows["submission"] == "tiny_steps").all() and rows["recipe_hash"].nunique() == 1
    steps = pd.read_parquet(out / layout.STEPS).set_index("step")
    assert steps.loc["tiny", "step_file"] == str(path) and steps.loc["tiny", "source"] == "tiny_steps.py"
    assert steps.loc["tiny", "step_file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    edited = text.replace("return F.relu(x)", "return F.gelu(x)")  # the same layers, other code
    path.write_text(edited + 'declare("tiny2", Tiny)\n')
    with pytest.raises(Incompatible, match="holds quick fp32 rows with recipe "):
        run_sweep(dataclasses.replace(config, seeds=3), data=tiny, stream=stream)
    res = CliRunner().invoke(app, ["status", "--out", str(out), "--steps-from", str(path)])
    assert res.exit_code == 0 and "note: tiny: its rows under recipe " in res.stdout, res.output
    assert ["tiny2", "0", "0", "0", "-"] in [line.split() for line in res.stdout.splitlines()]  # no rows yet
    res = CliRunner().invoke(app, ["report", "--out", str(out), "--steps-from", str(path)])
    assert res.exit_code == 0 and "Note: tiny: its rows under recipe " in res.stdout, res.output
    again = run_sweep(dataclasses.replace(config, out=tmp_path / "edited"), data=tiny, stream=stream)
    assert len(again.trained) == 2, stream.getvalue()
    edited = pd.read_parquet(tmp_path / "edited" / "epochs")
    assert edited["recipe_hash"].iloc[0] != rows["recipe_hash"].iloc[0]
    assert edited.sort_values("seed")["train_loss"].tolist() != rows.sort_values("seed")["train_loss"].tolist()


def test_check_leaves_the_global_generator_alone(tmp_path):
    path = write(tmp_path, TINY)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stepfiles.load([path])
    assert torch.equal(torch.rand(3), expected)


def test_the_readme_example_runs_as_written(tmp_path, ray_session, data_dir, monkeypatch):
    """From an empty folder: the README's step file (docs/my_steps.py) and its commands, run as written."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own model\n", 1)[1].split("\n## ", 1)[0]
    commands = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert example == (Path(__file__).parents[1] / "docs" / "my_steps.py").read_text()
    assert commands[0] == "mkdir my-model && cd my-model"
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path / "my-model")
    (tmp_path / "my-model" / "my_steps.py").write_text(example)
    monkeypatch.setenv("SWEEP_DATA_DIR", str(data_dir))
    said = {}
    for command in commands[1:]:
        args = shlex.split(command)
        assert args[0] == "sweep", command
        res = CliRunner().invoke(app, args[1:])
        assert res.exit_code == 0, (command, res.output)
        said[args[1]] = res.stdout
    assert said["steps"].startswith("my-gap  (my_steps.py, step 1 of submission my_steps)")
    assert "params: 7,578" in said["steps"]
    assert "8 trained now" in said["run"]
    assert "Comparison: my-gap against s001-model3: " in said["report"]
    full = f"--steps-from {Path('my_steps.py').resolve()} --out results-full && sweep report --out results-full"
    assert f"`sweep run s001-model3 my-gap {full} --compare s001-model3 my-gap`" in said["report"]
    compared = pd.read_csv(Path("results") / "comparison.csv")
    assert compared[["before", "after", "n_before", "n_after"]].values.tolist() == [["s001-model3", "my-gap", 4, 4]]
