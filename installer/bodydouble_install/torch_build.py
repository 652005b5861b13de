"""Which PyTorch build this machine wants: CUDA when an NVIDIA GPU and driver are present, CPU otherwise."""
from __future__ import annotations

from dataclasses import dataclass

from bodydouble_server.workstation.gpus import GPU

# PyTorch's CUDA wheel indexes, newest first: (the CUDA version a driver must support, the index tag).
# The driver reports the newest CUDA it supports; any index at or below that runs on it.
CUDA_INDEXES = [((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"), ((11, 8), "cu118")]
CUDA_INDEX_URL = "https://download.pytorch.org/whl/{tag}"


@dataclass
class TorchChoice:
    build: str                 # "cuda" or "cpu"
    index_url: str | None      # extra pip index for the CUDA build; None: the configured index (pins from constraints)
    reason: str


def choose(gpus: list[GPU], index_url: str | None = None) -> TorchChoice:
    if not gpus:
        return TorchChoice("cpu", index_url, "no NVIDIA GPU with a working driver: CPU build (pinned in constraints.txt)")
    gpu = gpus[0]
    if index_url:
        return TorchChoice("cuda", index_url, f"{gpu.name}: CUDA build from {index_url} (given)")
    if gpu.cuda is None:
        return TorchChoice("cpu", None, f"{gpu.name}: the driver did not report its CUDA version; CPU build. "
                                        "Pass --torch-index-url for a CUDA build")
    for needed, tag in CUDA_INDEXES:
        if gpu.cuda >= needed:
            url = CUDA_INDEX_URL.format(tag=tag)
            return TorchChoice("cuda", url, f"{gpu.name}, driver {gpu.driver} (CUDA {gpu.cuda[0]}.{gpu.cuda[1]}): "
                                            f"CUDA build {tag}")
    return TorchChoice("cpu", None, f"{gpu.name}: driver {gpu.driver} is too old for any CUDA build (needs CUDA "
                                    f"{CUDA_INDEXES[-1][0][0]}.{CUDA_INDEXES[-1][0][1]}+); CPU build. Update the driver")
