"""Dropout masks as counter-based draws: a pure function of (dropout seed, epoch, step, call, element index).

A mask element does not depend on anything else: not on the other seeds trained beside it, their number or order,
the memory layout, the thread count, or the device. So one seed draws the same masks alone or in a block of 16
(:func:`cnn.train.train`), on a CPU or a GPU.

* ``key(seed, epoch, step, call)``: 32 bits from splitmix64 over the four words (Python integers). ``call`` counts
  the dropout calls of one forward pass, from 0.
* Element ``i`` of a seed's activation ``(B, C, H, W)``, counted in logical (NCHW, row-major) order whatever its memory
  layout, is kept when ``hash32((i * 0x61C88647 mod 2**32) ^ key) >= threshold(p)``, with ``hash32`` the
  ``[16 21f0aaad 15 735a2d97 15]`` xor-shift-multiply integer hash (C. Wellons, "hash-prospector"): a bijection on
  32 bits with low bias; ``threshold(p) = floor(p * 2**32)``, so an element is dropped with probability ``p`` to 2**-32.
* Kept elements are scaled by ``1 / (1 - p)`` in float32, as ``nn.Dropout`` does.

Two implementations give the same bits: numpy ``uint32`` on a CPU (wrapping arithmetic; 1.3x cheaper here than the
mt19937 ``uniform_`` it replaces, benchmarks/), and torch ``int64`` on any other device (every product stays below
2**63, so nothing overflows). :func:`multiplier` picks by device; tests compare the two on the CPU.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from cnn.data import to_device

M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
SPREAD, MUL1, MUL2 = 0x61C88647, 0x21F0AAAD, 0x735A2D97  # all odd and below 2**31 (see the int64 path)


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def key(seed: int, epoch: int, step: int, call: int) -> int:
    """The 32-bit key of one dropout call: seed = the run's dropout stream seed, epoch from 1, step = optimizer step
    within the epoch from 0, call = dropout call within the forward pass from 0."""
    z = _splitmix64(seed)
    for word in (epoch, step, call):
        z = _splitmix64(z ^ word)
    return z & M32


def threshold(p: float) -> int:
    return int(p * 2**32)


def multiplier(x: torch.Tensor, keys: Sequence[int] | torch.Tensor, p: float, via: str | None = None) -> torch.Tensor:
    """The dropout multiplier (0 or ``1 / (1 - p)``, float32) for ``x`` of shape ``(B, S * C, H, W)`` holding
    ``S = len(keys)`` seeds' activations side by side in channels (seed s owns channels ``s*C ... s*C + C - 1``), in
    ``x``'s memory format (channels_last or contiguous). One seed: ``S = 1``. ``via``: ``numpy`` or ``torch``, by
    default numpy on a CPU and torch elsewhere (tests run the torch path on the CPU). ``keys`` may be an int64 tensor
    on ``x``'s device, so that the torch path draws without copying anything to the device."""
    if x.dim() != 4:
        raise ValueError(f"dropout masks are drawn for (B, C, H, W) activations, not {tuple(x.shape)}")
    B, SC, H, W = x.shape
    S = len(keys)
    last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    scale = 1 / (1 - p)
    if (via or ("numpy" if x.device.type == "cpu" else "torch")) == "numpy":
        keys = keys.tolist() if isinstance(keys, torch.Tensor) else keys
        m = torch.from_numpy(_multiplier_numpy(tuple(keys), (B, SC // S, H, W), threshold(p), scale, last))
        m = m.to(x.device)
    else:
        if not isinstance(keys, torch.Tensor):
            keys = torch.tensor(keys, dtype=torch.int64, device=x.device)
        m = _keep_torch(keys, (B, SC // S, H, W), threshold(p), last, x.device).to(torch.float32) * scale
    # m is in memory order: (B, H, W, S, C) for channels_last, (B, S, C, H, W) otherwise
    return m.view(B, H, W, SC).permute(0, 3, 1, 2) if last else m.view(B, SC, H, W)


@functools.lru_cache(maxsize=64)
def _counters_numpy(shape: tuple[int, int, int, int], last: bool) -> np.ndarray:
    """``i * SPREAD mod 2**32`` for each element index ``i`` of one seed's (B, C, H, W), laid out as
    (B, H, W, 1, C) for channels_last or (B, 1, C, H, W) otherwise, ready to broadcast over seeds."""
    B, C, H, W = shape
    i = np.arange(B * C * H * W, dtype=np.uint32).reshape(B, C, H, W)
    i *= np.uint32(SPREAD)
    i = np.ascontiguousarray(i.transpose(0, 2, 3, 1))[:, :, :, None, :] if last else i[:, None]
    i.flags.writeable = False  # cached: shared by every call with this shape
    return i


def _multiplier_numpy(keys: tuple[int, ...], shape, thr: int, scale: float, last: bool) -> np.ndarray:
    """float32 multipliers in memory order, the batch split over torch's CPU threads: numpy's ufuncs release the GIL,
    and one thread alone took 18 % of a 2-thread block step (benchmarks/bench_block.py). Each element is a function
    of its own index and key only, so the split changes no bit."""
    counters = _counters_numpy(shape, last)
    k = np.asarray(keys, dtype=np.uint32)
    k = k[:, None] if last else k[:, None, None, None]
    B, C, H, W = shape
    out = np.empty((B, H, W, len(keys), C) if last else (B, len(keys), C, H, W), np.float32)

    def part(rows: slice) -> None:
        v = counters[rows] ^ k
        v ^= v >> np.uint32(16)
        v *= np.uint32(MUL1)
        v ^= v >> np.uint32(15)
        v *= np.uint32(MUL2)
        v ^= v >> np.uint32(15)
        np.multiply(v >= np.uint32(thr), np.float32(scale), out=out[rows])

    n = min(torch.get_num_threads(), B)
    cuts = [B * i // n for i in range(n + 1)]
    slices = [slice(a, b) for a, b in zip(cuts, cuts[1:])]
    if n == 1:
        part(slices[0])
    else:
        list(_pool().map(part, slices))
    return out


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="cnn-draws")


@functools.lru_cache(maxsize=64)
def _counters_torch(shape: tuple[int, int, int, int], last: bool, device: str) -> torch.Tensor:
    """:func:`_counters_numpy` as an int64 tensor on ``device`` (cached: one arange per layer shape, not per step)."""
    B, C, H, W = shape
    i = (torch.arange(B * C * H * W, dtype=torch.int64, device=device).view(B, C, H, W) * SPREAD) & M32
    return i.permute(0, 2, 3, 1)[:, :, :, None, :].contiguous() if last else i[:, None]


def _keep_torch(k: torch.Tensor, shape, thr: int, last: bool, device) -> torch.Tensor:
    """:func:`_multiplier_numpy`'s keep decisions for the keys ``k`` (S,), bit for bit, with int64 tensors holding
    32-bit values: every product stays below 2**63."""
    v = _counters_torch(shape, last, str(device)) ^ (k[:, None] if last else k[:, None, None, None])
    v ^= v >> 16
    v = (v * MUL1) & M32
    v ^= v >> 15
    v = (v * MUL2) & M32
    v ^= v >> 15
    return (v >= thr).contiguous()


class Masks:
    """The mask source of one training forward pass for S seeds (their dropout stream seeds, in block order): a
    trainer calls :meth:`at` before each forward, and each :class:`cnn.models.Dropout` call draws the next ``call``.

    On a GPU the keys of a step's calls are copied to it once per step, from pinned memory without waiting, so that
    drawing a mask never stalls the stream; the first step, which learns how many calls a forward makes, copies its
    keys call by call."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = tuple(seeds)
        self.device = torch.device(device)
        self.epoch = self.step = self.call = 0
        self.calls = 0  # dropout calls per forward, once a forward has run
        self.keys: torch.Tensor | None = None  # (calls, S) int64 on the device: this step's keys

    def at(self, epoch: int, step: int) -> None:
        self.epoch, self.step, self.call = epoch, step, 0
        if self.device.type != "cpu" and self.calls:
            table = [[key(s, epoch, step, c) for s in self.seeds] for c in range(self.calls)]
            self.keys = to_device(torch.tensor(table, dtype=torch.int64), self.device)

    def __call__(self, x: torch.Tensor, p: float) -> torch.Tensor:
        call, self.call = self.call, self.call + 1
        if self.keys is not None and call < len(self.keys):
            return multiplier(x, self.keys[call], p)
        self.calls = max(self.calls, self.call)
        return multiplier(x, [key(s, self.epoch, self.step, call) for s in self.seeds], p)

    def attach(self, model: torch.nn.Module) -> None:
        """Make every :class:`cnn.models.Dropout` of ``model`` draw from this source."""
        from cnn.models import Dropout

        for m in model.modules():
            if isinstance(m, Dropout):
                m.masks = self
