"""Every bad input, damaged file and interruption gets one clear line, and nothing is lost.

Each bad input runs the real command line against a copy of a real sweep's results folder and checks: exit code 2,
exactly one line on stderr starting ``error:``, no traceback, and every file of the folder unchanged, byte for byte.
Damaged results files are moved aside into ``quarantine/`` and block nothing; an interrupted sweep exits 130.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from filelock import FileLock
from typer.testing import CliRunner

from analysis.cli import app
from sweeps import layout, results

RUN = ["run", "s003-model4", "--quick", "--epochs", "2", "--seeds", "2"]  # what the shared sweep_results holds
OFFLINE = {var: "http://127.0.0.1:9" for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}

MINE = """\
import torch.nn.functional as F
from torch import nn

from cnn.zoo import declare


class Mine(nn.Module):
    def __init__(self, recipe):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)  # 26
        self.fc = nn.Linear(8 * 26 * 26, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(self.conv(x).flatten(1)), dim=-1)


declare("mine", Mine, dropout=0.1)
"""
STEP_FILES = {  # {steps}/<name>.py: a good step file, and step files each with one thing wrong
    "mine": MINE,
    "again": MINE,  # the same step name in another file
    "syntax": 'from cnn.zoo import declare\n\ndeclare("mine", lambda r: None\n',
    "imports": "import helpers_beside_me\n" + MINE,
    "zoo_name": MINE.replace('"mine"', '"s001-model3"'),
    "shape": MINE.replace("8 * 26 * 26", "8 * 28 * 28"),
    "recipe": MINE.replace("dropout=0.1", "lr=-1"),
    "no_step": '"""My steps, soon."""\n',
}

# id: (arguments, what the one line says). {out} is a copy of the shared sweep's results folder, {data} the real
# MNIST, {empty} a folder that does not exist, {file} a regular file, {steps} the folder of STEP_FILES. `run` gets
# --out and --data-dir unless given.
CASES = {
    "run: unknown step": (["run", "s001-modle3"], "did you mean s001-model3"),
    "run: pattern matches nothing": (["run", "s9*"], "matches no step"),
    "run: unknown option": ([*RUN, "--sedes", "3"], "No such option"),
    "run: --seeds 0": ([*RUN, "--seeds", "0"], "--seeds must be at least 1"),
    "run: --seeds not a number": ([*RUN, "--seeds", "ten"], "Invalid value for '--seeds'"),
    "run: --seed-start -1": ([*RUN, "--seed-start", "-1"], "--seed-start must be 0 or more"),
    "run: --out ''": ([*RUN, "--out", "", "--data-dir", "{data}"], "is the current folder"),
    "run: --out is a file": ([*RUN, "--out", "{file}", "--data-dir", "{data}"], "a-file is a file, not a folder"),
    "run: --num-cpus 0": ([*RUN, "--num-cpus", "0"], "--num-cpus must be at least 1"),
    "run: --num-gpus -1": ([*RUN, "--num-gpus", "-1"], "--num-gpus must not be negative"),
    "run: --cpus-per-trial 0": ([*RUN, "--cpus-per-trial", "0"], "--cpus-per-trial must be positive"),
    "run: --cpus-per-trial 512": ([*RUN, "--seeds", "3", "--cpus-per-trial", "512"], "more than the"),
    "run: --gpus-per-trial -0.5": ([*RUN, "--gpus-per-trial", "-0.5"], "--gpus-per-trial must not be negative"),
    "run: GPU with --num-gpus 0": ([*RUN, "--seeds", "3", "--gpus-per-trial", "1", "--num-gpus", "0"], "needs a GPU"),
    "run: --address unreachable": ([*RUN, "--seeds", "3", "--address", "127.0.0.1:9"], "cannot reach a Ray cluster"),
    "run: --storage unknown scheme": ([*RUN, "--seeds", "3", "--storage", "s3x://b/x"], "cannot be used"),
    "run: --storage not writable": ([*RUN, "--seeds", "3", "--storage", "{file}/tune"], "is not writable"),
    "run: --epochs 0": ([*RUN, "--epochs", "0"], "--epochs must be at least 1"),
    "run: --max-failures -1": ([*RUN, "--max-failures", "-1"], "--max-failures must be 0 or more"),
    "run: --vary unknown stream": ([*RUN, "--vary", "weights"], "--vary takes all, none, or a comma list"),
    "run: --base-seed -1": ([*RUN, "--vary", "order", "--base-seed", "-1"], "--base-seed must be 0 or more"),
    "run: --seeds-per-trial 0": ([*RUN, "--seeds-per-trial", "0"], "--seeds-per-trial must be at least 1"),
    "run: --wait-for-nodes -1": ([*RUN, "--wait-for-nodes", "-1"], "--wait-for-nodes must be 0 or more"),
    "run: other epochs into quick rows": ([*RUN, "--epochs", "3"], "holds quick fp32 rows with recipe"),
    "run: --bf16 into fp32 rows": ([*RUN, "--bf16"], "this sweep would add quick bf16 rows"),
    "run: --tf32 on the CPU": ([*RUN, "--tf32"], "--tf32 is a GPU precision"),
    "run: --gpu-memory 0": ([*RUN, "--gpu-memory", "0"], "--gpu-memory must be positive"),
    "run: --min-seeds 0": ([*RUN[:2], "--until-decided", "--min-seeds", "0"], "--min-seeds must be at least 1"),
    "run: --max-seeds below --min-seeds": (
        [*RUN[:2], "--until-decided", "--max-seeds", "3"],
        "--max-seeds must be at least --min-seeds",
    ),
    "run: --target 0": ([*RUN[:2], "--until-decided", "--target", "0"], "--target must be above 0"),
    "run: --last-k 0": ([*RUN[:2], "--until-decided", "--last-k", "0"], "--last-k must be at least 1"),
    "run: --gpus-per-trial 2": ([*RUN, "--gpus-per-trial", "2"], "gives a trial GPUs it cannot use"),
    "run: one seed over a trial's GPU share": (
        [*RUN, "--seeds", "3", "--gpus-per-trial", "0.01", "--gpu-memory", "24", "--dry-run"],
        "one seed needs about",
    ),
    "run: --tf32 and --bf16": ([*RUN, "--tf32", "--bf16"], "two precisions; choose one"),
    "run: --log-to unknown": ([*RUN, "--log-to", "csv"], "Invalid value for '--log-to'"),
    "run: MNIST missing, offline": ([*RUN, "--seeds", "3", "--data-dir", "{empty}"], "MNIST not found in"),
    "run: MNIST file damaged": ([*RUN, "--seeds", "3", "--data-dir", "{damaged}"], "t10k-images-idx3-ubyte is damaged"),
    "run: another sweep is writing": ([*RUN, "--seeds", "3"], "another sweep is writing to"),
    "run: step file with a syntax error": ([*RUN, "--steps-from", "{steps}/syntax.py"], "syntax.py:3: SyntaxError"),
    "run: step file with an import error": (
        [*RUN, "--steps-from", "{steps}/imports.py"],
        "imports.py:1: ModuleNotFoundError: No module named 'helpers_beside_me'",
    ),
    "run: step file names a zoo step": ([*RUN, "--steps-from", "{steps}/zoo_name.py"], "'s001-model3' is also a zoo"),
    "run: two step files declare one step": (
        [*RUN, "--steps-from", "{steps}/mine.py", "--steps-from", "{steps}/again.py"],
        "step 'mine' is also declared in ",
    ),
    "run: step file's network fails on 1x28x28": (
        [*RUN, "--steps-from", "{steps}/shape.py"],
        "shape.py:14: step 'mine': its network fails on a 1×28×28 input: RuntimeError: mat1 and mat2 shapes cannot be "
        "multiplied (4x5408 and 6272x10)",
    ),
    "run: step file's recipe out of range": ([*RUN, "--steps-from", "{steps}/recipe.py"], "lr must be positive"),
    "run: step file declares no step": ([*RUN, "--steps-from", "{steps}/no_step.py"], "declares no step"),
    "steps: no such step file": (["steps", "--steps-from", "{empty}"], "no step file at"),
    "status: no results folder": (["status", "--out", "{empty}"], "no results folder at"),
    "status: --steps-from a folder": (["status", "--out", "{out}", "--steps-from", "{steps}"], "(a folder)"),
    "status: --out is a file": (["status", "--out", "{file}"], "is a file, not a results folder"),
    "status: unknown option": (["status", "--out", "{out}", "--jsn"], "No such option"),
    "report: no results folder": (["report", "--out", "{empty}"], "no such results folder"),
    "report: --out is a file": (["report", "--out", "{file}"], "a-file is a file, not a results folder"),
    "report: --target 101": (["report", "--out", "{out}", "--target", "101"], "--target must be above 0"),
    "report: --last-k 0": (["report", "--out", "{out}", "--last-k", "0"], "--last-k must be at least 1"),
    "report: --last-k beyond every run": (["report", "--out", "{out}", "--last-k", "3"], "longer than every run"),
    "report: --epoch-budget 0": (["report", "--out", "{out}", "--epoch-budget", "0"], "--epoch-budget must be at"),
    "report: --max-params -5": (["report", "--out", "{out}", "--max-params", "-5"], "--max-params must be at least 1"),
    "report: --max-epochs 0": (["report", "--out", "{out}", "--max-epochs", "0"], "--max-epochs must be at least 1"),
    "report: --confidence 1.5": (["report", "--out", "{out}", "--confidence", "1.5"], "--confidence must be at"),
    "report: --bootstrap 10": (["report", "--out", "{out}", "--bootstrap", "10"], "--bootstrap must be at least 100"),
    "report: --bootstrap-seed -1": (["report", "--out", "{out}", "--bootstrap-seed", "-1"], "--bootstrap-seed must be"),
    "report: --split seed": (["report", "--out", "{out}", "--split", "seed"], "--split takes engine, block_size"),
    "report: --html not writable": (
        ["report", "--out", "{out}", "--last-k", "1", "--html", "{file}/r.html"],
        "cannot write the report",
    ),
    "report: --steps-from a bad step file": (
        ["report", "--out", "{out}", "--steps-from", "{steps}/syntax.py"],
        "SyntaxError",
    ),
    "report: --compare a step with no rows here": (
        ["report", "--out", "{out}", "--compare", "s003-model4", "s001-model3"],
        "no step or group 's001-model3' in this folder",
    ),
    "steps: unknown step": (["steps", "nope"], "unknown step 'nope'"),
}
if torch.cuda.is_available():
    del CASES["run: GPU with --num-gpus 0"]
else:
    CASES["run: --num-gpus beyond the devices"] = ([*RUN, "--seeds", "3", "--num-gpus", "1"], "CUDA devices visible")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(args: list[str], code: int = 2):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and not isinstance(res.exception, AssertionError), res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0], res


@pytest.fixture
def places(sweep_results, tmp_path, data_dir, monkeypatch):
    """A copy of a real sweep's results folder, and the other paths the cases name; the cwd is an empty folder."""
    out = tmp_path / "results"
    shutil.copytree(sweep_results, out)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "steps").mkdir()
    for name, text in STEP_FILES.items():
        (tmp_path / "steps" / f"{name}.py").write_text(text)
    for var, value in OFFLINE.items():  # a download fails at once, as on a machine without network
        monkeypatch.setenv(var, value)
    return {
        "out": str(out),
        "data": str(data_dir),
        "empty": str(tmp_path / "nowhere"),
        "file": str(tmp_path / "a-file"),
        "steps": str(tmp_path / "steps"),
    }


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(case, places, tmp_path):
    args, says = CASES[case]
    if any("{damaged}" in a for a in args):  # a copy of MNIST with a few bytes of the test images flipped
        raw = tmp_path / "damaged" / "MNIST" / "raw"
        shutil.copytree(Path(places["data"]) / "MNIST" / "raw", raw)
        images = bytearray((raw / "t10k-images-idx3-ubyte").read_bytes())
        images[5000:5004] = bytes(255 - b for b in images[5000:5004])
        (raw / "t10k-images-idx3-ubyte").write_bytes(images)
        places["damaged"] = str(raw.parents[1])
    args = [a.format(**places) for a in args]
    if args[0] == "run":
        args += [f"--{o}={places[k]}" for o, k in (("out", "out"), ("data-dir", "data")) if f"--{o}" not in args]
    out = Path(places["out"])
    lock = FileLock(str(out / layout.LOCK), timeout=0) if case == "run: another sweep is writing" else None
    if lock:
        lock.acquire()
    before = files(out)
    try:
        line, _ = one_line(args)
    finally:
        if lock:
            lock.release()
    assert line.startswith("error: ") and says in line, line
    assert files(out) == before
    assert not Path(places["empty"]).exists() and list((tmp_path / "cwd").iterdir()) == []


def test_the_cases_cover_every_option_of_run_status_and_report():
    import typer

    assert len(CASES) >= 25
    used = {a.split("=")[0] for args, _ in CASES.values() for a in args if a.startswith("--")}
    commands = typer.main.get_command(app).commands
    for name in ("run", "status", "report"):
        options = {o for p in commands[name].params for o in p.opts if o.startswith("--")}
        flags = {
            o for p in commands[name].params if getattr(p, "is_flag", False) for o in p.opts
        }  # on or off: nothing to get wrong
        assert options - flags - {"--help"} <= used, (name, options - flags - used)


def test_damaged_results_file_is_quarantined_and_its_run_trains_again(places):
    out = Path(places["out"])
    bad = layout.run_file(out, layout.EPOCHS, "s003-model4", 1, layout.QUICK)
    bad.write_bytes(bad.read_bytes()[:100])
    damaged, before = bad.read_bytes(), files(out)
    line, res = one_line(["status", "--out", str(out)], code=0)
    assert line.startswith("moved damaged ") and "seed-0001-quick.parquet" in line
    assert "quarantined: " in res.stdout and "s003-model4 [quick]    1" in res.stdout
    moved = {f"quarantine/{k}" for k in before if k.endswith("step=s003-model4/seed-0001-quick.parquet")}
    after = files(out)
    assert after["quarantine/epochs/step=s003-model4/seed-0001-quick.parquet"] == damaged
    assert {k: v for k, v in after.items() if k not in moved} == {
        k: v for k, v in before.items() if not k.endswith("step=s003-model4/seed-0001-quick.parquet")
    }
    res = CliRunner().invoke(app, [*RUN, "--dry-run", "--out", str(out), "--data-dir", places["data"]])
    plan = [ln.split() for ln in res.stdout.splitlines()]
    assert res.exit_code == 0 and ["s003-model4", "[quick]", "0", "-", "1"] in plan


def test_dry_run_on_a_half_finished_folder(places):
    out = Path(places["out"])
    ckpt = out / "ckpt"
    ckpt.mkdir()
    results.write_marker(out, "s003-model4", 2, layout.QUICK, epoch=1, epochs=2, checkpoint=str(ckpt))
    before = files(out)
    res = CliRunner().invoke(app, [*RUN, "--seeds", "4", "--dry-run", "--out", str(out), "--data-dir", places["data"]])
    assert res.exit_code == 0, res.output
    assert ["s003-model4", "[quick]", "0-1", "2", "(1/2)", "3"] in [ln.split() for ln in res.stdout.splitlines()]
    assert "2 of 4 runs to train: 3 model-epochs of 8 in all" in res.stdout
    assert files(out) == before


def interrupt(args: list[str], out: Path) -> tuple[int, str, float]:
    """Run ``sweep <args> --out OUT`` on a Ray of its own and SIGINT it (Ctrl-C) once a run has a checkpoint: its
    exit code, its stderr and how many seconds after the signal it said ``stopping…``."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ri", dir="/tmp"))
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(ray_tmp)}
    sweep = [Path(sys.executable).parent / "sweep", *args, "--out", str(out), "--num-cpus", "2"]
    proc = subprocess.Popen(sweep, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []  # stderr, with when each line came
    reader = threading.Thread(target=lambda: lines.extend((time.time(), ln) for ln in proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if any(results.read_marker(p).get("checkpoint") for *_, p in layout.markers(out)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        interrupted = time.time()
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], check=False)
    said = [t - interrupted for t, ln in lines if ln.startswith("stopping…")]
    return proc.returncode, "".join(ln for _, ln in lines), said[0] if said else float("inf")


def test_interrupted_sweep_exits_130_and_says_how_to_continue(tmp_path, data_dir):
    """SIGINT (Ctrl-C) to a real `sweep run` once a run has a checkpoint: exit 130, the unfinished runs counted,
    and the command that continues it; running that command finishes the sweep with undisturbed rows."""
    out = tmp_path / "results"
    args = ["run", "s003-model4", "--seeds", "2", "--quick", "--epochs", "3", "--data-dir", str(data_dir)]
    code, stderr, said = interrupt(args, out)
    assert said < 2, stderr  # at once, while Tune stops the trials
    last = stderr.strip().splitlines()[-1]
    assert code == 130, stderr
    assert last.startswith("interrupted: ") and "runs unfinished" in last and "Traceback" not in stderr, stderr
    again = last.split("continue with: ", 1)[1]
    assert again.startswith("sweep run s003-model4 --seeds 2 --quick --epochs 3")

    res = CliRunner().invoke(app, [*args, "--out", str(out)])  # the printed command finishes the sweep
    assert res.exit_code == 0 and int(re.search(r"\((\d+) resumed\)", res.stdout).group(1)) >= 1, res.output
    rows = pd.read_parquet(out / "epochs")
    assert len(rows) == 6 and not rows.duplicated(["step", "seed", "epoch"]).any()


def test_a_crafted_checkpoint_is_refused_in_one_line(places, tmp_path):
    """A marker points at a checkpoint whose pickle would run code when loaded (here: create a file): `sweep run`
    refuses it before anything starts, in one line naming what it would import, and nothing runs or changes."""
    from sweeps.protocol import FILE, STATES
    from tests.test_protocol import Payload

    out, ran = Path(places["out"]), tmp_path / "ran"
    ckpt = out / "crafted"
    ckpt.mkdir()
    torch.save({"epoch": 1, "failed": {}, "predictions": {}, "x": Payload(ran)}, ckpt / FILE)
    torch.save({}, ckpt / STATES)
    results.write_marker(out, "s003-model4", 2, layout.QUICK, epoch=1, epochs=2, checkpoint=str(ckpt))
    before = files(out)
    line, _ = one_line([*RUN, "--seeds", "3", "--out", places["out"], "--data-dir", places["data"]])
    assert line.startswith("error: refusing checkpoint ") and "pathlib" in line and "marker under runs/" in line
    assert files(out) == before and not ran.exists()
