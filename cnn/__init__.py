"""Small MNIST CNNs from the seed submissions: data, the step zoo and a deterministic trainer. Knows nothing of Ray."""


class BadInput(ValueError):
    """Input a user can fix. Its message is one line; the command line prints it and exits with code 2."""
