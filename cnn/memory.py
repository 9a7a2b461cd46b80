"""How much device memory training a block of S seeds takes, worked out on the ``meta`` device: shapes without
storage, so no GPU and no memory are needed to know it before a sweep starts.

The estimate (:func:`peak_bytes`) adds what :func:`cnn.train.train` holds at once on the device:

* the data set as uint8 images and int64 labels, and each seed's data order for the epoch;
* the parameters, their gradients and SGD's momentum: three copies of the block's weights;
* the activations one training step keeps for its backward (every tensor autograd saves, counted as if none shared
  memory, which overstates a little), plus the two largest activations alive at once in the backward;
* evaluation needs no more: it forwards at most a training batch of images at a time, without saving anything.

A fixed allowance covers the CUDA context, cuDNN's workspace and the caching allocator's rounding
(:data:`OVERHEAD`). The estimate is checked against a real block's peak by ``benchmarks/gpu_check.py`` on a GPU.
"""

from __future__ import annotations

import torch

from cnn.block import per_seed, stack

OVERHEAD = 1 << 30  # bytes: CUDA context (~0.5 GiB), cuDNN workspace, allocator rounding
FLOAT = 4  # bytes per fp32 value; bf16 autocast keeps fp32 weights and saves some activations in bf16


def peak_bytes(run, S: int, n_train: int = 60_000, n_test: int = 10_000) -> int:
    """Estimated peak device memory, in bytes, of training S seeds of ``run``'s step (a ``cnn.train.Run``) as one
    block: see the module docstring."""
    recipe = run.recipe
    with torch.device("meta"):
        model = stack([run.spec.build(recipe) for _ in range(S)]).to(memory_format=torch.channels_last)
        weights = sum(p.numel() for p in model.parameters()) * FLOAT
        saved, largest = [], [0, 0]

        def keep(t: torch.Tensor):
            saved.append(t.numel() * t.element_size())
            return t

        def track(module, inputs, output):
            if isinstance(output, torch.Tensor):
                largest[:] = sorted([*largest, output.numel() * output.element_size()])[-2:]

        hooks = [m.register_forward_hook(track) for m in model.modules()]
        x = torch.empty(recipe.batch_size, S, 28, 28).contiguous(memory_format=torch.channels_last)
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = per_seed(model(x), S)
        for h in hooks:
            h.remove()
        del out
    data = (n_train + n_test) * (28 * 28 + 8) + S * n_train * 8
    return data + 3 * weights + sum(saved) + sum(largest) + OVERHEAD


def largest_block(run, S: int, budget: int) -> int:
    """The largest of S, S/2, S/4, ..., 1 whose :func:`peak_bytes` fits in ``budget`` bytes; 0 when not even one seed
    does."""
    while S >= 1 and peak_bytes(run, S) > budget:
        S //= 2
    return S
