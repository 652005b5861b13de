"""One module per operation; ``RUNNERS`` maps an operation name to its function."""
from .fill import run_fill

RUNNERS = {"fill": run_fill}
