"""The base model is never trained: training hashes it before and after and publishes nothing if it changed."""
from __future__ import annotations

import json

import pytest

from bodydouble import errors
from bodydouble_server.training.run import train_adapter

from .test_training import settings, write_frames


@pytest.fixture(scope="module")
def base():
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine

    engine = Engine(ServerConfig(port=0, device="cpu", adapters="/nonexistent-bodydouble-adapters"))
    engine.load()
    return engine.pipelines["fill"], engine.identity


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("frames"), per_view=1)


def _train(base, frames, adapters, **extra):
    return train_adapter(*base, [frames], settings(steps=2, checkpoint_every=2, preview_count=0, holdout_per_view=0,
                                                   **extra), adapters, force=True)


def test_a_run_records_the_unchanged_base_model(base, frames, tmp_path):
    from bodydouble_server.policy.basemodel import weights_sha256

    pipe, identity = base
    before = weights_sha256({"vae": pipe.vae, "text_encoder": pipe.text_encoder})
    folder, _ = _train(base, frames, tmp_path / "adapters")
    check = json.loads((folder / "manifest.json").read_text())["training"]["base_model_check"]
    assert check["unchanged"] is True and check["weights_sha256_before"] == check["weights_sha256_after"]
    assert check["files_sha256_loaded"] == check["files_sha256_after"] == identity.sha256
    assert weights_sha256({"vae": pipe.vae, "text_encoder": pipe.text_encoder}) == before


@pytest.mark.parametrize("where", ["training copy", "served pipeline"])
def test_a_changed_base_model_is_not_published(base, frames, tmp_path, monkeypatch, where):
    """A bug that folds the LoRA into the training copy's base weights, or that writes into the served pipeline's
    text encoder, is caught after the run: no adapter folder appears."""
    import torch

    from bodydouble_server.training.image import ImageTrainer

    pipe, _ = base
    run = ImageTrainer.run

    def run_then_corrupt(self, *args, **kwargs):
        result = run(self, *args, **kwargs)
        module = self.denoiser if where == "training copy" else pipe.text_encoder
        name, weight = next((n, p) for n, p in module.named_parameters() if "lora_" not in n and p.dim() > 1)
        with torch.no_grad():
            weight.add_(1e-3)
        self.corrupted = (module, name)
        return result

    monkeypatch.setattr(ImageTrainer, "run", run_then_corrupt)
    adapters = tmp_path / "adapters"
    original = {n: p.detach().clone() for n, p in pipe.text_encoder.named_parameters()}
    try:
        with pytest.raises(errors.RequestError) as caught:
            _train(base, frames, adapters, name=f"hero_{where.split()[0]}")
    finally:
        with torch.no_grad():
            for n, p in pipe.text_encoder.named_parameters():
                p.copy_(original[n])        # the module-scoped model stays clean for the next case
    assert caught.value.details["rule"] == "base_model_changed"
    assert "the adapter is not published" in caught.value.message
    assert not adapters.exists() or not any(p.name.startswith("hero") for p in adapters.iterdir())
