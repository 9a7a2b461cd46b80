"""Where a sweep runs: Ray start-up, the resource checks made before anything is written, and the driver's versions
that rows record."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ray
import torch

from cnn import memory
from sweeps import BadSweep, project_version


def check_resources(
    address: str | None, num_cpus: int | None, num_gpus: int | None, cpus_per_trial: float, gpus_per_trial: float
) -> None:
    """Resources of a local Ray, or that ``address`` answers at all; a cluster's nodes are checked once joined."""
    if address:
        if address != "auto":
            host, _, port = address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError):
                raise BadSweep(f"cannot reach a Ray cluster at {address}") from None
        return
    cpus, visible = num_cpus or os.cpu_count() or 1, torch.cuda.device_count()
    gpus = num_gpus if num_gpus is not None else visible
    if gpus > visible:
        raise BadSweep(f"--num-gpus {gpus} is more than the {visible} CUDA devices visible here")
    if cpus_per_trial > cpus:
        raise BadSweep(f"--cpus-per-trial {cpus_per_trial:g} is more than the {cpus} CPUs here")
    if gpus_per_trial > 0 and gpus == 0:
        raise BadSweep("--gpus-per-trial needs a GPU, and none is visible (no CUDA device, or --num-gpus 0)")
    if gpus_per_trial > gpus:
        raise BadSweep(f"--gpus-per-trial {gpus_per_trial:g} is more than the {gpus} GPUs here")


def check_nodes(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """That some live node of the joined cluster can hold one trial."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if cpus_per_trial > cpus:
        raise BadSweep(f"--cpus-per-trial {cpus_per_trial:g} is more than any node has ({cpus:g} CPUs)")
    if gpus_per_trial > gpus:
        raise BadSweep(f"--gpus-per-trial {gpus_per_trial:g} is more than any node has ({gpus:g} GPUs)")


def check_storage(storage: str | None) -> None:
    """That ``--storage`` is a writable folder or a URI that pyarrow can open (s3://, gs://, ...)."""
    if storage is None:
        return
    if "://" not in storage:
        return check_writable(Path(storage), "--storage")
    import pyarrow as pa
    import pyarrow.fs

    try:
        pyarrow.fs.FileSystem.from_uri(storage)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise BadSweep(f"--storage {storage} cannot be used: {str(e).splitlines()[0]}") from None


def check_writable(out: Path, option: str = "--out") -> None:
    if out.is_file():
        raise BadSweep(f"{option} {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe"):
            pass
    except OSError as e:
        raise BadSweep(f"{option} {out} is not writable ({e.strerror or e})") from None


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, num_gpus: int | None) -> Iterator[None]:
    """Join ``address``, or start a local Ray; reuse one this process already started (tests share one)."""
    if ray.is_initialized():
        yield
        return
    kwargs = {"address": address} if address else {"num_cpus": num_cpus, "num_gpus": num_gpus}
    try:
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadSweep(f"cannot start or join Ray at {address or 'a local instance'}: {reason}") from None
    try:
        yield
    finally:
        ray.shutdown()


def versions() -> dict[str, str]:
    """The driver's versions, recorded in every row."""
    return {"ray_version": ray.__version__, "project_version": project_version()}


@contextlib.contextmanager
def gpu_share(block, share: float) -> Iterator[None]:
    """Around a trial's training (``block``: a ``sweeps.plan.Block``), on a GPU: a block whose estimated peak
    (:mod:`cnn.memory`) exceeds the trial's share of it is refused in one line; the process's allocator is capped at
    the share, so that a trial cannot crowd out the others on its GPU; and the cache is given back when the trial
    ends, since a reused worker keeps its allocator."""
    if block.runs[0].device != "cuda":
        yield
        return
    total = torch.cuda.get_device_properties(0).total_memory
    need = memory.peak_bytes(block.runs[0], len(block.runs))
    if need > share * total:
        raise BadSweep(
            f"{block.name} needs about {need / 2**30:.1f} GiB of GPU memory, more than its {share:g} share of the "
            f"{total / 2**30:.0f} GiB {torch.cuda.get_device_name()}; give --gpu-memory "
            f"{total / 2**30:.0f} so that the sweep sizes its blocks, or raise --gpus-per-trial"
        )
    torch.cuda.set_per_process_memory_fraction(min(1.0, share))
    try:
        yield
    finally:
        torch.cuda.empty_cache()
