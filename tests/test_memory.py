"""Device memory of a block, known before a sweep starts: the meta-device estimate, blocks sized to a trial's share of
a GPU, and evaluation that never forwards more than a training batch. CPU only; the GPU checks are in test_gpu.py."""

import dataclasses

import torch
from typer.testing import CliRunner

from cnn import memory
from cnn.block import per_seed, stack
from cnn.train import Run, evaluate
from sweeps.cli import app


def test_the_estimate_grows_with_the_block_and_the_batch():
    run = Run.plan("s002-net1", 0)
    one, four, sixteen = (memory.peak_bytes(run, S) for S in (1, 4, 16))
    assert one < four < sixteen
    assert (sixteen - four) / 12 == (four - one) / 3  # per seed, the same bytes: S copies of one network
    half = dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, batch_size=64))
    assert memory.peak_bytes(half, 16) < sixteen
    # the reading: about 6 GB at S = 16 for the 6.38M baselines, before the context's allowance
    assert 4 * 2**30 < sixteen - memory.OVERHEAD < 8 * 2**30


def test_the_meta_estimate_counts_what_a_real_training_forward_saves():
    """The bytes autograd saves for backward, on the meta device and in a real CPU forward of a block of 3."""
    run = Run.plan("s001-model3", 0)
    S, b = 3, run.recipe.batch_size
    saved = []

    def keep(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(0)
    model = stack([run.spec.build(run.recipe) for _ in range(S)]).to(memory_format=torch.channels_last)
    x = torch.randn(b, S, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        per_seed(model(x), S)
    weights = sum(p.numel() for p in model.parameters()) * 4
    data = 70_000 * (28 * 28 + 8) + S * 60_000 * 8
    rest = memory.peak_bytes(run, S) - memory.OVERHEAD - data - 3 * weights
    assert sum(saved) <= rest <= sum(saved) * 1.5  # plus the two largest activations of the backward


def test_evaluation_forwards_at_most_a_training_batch(tiny):
    run = Run.plan("s004-exp1", 0)
    S = 4
    model = stack([run.spec.build(run.recipe) for _ in range(S)]).to(memory_format=torch.channels_last)
    seen = []
    model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].shape[0]))
    small = dataclasses.replace(run.recipe, batch_size=64)
    _, correct, _ = evaluate(model, tiny, small, torch.autocast("cpu", enabled=False), S)
    assert max(seen) == 64 and sum(seen) == len(tiny.test_y) and len(correct) == S


def test_blocks_are_halved_to_fit_a_trials_share_of_a_gpu(tmp_path, data_dir):
    """A block of 16 of the 6.38M baseline needs about 6.6 GiB; a quarter of a 24 GiB GPU is 6 GiB: 8 per trial."""
    args = ["run", "s002-net1", "s001-model3", "--seeds", "16", "--gpus-per-trial", "0.25", "--gpu-memory", "24"]
    res = CliRunner().invoke(app, [*args, "--dry-run", "--out", str(tmp_path / "r"), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert "s002-net1: 8 seeds per trial, not 16: a block of 16 needs about 6.6 GiB" in res.stdout
    assert "s001-model3:" not in res.stdout  # a block of 16 small networks fits
