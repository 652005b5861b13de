"""The miniature world's base model (``bodydouble_server.miniworld``): SD-inpaint-shaped, baked from scratch on
synthetic heads, loaded like any local diffusers folder (``bodydouble serve --model PATH``).

Its own family because it declares its own working size (64 px, sizes in multiples of 16: latents /4 and two
UNet downsamplings) and because every model of it is a TEST model, labelled so in every header. A folder
belongs to it when it carries the bake's declaration file.
"""
import json

from .registry import Family, register

NAME = "bodydouble-miniworld-base"
LABEL = f"{NAME} (TEST MODEL: the miniature world's synthetic heads, not for production)"
DECLARATION = "bodydouble_model.json"
RESOLUTION = 64
MULTIPLE = 16


def _declared(path) -> bool:
    try:
        return json.loads((path / DECLARATION).read_text()).get("family") == "miniworld"
    except (OSError, ValueError, AttributeError):
        return False


MINIWORLD = register(Family(
    name="miniworld",
    title="Miniature world SD inpaint (TEST MODEL)",
    resolution=RESOLUTION,
    multiple=MULTIPLE,
    pipelines={"fill": "StableDiffusionInpaintPipeline"},
    detect=lambda index, path: index.get("_class_name") == "StableDiffusionInpaintPipeline" and _declared(path),
    test_label=LABEL,
    priority=1,
))
