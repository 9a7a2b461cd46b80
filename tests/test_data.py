"""Locating MNIST, and the fixed stratified quick slice."""

import pytest
import torch

from cnn.data import DATA_DIR_ENV, DataNotFound, default_data_dir, load_mnist, stratified_slice


def test_data_dir_comes_from_the_environment_or_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "cnn-sweeps"


def test_missing_data_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(DataNotFound) as e:
        load_mnist(tmp_path / "nowhere", download=False)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "nowhere" / "MNIST" / "raw") in message and "--data-dir" in message


def test_mnist_is_whole_uint8_tensors(mnist):
    assert mnist.train_x.shape == (60_000, 28, 28) and mnist.train_x.dtype == torch.uint8
    assert mnist.test_x.shape == (10_000, 28, 28) and mnist.test_y.dtype == torch.int64


def test_quick_slice_is_a_fixed_tenth_of_every_class(mnist):
    idx = stratified_slice(mnist.train_y, 0.1)
    counts = torch.bincount(mnist.train_y[idx], minlength=10)
    full = torch.bincount(mnist.train_y, minlength=10)
    assert torch.equal(counts, full // 10)
    assert torch.equal(idx, stratified_slice(mnist.train_y, 0.1)) and torch.all(idx[1:] > idx[:-1])
