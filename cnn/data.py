"""MNIST as whole uint8 tensors, and the seeds' per-sample transforms done on whole batches.

The session-7 class code trains through a torchvision DataLoader with
``RandomRotation((-7, 7), fill=(1,)) -> ToTensor() -> Normalize((0.1307,), (0.3081,))`` per image; no seed shows its
transforms, so the zoo lists these values as assumptions. Here the images stay as one uint8 tensor on the run's
device and the same transforms run on a whole batch at once:

* ``fill=(1,)`` is applied by PIL to the uint8 ``L`` image, so the corners a rotation uncovers get pixel value **1 of
  255** (0.0039 after ``ToTensor``): black, not white. :func:`rotate` fills with exactly that value.
* PIL's ``rotate`` uses nearest-neighbour sampling (torchvision's default ``InterpolationMode.NEAREST``) about the
  image centre, counter-clockwise for a positive angle; :func:`rotate` does the same with ``grid_sample``.
* ``RandomRotation`` draws one angle per image, uniform on ``[-7, 7]`` degrees; :func:`random_angles` does too,
  from an explicit generator.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnn import BadInput

DATA_DIR_ENV = "SWEEP_DATA_DIR"


class DataNotFound(BadInput):
    """MNIST is neither on disk nor downloadable. The message is one line meant for the user."""


def default_data_dir() -> Path:
    """``$SWEEP_DATA_DIR``, else ``$XDG_CACHE_HOME/cnn-sweeps`` (``~/.cache/cnn-sweeps``)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cnn-sweeps"


@dataclass(frozen=True)
class MNIST:
    """The whole data set. Images are uint8 ``(N, 28, 28)``, labels int64 ``(N,)``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: torch.device | str) -> MNIST:
        return MNIST(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


def load_mnist(data_dir: Path | str | None = None, download: bool = True) -> MNIST:
    """Load MNIST from ``data_dir/MNIST/raw`` (torchvision's layout), downloading it there if missing.

    Loaded once per process and directory. Raises :class:`DataNotFound` with one line naming the directory when the
    files are missing and cannot be downloaded (offline).
    """
    return _load(Path(data_dir or default_data_dir()).expanduser().resolve(), download)


@functools.lru_cache(maxsize=2)
def _load(root: Path, download: bool) -> MNIST:
    from filelock import FileLock
    from torchvision.datasets import MNIST as TorchMNIST

    def read() -> MNIST:
        train, test = TorchMNIST(root, train=True), TorchMNIST(root, train=False)
        return MNIST(train.data, train.targets, test.data, test.targets)

    try:
        return read()
    except RuntimeError:  # torchvision: "Dataset not found. You can use download=True to download it"
        pass
    hint = f"point --data-dir or ${DATA_DIR_ENV} at a folder holding MNIST/raw/"
    if not download:
        raise DataNotFound(f"MNIST not found in {root / 'MNIST' / 'raw'}; {hint}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".mnist.lock")):  # parallel workers on one node download once
            TorchMNIST(root, train=True, download=True)
            TorchMNIST(root, train=False, download=True)
        return read()
    except (OSError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataNotFound(
            f"MNIST not found in {root / 'MNIST' / 'raw'} and the download failed ({reason}); {hint}"
        ) from None


def stratified_slice(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the first ``fraction`` of every class, in data-set order: a fixed, stratified subset."""
    keep = [idx[: int(len(idx) * fraction)] for idx in (torch.nonzero(labels == c).flatten() for c in range(10))]
    return torch.cat(keep).sort().values


def random_angles(n: int, degrees: float, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """One angle per image, uniform on ``[-degrees, degrees]``, as ``RandomRotation.get_params`` draws it. (n,)"""
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * degrees


def rotate(x: torch.Tensor, degrees: torch.Tensor, fill: float) -> torch.Tensor:
    """Rotate each image of ``x`` (B, 1, H, W) by its own angle, counter-clockwise, nearest-neighbour, about the centre.

    Pixels that come from outside the image get ``fill`` (same scale as ``x``).
    """
    theta = degrees * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # Output pixel (u, v) samples input at R(-angle)(u, v); y points down in image coordinates. (B, 2, 3)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine.to(x.dtype), list(x.shape), align_corners=False)
    # Sample the images and a ones-mask together; where the mask came from the zero padding, use fill.
    both = F.grid_sample(torch.cat([x, torch.ones_like(x[:, :1])], 1), grid, mode="nearest", align_corners=False)
    return torch.where(both[:, -1:] > 0.5, both[:, :-1], fill)


def to_input(images: torch.Tensor, mean: float, std: float, angles: torch.Tensor | None = None, fill: int = 0):
    """The session-7 class code's ``[RandomRotation] -> ToTensor -> Normalize``: uint8 (B, H, W) -> float (B, 1, H, W).

    ``angles`` (B,) in degrees rotates each image first; ``fill`` is on the 0-255 pixel scale, as PIL applies it.
    """
    x = images.unsqueeze(1).float() / 255
    if angles is not None:
        x = rotate(x, angles, fill / 255)
    return (x - mean) / std
