"""One module per operation; ``RUNNERS`` maps an operation name to its function."""
from .fill import run_fill
from .train import run_train

RUNNERS = {"fill": run_fill, "train": run_train}
