"""Sequencer side: an image strip's frames as a request, and a finished extension as a new strip."""
from __future__ import annotations

import os

import bpy

from bodydouble.client import JobResult
from bodydouble.frames import split_frame
from bodydouble.jobspec import FrameInput, ImageRef

PROP = "bodydouble"


def sequencer_scene(context):
    """The scene the sequencer shows: Blender 5.0's ``context.sequencer_scene`` (the workspace's), else the
    active scene (4.x, or a 5.0 workspace without a sequencer scene)."""
    return getattr(context, "sequencer_scene", None) or context.scene


def _strips(sed):
    return sed.strips if hasattr(sed, "strips") else sed.sequences  # 4.4+ renamed sequences -> strips


def all_strips(sed):
    """Every strip of a sequencer, inside meta strips too."""
    return sed.strips_all if hasattr(sed, "strips_all") else sed.sequences_all


def image_strip(scene, name: str = ""):
    sed = scene.sequence_editor if scene is not None else None
    if sed is None:
        return None
    strip = _strips(sed).get(name) if name else sed.active_strip
    return strip if strip is not None and strip.type == "IMAGE" else None


def visible_files(strip) -> list[str]:
    """Absolute paths of the strip's images that are not trimmed away, in order."""
    folder = os.path.abspath(bpy.path.abspath(strip.directory))
    elements = list(strip.elements)
    start = int(strip.frame_offset_start)
    end = len(elements) - int(strip.frame_offset_end)
    return [os.path.join(folder, e.filename) for e in elements[start:max(start + 1, end)]]


def frame_inputs(strip) -> list[FrameInput]:
    files = visible_files(strip)
    numbers = [split_frame(p)[1] for p in files]
    if None in numbers or numbers != sorted(set(numbers)):
        numbers = [int(strip.frame_final_start) + i for i in range(len(files))]
    return [FrameInput(frame=n, plate=ImageRef(path=p)) for n, p in zip(numbers, files)]


def load_extension(scene_name: str, strip_name: str, params: dict, result: JobResult) -> str:
    """An image strip with the new frames, starting where the source strip ends (main thread only)."""
    scene = bpy.data.scenes.get(scene_name)
    if scene is None or scene.sequence_editor is None:
        raise LookupError(f"scene {scene_name!r} or its sequencer is gone")
    sed = scene.sequence_editor
    source = _strips(sed).get(strip_name)
    paths = [result.frames[f] for f in sorted(result.frames)]
    channel = source.channel if source is not None else 1
    start = int(source.frame_final_end) if source is not None else scene.frame_current
    name = os.path.basename(result.pattern).split(".")[0]
    strip = _strips(sed).new_image(name=name, filepath=paths[0], channel=channel, frame_start=start)
    for path in paths[1:]:
        strip.elements.append(os.path.basename(path))
    strip[PROP] = dict(params, take=result.take, take_dir=result.take_dir, pattern=result.pattern,
                       take_first=result.first, take_last=result.last, job=result.job)
    return (f"BodyDouble: {len(paths)} new frames ({result.first}-{result.last}) as strip '{strip.name}' "
            f"after '{strip_name}'")
