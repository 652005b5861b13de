"""Base models: family registry, loading, identity. Importing this registers the built-in families."""
from . import ltx, miniworld, sd15, sdxl, testing, wan  # noqa: F401  (each family file registers itself)
from .registry import FAMILIES, Family, detect_family, get_family  # noqa: F401
