"""Writing adapter folders: diffusers-format LoRA weights + manifest, atomically.

Used by training and by the demo's synthetic test adapter. The weights load with plain
diffusers ``load_lora_weights`` as well as in the BodyDouble server.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bodydouble import __version__, atomic

from .adapters import MANIFEST_FILE, WEIGHTS_FILE
from .models.identity import ModelIdentity

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]             # the denoiser's attention
# A UNet's LoRA also on its ResNet blocks' convolutions: what a character looks like from an angle the base model
# never drew for it lives there as much as in attention (the miniature world: attention-only LoRA named the
# character from the back half as often; see docs/likeness.md).
UNET_LORA_TARGETS = LORA_TARGETS + ["conv1", "conv2"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]   # a CLIP text encoder's attention


def export_lora(component: str, peft_state: dict) -> dict:
    """A component's peft LoRA state as its weights file keeps it: UNets and text encoders in diffusers'
    classic key names (what ``load_lora_weights`` converts back), DiT transformers in peft's. A LoRA with
    layers the classic names do not cover (a UNet's ResNet convs) stays in peft's names throughout: diffusers'
    converter leaves those keys as they are, and a file mixing both namings loads only one of them."""
    from diffusers.utils import convert_state_dict_to_diffusers

    if component == "transformer":
        return peft_state
    converted = convert_state_dict_to_diffusers(peft_state)
    return peft_state if any(".lora_A." in key or ".lora_B." in key for key in converted) else converted


def write_adapter(folder: Path, pipeline_cls, lora_layers: dict[str, dict], manifest: dict,
                  files: dict[str, Path] | None = None) -> Path:
    """Stage into a hidden sibling, then rename: the server's rescan never sees half an adapter.

    ``lora_layers``: per pipeline component (``unet``, ``transformer``, ``text_encoder``...) its LoRA state
    (see ``export_lora``). ``files`` maps names inside the adapter folder (e.g. ``previews/front.png``) to
    files to copy in.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"adapter folder {folder} already exists; pick a new name or version")
    with atomic.staged_dir(folder) as staging:
        pipeline_cls.save_lora_weights(str(staging), **{f"{c}_lora_layers": state for c, state in lora_layers.items()},
                                       weight_name=WEIGHTS_FILE, safe_serialization=True)
        for name, source in (files or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / name)
        atomic.write_json(staging / MANIFEST_FILE, {"tool_version": __version__, "created": time.time(), **manifest})
    return folder


def base_model_entry(identity: ModelIdentity) -> dict:
    return {"name": identity.name, "sha256": identity.sha256, "family": identity.family,
            "test_model": identity.test_model}


def synthetic_adapter(pipe, identity: ModelIdentity, folder: Path, character: str, seed: int, rank: int = 4,
                      scale: float = 0.5) -> Path:
    """A random LoRA (NOT trained): lets the demo and tests show adapter switching on the test models.

    On an image pipeline it goes on the UNet; on a video pipeline (no UNet) on the transformer, and its
    manifest says ``model_kind: video`` so image servers refuse it (and the other way round).
    """
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    component = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, component)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS), adapter_name="synthetic")
    try:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in denoiser.named_parameters():
                if "lora_" in name and ".synthetic" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
        state = export_lora(component, get_peft_model_state_dict(denoiser, adapter_name="synthetic"))
    finally:
        denoiser.delete_adapters("synthetic")
    return write_adapter(folder, type(pipe), {component: state}, {
        "name": Path(folder).name, "character": character, "trigger": f"<{Path(folder).name}>",
        "base_model": base_model_entry(identity), "model_kind": "image" if component == "unet" else "video",
        "rank": rank, "rights_holder": "BodyDouble test data",
        "licence": "synthetic random adapter for tests and demos; not trained",
        "training": {"kind": "synthetic", "seed": seed}, "version": "1",
    })
