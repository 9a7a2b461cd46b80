"""Where a sweep runs: Ray start-up, the resource checks made before anything is written, and the driver's versions
that rows record."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import ray
import torch
import yaml

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


def check_nodes(cpus_per_trial: float, gpus_per_trial: float, wait_s: float, stream: TextIO) -> None:
    """That a node of the joined cluster can hold one trial: one alive now, or one its autoscaler adds within
    ``wait_s`` seconds. Refuses at once only what no node type of the cluster can ever hold."""
    need = {"CPU": cpus_per_trial, "GPU": gpus_per_trial}
    if any(_holds(n["Resources"], need) for n in ray.nodes() if n.get("Alive")):
        return
    types = node_types()
    if types is not None and not any(_holds(r, need) for r in types.values()):
        have = "; ".join(f"{name}: {_resources(r)}" for name, r in types.items())
        ask = f"--cpus-per-trial {cpus_per_trial:g} --gpus-per-trial {gpus_per_trial:g}"
        raise BadSweep(f"a trial of {ask} needs more than any node type of this cluster has ({have})")
    can = ", ".join(f"{name} ({_resources(r)})" for name, r in (types or {}).items() if _holds(r, need))
    print(
        f"no node can hold a trial ({_resources(need)}) yet; "
        + (f"the autoscaler can add {can}" if can else "the cluster's node types are unknown here")
        + f": waiting up to {wait_s:g} s for the autoscaler to add one (--wait-for-nodes)",
        file=stream,
        flush=True,
    )
    _wait_for_node(need, wait_s)


def node_types() -> dict[str, dict[str, float]] | None:
    """The resources of each node type that the cluster's autoscaler may start (the head's type included), or None
    where they cannot be learned here: the driver is not on the head, the head runs no autoscaler, or a type's
    resources are detected only once its node starts (on-prem clusters).

    Ray keeps no copy of the node types that a driver can ask for (under autoscaler v1 the GCS's cluster config is
    empty), so they are read from the config file named on the command line of this cluster's monitor."""
    port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_text().split("\0")
            monitor = any(a.endswith("monitor.py") and "/autoscaler/" in a for a in args)
            if monitor and any(a.startswith("--gcs-address=") and a.endswith(f":{port}") for a in args):
                config = [a.partition("=")[2] for a in args if a.startswith("--autoscaling-config=")]
                return _node_types(Path(config[0]).expanduser()) if config else None
    return None


def _node_types(config_file: Path) -> dict[str, dict[str, float]] | None:
    try:
        config = yaml.safe_load(config_file.read_text())
        types = config["available_node_types"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    addable = {
        name: t.get("resources") or {}
        for name, t in types.items()
        if name == config.get("head_node_type") or t.get("max_workers", config.get("max_workers", 0)) > 0
    }
    return addable if all("CPU" in r for r in addable.values()) else None


def _wait_for_node(need: dict[str, float], wait_s: float) -> None:
    """Wait until a node holds ``need``: a placement group of one such bundle is a demand the autoscaler serves,
    and one that only this sweep withdraws (``request_resources`` is one request for the whole cluster, which a
    second sweep would overwrite)."""
    from ray.exceptions import GetTimeoutError
    from ray.util import placement_group, remove_placement_group

    group = placement_group([{k: v for k, v in need.items() if v > 0}])
    try:
        ray.get(group.ready(), timeout=wait_s)
    except GetTimeoutError:
        raise BadSweep(
            f"after {wait_s:g} s no node can hold a trial ({_resources(need)}): check `ray status` on the head "
            "(pending or failed nodes) and the autoscaler's log (monitor.log in the head's Ray logs), or wait "
            "longer with --wait-for-nodes"
        ) from None
    finally:
        remove_placement_group(group)


def _holds(resources: dict[str, float], need: dict[str, float]) -> bool:
    return all(resources.get(k, 0) >= v for k, v in need.items())


def _resources(r: dict[str, float]) -> str:
    return f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU"


class NoCuda(BadSweep):
    """A node that cannot train on CUDA. The message names the node and says why, in one line."""


def check_device(device: str) -> None:
    """That this node can train on ``device``; for "cuda", that torch sees a GPU, or :class:`NoCuda`."""
    if device == "cuda" and not torch.cuda.is_available():
        node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
        raise NoCuda(f"node {node} cannot train on CUDA: {cuda_problem()}")


def cuda_problem() -> str:
    """Why torch cannot use CUDA here: a CPU-only torch, no NVIDIA driver, a driver older than torch's CUDA build,
    or no device visible to this process."""
    build = f"torch {torch.__version__}"
    if torch.version.cuda is None:
        return f"{build} is a CPU-only build"
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return f"no NVIDIA driver (libcuda.so.1 not found), and {build} needs one for CUDA {torch.version.cuda}"
    version = ctypes.c_int()
    libcuda.cuDriverGetVersion(ctypes.byref(version))
    driver = (version.value // 1000, version.value % 1000 // 10)
    if driver < tuple(int(x) for x in torch.version.cuda.split(".")[:2]):
        return (
            f"its NVIDIA driver runs CUDA {driver[0]}.{driver[1]} at most, older than the CUDA {torch.version.cuda} "
            f"that {build} was built for"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"torch sees no CUDA device (driver for CUDA {driver[0]}.{driver[1]}, CUDA_VISIBLE_DEVICES={visible!r})"


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
