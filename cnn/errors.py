"""The one base of every error a user can fix. Imports nothing, so `analysis` may use it without torch."""


class BadInput(ValueError):
    """Input a user can fix. Its message is one line; the command line prints it and exits with code 2."""
