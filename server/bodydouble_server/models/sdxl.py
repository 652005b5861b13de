"""Stable Diffusion XL inpainting (two text encoders)."""
from .registry import Family, register

SDXL = register(Family(
    name="sdxl",
    title="Stable Diffusion XL inpaint",
    resolution=1024,
    multiple=8,
    pipelines={"fill": "StableDiffusionXLInpaintPipeline"},
    # Live previews: the widely used SDXL latent->RGB factors and bias (as in ComfyUI's latent_formats.SDXL).
    latent_rgb=([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
                 [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
    detect=lambda index, path: "XL" in index.get("_class_name", "") or "text_encoder_2" in index,
))
