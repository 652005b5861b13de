"""Stable Diffusion 1.x/2.x inpainting (9-channel UNet); also the embedded test model's family."""
from .registry import Family, register

SD15 = register(Family(
    name="sd15",
    title="Stable Diffusion 1.5 inpaint",
    resolution=512,
    multiple=8,
    pipelines={"fill": "StableDiffusionInpaintPipeline"},
    # Live previews: the widely used SD 1.x latent->RGB factors (as in ComfyUI's latent_formats.SD15).
    latent_rgb=([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
                 [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    detect=lambda index, path: index.get("_class_name", "").startswith("StableDiffusion")
    and "XL" not in index.get("_class_name", "")
    and "text_encoder_2" not in index,
))
