"""benchmarks/gpu_check.py, the one command a GPU machine runs, end to end in its tiny CPU setting."""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path, data_dir):
    out, ray_tmp = tmp_path / "check", tempfile.mkdtemp(prefix="gc", dir="/tmp")  # Ray's socket paths must be short
    env = {"PATH": "/usr/bin:/bin", "SWEEP_DATA_DIR": str(data_dir), "RAY_ADDRESS": "", "HOME": str(tmp_path)}
    try:
        res = subprocess.run(
            [sys.executable, "benchmarks/gpu_check.py", "--tiny", "--out", str(out)],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp},
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False)  # the sweep's own Ray, should any be left
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = (out / "summary.txt").read_text()
    assert [line.split()[-1] for line in summary.splitlines()[-5:]] == ["ok"] * 5, summary
    assert "skipped" in (out / "pytest-gpu.txt").read_text()  # no GPU here: the gpu tests skip, and say so
    blocks = (out / "blocks.txt").read_text()
    assert "seeds " in blocks and "S=2 " in blocks and "vs seeds loop" in blocks
    assert len((out / "memory.txt").read_text().splitlines()) == 1 + 2  # header, S = 1 and 2
    numerics = (out / "numerics.txt").read_text()
    assert numerics.count("s003-model4 S=2") == 3 and "tf32, deterministic" in numerics
    assert "precision recorded fp32" in numerics  # TF32 asked for on a CPU is IEEE fp32, and recorded so
    assert (out / "sweep.txt").read_text().count("exit 0") == 2 and (out / "sweep" / "report.html").exists()
