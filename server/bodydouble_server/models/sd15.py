"""Stable Diffusion 1.x/2.x inpainting (9-channel UNet); also the embedded test model's family."""
from .registry import Family, register

SD15 = register(Family(
    name="sd15",
    title="Stable Diffusion 1.5 inpaint",
    resolution=512,
    multiple=8,
    pipelines={"fill": "StableDiffusionInpaintPipeline"},
    detect=lambda index, path: index.get("_class_name", "").startswith("StableDiffusion")
    and "XL" not in index.get("_class_name", "")
    and "text_encoder_2" not in index,
))
