"""MNIST as whole uint8 tensors, and the seeds' per-sample transforms done on whole batches.

:func:`load_mnist` reads the four raw IDX files only after checking them against their published MD5s, so a damaged
file stops a sweep with one line naming it instead of training on it.

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

import contextlib
import functools
import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnn.errors import BadInput

DATA_DIR_ENV = "SWEEP_DATA_DIR"


class DataNotFound(BadInput):
    """MNIST is neither on disk nor downloadable. The message is one line meant for the user."""


class DamagedData(BadInput):
    """An MNIST file is on disk but is not the published file (truncated, overwritten, flipped bytes). One line."""


# The four raw IDX files as published: name -> (MD5, size in bytes). The same sums are in ../shared/data/MNIST/MD5SUMS.
# torchvision checks only the .gz archives it downloads, never the raw files it then reads.
FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}
HINT = f"point --data-dir or ${DATA_DIR_ENV} at a folder holding MNIST/raw/"


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

    Loaded once per process and directory. Every file is checked against its published size and MD5 before it is used:
    the MD5 of the 55 MB costs about 0.15 s on one core, and the whole load takes about 0.3 s (torchvision's unchecked
    load: 0.12 s). Raises, with one line:

    * :class:`DamagedData` naming the first file that is there but wrong; nothing is downloaded over it.
    * :class:`DataNotFound` naming the folder when files are missing and ``download`` is off or the download fails
      (offline). A failed download leaves the folder as it was: it removes the folders and files it made.
    """
    return _load(Path(data_dir or default_data_dir()).expanduser().resolve(), download)


@functools.lru_cache(maxsize=2)
def _load(root: Path, download: bool) -> MNIST:
    raw = root / "MNIST" / "raw"
    blobs, missing = _read_checked(raw)
    if missing and download:
        _download(root)
        blobs, missing = _read_checked(raw)
    if missing:
        raise DataNotFound(f"MNIST not found in {raw}; {HINT}")

    def images(name: str) -> torch.Tensor:  # The MD5 fixes the header: 16 bytes, then N x 28 x 28 pixels.
        return torch.frombuffer(bytearray(blobs[name]), dtype=torch.uint8, offset=16).view(-1, 28, 28)

    def labels(name: str) -> torch.Tensor:  # 8 bytes of header, then N labels
        return torch.frombuffer(bytearray(blobs[name]), dtype=torch.uint8, offset=8).long()

    return MNIST(
        images("train-images-idx3-ubyte"),
        labels("train-labels-idx1-ubyte"),
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
    )


def _read_checked(raw: Path) -> tuple[dict[str, bytes], list[str]]:
    """The bytes of each file in ``raw`` that matches its published size and MD5, and the names of those missing.

    Raises :class:`DamagedData` for a file that is there but wrong, and :class:`DataNotFound` for one that cannot be
    read. Reading a file once serves both the check and the load.
    """
    blobs, missing = {}, []
    for name, (md5, size) in FILES.items():
        path = raw / name
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            missing.append(name)
            continue
        except OSError as e:  # a folder in its place, no permission
            raise DataNotFound(f"cannot read MNIST file {path} ({e.strerror or type(e).__name__}); {HINT}") from None
        if len(blob) != size:
            reason = f"{len(blob):,} bytes, not {size:,}"
        elif (digest := hashlib.md5(blob).hexdigest()) != md5:
            reason = f"MD5 {digest}, not the published {md5}"
        else:
            blobs[name] = blob
            continue
        raise DamagedData(
            f"MNIST file {path} is damaged ({reason}); delete it to download it again, "
            f"or point --data-dir or ${DATA_DIR_ENV} at a folder holding good MNIST/raw/ files"
        )
    return blobs, missing


def _download(root: Path) -> None:
    """Download MNIST into ``root/MNIST/raw`` with torchvision; on failure remove what this attempt made.

    Parallel processes download once: they share one lock in the temp folder, so none is left in a folder the user
    only pointed at, and downloads into different folders (rare, short) merely wait for each other.
    """
    from filelock import FileLock
    from torchvision.datasets import MNIST as TorchMNIST

    raw = root / "MNIST" / "raw"
    with FileLock(Path(tempfile.gettempdir()) / "cnn-sweeps-mnist.lock", mode=0o666):  # 0o666: other users' too
        # Taken under the lock: what is here now is not ours to remove.
        new_dirs = [d for d in (raw, *raw.parents) if not d.exists()]  # deepest first; makedirs makes them all
        old_files = set(raw.iterdir()) if raw.is_dir() else set()
        try:
            TorchMNIST(root, train=False, download=True)  # fetches both splits; train=False reads back only 8 MB
        except (OSError, RuntimeError) as e:
            made = set(raw.iterdir()) - old_files if raw.is_dir() else set()
            for p in made:
                p.unlink()  # this attempt's partial downloads
            for d in new_dirs:
                with contextlib.suppress(OSError):  # not empty (or gone): then it is not only ours
                    d.rmdir()
            reason = str(e).splitlines()[-1] if str(e) else type(e).__name__
            raise DataNotFound(f"MNIST not found in {raw} and the download failed ({reason}); {HINT}") from None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``; to a GPU through pinned memory and without waiting for the copy, so that a
    training step's small host-made tensors (angles, mask keys) never stall its stream."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


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
