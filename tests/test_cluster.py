"""The cluster files against Ray's own schema and what they promise, and a sweep over a real 2-node Ray cluster on
loopback."""

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.clusters import free_port, pids_with_env, stop_pids

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def cluster_file(path: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / path).read_text())
    validate_config(prepare_config(config))
    return config


def test_cluster_yaml_passes_rays_schema():
    config = cluster_file("cluster.yaml")
    node_types = config["available_node_types"]
    assert node_types["gpu_worker"]["resources"]["GPU"] == 1 and node_types["gpu_worker"]["min_workers"] == 0
    # an image named on every node type (Ray's default has a CUDA 11 driver), and a CUDA check on the GPU workers
    assert all(
        t["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/") for t in node_types.values()
    )
    assert node_types["gpu_worker"]["worker_setup_commands"] == ["~/cnn-venv/bin/sweep check-cuda"]
    assert any("whl/cu130" in c for c in config["setup_commands"])


def test_cluster_opens_only_ssh_and_keeps_the_dashboard_local():
    config = cluster_file("cluster.yaml")
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    assert all("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"] if "--head" in c)


def test_onprem_file_keeps_the_dashboard_local_and_asks_for_a_token():
    config = cluster_file("docs/cluster-onprem.yaml")
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    (worker,) = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head and "RAY_enable_autoscaler_v2=0" in head
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert any("RAY_AUTH_MODE=token" in c for c in config["setup_commands"])  # every shell: drivers too
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


@pytest.fixture
def two_nodes():
    """`ray start --head` and a second `ray start --address`, each with 1 CPU and its own temp dir; stopped after."""
    port, marker = free_port(), secrets.token_hex(8)
    address = f"127.0.0.1:{port}"
    # Ray >= 2.5x authenticates with a token; head, worker and driver share this cluster's own one.
    env = {
        **os.environ,
        "CNN_SWEEPS_TEST_CLUSTER": marker,  # inherited by every process of the cluster, which the end stops by PID
        "RAY_ADDRESS": "",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    dirs = [tempfile.mkdtemp(prefix="rh", dir="/tmp"), tempfile.mkdtemp(prefix="rw", dir="/tmp")]
    common = ["--num-cpus=1", "--num-gpus=0"]
    subprocess.run(
        [
            BIN / "ray",
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={dirs[0]}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            *common,
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                BIN / "ray",
                "start",
                f"--address={address}",
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={dirs[1]}",
                *common,
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        yield address, env
    finally:  # not `ray stop`, which would also stop the test session's own Ray
        assert not stop_pids(lambda: pids_with_env("CNN_SWEEPS_TEST_CLUSTER", marker))


def test_sweep_over_two_nodes(two_nodes, tmp_path, data_dir):
    address, env = two_nodes
    out = tmp_path / "results"
    cmd = [
        BIN / "sweep",
        "run",
        "s003-model4",
        "s004-exp1",
        "--seeds",
        "2",
        "--quick",
        "--epochs",
        "1",
        "--address",
        address,
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 trained now (0 resumed)" in done.stdout
    rows = pd.read_parquet(out / "epochs")
    assert len(rows) == 4 and not rows.duplicated(["step", "seed", "epoch"]).any()
    assert (rows["test_total"] == 10_000).all()
    # each node has 1 CPU, so 2 concurrent trials can only have run on both nodes at once
    spans = rows.assign(end=rows.wall_time, start=rows.wall_time - pd.to_timedelta(rows.epoch_seconds, "s"))
    overlaps = sum(
        a.start < b.end and b.start < a.end for i, a in spans.iterrows() for j, b in spans.iterrows() if i < j
    )
    assert overlaps >= 1
