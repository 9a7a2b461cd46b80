"""Multi-seed sweeps of the zoo's steps on Ray Tune, written as a Parquet results folder. Knows nothing of seaborn."""

from cnn.errors import BadInput


class BadSweep(BadInput):
    """A sweep that cannot start as asked. The message is one line for the user; nothing has been written."""
