"""Stable Diffusion XL inpainting (two text encoders)."""
from .registry import Family, register

SDXL = register(Family(
    name="sdxl",
    title="Stable Diffusion XL inpaint",
    resolution=1024,
    multiple=8,
    pipelines={"fill": "StableDiffusionXLInpaintPipeline"},
    detect=lambda index, path: "XL" in index.get("_class_name", "") or "text_encoder_2" in index,
))
