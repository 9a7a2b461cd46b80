"""`sweep` as assembled by `analysis.cli`, and `sweep report` as a command: no layer imports one above it, --json only
prints, the terminal gets at most 120 columns, and a quick sweep's report says what it can tell and how to get the
rest."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from analysis.cli import app
from analysis.terminal import WIDTH
from tests.fixtures_analysis import write_demo, write_quick

ROOT = Path(__file__).parents[1]
LAYERS = ("cnn", "sweeps", "analysis")  # each may import the ones before it, never one after


def report(*args):
    return CliRunner().invoke(app, ["report", *map(str, args)])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_module_imports_a_layer_above_its_own():
    for i, layer in enumerate(LAYERS):
        for path in (ROOT / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                above = [n for n in names if n.split(".")[0] in LAYERS[i + 1 :]]
                assert not above, f"{path.relative_to(ROOT)} imports {above}"


def test_sweep_help_lists_every_command_without_loading_the_heavy_libraries():
    code = (
        "import sys\nfrom analysis.cli import main\nsys.argv = ['sweep', '--help']\ntry:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'ray', 'pandas', 'matplotlib', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    assert all(f" {command} " in out for command in ("run", "steps", "status", "report")), out
    assert out.strip().endswith("[]"), out


def test_json_only_prints(tmp_path):
    write_demo(tmp_path, sizes=(2,), seeds=3)
    before = files(tmp_path)
    result = report("--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert [row["group"] for row in json.loads(result.stdout)] == ["s001-model1", "s002-model2"]
    assert files(tmp_path) == before  # no report.html, no CSV: every file as it was, and no other


def test_the_terminal_gets_at_most_120_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # folders named as users name them: `--out results`
    write_demo(Path("demo"), sizes=(3, 2), seeds=6)  # with UNDECIDED steps: the decide column
    write_quick(Path("results"))  # long step names, a step over budget, two notes, a command
    for out in ("demo", "results"):
        result = report("--out", out)
        assert result.exit_code == 0, result.output
        assert "UNDECIDED" in result.stdout or out == "results"
        assert max(map(len, result.stdout.splitlines())) <= WIDTH, result.stdout


def test_a_quick_sweep_says_what_it_can_tell_and_the_command_that_tells_the_rest(tmp_path):
    out = tmp_path / "results"
    write_quick(out)
    result = report("--out", out)  # no --last-k: every run counts 1 epoch, so the window is 1 epoch
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "Note: A quick sweep: every run trained 1 epoch on a tenth of the training images." in result.stdout
    assert "It cannot tell whether a step reaches 99.40 % consistently" in " ".join(lines)
    assert f"`sweep run all --out {out}-full && sweep report --out {out}-full`" in lines  # on a line of its own
    assert "the window here is 1 epoch, so a run is consistent when its final epoch reaches the target" in " ".join(
        lines
    )
    text = (out / "report.html").read_text()
    assert f"<code>sweep run all --out {out}-full &amp;&amp; sweep report --out {out}-full</code>" in text
    assert "<dd>test accuracy at or above the target in the last epoch.</dd>" in text
