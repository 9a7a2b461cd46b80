"""`--vary`: which random streams the seed drives. Streams, rows, pooling and resume, on tiny real MNIST and Ray."""

import pandas as pd
import pytest
import torch

from analysis.load import load_results
from cnn.train import METRICS, STREAMS, Run, Seeds, parse_vary
from sweeps import BadSweep, layout
from sweeps.runner import SweepConfig, run_sweep
from tests.test_sweeps import KEY, KillWorkerOnce
from tests.test_train import alone, metrics

VARY = dict(steps=("s003-model4",), seeds=3, epochs=2, quick=True)


def initial_weights(run: Run) -> list[torch.Tensor]:
    torch.manual_seed(run.seeds.init)  # as train() builds the network
    return list(run.spec.build(run.recipe).state_dict().values())


def test_vary_is_parsed_to_one_canonical_form():
    assert parse_vary("dropout, init") == "init,dropout" and parse_vary("all") == "all"
    assert parse_vary("init,order,augment,dropout") == "all" and parse_vary("none") == "none"
    for bad in ("", "seed", "all,init", "init,wind"):
        with pytest.raises(ValueError, match="--vary takes all, none, or a comma list"):
            parse_vary(bad)
    with pytest.raises(BadSweep, match="--vary takes"):
        SweepConfig(steps=("all",), vary="weights")


def test_vary_none_trains_the_same_run_for_every_seed(tiny):
    a, b = (Run.plan("s003-model4", seed, epochs=2, threads=1, vary="none", base_seed=7) for seed in (0, 1))
    assert a.seeds == b.seeds == Seeds.of(7)
    assert metrics(alone(a, tiny)) == metrics(alone(b, tiny))


@pytest.mark.parametrize("stream", STREAMS)
def test_vary_one_stream_holds_the_others_at_the_base_seed(stream):
    a, b = (Run.plan("s003-model4", seed, vary=stream) for seed in (1, 2))
    for s in STREAMS:
        assert (getattr(a.seeds, s) == getattr(b.seeds, s)) == (s != stream), s
    same_init = all(torch.equal(x, y) for x, y in zip(initial_weights(a), initial_weights(b)))
    assert same_init == (stream != "init")


def test_vary_init_records_the_same_order_augment_and_dropout_seeds():
    a, b = (Run.plan("s003-model4", seed, epochs=1, vary="init") for seed in (1, 2))
    assert not torch.equal(initial_weights(a)[0], initial_weights(b)[0])
    a, b = layout.run_columns(a), layout.run_columns(b)
    assert [a[f"seed_{s}"] == b[f"seed_{s}"] for s in STREAMS] == [False, True, True, True]
    assert (a["vary"], a["base_seed"]) == ("init", 0)


def test_vary_groups_live_side_by_side_and_are_never_pooled(tmp_path, ray_session, tiny):
    out = tmp_path / "results"
    s = [run_sweep(SweepConfig(**VARY, out=out, vary=v), data=tiny) for v in ("all", "none", "order")]
    assert [len(x.trained) for x in s] == [3, 3, 3] and not any(x.failed for x in s)
    rows = pd.read_parquet(out / "epochs")
    assert len(rows) == 18 and not rows.duplicated(["vary", *KEY]).any()
    none = rows[rows.vary == "none"]
    assert none.groupby("epoch")["test_correct"].nunique().eq(1).all()  # --vary none: every seed the same run
    assert none[[f"seed_{s}" for s in STREAMS]].nunique().eq(1).all()
    order = rows[rows.vary == "order"]
    assert (
        order["seed_order"].nunique() == 3
        and order[["seed_init", "seed_augment", "seed_dropout"]].nunique().eq(1).all()
    )
    groups = load_results(out).epochs.groupby("group")["seed"].nunique()
    assert groups.to_dict() == {"s003-model4": 3, "s003-model4 [vary none b0]": 3, "s003-model4 [vary order b0]": 3}
    again = run_sweep(SweepConfig(**VARY, out=out, vary="order"), data=tiny)  # resumable, exactly once
    assert (len(again.trained), len(again.plan.done)) == (0, 3)


def test_a_killed_vary_run_resumes_with_the_same_rows(tmp_path, ray_session, tiny):
    config = dict(**{**VARY, "seeds": 2}, vary="augment", base_seed=4)
    undisturbed = run_sweep(SweepConfig(**config, out=tmp_path / "undisturbed"), data=tiny)
    kill = KillWorkerOnce("s003-model4", 1, tag="quick-vary-augment-b4")
    killed = run_sweep(SweepConfig(**config, out=tmp_path / "killed", max_failures=2), data=tiny, callbacks=[kill])
    assert kill.killed_at is not None and len(killed.trained) == len(undisturbed.trained) == 2
    a, b = (
        pd.read_parquet(tmp_path / d / "epochs").sort_values(KEY).reset_index(drop=True)
        for d in ("undisturbed", "killed")
    )
    pd.testing.assert_frame_equal(a[KEY + list(METRICS)], b[KEY + list(METRICS)])
