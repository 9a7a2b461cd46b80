"""Multi-seed sweeps of the zoo's steps on Ray Tune, written as a Parquet results folder. Knows nothing of seaborn."""

import contextlib
import subprocess
from pathlib import Path

from cnn.errors import BadInput


class BadSweep(BadInput):
    """A sweep that cannot start as asked. The message is one line for the user; nothing has been written."""


def project_version() -> str:
    """The package version, plus the git commit when the code runs from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("cnn-sweeps")
    except PackageNotFoundError:
        v = "unknown"
    with contextlib.suppress(Exception):
        git = ["git", "rev-parse", "--short", "HEAD"]
        sha = subprocess.run(git, cwd=Path(__file__).parent, text=True, capture_output=True, timeout=5).stdout.strip()
        v += f"+g{sha}" if sha else ""
    return v
