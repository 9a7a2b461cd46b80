"""Shared fixtures. MNIST comes from $SWEEP_DATA_DIR (CI: ../shared/data), never from the network."""

import os
from pathlib import Path

import pytest
import torch

from cnn.data import MNIST, load_mnist

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA; without it they skip and say so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none is visible here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Each device a test should hold on: the CPU always, CUDA where there is a GPU (``pytest -m gpu``)."""
    return request.param


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(os.environ.get("SWEEP_DATA_DIR") or SHARED_DATA).resolve()


@pytest.fixture(scope="session")
def mnist(data_dir) -> MNIST:
    return load_mnist(data_dir, download=False)


@pytest.fixture(scope="session")
def tiny(mnist) -> MNIST:
    """1,000 training and 500 test images of real MNIST."""
    return MNIST(mnist.train_x[:1000], mnist.train_y[:1000], mnist.test_x[:500], mnist.test_y[:500])


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session; sweeps started in this process reuse it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


SWEEP = dict(steps=("s003-model4", "s004-exp1"), seeds=2, epochs=2, quick=True)  # 4 runs, 2 epochs each


@pytest.fixture(scope="session")
def sweep_results(tmp_path_factory, ray_session, tiny) -> Path:
    """A results folder from a real sweep on Ray: 2 steps x 2 seeds x 2 epochs, quick, on 1,000 MNIST images."""
    import io

    from sweeps.runner import SweepConfig, run_sweep

    out = tmp_path_factory.mktemp("sweep") / "results"
    log = io.StringIO()
    summary = run_sweep(SweepConfig(**SWEEP, out=out), data=tiny, stream=log)
    assert len(summary.trained) == 4 and not summary.failed, (summary, log.getvalue())
    (out.parent / "progress.log").write_text(log.getvalue())
    return out
