"""`sweep run --log-to`: every run's per-epoch metrics in a TensorBoard, MLflow and W&B (offline) store, written by
Ray Tune's own logger callbacks during one real sweep, equal to the Parquet rows."""

import json
import os
import struct
from pathlib import Path

import pandas as pd
import pytest

from cnn.errors import BadInput
from sweeps import export
from sweeps.runner import SweepConfig, run_sweep

pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[dev]'")
pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install -e '.[dev]'")

# a block of seeds 0 and 1 (one series per seed), and seed 2 alone (the metrics under their own names)
LOGGED = dict(steps=("s003-model4",), seeds=3, epochs=2, quick=True, seeds_per_trial=2)


@pytest.fixture(scope="module")
def logged(tmp_path_factory, ray_session, tiny) -> Path:
    out = tmp_path_factory.mktemp("logged") / "results"
    before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"  # no network here; a W&B user leaves it unset
    try:
        summary = run_sweep(SweepConfig(**LOGGED, out=out, log_to=tuple(export.LOGGERS)), data=tiny)
    finally:
        os.environ.pop("WANDB_MODE") if before is None else os.environ.update(WANDB_MODE=before)
    assert len(summary.trained) == 3 and not summary.failed
    return out


def expected(out: Path) -> dict[str, dict[tuple[str, int], float]]:
    """Trial folder -> (series, epoch) -> test accuracy, from the Parquet rows."""
    rows = pd.read_parquet(out / "epochs")
    series = {"s003-model4#0+1-quick": {}, "s003-model4#2-quick": {}}
    for seed, epoch, acc in zip(rows["seed"], rows["epoch"], rows["test_acc"]):
        if seed == 2:
            series["s003-model4#2-quick"][("test_acc", epoch)] = acc
        else:
            series["s003-model4#0+1-quick"][(f"seed_{seed}/test_acc", epoch)] = acc
    return series


def trials(out: Path) -> dict[str, Path]:
    return {d.name: d for d in (out / "tune").glob("*/s003-model4#*")}


def test_tensorboard_event_files_hold_each_seeds_series(logged):
    from tensorboardX.proto.event_pb2 import Event

    for name, want in expected(logged).items():
        got = {}
        for path in trials(logged)[name].glob("events.out.tfevents.*"):
            for record in tf_records(path.read_bytes()):
                event = Event.FromString(record)
                for v in event.summary.value:
                    got[(v.tag.removeprefix("ray/tune/"), event.step)] = v.simple_value
        assert {k: got.get(k) for k in want} == pytest.approx(want), name


def tf_records(data: bytes):
    """TFRecord framing: length (uint64), its CRC, the record, its CRC."""
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        yield data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4


def test_an_mlflow_file_store_holds_a_run_per_trial(logged):
    from mlflow.tracking import MlflowClient

    client = MlflowClient((logged / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(export.PROJECT)
    runs = {r.data.params["run"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(expected(logged))
    for name, want in expected(logged).items():
        keys = {key for key, _ in want}
        got = {(k, m.step): m.value for k in keys for m in client.get_metric_history(runs[name].info.run_id, k)}
        assert got == pytest.approx(want), name


def test_a_wandb_offline_run_holds_each_seeds_series(logged):
    from wandb.proto.wandb_internal_pb2 import Record

    runs = {}  # trial -> (series, epoch) -> value
    for path in (logged / "wandb").glob("offline-run-*/run-*.wandb"):
        config, got = {}, {}
        for data in wandb_records(path.read_bytes()):
            record = Record.FromString(data)
            if record.WhichOneof("record_type") == "run":  # the trial's config: its name and its runs
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                got.update({(k, items["epoch"]): v for k, v in items.items()})
        runs[config["run"]] = got
    assert set(runs) == set(expected(logged))
    for name, want in expected(logged).items():
        assert {k: runs[name].get(k) for k in want} == pytest.approx(want), name


def wandb_records(data: bytes, block: int = 32 * 1024):
    """A .wandb file: a 7-byte header, then LevelDB's log format: blocks of 32 KiB holding records of a 7-byte
    header (CRC, length, type: 1 whole, 2 first, 3 middle, 4 last) and data; a block's last 6 bytes or fewer are
    padding."""
    offset, part = 7, b""
    while offset + 7 <= len(data):
        room = block - offset % block
        if room < 7:
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        part += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            yield part
            part = b""


def test_a_logger_without_its_package_is_one_line(monkeypatch):
    monkeypatch.setitem(export.LOGGERS, "mlflow", ("no_such_package_here", "'cnn-sweeps[mlflow]'"))
    with pytest.raises(BadInput, match=r"--log-to mlflow needs the no_such_package_here package: pip install 'cnn"):
        SweepConfig(steps=("all",), log_to=("mlflow",))
    with pytest.raises(BadInput, match="--log-to takes tensorboard, mlflow, wandb; not 'csv'"):
        SweepConfig(steps=("all",), log_to=("csv",))
