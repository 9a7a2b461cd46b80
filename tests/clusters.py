"""Helpers for tests that start Ray clusters of their own beside the test session's Ray and a reference sweep that
must not be disturbed: free ports, and stopping exactly the processes a cluster started, by PID."""

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment holds ``name=value``. A cluster's every process (GCS, raylets, the monitor, the
    nodes it launches, their workers) inherits the environment it was started with, so a value unique to one
    cluster finds exactly its processes, whatever their command lines."""
    entry, pids = f"{name}={value}".encode(), []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def stop_pids(find, grace_s: float = 5) -> list[int]:
    """SIGTERM the PIDs ``find()`` returns, then SIGKILL those still there after ``grace_s``; returns what survived
    both (nothing, normally)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in find():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while find() and time.monotonic() < deadline:
            time.sleep(0.2)
    return find()
