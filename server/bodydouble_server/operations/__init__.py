"""One module per operation; ``RUNNERS`` maps an operation name to its function."""
from .extend import run_extend
from .fill import run_fill
from .train import run_train

RUNNERS = {"extend": run_extend, "fill": run_fill, "train": run_train}
