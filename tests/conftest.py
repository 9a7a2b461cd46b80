"""Shared fixtures. MNIST comes from $SWEEP_DATA_DIR (CI: ../shared/data), never from the network."""

import os
from pathlib import Path

import pytest

from cnn.data import MNIST, load_mnist

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(os.environ.get("SWEEP_DATA_DIR") or SHARED_DATA)


@pytest.fixture(scope="session")
def mnist(data_dir) -> MNIST:
    return load_mnist(data_dir, download=False)


@pytest.fixture(scope="session")
def tiny(mnist) -> MNIST:
    """1,000 training and 500 test images of real MNIST."""
    return MNIST(mnist.train_x[:1000], mnist.train_y[:1000], mnist.test_x[:500], mnist.test_y[:500])
