"""gcnprune-jax: pruning graph convolutional networks for skeleton-based recognition, in JAX."""

__version__ = "0.2.0"
