"""Seeds trained as one block on real MNIST, CPU: per-seed networks, draws, BatchNorm and schedules; agreement with
the same seeds trained alone; determinism; resume; failure."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from cnn import draws, zoo
from cnn.block import per_seed, stack
from cnn.data import MNIST
from cnn.draws import Masks
from cnn.train import METRICS, Run, check_block, train
from tests.test_train import alone, metrics


def runs(step: str, seeds, **options) -> list[Run]:
    first = Run.plan(step, seeds[0], threads=1, **options)
    return [dataclasses.replace(first, seed=s) for s in seeds]


def records(block_epochs, seed) -> list[dict]:
    return metrics(b.seeds[seed] for b in block_epochs if seed in b.seeds)


def single(run, data, resume=None) -> list[dict]:
    return metrics(alone(run, data, resume))


def close(a: list[dict], b: list[dict], rel: float) -> bool:
    """Records equal in every count and lr, and within ``rel`` in every loss and accuracy."""
    assert len(a) == len(b)
    return all(x[k] == pytest.approx(y[k], rel=rel, abs=rel) for x, y in zip(a, b) for k in METRICS)


@pytest.fixture(scope="module")
def first_steps(tiny) -> MNIST:
    """The first 4 batches of 64 of the tiny set: one epoch is 4 optimizer steps."""
    return MNIST(tiny.train_x[:256], tiny.train_y[:256], tiny.test_x, tiny.test_y)


# --- the stacked network ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", zoo.list_steps())
def test_stacked_network_computes_each_seed_network(step, tiny):
    """Training-mode forward with per-seed inputs, BatchNorm batch statistics, running averages and dropout masks:
    the block's seed s is network s, for every layer type in the zoo."""
    S, B = 3, 4
    recipe = zoo.get_step(step).recipe
    nets = []
    for s in range(S):
        torch.manual_seed(100 + s)
        nets.append(zoo.get_step(step).build(recipe))
    block = stack(nets)
    x = torch.stack([tiny.train_x[s * B : (s + 1) * B].float() / 255 for s in range(S)], 1)  # (B, S, 28, 28)
    sources = [Masks([7, 8, 9]), *(Masks([7 + s]) for s in range(S))]
    for source, m in zip(sources, (block, *nets)):
        source.attach(m)
        source.at(1, 0)
        m.train()
    out = per_seed(block(x), S)
    for s, net in enumerate(nets):
        torch.testing.assert_close(out[:, s], net(x[:, s : s + 1]), rtol=1e-5, atol=1e-5)
    bns = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for s, net in enumerate(nets):
        for bn, own in zip(bns, [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]):
            c = own.num_features
            torch.testing.assert_close(bn.running_mean[s * c : (s + 1) * c], own.running_mean)
            torch.testing.assert_close(bn.running_var[s * c : (s + 1) * c], own.running_var)


# --- draws -----------------------------------------------------------------------------------------------------------


def test_a_seeds_masks_do_not_depend_on_its_block_layout_or_device_path():
    """Seed 22's mask alone, at position 1 of 3 and at position 3 of 4, in channels_last or NCHW, through the numpy
    (CPU, on 1 or 3 threads) or the torch int64 (GPU) path: the same bits."""
    C, call = 6, (2, 5, 1)  # epoch, step, dropout call
    keys = {s: draws.key(s, *call) for s in (11, 22, 33, 44)}
    alone = draws.multiplier(torch.empty(8, C, 9, 9), [keys[22]], 0.1)
    for order in ([11, 22, 33], [33, 44, 11, 22]):
        pos = order.index(22)
        for fmt in (torch.channels_last, torch.contiguous_format):
            x = torch.empty(8, len(order) * C, 9, 9).contiguous(memory_format=fmt)
            for via, threads in (("numpy", 1), ("numpy", 3), ("torch", 1)):  # numpy splits the batch over threads
                torch.set_num_threads(threads)
                m = draws.multiplier(x, [keys[s] for s in order], 0.1, via=via)
                assert m.is_contiguous(memory_format=fmt)
                assert torch.equal(m[:, pos * C : (pos + 1) * C], alone), (order, fmt, via, threads)
    torch.set_num_threads(1)


def test_masks_are_bernoulli_and_change_with_every_key_word():
    p, shape = 0.25, (64, 10, 12, 12)
    base = draws.multiplier(torch.empty(shape), [draws.key(5, 1, 0, 0)], p) > 0
    assert base.float().mean().item() == pytest.approx(1 - p, abs=0.005)  # 92,160 draws: sd 0.0014
    for other in ((6, 1, 0, 0), (5, 2, 0, 0), (5, 1, 1, 0), (5, 1, 0, 1)):
        m = draws.multiplier(torch.empty(shape), [draws.key(*other)], p) > 0
        agree = (m == base).float().mean().item()
        assert agree == pytest.approx(p**2 + (1 - p) ** 2, abs=0.01), other  # independent masks
    kept = draws.multiplier(torch.empty(shape), [draws.key(5, 1, 0, 0)], p)
    assert kept.unique().tolist() == [0.0, float(np.float32(1 / (1 - p)))]


def test_a_seeds_records_and_generators_do_not_depend_on_its_block(tiny):
    """Seed 5 alone, at position 2 of 3 and at position 3 of 4: its order and angle generators end in the same state
    (bit for bit), and its records agree to float rounding; a single different draw would move them by far more."""
    step = "s001-model3"  # rotation, dropout, GELU, skips
    ends, recs = [], []
    for seeds in ([5], [3, 5, 9], [9, 7, 5, 1]):
        out = list(train(runs(step, seeds, epochs=2), tiny))
        ends.append(out[-1].seeds[5].state()["rng"])
        recs.append(records(out, 5))
    for end, rec in zip(ends[1:], recs[1:]):
        assert all(torch.equal(end[g], ends[0][g]) for g in ("order", "augment"))
        assert close(rec, recs[0], rel=1e-5)
    assert recs[0][0]["train_loss"] != single(runs(step, [6], epochs=1)[0], tiny)[0]["train_loss"]


# --- agreement with the seeds trained alone -------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["s001-model3", "s004-exp1", "s003-model3-aug"])
def test_a_block_agrees_with_its_seeds_trained_alone_over_the_first_steps(step, first_steps):
    """4 optimizer steps of 64 images (s004-exp1: 2 of 128), then the test set: every seed of a block of 3 matches its
    run alone within float rounding, and its weights too. (Not its momentum to that precision: by step 2-4 a
    near-tie in a max-pool can send one gradient to the neighbouring pixel, here 1e-3 of the buffer's scale.)"""
    block_runs = runs(step, [0, 1, 2], epochs=1)
    (epoch,) = list(train(block_runs, first_steps))
    for run in block_runs:
        (one,) = alone(run, first_steps)
        assert close(metrics([epoch.seeds[run.seed]]), metrics([one]), rel=1e-5)
        own, theirs = epoch.seeds[run.seed].state(), one.state()
        for k, v in theirs["model"].items():
            # weights are O(0.1-1) and 4 steps move them by ~1e-3; rounding leaves them within 1e-5
            torch.testing.assert_close(own["model"][k], v, rtol=1e-4, atol=3e-5)


def test_block_repeats_bit_for_bit(tiny, device):
    block_runs = runs("s001-model3", [0, 1, 2], epochs=2, device=device)  # gate, skips, GELU, dropout
    first, second = (list(train(block_runs, tiny)) for _ in range(2))
    for seed in (0, 1, 2):
        assert records(first, seed) == records(second, seed)
        assert torch.equal(first[-1].seeds[seed].predictions, second[-1].seeds[seed].predictions)


# --- per-seed BatchNorm and learning-rate schedule ------------------------------------------------------------------


def test_per_seed_batchnorm_statistics_match_single_runs(first_steps):
    block_runs = runs("s004-exp1", [3, 4], epochs=1)
    (epoch,) = list(train(block_runs, first_steps))
    for run in block_runs:
        (one,) = alone(run, first_steps)
        for k, v in one.state()["model"].items():
            if "running" in k:
                torch.testing.assert_close(epoch.seeds[run.seed].state()["model"][k], v, rtol=1e-4, atol=1e-6)


def test_a_block_mixes_a_seed_whose_lr_has_dropped_with_one_whose_lr_has_not(tiny):
    """s004-exp3 (ReduceLROnPlateau on test accuracy, lr 0.1, patience 2). After epoch 1, seed 1's plateau scheduler
    is told its best accuracy is 100 % and its patience is spent: its lr drops to 0.01 after epoch 2. Seed 2's cannot
    drop before epoch 4. In one block, each seed follows its own schedule and matches its single-seed run; with one
    lr for both, seed 1's epoch-3 training loss would move by percents."""
    block_runs = runs("s004-exp3", [1, 2], epochs=3)
    states = {seed: e.state() for seed, e in next(train(block_runs, tiny)).seeds.items()}
    kept = copy.deepcopy(states[1])
    states[1]["scheduler"].update(best=100.0, num_bad_epochs=block_runs[0].recipe.patience)
    out = list(train(block_runs, tiny, resume=states))
    assert [b.seeds[1].record.lr for b in out] == [0.1, pytest.approx(0.01)]
    assert [b.seeds[2].record.lr for b in out] == [0.1, 0.1]
    for run in block_runs:
        one = single(run, tiny, resume=states[run.seed])
        assert [r["lr"] for r in records(out, run.seed)] == [r["lr"] for r in one]
        # lr 0.1 amplifies rounding fast: by epoch 3 the training loss parts by up to 1e-3
        assert [r["train_loss"] for r in records(out, run.seed)] == pytest.approx([r["train_loss"] for r in one], 3e-3)
    # had seed 1 kept lr 0.1 in epoch 3, its training loss would be elsewhere
    undropped = single(block_runs[0], tiny, resume=kept)[1]["train_loss"]
    assert abs(undropped - out[1].seeds[1].record.train_loss) > 10 * 3e-3 * undropped


# --- resume and failure ---------------------------------------------------------------------------------------------


def test_a_killed_block_resumes_with_identical_rows(tiny, tmp_path, device):
    block_runs = runs("s004-exp3", [0, 1, 2], epochs=3, device=device)  # plateau scheduler state must survive too
    whole = list(train(block_runs, tiny))
    it = train(block_runs, tiny)
    first = next(it)
    for seed, e in first.seeds.items():
        torch.save(e.state(), tmp_path / f"{seed}.pt")
    next(it)  # the block runs on past the checkpoint and is dropped: a killed worker
    saved = {s: torch.load(tmp_path / f"{s}.pt", weights_only=True) for s in (0, 1, 2)}
    resumed = list(train(block_runs, tiny, resume=saved))
    for seed in (0, 1, 2):
        assert records(resumed, seed) == records(whole[1:], seed)
        assert [b.seeds[seed].record.block_size for b in resumed] == [3, 3]
    # a seed's state is the same whatever its block: a seed of the block can finish alone
    one = single(block_runs[1], tiny, resume=saved[1])
    ours = records(whole[1:], 1)
    assert [r["lr"] for r in one] == [r["lr"] for r in ours]
    assert [r["train_loss"] for r in one] == pytest.approx([r["train_loss"] for r in ours], 3e-3)  # lr 0.1


def test_a_failed_seed_is_reported_and_the_others_finish_untouched(tiny, device):
    """Seed 1's weights are NaN in its epoch-1 checkpoint: in epoch 2 it fails alone, and seeds 0 and 2 get the
    same records, bit for bit, as in a block where nothing failed."""
    block_runs = runs("s003-model4", [0, 1, 2], epochs=3, device=device)
    states = {s: e.state() for s, e in next(train(block_runs, tiny)).seeds.items()}
    clean = list(train(block_runs, tiny, resume=states))
    poisoned = {**states, 1: {**states[1], "model": {**states[1]["model"]}}}
    poisoned[1]["model"]["convblock1.0.weight"] = torch.full_like(states[1]["model"]["convblock1.0.weight"], np.nan)
    out = list(train(block_runs, tiny, resume=poisoned))
    assert list(out[0].failed) == [1] and "training loss nan in epoch 2" in out[0].failed[1]
    assert [sorted(b.seeds) for b in out] == [[0, 2], [0, 2]] and not out[1].failed
    for seed in (0, 2):
        assert records(out, seed) == records(clean, seed)
    (only,) = list(train([block_runs[1]], tiny, resume={1: poisoned[1]}))  # alone, it fails and training ends
    assert only.seeds == {} and "training loss nan in epoch 2" in only.failed[1]


def test_a_block_is_one_step_and_recipe_with_distinct_seeds():
    check_block(runs("s003-model4", [0, 1]))
    with pytest.raises(ValueError, match="differ in step"):
        check_block([*runs("s003-model4", [0]), *runs("s004-exp1", [1])])
    with pytest.raises(ValueError, match="differ in recipe"):
        check_block([*runs("s003-model4", [0], epochs=2), *runs("s003-model4", [1], epochs=3)])
    with pytest.raises(ValueError, match="each seed once"):
        check_block(runs("s003-model4", [0, 0]))


def test_every_zoo_network_stacks_and_a_layer_without_a_per_seed_split_is_named():
    from cnn.block import unstackable

    assert [s for s in zoo.list_steps() if unstackable(zoo.get_step(s).model())] == []
    odd = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.LayerNorm([4, 26, 26]))
    assert unstackable(odd) == "LayerNorm (1)"
    with pytest.raises(TypeError, match=r"cannot stack LayerNorm \(1\)"):
        stack([odd, copy.deepcopy(odd)])
    assert stack([odd]) is odd  # one seed: the network itself, whatever its layers
