"""What only a GPU can show: draws and rotation equal the CPU's, checkpoints move between devices, a block stays under
its memory estimate, sweeps through Ray on fractional GPUs, repeatable rows, and CPU and GPU agreeing in
distribution. Every test here is marked ``gpu`` and skips without CUDA (``pytest -m gpu``;
``benchmarks/gpu_check.py`` runs them on a GPU machine)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from cnn import draws, memory
from cnn.data import MNIST, random_angles, rotate
from cnn.train import METRICS, Run, train
from sweeps.runner import SweepConfig, run_sweep
from tests.test_sweeps import KEY, KillWorkerOnce
from tests.test_train import alone, metrics

pytestmark = pytest.mark.gpu


def test_masks_on_cuda_equal_the_numpy_path_bit_for_bit():
    keys = [draws.key(s, 3, 17, 2) for s in (5, 6, 7)]
    for fmt in (torch.channels_last, torch.contiguous_format):
        x = torch.empty(64, 3 * 12, 10, 10).contiguous(memory_format=fmt)
        cpu = draws.multiplier(x, keys, 0.1, via="numpy")
        cuda = draws.multiplier(x.cuda(), torch.tensor(keys, device="cuda"), 0.1)
        assert torch.equal(cuda.cpu(), cpu), fmt


def test_a_steps_masks_come_from_keys_copied_once_per_step():
    masks = draws.Masks([5, 6], "cuda")
    x = torch.empty(8, 2 * 4, 6, 6, device="cuda").contiguous(memory_format=torch.channels_last)
    masks.at(1, 0)
    first = [masks(x, 0.1) for _ in range(3)]  # the first step learns how many calls a forward makes
    masks.at(1, 0)  # from now on, a step's keys are on the GPU before its forward
    assert masks.keys is not None and masks.keys.shape == (3, 2) and masks.keys.device.type == "cuda"
    assert all(torch.equal(masks(x, 0.1), m) for m in first)


def test_the_rotation_on_cuda_equals_the_cpus_pixel_for_pixel(mnist):
    x = mnist.train_x[:512].unsqueeze(1).float() / 255
    angles = random_angles(512, 7.0, torch.Generator().manual_seed(0), "cpu")
    cpu = rotate(x, angles, 1 / 255)
    cuda = rotate(x.cuda(), angles.cuda(), 1 / 255).cpu()
    assert torch.equal(cuda, cpu), f"{(cuda != cpu).sum().item()} of {cpu.numel()} pixels differ"


@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_the_other_device(first, then, tiny, tmp_path):
    run = Run.plan("s004-exp3", 2, epochs=2, threads=1, device=first)
    torch.save(next(train([run], tiny)).seeds[2].state(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    (resumed,) = alone(dataclasses.replace(run, device=then), tiny, resume=state)
    whole = metrics(alone(run, tiny))[1]
    assert resumed.record.epoch == 2 and resumed.record.lr == whole["lr"]
    assert resumed.record.train_loss == pytest.approx(whole["train_loss"], rel=0.05)  # devices round differently


def test_a_block_of_16_of_the_big_baseline_stays_under_its_estimate(mnist):
    n = 10 * 128  # ten training batches: the peak is a training step's, whatever the epoch's length
    data = MNIST(mnist.train_x[:n], mnist.train_y[:n], mnist.test_x, mnist.test_y)
    base = Run.plan("s002-net1", 0, epochs=1, device="cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    list(train([dataclasses.replace(base, seed=s) for s in range(16)], data))
    peak = torch.cuda.max_memory_allocated()
    estimate = memory.peak_bytes(base, 16, n_train=n)
    assert peak <= estimate - memory.OVERHEAD, (peak / 2**30, estimate / 2**30)
    assert peak >= 0.5 * (estimate - memory.OVERHEAD), "the estimate is far above what a block takes"


QUICK = dict(steps=("s003-model4",), seeds=4, epochs=2, quick=True, gpus_per_trial=0.25, seeds_per_trial=2)


def test_a_sweep_on_fractional_gpus_writes_rows_once_and_a_killed_trial_resumes(ray_session, tiny, tmp_path):
    undisturbed = run_sweep(SweepConfig(**QUICK, out=tmp_path / "a"), data=tiny)
    kill = KillWorkerOnce("s003-model4", "0+1", tag="quick")
    killed = run_sweep(SweepConfig(**QUICK, out=tmp_path / "b", max_failures=2), data=tiny, callbacks=[kill])
    assert len(undisturbed.trained) == len(killed.trained) == 4 and kill.killed_at is not None
    a, b = (pd.read_parquet(tmp_path / d / "epochs").sort_values(KEY).reset_index(drop=True) for d in "ab")
    assert len(a) == 8 and not a.duplicated(KEY).any() and (a["device"] != "cpu").all()
    pd.testing.assert_frame_equal(a[KEY + list(METRICS)], b[KEY + list(METRICS)])  # deterministic on the GPU


def test_vary_none_gives_identical_rows_on_the_gpu(ray_session, tiny, tmp_path):
    summary = run_sweep(SweepConfig(**QUICK, out=tmp_path / "r", vary="none"), data=tiny)
    assert len(summary.trained) == 4
    rows = pd.read_parquet(tmp_path / "r" / "epochs")
    assert rows.groupby("epoch")[list(METRICS)].nunique().eq(1).all().all()


def test_cpu_and_gpu_agree_in_distribution(mnist):
    """Ten seeds of one quick epoch on each device: the mean test accuracies differ by less than three standard
    errors of their difference. The devices round differently, so seeds differ run by run, not in distribution."""
    acc = {}
    for device in ("cpu", "cuda"):
        base = Run.plan("s004-exp1", 0, quick=True, device=device)
        epochs = list(train([dataclasses.replace(base, seed=s) for s in range(10)], mnist))
        acc[device] = np.array([e.record.test_acc for e in epochs[-1].seeds.values()])
    se = np.sqrt(acc["cpu"].var(ddof=1) / 10 + acc["cuda"].var(ddof=1) / 10)
    assert abs(acc["cpu"].mean() - acc["cuda"].mean()) < 3 * se + 1e-9, acc
