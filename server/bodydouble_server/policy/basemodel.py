"""The base model is never trained: its weights are hashed before and after a training run, and a changed
base refuses to publish the adapter.

Two hashes. In memory: every parameter and buffer of the modules training touches (the training copy of the
denoiser and the served pipeline's components it borrows), LoRA weights excluded, so a bug that folds the
adapter into the base, or an optimiser given base weights, is caught. On disk: the base model folder's content
hash (``model_sha256``), against the one the server loaded, so a run that saved into the base folder is too.
Hashing reads every weight once (an SDXL-sized model: a few seconds), twice per run.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from bodydouble import errors

LORA_MARK = "lora_"


def weights_sha256(modules: dict) -> str:
    """One sha256 over the named, non-LoRA tensors of ``modules`` (name -> torch module), in a fixed order."""
    import torch

    digest = hashlib.sha256()
    seen: set[int] = set()
    for prefix, module in sorted(modules.items()):
        tensors = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers())
        for name, tensor in sorted(tensors, key=lambda item: item[0]):
            if LORA_MARK in name or tensor is None:
                continue
            key = id(tensor)
            digest.update(f"{prefix}.{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
            if key in seen:                       # tied weights: hash once, name every use
                continue
            seen.add(key)
            data = tensor.detach()
            if data.dtype == torch.bfloat16:      # numpy has no bfloat16: hash its bits
                data = data.view(torch.int16)
            digest.update(data.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def base_modules(trainer) -> dict:
    """What a training run could change: its own denoiser and every module of the pipeline it borrows from."""
    import torch

    modules = {f"pipeline.{name}": module for name, module in trainer.pipe.components.items()
               if isinstance(module, torch.nn.Module)}
    modules["training." + trainer.component] = trainer.denoiser
    return modules


class BaseModelGuard:
    """Hash at construction (before any step), :meth:`check` after the run: the record, or a refusal."""

    def __init__(self, modules: dict, identity):
        self.modules, self.identity = modules, identity
        self.before = weights_sha256(modules)

    def check(self) -> dict:
        from ..models.identity import model_sha256

        after = weights_sha256(self.modules)
        path = Path(self.identity.path)
        files_after = model_sha256(path) if path.exists() else None
        record = {"weights_sha256_before": self.before, "weights_sha256_after": after,
                  "files_sha256_loaded": self.identity.sha256, "files_sha256_after": files_after,
                  "unchanged": after == self.before and files_after in (None, self.identity.sha256)}
        if after != self.before:
            raise errors.RequestError(
                "the base model's weights changed during training (in memory: "
                f"{self.before[:12]}... -> {after[:12]}...): the adapter is not published; the base model is never "
                "trained", code=errors.JOB_FAILED, details={"rule": "base_model_changed", **record})
        if not record["unchanged"]:
            raise errors.RequestError(
                f"the base model's files at {path} changed during training ({self.identity.sha256[:12]}... -> "
                f"{str(files_after)[:12]}...): the adapter is not published", code=errors.JOB_FAILED,
                details={"rule": "base_model_changed", **record})
        return record
