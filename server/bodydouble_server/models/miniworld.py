"""The miniature world's base models (``bodydouble_server.miniworld``), baked from scratch on synthetic heads and
loaded like any local diffusers folder: the image model, SD-inpaint-shaped (``bodydouble serve --model PATH``),
and the video model, Wan-VACE-shaped (``--video-model PATH``).

Their own families because they declare their own working sizes (64 px; image sizes in multiples of 16, which
latents /2 or /4 and two UNet downsamplings need; video in multiples of 8: latents /4 and the transformer's 2x2
patches, 9-frame calls) and because every model of them is a TEST model, labelled so in every header. A folder
belongs to one when it carries its bake's declaration file.
"""
import json

from . import wan
from .registry import Family, register

NAME = "bodydouble-miniworld-base"
LABEL = f"{NAME} (TEST MODEL: the miniature world's synthetic heads, not for production)"
DECLARATION = "bodydouble_model.json"
RESOLUTION = 64
MULTIPLE = 16


VIDEO_NAME = "bodydouble-miniworld-video"
VIDEO_LABEL = f"{VIDEO_NAME} (TEST MODEL: the miniature world's synthetic heads, not for production)"
VIDEO_MULTIPLE = 8
VIDEO_WINDOW = 9        # frames a call makes: the clips it was baked on (Wan's rule, 4k + 1)


def _declared(path, family: str = "miniworld") -> bool:
    try:
        return json.loads((path / DECLARATION).read_text()).get("family") == family
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


MINIWORLD_VIDEO = register(Family(
    name="miniworld-video",
    title="Miniature world Wan VACE (video, TEST MODEL)",
    resolution=RESOLUTION,
    multiple=VIDEO_MULTIPLE,
    pipelines={"extend": "WanVACEPipeline"},
    detect=lambda index, path: index.get("_class_name") == "WanVACEPipeline" and _declared(path, "miniworld-video"),
    kind="video",
    window=VIDEO_WINDOW,
    temporal_multiple=4,
    extend=wan.extend,
    inpaint=wan.inpaint,
    float32_components=("vae",),
    test_label=VIDEO_LABEL,
    priority=1,
))
