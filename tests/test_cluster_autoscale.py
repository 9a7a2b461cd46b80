"""Sweeps that join an autoscaling cluster whose head holds no trial and whose worker types start at zero nodes:
Ray's fake_multinode provider, whose autoscaler starts real raylets on this machine as "nodes"."""

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sweeps import BadSweep
from sweeps.cluster import NoCuda, check_device, check_nodes
from tests.clusters import free_port, pids_with_env, stop_pids

BIN = os.path.dirname(sys.executable)
NODE_TYPES = {
    "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
    "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1},
    "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1},
}


@pytest.fixture(scope="module")
def autoscaling_cluster():
    """A head with 0 CPUs, started with `ray start --head` in its own RAY_TMPDIR on a free port, and an autoscaler
    (v1, the monitor on the head) that may add one 2-CPU node and one 1-GPU node. Its processes, found by that
    RAY_TMPDIR in their environment, are stopped by PID afterwards."""
    tmp = tempfile.mkdtemp(prefix="fk", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    port = free_port()
    config = {
        "cluster_name": "fake",
        "max_workers": 2,
        "idle_timeout_minutes": 5,
        # The fake nodes dial provider.gcs_address; without it they would dial port 6379.
        "provider": {
            "type": "fake_multinode",
            "gcs_address": f"127.0.0.1:{port}",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "unused"},
        "head_node_type": "ray.head.default",
        "available_node_types": NODE_TYPES,
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
        **{key: [] for key in ("cluster_synced_files", "initialization_commands", "setup_commands")},
        **{key: [] for key in ("head_setup_commands", "worker_setup_commands")},
        **{key: [] for key in ("head_start_ray_commands", "worker_start_ray_commands")},
    }
    config_file = Path(tmp) / "autoscaler.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "RAY_TMPDIR": tmp,
        "RAY_ADDRESS": f"127.0.0.1:{port}",  # never another cluster on this machine
        "RAY_AUTH_MODE": "disabled",  # explicit: a token left in ~/.ray would otherwise turn token auth on
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    head = [
        f"{BIN}/ray",
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=0",
        "--num-gpus=0",
        f"--autoscaling-config={config_file}",
        "--include-dashboard=false",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--disable-usage-stats",
    ]
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        yield env
    finally:
        left = stop_pids(lambda: pids_with_env("RAY_TMPDIR", tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"processes of the fake cluster still running: {left}"


def sweep(env, out, data_dir, *options, seeds="2") -> subprocess.Popen:
    """`sweep run` of quick s001-model2 runs on the cluster, started as a user types it on a head: `--address auto`."""
    cmd = [f"{BIN}/sweep", "run", "s001-model2", "--seeds", seeds, "--quick", "--address", "auto", "--out", str(out)]
    cmd += ["--data-dir", str(data_dir), *options]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def test_sweeps_join_a_cluster_that_grows(autoscaling_cluster, tmp_path, data_dir):
    """Three sweeps at once, as on a shared cluster: one asks for what no node type has (2 CPUs and a GPU on one
    node), one waits for a CPU node, one for a GPU node (each node type starts at zero)."""
    too_big = sweep(autoscaling_cluster, tmp_path / "big", data_dir, "--cpus-per-trial", "2", "--gpus-per-trial", "1")
    cpu = sweep(autoscaling_cluster, tmp_path / "cpu", data_dir)
    gpu = sweep(
        autoscaling_cluster, tmp_path / "gpu", data_dir, "--gpus-per-trial", "0.25", "--max-failures", "0", seeds="1"
    )
    (big_code, big_stderr), (code, stderr), (gpu_code, gpu_stderr) = finish(too_big), finish(cpu), finish(gpu)

    # refused at once, in one line, exit 2, nothing written
    assert big_code == 2, big_stderr
    assert big_stderr.splitlines()[-1] == (
        "error: a trial of --cpus-per-trial 2 --gpus-per-trial 1 needs more than any node type of this cluster has "
        "(cpu_worker: 2 CPU, 0 GPU; gpu_worker: 1 CPU, 1 GPU; ray.head.default: 0 CPU, 0 GPU)"
    )
    assert not (tmp_path / "big" / "epochs").exists()

    assert code == 0, stderr
    assert "no node can hold a trial (1 CPU, 0 GPU) yet; the autoscaler can add cpu_worker (2 CPU, 0 GPU)" in stderr
    rows = pd.read_parquet(tmp_path / "cpu" / "epochs")  # the head has no CPU: every row is from an autoscaled node
    assert sorted(rows.seed) == [0, 1] and not rows.duplicated(["step", "seed", "epoch"]).any()

    # --gpus-per-trial 0.25 starts, though no GPU node is up when the sweep joins
    assert "no node can hold a trial (1 CPU, 0.25 GPU) yet; the autoscaler can add gpu_worker (1 CPU, 1 GPU)" in (
        gpu_stderr
    )
    if torch.cuda.is_available():  # the fake GPU node is this machine, and its GPU works
        assert gpu_code == 0, gpu_stderr
        return
    # The fake node claims a GPU that this machine lacks: the run fails in one line naming the node and why.
    assert gpu_code == 1 and "Traceback" not in gpu_stderr, gpu_stderr
    (failed,) = [line for line in gpu_stderr.splitlines() if line.startswith("  failed: ")]
    assert "cannot train on CUDA: " in failed and failed.count(" node ") == 1, failed
    assert not (tmp_path / "gpu" / "epochs").exists()


def test_gives_up_after_the_wait_saying_what_to_check(ray_session):
    """The test session's local Ray has no autoscaler and no node with 64 CPUs."""
    log = io.StringIO()
    with pytest.raises(BadSweep, match=r"after 1 s no node can hold a trial \(64 CPU, 0 GPU\): check `ray status`"):
        check_nodes(64, 0, wait_s=1, stream=log)
    assert log.getvalue() == (
        "no node can hold a trial (64 CPU, 0 GPU) yet; the cluster's node types are unknown here: waiting up to 1 s "
        "for the autoscaler to add one (--wait-for-nodes)\n"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA works here")
def test_a_node_without_cuda_says_why_in_one_line():
    with pytest.raises(NoCuda, match=r"^node .+ \(.+\) cannot train on CUDA: [^\n]+$"):
        check_device("cuda")
    check_device("cpu")
    done = subprocess.run([f"{BIN}/sweep", "check-cuda"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cannot train on CUDA" in done.stderr
