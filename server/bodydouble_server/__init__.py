"""BodyDouble inference and training server: everything heavy (torch, diffusers, OpenImageIO)."""
from bodydouble import __version__  # noqa: F401  one version for the distribution
