"""Locating and checking MNIST, and the fixed stratified quick slice."""

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cnn.data import (
    DATA_DIR_ENV,
    FILES,
    DamagedData,
    DataNotFound,
    default_data_dir,
    load_mnist,
    stratified_slice,
)
from sweeps.cli import app


def offline(monkeypatch):
    # A proxy on a closed loopback port: a download fails at once, as on a machine without network.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``, with a file's bytes (None for a folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def copy(data_dir, tmp_path) -> Path:
    """A writable copy of the real MNIST files: ``copy/MNIST/raw/<four IDX files>``."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(data_dir / "MNIST" / "raw" / name, raw / name)  # copyfile: the shared files are read-only
    return tmp_path / "data"


def flip_bytes(path: Path) -> None:
    """Invert three pixels in the middle of the file: same size, same header."""
    blob = bytearray(path.read_bytes())
    for i in (len(blob) // 2, len(blob) // 2 + 1, len(blob) - 1):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def bad_magic(path: Path) -> None:
    """An images magic number (0x00000803) on a labels file: what made torchvision raise a bare AssertionError."""
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])


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


def test_checked_files_load_as_torchvision_reads_them(copy):
    from torchvision.datasets import MNIST as TorchMNIST

    ours = load_mnist(copy, download=False)
    train, test = TorchMNIST(copy, train=True), TorchMNIST(copy, train=False)
    assert ours.train_x.dtype == train.data.dtype and ours.train_y.dtype == train.targets.dtype
    assert torch.equal(ours.train_x, train.data) and torch.equal(ours.train_y, train.targets)
    assert torch.equal(ours.test_x, test.data) and torch.equal(ours.test_y, test.targets)


@pytest.mark.parametrize(
    "name, damage, says",
    [
        ("t10k-images-idx3-ubyte", flip_bytes, "MD5 "),
        ("train-labels-idx1-ubyte", truncate, "1,000 bytes, not 60,008"),
        ("t10k-labels-idx1-ubyte", bad_magic, "MD5 "),
    ],
)
def test_a_damaged_file_is_one_line_naming_it(copy, name, damage, says, monkeypatch):
    offline(monkeypatch)  # download on: a damaged file must be reported, not (tried to be) downloaded over
    path = copy / "MNIST" / "raw" / name
    damage(path)
    before = tree(copy)
    with pytest.raises(DamagedData) as e:
        load_mnist(copy)
    message = str(e.value)
    assert message.startswith(f"MNIST file {path} is damaged (") and says in message and "\n" not in message
    assert "delete it" in message and "--data-dir" in message and "not found" not in message
    assert tree(copy) == before


def test_an_unreadable_file_is_one_line_naming_it(copy):
    path = copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.unlink()
    path.mkdir()
    with pytest.raises(DataNotFound) as e:
        load_mnist(copy, download=False)
    assert str(e.value).startswith(f"cannot read MNIST file {path} (") and "\n" not in str(e.value)


@pytest.mark.parametrize("start", ["missing", "empty", "half"])
def test_a_failed_download_leaves_the_folder_as_it_was(start, tmp_path, data_dir, monkeypatch):
    offline(monkeypatch)
    root = tmp_path / "pointed" / "at"
    if start != "missing":
        root.mkdir(parents=True)
        (root / "notes.txt").write_text("the user's")
    if start == "half":  # two good files: the download must fetch the rest and, failing, remove only its own
        (root / "MNIST" / "raw").mkdir(parents=True)
        for name in ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"]:
            shutil.copyfile(data_dir / "MNIST" / "raw" / name, root / "MNIST" / "raw" / name)
    before = tree(tmp_path)
    with pytest.raises(DataNotFound) as e:
        load_mnist(root)
    message = str(e.value)
    assert message.startswith(f"MNIST not found in {root / 'MNIST' / 'raw'} and the download failed (")
    assert "--data-dir" in message and "\n" not in message
    assert tree(tmp_path) == before  # no MNIST/raw, no partial download, no lock file


def test_sweep_run_on_a_damaged_copy_is_one_error_line_and_writes_nothing(copy, tmp_path, monkeypatch):
    offline(monkeypatch)
    path = copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    flip_bytes(path)
    out = tmp_path / "results"
    args = ["run", "s001-model2", "--quick", "--data-dir", str(copy), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: MNIST file ") and result.stderr.count("\n") == 1
    assert f"{path} is damaged" in result.stderr
    assert not out.exists()


def test_mnist_is_whole_uint8_tensors(mnist):
    assert mnist.train_x.shape == (60_000, 28, 28) and mnist.train_x.dtype == torch.uint8
    assert mnist.test_x.shape == (10_000, 28, 28) and mnist.test_y.dtype == torch.int64


def test_quick_slice_is_a_fixed_tenth_of_every_class(mnist):
    idx = stratified_slice(mnist.train_y, 0.1)
    counts = torch.bincount(mnist.train_y[idx], minlength=10)
    full = torch.bincount(mnist.train_y, minlength=10)
    assert torch.equal(counts, full // 10)
    assert torch.equal(idx, stratified_slice(mnist.train_y, 0.1)) and torch.all(idx[1:] > idx[:-1])
