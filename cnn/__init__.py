"""Small MNIST CNNs from the seed submissions: data, the step zoo and a deterministic trainer. Knows nothing of Ray."""
