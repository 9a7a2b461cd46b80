"""S networks of one architecture as one: the batched network that :func:`cnn.train.train` trains S seeds with.

The block is the step's own network with every layer widened S times and split into S groups (:func:`stack`): a
``Conv2d(cin, cout)`` becomes ``Conv2d(S*cin, S*cout, groups=S)``, a ``BatchNorm2d(c)`` becomes
``BatchNorm2d(S*c)`` (so each seed's channels keep their own batch statistics and running averages), a
``Linear`` becomes a batched matmul. Seed s owns channels ``s*c ... s*c + c - 1`` of every activation, its own image
batch enters as input channel s, and the step's own ``forward`` runs unchanged on ``(B, S*c, H, W)``: every other
layer (activations, pools, interpolation, the channel gate, the skips) acts per channel. Every kernel does S
models' work for one call, and every parameter keeps one leading "rows" axis that splits into S equal chunks, one
per seed. A block of one is the network itself, so one seed trains with exactly its own kernels.

Why grouped convolutions and not ``torch.func.stack_module_state`` + ``vmap``: vmap's batching rule turns a
convolution with batched weights into this same grouped convolution, but on NCHW tensors (a copy in and out of
channels_last per layer), needs BatchNorm's running statistics and the dropout masks threaded through by hand, and
on this CPU ran 0.38-0.83x the speed of S separate models where the grouped channels_last block ran 0.77-1.94x
(S = 2, 4, 8 on 1 and 2 threads, s001-model3 and s004-exp1; benchmarks/results/batching-cpu.txt). With S*c
channels, channels_last BatchNorm and elementwise layers vectorise over a wide last axis: BatchNorm's share fell
from 10.5 to 4.7 ms per model-step at S=8.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn


class GroupedLinear(nn.Module):
    """S independent ``Linear(n_in, n_out)`` layers. Input ``(B, S*n_in)`` (seed-major, as a grouped conv's output
    flattens) or ``(B, S, n_in)``; output ``(B, S, n_out)``, so a following ``log_softmax(dim=-1)`` stays per seed.
    Weight ``(S*n_out, n_in)`` and bias ``(S*n_out,)``: seed s's rows are its ``nn.Linear`` weight and bias."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        self.groups, self.n_in, self.n_out = len(linears), linears[0].in_features, linears[0].out_features
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]))
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears])) if linears[0].bias is not None else None

    def forward(self, x):
        S = self.groups
        x = x.reshape(x.shape[0], S, self.n_in).transpose(0, 1)  # (S, B, n_in)
        w = self.weight.view(S, self.n_out, self.n_in).transpose(1, 2)  # (S, n_in, n_out)
        out = torch.bmm(x, w) if self.bias is None else torch.baddbmm(self.bias.view(S, 1, self.n_out), x, w)
        return out.transpose(0, 1)  # (B, S, n_out)


STACKABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)  # the layers with parameters or buffers that stack() splits


def unstackable(model: nn.Module) -> str | None:
    """The first layer of ``model`` that :func:`stack` cannot split per seed (it has parameters or buffers of its own
    and is none of :data:`STACKABLE`), as ``Type (name)``; None when every layer stacks."""
    for name, module in model.named_modules():
        if _has_state(module) and not isinstance(module, STACKABLE):
            return f"{type(module).__name__} ({name})"
    return None


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def stack(models: Sequence[nn.Module]) -> nn.Module:
    """One network computing ``len(models)`` networks of one architecture side by side (see the module docstring).

    Input ``(B, S, H, W)``: channel s is seed s's image. Output: the architecture's own output for ``(B, S*10, 1, 1)``
    logits, which is ``(B*S, 10)`` (``view(-1, 10)``) or ``(B, S, 10)`` (after a :class:`GroupedLinear`);
    :func:`per_seed` reshapes either to ``(B, S, 10)``. One model is returned as it is. Raises on a layer with
    parameters or buffers it cannot split.
    """
    S = len(models)
    if S == 1:
        return models[0]
    block = copy.deepcopy(models[0])
    named = [dict(m.named_modules()) for m in models]
    for name, module in list(block.named_modules()):
        parts = [n[name] for n in named]
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                module.in_channels * S,
                module.out_channels * S,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                groups=module.groups * S,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(module.num_features * S, module.eps, module.momentum, module.affine)
        elif isinstance(module, nn.Linear):
            new = GroupedLinear(parts)
        elif not _has_state(module):
            continue
        else:
            raise TypeError(f"cannot stack {type(module).__name__} ({name}): no per-seed split for its parameters")
        with torch.no_grad():
            for key, t in new.state_dict().items():
                rows = [p.state_dict()[key] for p in parts]
                t.copy_(torch.cat(rows) if t.dim() else rows[0])
        parent, _, attr = name.rpartition(".")
        setattr(block.get_submodule(parent) if parent else block, attr, new)
    return block


def per_seed(out: torch.Tensor, S: int) -> torch.Tensor:
    """The block's output as ``(B, S, 10)``."""
    return out.reshape(-1, S, out.shape[-1])


def seed_rows(t: torch.Tensor, S: int, s: int) -> torch.Tensor:
    """Seed s's part of a block tensor: its chunk of the leading axis; a 0-dim tensor (BatchNorm's batch count) is
    shared."""
    return t.chunk(S)[s] if t.dim() else t
