"""Fill a shot, not a frame (#18): the video engine and coherence, over real ZeroMQ with the tiny models.

Three servers: the embedded tiny SD + tiny Wan VACE (9-frame window, so 12 frames are two chunks), the
passthrough image and video models (what comes back is the plate: frame order, crop and chunk bookkeeping are
checkable), and one without a video model (not_supported).
"""
import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, sequence_frames
from bodydouble_server.operations import chunks

from .support import cancel_at_chunk, make_adapters, make_video_adapters, server_thread

WINDOW = 9
W, H = 96, 64
FIRST, LAST = 1001, 1012


def _write(path: Path, pixels: np.ndarray, channels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], len(channels), oiio.HALF)
    spec.channelnames = tuple(channels)
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(pixels.astype(np.float16))
    out.close()


def read(path) -> np.ndarray:
    image = oiio.ImageInput.open(str(path))
    pixels = image.read_image(oiio.FLOAT)
    image.close()
    return pixels


def headers(path) -> dict:
    image = oiio.ImageInput.open(str(path))
    spec = image.spec()
    image.close()
    return {a.name: a.value for a in spec.extra_attribs if a.name.startswith("bodydouble:")}


def ellipse(cx: float, cy: float = H / 2, rx: float = 18, ry: float = 20) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0).astype(np.float32)


def write_shot(folder: Path, frame_rgb, frame_mask, first=FIRST, last=LAST) -> tuple[str, str]:
    """RGBA half plates (alpha 1) and single-channel masks, from ``frame_rgb(k)`` / ``frame_mask(k)``."""
    for k, frame in enumerate(range(first, last + 1)):
        rgb = frame_rgb(k)
        _write(folder / f"plate.{frame:04d}.exr", np.dstack([rgb, np.ones((H, W), np.float32)]), "RGBA")
        _write(folder / f"mask.{frame:04d}.exr", frame_mask(k)[..., None], "A")
    return str(folder / "plate.####.exr"), str(folder / "mask.####.exr")


def tinted(k: int) -> np.ndarray:
    """A smooth plate whose every pixel is tinted by its frame: a frame mistaken for another shows."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([0.1 + 0.3 * x / W, 0.1 + 0.2 * y / H, np.full_like(x, 0.15)], axis=-1)
    return base + 0.04 * k


def texture(k: int, shift: float = 2.0, seed: int = 3) -> np.ndarray:
    """A smooth random texture panning ``shift`` px a frame to the right (the whole plate moves)."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((H + 8, W + 64, 3)).astype(np.float32), (0, 0), 2.5)
    big = 0.05 + 0.6 * (big - big.min()) / (big.max() - big.min())
    start = 32 - int(round(k * shift))
    return np.ascontiguousarray(big[4:4 + H, start:start + W])


def disc_pattern(radius: float, cx: float = 48, cy: float = H / 2) -> np.ndarray:
    """A pattern that scales with a disc of ``radius``: what a roto of it covers as it comes closer."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = (x - cx) / radius, (y - cy) / radius
    return np.stack([0.4 + 0.25 * np.sin(5 * u), 0.4 + 0.25 * np.cos(4 * v), 0.3 + 0.2 * np.sin(3 * (u + v))], -1)


# -- servers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    root = tmp_path_factory.mktemp("shotfill")
    made = {"root": root}
    made["tinted"] = write_shot(root / "tinted", tinted, lambda k: ellipse(40 + k))
    made["moving"] = write_shot(root / "moving", texture, lambda k: ellipse(48), last=FIRST + 4)
    made["panning"] = write_shot(root / "panning", lambda k: texture(k, 1.0), lambda k: ellipse(48))
    # A textured disc (its own texture) moving right 2 px a frame, its mask a roto of it, over a plate panning
    # left 2 px a frame: what the mask covers moves with the mask, against the plate around it.
    made["tracked"] = write_shot(
        root / "tracked", lambda k: np.where(ellipse(30 + 2 * k)[..., None] > 0, texture(k, 2.0, seed=5),
                                             texture(k, -2.0)),
        lambda k: ellipse(30 + 2 * k), last=FIRST + 4)
    # A patterned disc growing 2 px a frame (coming closer) over a still plate, its mask a roto of it.
    made["growing"] = write_shot(
        root / "growing", lambda k: np.where(ellipse(48, rx=14 + 2 * k, ry=16 + 2 * k)[..., None] > 0,
                                             disc_pattern(14 + 2 * k), texture(k, 0.0)),
        lambda k: ellipse(48, rx=14 + 2 * k, ry=16 + 2 * k), last=FIRST + 4)
    # The stand-in inside the mask changes every frame; around it nothing moves.
    made["flicker"] = write_shot(root / "flicker", lambda k: tinted(0) + 0.3 * (k % 2) * ellipse(48)[..., None],
                                 lambda k: ellipse(48), last=FIRST + 3)
    return made


@pytest.fixture(scope="module")
def tiny_server(shots):
    """The embedded tiny SD and tiny Wan VACE; image adapter 'hero', video adapter 'hero_video' (both Hero's)."""
    from bodydouble_server.config import ServerConfig

    root = shots["root"]
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(root / "adapters"), output_root=str(root / "takes"),
                          resolution=64, video_resolution=64, video_window=WINDOW)
    make_adapters(root / "adapters", {"hero": 7})
    make_video_adapters(root / "adapters", {"hero_video": 3}, config, characters={"hero_video": "Hero"})
    with server_thread(config) as server:
        yield server


@pytest.fixture(scope="module")
def tiny(tiny_server):
    with Client(tiny_server.bound_address, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def passthrough(shots):
    from bodydouble_server.config import ServerConfig

    root = shots["root"]
    config = ServerConfig(port=0, model="test:passthrough", video_model="test:passthrough", roots=[str(root)],
                          adapters=str(root / "no-adapters"), output_root=str(root / "takes-pass"),
                          resolution=64, video_resolution=64, video_window=WINDOW)
    with server_thread(config) as server, Client(server.bound_address, timeout=60) as client:
        yield client


def fill(client, shot, first=FIRST, last=LAST, progress=None, steps=2, **fields) -> object:
    plate, mask = shot
    request = FillRequest(frames=sequence_frames(plate, first, last, mask), steps=steps, seed=3, **fields)
    return client.submit(request).wait(timeout=300, on_progress=(progress.append if progress is not None else None))


def masks(shot, first=FIRST, last=LAST) -> list[np.ndarray]:
    return [read(shot[1].replace("####", f"{f:04d}"))[..., 0] for f in range(first, last + 1)]


def plates(shot, first=FIRST, last=LAST) -> list[np.ndarray]:
    return [read(shot[0].replace("####", f"{f:04d}")) for f in range(first, last + 1)]


# -- the video engine ---------------------------------------------------------------------------
def test_video_engine_fills_the_shot_in_overlapping_chunks_and_leaves_the_plate_outside_the_mask(tiny, shots):
    progress = []
    result = fill(tiny, shots["tinted"], engine="video", adapters=[AdapterRef("hero_video")], conditioning=1,
                  overlap=2, prompt="<hero_video> back of the head", progress=progress)
    assert sorted(result.frames) == list(range(FIRST, LAST + 1))
    plan = chunks.plan(LAST - FIRST + 1, 1, 2, WINDOW, 4, lead=0)
    assert [(c.start, c.cond, c.overlap, c.outputs) for c in plan] == [(0, 0, 0, 9), (7, 1, 2, 5)]
    assert result.info["engine"] == "video"
    assert result.info["chunks"] == [{"first": 1001, "last": 1009, "overlap": 0, "conditioning": 0},
                                     {"first": 1008, "last": 1012, "overlap": 2, "conditioning": 1}]
    assert {p.raw.get("chunk") for p in progress} == {1, 2} and progress[-1].raw["chunks"] == 2
    take = json.loads((Path(result.take_dir) / "take.json").read_text())
    assert take["status"] == "complete" and take["engine"] == "video" and take["base_model"]["family"] == "wan-vace"
    assert take["request"]["overlap"] == 2
    for frame, plate, mask in zip(range(FIRST, LAST + 1), plates(shots["tinted"]), masks(shots["tinted"])):
        out = read(result.frames[frame])
        outside = mask <= 0
        assert np.array_equal(out[outside], plate[outside]), f"frame {frame}: a pixel outside the mask changed"
        assert not np.allclose(out[~outside][:, :3], plate[~outside][:, :3], atol=1e-3), "nothing was filled"
        attrs = headers(result.frames[frame])
        assert attrs["bodydouble:engine"] == "video" and attrs["bodydouble:frame"] == frame
        assert attrs["bodydouble:adapter"] == "hero_video"
        assert attrs["bodydouble:chunk"] == (1 if frame <= 1007 else 2)
        assert "TEST MODEL" in attrs["bodydouble:base_model"]


def test_video_engine_on_the_passthrough_model_gives_each_frame_its_own_plate(passthrough, shots):
    """The passthrough video model returns its input: each output frame inside the mask must be its own plate
    (the tint says which frame it is), through chunks, overlap cross-fades and conditioning frames."""
    result = fill(passthrough, shots["tinted"], engine="video", conditioning=1, overlap=2)
    for frame, plate, mask in zip(range(FIRST, LAST + 1), plates(shots["tinted"]), masks(shots["tinted"])):
        inside = mask > 0
        out = read(result.frames[frame])
        own = np.abs(out[inside][:, :3] - plate[inside][:, :3]).mean()
        assert own < 4e-3, (frame, own)       # colour and resize round trip only; neighbours differ by 0.04


def test_every_frame_of_a_shot_is_cropped_around_its_own_mask_at_one_size(shots):
    """Both shot engines crop each frame as per-frame fill does (its mask plus context), at one size for the
    shot. One box for the whole shot (the union of its masks) cost the video engine 1.7 dB and its identity
    (0.42 -> 0.12) in the miniature world: adapters learn a character at fill's framing (docs/likeness.md)."""
    from types import SimpleNamespace

    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.imaging import regions
    from bodydouble_server.operations import sequence

    plate, mask = shots["tinted"]              # the mask moves 1 px a frame: 11 px over the shot
    engine = Engine(ServerConfig(port=0, roots=[str(shots["root"])]))
    boxes = sequence.survey(engine, SimpleNamespace(check_cancelled=lambda: None),
                            FillRequest(frames=sequence_frames(plate, FIRST, LAST, mask)))
    assert len({(b.height, b.width) for b in boxes}) == 1
    centres = []
    for box, m in zip(boxes, masks(shots["tinted"])):
        own = regions.mask_box(m)
        assert abs((box.y0 + box.y1) - (own.y0 + own.y1)) <= 1
        centres.append((box.x0 + box.x1) - (own.x0 + own.x1))
    assert max(map(abs, centres)) <= 1, centres


def test_cancel_mid_chunk_keeps_finished_chunks_and_never_completes(tiny, shots):
    plate, mask = shots["tinted"]
    _, take = cancel_at_chunk(tiny, FillRequest(frames=sequence_frames(plate, FIRST, LAST, mask), engine="video", steps=4,
                                             adapters=[AdapterRef("hero_video")], shot="sh_cancel"))
    assert take["status"] == "cancelled"
    assert sorted(int(f) for f in take["frames"]) == list(range(1001, 1010)), "chunk 1 on disk, nothing of chunk 2"


def test_video_engine_strength_runs_the_last_part_of_the_schedule_and_keeps_the_plate_outside(tiny, shots):
    """strength 0.5 of 4 steps: the real Wan VACE pipeline runs 2 steps a chunk from the noised plate (as image
    inpainting's strength does), recorded in the take; outside the mask nothing moves."""
    progress = []
    result = fill(tiny, shots["tinted"], last=FIRST + 4, engine="video", steps=4, strength=0.5, progress=progress)
    assert {(p.raw["step"], p.raw["steps"]) for p in progress if "step" in p.raw} == {(1, 2), (2, 2)}
    take = json.loads((Path(result.take_dir) / "take.json").read_text())
    assert take["status"] == "complete" and take["request"]["strength"] == 0.5
    for frame, plate, mask in zip(range(FIRST, FIRST + 5), plates(shots["tinted"]), masks(shots["tinted"])):
        outside = mask <= 0
        assert np.array_equal(read(result.frames[frame])[outside], plate[outside])


def test_video_engine_strength_and_known_frames_on_the_world_video_model():
    """On a video model that learned heads (the world's), a low strength gives back nearly the plate under the
    mask (the VAE's round trip: measured 27.6 dB at 0.2, 25.3 at 0.5) and strength 1.0 draws anew from noise
    (9.7 dB); the scheduler is the pipeline's own again afterwards. A known frame pinned stays itself."""
    import torch
    from diffusers import WanVACEPipeline

    from bodydouble_server.miniworld import characters as chars
    from bodydouble_server.miniworld.experiment import VIDEO_MODEL
    from bodydouble_server.models import wan

    torch.manual_seed(0)
    pipe = WanVACEPipeline.from_pretrained(str(VIDEO_MODEL))
    pipe.set_progress_bar_config(disable=True)
    character = chars.eval_characters(20261203, 1)[0]
    shot = chars.random_shot(chars._rng(5, "strength"), 64, 64)
    rendered = [chars.render(character, shot, 170.0 + 4 * k) for k in range(5)]
    video = np.stack([np.clip(rgb / (1 + rgb), 0, 1) for rgb, _ in rendered]).astype(np.float32)
    mask = np.stack([(matte > 0.5) for _, matte in rendered]).astype(np.float32)
    inside = mask > 0.5

    def masked_psnr(strength: float) -> tuple[float, int]:
        steps = []
        out = wan.inpaint(pipe, video, mask, height=64, width=64, prompt="back of the head", negative_prompt="",
                          steps=20, guidance=2.0, fps=24.0, generator=torch.Generator().manual_seed(3),
                          on_step=lambda step, total: steps.append(total), strength=strength)
        return 10 * np.log10(1.0 / np.mean((out - video)[inside] ** 2)), steps[-1]

    low, low_steps = masked_psnr(0.2)
    full, full_steps = masked_psnr(1.0)
    assert (low_steps, full_steps) == (4, 20)
    assert low > 24.0 and low > full + 8.0, (low, full)
    assert "set_timesteps" not in vars(pipe.scheduler)

    # A known first frame (a key frame): pinned to its own latents it comes back as the VAE codes it; left to
    # the transformer, which VACE only tells about it, it is redrawn (measured 29.3 dB against 11.4 here).
    keyed = mask.copy()
    keyed[0] = 0.0
    first = {}
    for pin in (False, True):
        out = wan.inpaint(pipe, video, keyed, height=64, width=64, prompt="back of the head", negative_prompt="",
                          steps=20, guidance=2.0, fps=24.0, generator=torch.Generator().manual_seed(3),
                          on_step=lambda step, total: None, pin_known=pin)
        first[pin] = 10 * np.log10(1.0 / np.mean((out[0] - video[0])[inside[0]] ** 2))
    assert first[True] > 24.0 and first[True] > first[False] + 8.0, first


def test_a_key_frame_is_what_the_video_model_is_given_for_the_first_frame(passthrough, shots):
    """The passthrough video model gives back what it is given: inside the mask the first frame must be the key
    frame's pixels (known to the model), every later frame its own plate; outside it, the plate to the bit
    (no feather: its ramp inside the mask would keep some plate)."""
    key = plates(shots["tinted"])[0].copy()
    key[..., :3] += 0.3                       # filled differently (everywhere: no edge for the resizes to soften)
    key_path = shots["root"] / "approved" / "key.1001.exr"
    _write(key_path, key, "RGBA")
    result = fill(passthrough, shots["tinted"], last=FIRST + 4, engine="video", key_frame=str(key_path), feather=0)
    for k, (frame, plate, mask) in enumerate(zip(range(FIRST, FIRST + 5), plates(shots["tinted"]),
                                                 masks(shots["tinted"]))):
        out, inside = read(result.frames[frame]), mask > 0
        assert np.array_equal(out[~inside], plate[~inside]), f"frame {frame}: a pixel outside the mask changed"
        expected = key if k == 0 else plate
        assert np.abs(out[inside][:, :3] - expected[inside][:, :3]).mean() < 4e-3, frame
    assert headers(result.frames[FIRST])["bodydouble:key_frame"] == str(key_path)
    take = json.loads((Path(result.take_dir) / "take.json").read_text())
    assert take["request"]["key_frame"] == str(key_path) and take["status"] == "complete"


def test_a_key_frame_below_full_strength_starts_the_video_model_from_the_key_carried_through_the_shot(
        passthrough, shots):
    """The plate pans 1 px a frame behind a mask that stays put; the key frame shows another texture inside the
    mask. Below strength 1 the video model starts from the key carried along the pan (the passthrough gives its
    start back), over two chunks: inside the mask each frame shows the key's texture where the pan has taken it,
    not its own plate (what strength 1 gives back, the test above)."""
    shot = shots["panning"]
    all_plates, mask = plates(shot), masks(shot)[0] > 0
    key = all_plates[0].copy()
    key[..., :3] = np.where(mask[..., None], texture(0, 1.0, seed=9), key[..., :3])
    key_path = shots["root"] / "approved" / "panning-key.1001.exr"
    _write(key_path, key, "RGBA")
    result = fill(passthrough, shot, engine="video", key_frame=str(key_path), strength=0.5, conditioning=1,
                  overlap=2)
    assert result.info["chunks"] and len(result.info["chunks"]) == 2
    inner = ellipse(48, rx=10, ry=12) > 0       # away from the matte's edge and the crop's
    for k, plate in enumerate(all_plates[1:], start=1):
        region = inner & np.roll(inner, k, axis=1)         # what lay inside the key's mask, panned k px
        out, moved = read(result.frames[FIRST + k]), texture(k, 1.0, seed=9)
        assert np.array_equal(out[~mask], plate[~mask]), f"frame {FIRST + k}: a pixel outside the mask changed"
        carried = np.abs(out[region][:, :3] - moved[region]).mean()
        own = np.abs(plate[region][:, :3] - moved[region]).mean()
        assert carried < 0.25 * own, (k, carried, own)


def test_key_adapters_fill_the_first_frame_as_the_image_engine_would_and_key_the_shot_with_it(tiny, shots):
    """One request instead of two: with key adapters the server fills the shot's first frame on its image model
    (the image adapter 'hero', as per-frame fill would) and keys the video engine with it. The take must be the
    one a key frame file from that image fill gives, to the bit, with the key adapters in its provenance."""
    common = dict(prompt="<hero> back of the head", feather=1)
    image = fill(tiny, shots["tinted"], last=FIRST, engine="image", adapters=[AdapterRef("hero")], **common)
    video = dict(last=FIRST + 4, engine="video", adapters=[AdapterRef("hero_video")], **common)
    from_file = fill(tiny, shots["tinted"], key_frame=image.frames[FIRST], **video)
    progress = []
    keyed = fill(tiny, shots["tinted"], key_adapters=[AdapterRef("hero")], progress=progress, **video)
    for frame in range(FIRST, FIRST + 5):
        assert np.array_equal(read(keyed.frames[frame]), read(from_file.frames[frame])), frame
    assert any(p.raw.get("message", "").startswith(f"key frame {FIRST}: step") for p in progress)
    attrs = headers(keyed.frames[FIRST + 2])
    assert attrs["bodydouble:key_adapter"] == "hero" and len(attrs["bodydouble:key_adapter_sha256"]) == 64
    take = json.loads((Path(keyed.take_dir) / "take.json").read_text())
    assert [a["name"] for a in take["key_adapters"]] == ["hero"] and take["status"] == "complete"


def test_the_cli_keys_a_video_engine_fill_as_the_hosts_do(tiny_server, shots, capsys):
    """``bodydouble fill`` with a video adapter and no key: the take is keyed by the video adapter's character's
    image adapter (``host.key_adapter_for``, the hosts' default); ``--no-key`` leaves it unkeyed; an image
    adapter's fill (the image engine) takes no key; an explicit ``--key-adapter`` is the key as given."""
    from bodydouble import cli

    plate, mask = shots["tinted"]

    def take(*extra) -> tuple[dict, str]:
        argv = ["fill", "--server", tiny_server.bound_address, "--plate", plate, "--mask", mask,
                "--frames", f"{FIRST}-{FIRST + 2}", "--steps", "1", "--json", *extra]
        assert cli.main(argv) == 0
        out = capsys.readouterr()
        return json.loads((Path(json.loads(out.out)["take_dir"]) / "take.json").read_text()), out.err

    keyed, said = take("--adapter", "hero_video")
    assert keyed["engine"] == "video" and [a["name"] for a in keyed["key_adapters"]] == ["hero"]
    assert "key adapter: hero" in said and "--no-key" in said
    unkeyed, said = take("--adapter", "hero_video", "--no-key")
    assert unkeyed["engine"] == "video" and not unkeyed.get("key_adapters") and "key adapter" not in said
    image, said = take("--adapter", "hero")
    assert image["engine"] == "image" and not image.get("key_adapters") and "key adapter" not in said
    named, said = take("--adapter", "hero_video", "--engine", "video", "--key-adapter", "hero")
    assert [a["name"] for a in named["key_adapters"]] == ["hero"] and "key adapter" not in said
    quiet, said = take("--adapter", "hero_video", "--quiet")
    assert [a["name"] for a in quiet["key_adapters"]] == ["hero"] and said == ""


def test_key_adapters_key_every_chunk_as_a_shot_starting_there_would_be(tiny, tiny_server, shots, monkeypatch):
    """A key holds one window (docs/likeness.md). With key adapters each later chunk's first conditioning frame
    is that frame filled anew on the image model and held to its latents: exactly the key a shot starting at
    that frame gets; the chunks are as long as the video adapter's clips (a synthetic adapter: stills, so the
    shortest call, 5 frames). A key frame file keys the first chunk only, in chunks of the model's window."""
    family = tiny_server.engine.video.family
    calls, real = [], family.inpaint

    def spy(pipe, video, mask, **settings):
        made = real(pipe, video, mask, **settings)
        calls.append({"first": np.array(video[0]), "pinned": settings["pin_known"], "made": np.array(made)})
        return made

    monkeypatch.setattr(family, "inpaint", spy)
    video = dict(engine="video", adapters=[AdapterRef("hero_video")], prompt="<hero> back of the head",
                 conditioning=1, overlap=2)
    keyed = fill(tiny, shots["tinted"], key_adapters=[AdapterRef("hero")], **video)
    plan = chunks.plan(LAST - FIRST + 1, 1, 2, 5, 4, lead=0)
    assert [(c["first"], c["last"]) for c in keyed.info["chunks"]] == [
        (FIRST + c.start, FIRST + c.start + c.outputs - 1) for c in plan] and len(plan) == 5
    long, calls[:] = list(calls), []
    assert [c["pinned"] for c in long] == [True] * len(plan)
    second = plan[1].start - plan[1].cond                  # chunk 2's conditioning frame, keyed anew
    fill(tiny, shots["tinted"], first=FIRST + second, key_adapters=[AdapterRef("hero")], **video)
    assert np.array_equal(long[1]["first"], calls[0]["first"]), f"chunk 2's key is not frame {FIRST + second} filled"
    calls[:] = []
    filed = fill(tiny, shots["tinted"], key_frame=shots["tinted"][0].replace("####", str(FIRST)), **video)
    assert len(filed.info["chunks"]) == 2 and [c["pinned"] for c in calls] == [True, False]
    assert np.array_equal(calls[1]["first"], calls[0]["made"][6]), "chunk 2 conditions on chunk 1's frame 1007"


def test_keyed_chunks_are_as_long_as_the_clips_the_video_adapter_learned(shots, tmp_path):
    """A fill adapter trained on 9-frame clips (its manifest says so) fills keyed shots in chunks of 9 frames,
    the latent frames it learned; one from stills in the shortest call. Conditioning + overlap that need more
    get more. Unkeyed, or keyed by a file (the first chunk only), the model's window."""
    from types import SimpleNamespace

    from bodydouble_server.adapters import Adapter
    from bodydouble_server.operations import sequence

    def learned(frames):
        return Adapter(name="a", folder=tmp_path, manifest={"training": {"settings": {"clip_frames": frames}}})

    model = SimpleNamespace(window=WINDOW, family=SimpleNamespace(temporal_multiple=4))
    plate, mask = shots["tinted"]

    def window(frames, **fields):
        req = FillRequest(frames=sequence_frames(plate, FIRST, LAST, mask), engine="video", **fields)
        return sequence._window(req, model, [(learned(frames), 1.0)])

    keyed = dict(key_adapters=[AdapterRef("hero")])
    assert (window(9, **keyed), window(5, **keyed), window(1, **keyed)) == (9, 5, 5)
    assert window(1, conditioning=4, overlap=2, **keyed) == 9          # 4 + 2 + 1 frames: the next valid length
    assert window(5) == WINDOW and window(5, key_frame=plate.replace("####", str(FIRST))) == WINDOW


def test_cancel_during_a_later_chunks_key_fill_keeps_the_finished_chunk_and_never_completes(tiny, shots):
    plate, mask = shots["tinted"]
    job = tiny.submit(FillRequest(frames=sequence_frames(plate, FIRST, LAST, mask), engine="video", steps=4,
                                  adapters=[AdapterRef("hero_video")], key_adapters=[AdapterRef("hero")],
                                  shot="sh_cancel_key"))
    for progress in job.events(timeout=120):
        if progress.raw.get("message", "").startswith("key frame") and progress.raw.get("frame") != FIRST:
            job.cancel()                                  # chunk 2's key, on the image model
            break
    with pytest.raises(errors.JobCancelled):
        job.wait(timeout=120)
    take = json.loads((Path(tiny.status(job.job_id)["take_dir"]) / "take.json").read_text())
    assert take["status"] == "cancelled"
    assert sorted(int(f) for f in take["frames"]) == list(range(FIRST, FIRST + 5)), "chunk 1 only (5-frame calls)"
    assert tiny.heartbeat()["state"] == "ready"


def test_bad_key_adapters_are_refused_at_submit_with_a_code(tiny, shots):
    plate, mask = shots["tinted"]
    frames = sequence_frames(plate, FIRST, FIRST + 2, mask)
    video = dict(frames=frames, adapters=[AdapterRef("hero_video")])
    with pytest.raises(errors.AdapterIncompatible):      # a video adapter cannot fill on the image model
        tiny.submit(FillRequest(key_adapters=[AdapterRef("hero_video")], **video)).wait(timeout=60)
    with pytest.raises(errors.RequestError, match="key_adapters is the video engine's option") as caught:
        tiny.submit(FillRequest(frames=frames, engine="image", key_adapters=[AdapterRef("hero")])).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST
    with pytest.raises(errors.RequestError, match="not both") as caught:
        tiny.submit(FillRequest(key_adapters=[AdapterRef("hero")], key_frame=plate.replace("####", str(FIRST)),
                                **video)).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST
    with pytest.raises(errors.UnknownAdapter):
        tiny.submit(FillRequest(key_adapters=[AdapterRef("nobody")], **video)).wait(timeout=60)
    assert tiny.connect()["model"]["video_model"]["fill_engine"] is True      # still answering


def test_bad_key_frames_are_refused_with_a_code(passthrough, shots):
    plate, mask = shots["tinted"]
    frames = sequence_frames(plate, FIRST, FIRST + 2, mask)
    small = shots["root"] / "approved" / "small.exr"
    _write(small, np.ones((H // 2, W // 2, 4), np.float32), "RGBA")
    with pytest.raises(errors.RequestError, match="key frame is 48x32 but plate 1001 is 96x64") as caught:
        passthrough.submit(FillRequest(frames=frames, engine="video", key_frame=str(small))).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST
    with pytest.raises(errors.RequestError, match="key_frame is the video engine's option"):
        passthrough.submit(FillRequest(frames=frames, engine="image", key_frame=str(small))).wait(timeout=60)
    with pytest.raises(errors.RequestError, match="key frame") as caught:
        passthrough.submit(FillRequest(frames=frames, key_frame="/no/such/key.exr")).wait(timeout=60)
    assert passthrough.connect()["model"]["video_model"]["fill_engine"] is True      # still answering


def test_the_server_picks_the_video_engine_for_a_shot_with_video_adapters(tiny, shots):
    video = fill(tiny, shots["tinted"], last=FIRST + 2, adapters=[AdapterRef("hero_video")])
    image = fill(tiny, shots["tinted"], last=FIRST + 2, adapters=[AdapterRef("hero")])
    assert video.info["engine"] == "video" and image.info["engine"] == "image"
    assert headers(image.frames[FIRST])["bodydouble:engine"] == "image"
    hello = tiny.connect()
    assert hello["model"]["video_model"]["fill_engine"] is True


# -- bad input ----------------------------------------------------------------------------------
def test_bad_shots_are_refused_at_submit_with_a_code(tiny, shots):
    plate, mask = shots["tinted"]
    takes_before = sorted((shots["root"] / "takes").rglob("take.json"))
    gappy = [f for f in sequence_frames(plate, FIRST, FIRST + 4, mask) if f.frame != FIRST + 2]
    with pytest.raises(errors.RequestError, match="1002 is followed by 1004") as caught:
        tiny.submit(FillRequest(frames=gappy, engine="video", adapters=[AdapterRef("hero_video")])).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST
    some = sequence_frames(plate, FIRST, FIRST + 3, mask)
    some[2] = FrameInput(frame=some[2].frame, plate=some[2].plate)
    with pytest.raises(errors.RequestError, match="frames 1003 have none") as caught:
        tiny.submit(FillRequest(frames=some, coherence=0.5)).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST
    with pytest.raises(errors.AdapterIncompatible):      # an image adapter on the video engine
        tiny.submit(FillRequest(frames=sequence_frames(plate, FIRST, FIRST + 2, mask), engine="video",
                                adapters=[AdapterRef("hero")])).wait(timeout=60)
    with pytest.raises(errors.RequestError, match="coherence is the image engine"):
        tiny.submit(FillRequest(frames=sequence_frames(plate, FIRST, FIRST + 2, mask), engine="video",
                                coherence=0.5)).wait(timeout=60)
    assert sorted((shots["root"] / "takes").rglob("take.json")) == takes_before, "a refused request made a take"


def test_video_engine_without_a_video_model_is_not_supported_at_submit(shots):
    from bodydouble_server.config import ServerConfig

    root = shots["root"]
    config = ServerConfig(port=0, model="test:passthrough", video_model="none", roots=[str(root)],
                          adapters=str(root / "no-adapters"), output_root=str(root / "takes-none"), resolution=64)
    plate, mask = shots["tinted"]
    with server_thread(config) as server, Client(server.bound_address, timeout=60) as client:
        with pytest.raises(errors.RequestError) as caught:
            client.submit(FillRequest(frames=sequence_frames(plate, FIRST, FIRST + 2, mask), engine="video",
                                      steps=1)).wait(timeout=60)
        assert caught.value.code == errors.NOT_SUPPORTED and "video model" in str(caught.value)
        assert not (root / "takes-none").exists()
        # Left to the server, the same request runs frame by frame.
        assert fill(client, shots["tinted"], last=FIRST + 1).info["engine"] == "image"


# -- coherence (image engine) -------------------------------------------------------------------
def test_coherence_1_holds_the_fill_where_the_plate_stands_still(passthrough, shots):
    """Around the mask nothing moves; inside it the stand-in flickers. Frame by frame the passthrough gives the
    flicker back; at coherence 1 the first frame's fill is carried (by zero motion) through the shot."""
    shot, last = shots["flicker"], FIRST + 3
    inside = [m > 0 for m in masks(shot, last=last)]
    # No feather: at a feathered edge the composite keeps some of the (flickering) plate by design.
    per_frame = fill(passthrough, shot, last=last, feather=0)
    held = fill(passthrough, shot, last=last, coherence=1.0, feather=0)
    assert held.info["engine"] == "image" and headers(held.frames[FIRST])["bodydouble:coherence"] == 1.0

    def change(result, frame):
        a, b = read(result.frames[frame - 1]), read(result.frames[frame])
        return np.abs(a - b)[inside[frame - FIRST]][:, :3]

    for frame in range(FIRST + 1, last + 1):
        assert change(per_frame, frame).max() > 0.25          # the stand-in's 0.3 flicker
        # Held: at most 1/30 of it anywhere (the resize back to the plate spreads a little of the plate's
        # flickering edge into the mask's border), 1/300 on average.
        assert change(held, frame).max() < 0.01 and change(held, frame).mean() < 1e-3, frame


def test_coherence_carries_the_fill_along_the_plates_motion(passthrough, shots):
    """The whole plate pans 2 px a frame. At coherence 1 the first frame's fill (the passthrough's: frame 1's
    plate) is carried by the flow measured around the mask, so each frame inside the mask shows its own plate
    again, not the first frame's where it stood."""
    shot, last = shots["moving"], FIRST + 4
    result = fill(passthrough, shot, last=last, coherence=1.0)
    all_plates, all_masks = plates(shot, last=last), masks(shot, last=last)
    inside = all_masks[0] > 0
    inner = np.zeros_like(inside)
    inner[12:-12, 30:-30] = True       # away from the crop's edges, where the warp repeats the border
    inner &= inside
    for k in range(1, last - FIRST + 1):
        out = read(result.frames[FIRST + k])
        carried = np.abs(out[inner][:, :3] - all_plates[k][inner][:, :3]).mean()
        unmoved = np.abs(all_plates[0][inner][:, :3] - all_plates[k][inner][:, :3]).mean()
        assert carried < 0.25 * unmoved, (k, carried, unmoved)


@pytest.mark.parametrize("name, inner", [
    ("tracked", lambda k: ellipse(30 + 2 * k, rx=12, ry=14)),      # away from the matte's edge
    ("growing", lambda k: ellipse(48, rx=10 + 2 * k, ry=12 + 2 * k)),
])
def test_coherence_carries_the_fill_along_a_moving_matte_not_the_plate_around_it(passthrough, shots, name, inner):
    """The mask is a roto of a disc moving right while the plate around it pans left (``tracked``), or of a disc
    growing over a still plate (``growing``). At coherence 1 the first frame's fill (the passthrough's: the disc)
    is carried with the matte, so each frame shows the disc as it is now; carried with the plate around the mask
    it would slide 4 px a frame against it, or stay its first size."""
    shot, last = shots[name], FIRST + 4
    result = fill(passthrough, shot, last=last, coherence=1.0)
    all_plates = plates(shot, last=last)
    for k in range(1, last - FIRST + 1):
        region = inner(k) > 0
        out = read(result.frames[FIRST + k])
        carried = np.abs(out[region][:, :3] - all_plates[k][region][:, :3]).mean()
        unmoved = np.abs(all_plates[0][region][:, :3] - all_plates[k][region][:, :3]).mean()
        assert carried < 0.25 * unmoved, (k, carried, unmoved)


# -- the miniature world ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world_shot(tmp_path_factory):
    """One held-out character's back-facing turntable, the camera panning, filled by the world's baked base
    models (image and video) through the real server (bench/shot_fill.py's CI setting: seconds)."""
    from bodydouble_server.miniworld import shots

    results = shots.run(shots.CI, tmp_path_factory.mktemp("world-shot"))
    print("\n" + shots.format_table(results))
    return results


def test_coherent_fill_flickers_no_more_than_per_frame_fill_in_the_miniature_world(world_shot):
    """Flicker inside the mask is relative to the truth's own change. In this world per-frame fill on a fixed
    seed already follows the plate (the two measure within a few per cent), so what this catches is a coherence
    that adds flicker or costs likeness: measured, feeding each frame's result back through the model (img2img
    from the carried frame) gave flicker 1.07 against 0.35, and one crop for the whole shot cost 1.2 dB of
    masked PSNR."""
    from bodydouble_server.miniworld import shots

    rows = world_shot["rows"]
    assert world_shot["model"]["family"] == "miniworld" and world_shot["model"]["test_model"] is True
    assert rows["frame"]["frames"] == rows["coherent"]["frames"] == shots.CI.test_frames
    assert rows["frame"]["flicker"] > 0.05, "per-frame fill did not change at all: the shot does not move"
    assert rows["coherent"]["flicker"] <= min(1.2, rows["frame"]["flicker"] * 1.05)     # 1.2: the goal
    assert rows["coherent"]["psnr_db"] >= rows["frame"]["psnr_db"] - 0.5


def test_video_engine_fills_the_turning_head_without_flicker_in_the_miniature_world(world_shot):
    """The video engine on the world's baked video model (bake_video.py): the flicker goal. Its likeness is not
    gated here: at this size (base models, 8 steps) every row scores near the stand-in plate's masked PSNR
    (measured: image 9.8, video 10.9, the stand-in 9.5 dB); bench/shot_fill.py has the full table."""
    from bodydouble_server.miniworld import shots

    video = world_shot["rows"]["video"]
    assert world_shot["video_model"]["family"] == "miniworld-video" and world_shot["video_model"]["test_model"]
    assert video["frames"] == shots.CI.test_frames
    assert 0.05 < video["flicker"] <= 1.2, video          # above 0.05: a frozen fill is not coherence
    # The bench's PSNR by frame of the shot (where the video adapter's lone-frame gain showed) is per frame:
    # one value a frame, their mean the row's own (every character fills every frame), and not all one value.
    by_frame = video["psnr_db_by_frame"]
    assert len(by_frame) == shots.CI.test_frames and abs(np.mean(by_frame) - video["psnr_db"]) < 1e-9
    assert len(set(by_frame)) > 1
    assert "PSNR dB by frame of the shot" in shots.format_table(world_shot)
    # Given per-frame fill's first frame as its key frame, the video engine holds it (the take's first frame
    # against the key inside the mask: measured 33.0 dB held, 22.0 redrawn by the transformer) and stays steady.
    keyed = world_shot["rows"]["keyed"]
    assert keyed["key_held_db"] > 25.0, keyed
    assert 0.05 < keyed["flicker"] <= 1.2, keyed


def test_a_fill_adapter_from_held_stills_fills_the_shot_better_than_one_from_1_frame_clips(tmp_path_factory):
    """The same still references trained as 1-frame clips (both jobs) and as a fill adapter whose stills are held
    as 5-frame clips (clip_frames 5, clip_fill 1, the bench's default): the video engine fills the held-out shot
    closer to the truth with the fill adapter. Measured at this size: 17.97 dB against 16.22 (3 characters x 8
    frames, 150 steps: 15.90 against 14.13), so a fill objective that is lost or mis-built (its control, its
    loss, the stills not held) fails this (checked: the world's footage adapter on extend's objective alone,
    10.54 dB against 16.22 from 1-frame clips)."""
    from dataclasses import replace

    from bodydouble_server.miniworld import shots

    video = {held: shots.run(replace(shots.CI_VIDEO_ADAPTER, still_clip_frames=held),
                             tmp_path_factory.mktemp(f"held{held}"))["rows"]["video"]
             for held in (1, 5)}
    assert video[5]["psnr_db"] >= video[1]["psnr_db"] + 0.5, video


# -- host pickers -------------------------------------------------------------------------------
def test_host_pickers_offer_both_engines_and_the_video_adapters_for_the_video_engine(tiny, shots):
    from bodydouble import host

    caps = tiny.connect()
    adapters = tiny.list_adapters()
    assert host.fill_engines(caps) == ["image", "video"]
    assert host.default_engine(caps, FIRST, LAST, adapters) == "video"
    assert host.default_engine(caps, FIRST, FIRST, adapters) == "image"
    image_only = [a for a in adapters if a.model_kind == "image"]
    assert host.default_engine(caps, FIRST, LAST, image_only) == "image", "no video adapter: no dead end"
    assert host.fill_engines({"model": {"video_model": None}}) == ["image"]
    assert set(host.adapter_choices(adapters, "fill", "video").values()) == {"hero_video"}
    assert set(host.adapter_choices(adapters, "fill", "image").values()) == {"hero"}
    assert set(host.adapter_choices(adapters, "fill").values()) == {"hero"}
    plate, mask = shots["tinted"]
    params = host.Params(operation="fill", adapter="hero_video", engine="video", first=FIRST, last=FIRST + 2,
                         plate=plate, mask=mask, steps=1)
    request = params.request()
    assert request.engine == "video" and request.coherence == 0.0 and request.key_adapters == []
    # The key adapter: the video adapter's character's image adapter; an approved key frame wins over it.
    assert host.key_adapter_for(adapters, "hero_video") == "hero" and host.key_adapter_for(adapters, "nobody") == ""
    keyed = dataclasses.replace(params, key_adapter="hero")
    assert keyed.request().key_adapters == [AdapterRef("hero")]
    assert dataclasses.replace(keyed, key_frame=plate.replace("####", str(FIRST))).request().key_adapters == []
    assert dataclasses.replace(keyed, engine="image", adapter="hero").request().key_adapters == []
    # Video adapters trained for one job alone come first in that job's picker (its default), the other job's last.
    from bodydouble.client import AdapterInfo

    def video_adapter(name, job):
        return AdapterInfo(name=name, character="Hero", trigger="", base_model="wan", status="ready",
                           raw={"model_kind": "video", "trained_for": job})

    listed = [video_adapter("walk", "extend"), video_adapter("stills", ""), video_adapter("turn", "fill")]
    assert list(host.adapter_choices(listed, "fill", "video").values()) == ["turn", "stills", "walk"]
    assert list(host.adapter_choices(listed, "extend").values()) == ["walk", "stills", "turn"]
    assert host.Params.from_dict(params.to_dict()) == params
    result = tiny.submit(request).wait(timeout=120)
    assert result.info["engine"] == "video" and sorted(result.frames) == [FIRST, FIRST + 1, FIRST + 2]
    coherent = host.Params(operation="fill", adapter="hero", engine="image", coherence=0.5, first=FIRST,
                           last=FIRST + 2, plate=plate, mask=mask).request()
    assert coherent.engine == "image" and coherent.coherence == 0.5


@contextlib.contextmanager
def nuke_fill_node(tiny, shots, tmp_path, monkeypatch):
    """The fake nuke with a fresh BodyDouble node made by *Fill unseen angle…* over the tinted shot's first three
    frames (plate and matte Reads selected): yields (nuke, group)."""
    from .support import fake_nuke_session

    plate, mask = shots["tinted"]
    with fake_nuke_session(tiny.address, tmp_path, monkeypatch) as nuke:
        read = nuke.nodes.Read(file=plate, first=FIRST, last=FIRST + 2)
        matte = nuke.nodes.Read(file=mask, first=FIRST, last=FIRST + 2)
        nuke._select(matte, read)
        nuke.menu("Node Graph").findItem("BodyDouble/Fill unseen angle…").invoke()
        yield nuke, nuke.selectedNode()


def test_nuke_node_offers_the_video_engine_for_a_shot_and_generates_with_it(tiny, shots, tmp_path, monkeypatch):
    """The Nuke glue on the fake nuke: a fresh node over a range opens on the video engine with the video
    adapters; Generate sends a video-engine fill and loads its take; back on 'image' Refresh lists image ones."""
    plate = shots["tinted"][0]
    with nuke_fill_node(tiny, shots, tmp_path, monkeypatch) as (nuke, group):
        from bodydouble_nuke import commands
        from bodydouble_nuke import node as bd_node

        assert group["engine"].values() == ["image", "video"] and group["engine"].value() == "video"
        assert list(bd_node.adapter_names(group).values()) == ["hero_video"]
        group["steps"].setValue(1)
        group["shot"].setValue("nk_shot")
        assert group["feather"].value() == 4                    # fill's default, lowered for a small mask
        group["feather"].setValue(1)
        group["key_frame"].setValue(plate.replace("####", str(FIRST)))    # any picture of the plate's size
        group["generate"].execute()
        nuke._process_events(until=lambda: not commands._running, timeout=120)
        assert nuke._messages == []
        take = next(n for n in nuke.allNodes(group=group) if n.Class() == "Read")
        info = json.loads((Path(take["file"].value()).parent / "take.json").read_text())
        assert info["status"] == "complete" and info["engine"] == "video" and info["request"]["feather"] == 1
        assert info["request"]["key_frame"] == plate.replace("####", str(FIRST)) and "key_adapters" not in info
        # Without a key frame the key adapter Refresh picked (the video adapter's character's image adapter)
        # fills the first frame on the server.
        assert bd_node.read_params(group).key_adapter == "hero" and group["key_adapter"].values()[0] == "none"
        group["key_frame"].setValue("")
        group["generate"].execute()
        nuke._process_events(until=lambda: not commands._running, timeout=120)
        assert nuke._messages == []
        take = sorted((n for n in nuke.allNodes(group=group) if n.Class() == "Read"), key=lambda n: n.name())[-1]
        info = json.loads((Path(take["file"].value()).parent / "take.json").read_text())
        assert info["status"] == "complete" and [a["name"] for a in info["key_adapters"]] == ["hero"]
        group["engine"].setValue("image")
        group["refresh"].execute()
        assert group["engine"].value() == "image" and list(bd_node.adapter_names(group).values()) == ["hero"]


def test_nuke_key_from_take_hands_the_shown_image_take_to_the_video_engine(tiny, shots, tmp_path, monkeypatch):
    """The key-frame workflow on the fake nuke: fill on the image engine, Key from take, Generate on the video
    engine: the server gets the image take's first frame as the key frame; no take shown, a message says so."""
    with nuke_fill_node(tiny, shots, tmp_path, monkeypatch) as (nuke, group):
        from bodydouble_nuke import commands
        from bodydouble_nuke import node as bd_node

        group["key_from_take"].execute()                          # nothing filled yet
        assert nuke._messages and "show a fill take first" in nuke._messages.pop()
        group["steps"].setValue(1)
        group["shot"].setValue("nk_key")

        def generate(engine):
            group["engine"].setValue(engine)
            group["refresh"].execute()
            group["generate"].execute()
            nuke._process_events(until=lambda: not commands._running, timeout=120)
            assert nuke._messages == []
            return bd_node.takes(group)[-1]

        image_take = generate("image")
        group["key_from_take"].execute()
        key = image_take.pattern.replace("####", f"{FIRST:04d}")
        assert group["key_frame"].value() == key and Path(key).is_file()
        video_take = generate("video")
        info = json.loads((Path(video_take.take_dir) / "take.json").read_text())
        assert info["engine"] == "video" and info["request"]["key_frame"] == key and info["status"] == "complete"


@pytest.fixture(scope="module")
def served(shots, tiny):
    """A `bodydouble serve` process with both tiny models (``tiny`` made the adapters), for Blender."""
    from .support import start_server_process, stop_process

    root = shots["root"]
    proc, address = start_server_process(root, root / "adapters", extra=[
        "--resolution", "64", "--video-resolution", "64", "--video-window", str(WINDOW)])
    yield address
    stop_process(proc)


@pytest.mark.parametrize("blender", ["4.5", "5.0"])
def test_blender_fill_dialog_offers_the_engines_and_fills_a_shot_on_the_video_model(blender, shots, served):
    """The Blender extension in real bpy: the fill dialog's engine picker and a video-engine fill."""
    from .blender_scripts.launcher import blender_python, run_script

    python = blender_python(blender)
    root = shots["root"]
    plate, _mask = shots["tinted"]
    r = run_script(python, "fill_shot.py", {
        "address": served, "first": FIRST, "last": FIRST + 2, "out": str(root / f"blender{blender}"),
        "output_root": str(root / f"takes-blender{blender}"), "plate_first_file": plate.replace("####", str(FIRST)),
        "key_frame": plate.replace("####", str(FIRST))})      # any picture of the plate's size is a key frame
    assert r["refresh"]["result"] == ["FINISHED"]
    assert r["engines"] == ["image", "video"] and r["default_engine"] == "video"
    assert r["adapters_image"] == ["hero"] and r["adapters_video"] == ["hero_video"]
    assert r["fill"] == {"result": ["FINISHED"], "error": None}, r["reports"]
    assert r["take_props"] == {"engine": "video", "adapter": "hero_video", "coherence": 0.0}
    assert r["take"]["status"] == "complete" and r["take"]["engine"] == "video"
    assert r["take"]["request"]["feather"] == 2                 # the dialog's feather reached the server
    assert r["take"]["request"]["key_frame"] == plate.replace("####", str(FIRST))     # and its key frame
    # Carry Through Shot on an image-engine take: the video engine, the take's first frame as the key frame.
    assert r["image_fill"]["result"] == ["FINISHED"] and r["carry"] == {"result": ["FINISHED"], "error": None}
    carried = r["carried_take"]
    assert carried["status"] == "complete" and carried["engine"] == "video" and r["carried_from"]
    assert carried["request"]["key_frame"] == r["image_take_pattern"].replace("####", f"{FIRST:04d}")
    # The key adapter picker: none or the image adapters, the video adapter's character's by default.
    assert r["key_items"] == ["NONE", "hero"] and r["key_for"] == "hero"
    assert r["keyed"] == {"result": ["FINISHED"], "error": None}, r["reports"]
    assert r["keyed_take"]["status"] == "complete" and [a["name"] for a in r["keyed_take"]["key_adapters"]] == ["hero"]
    assert r["video_order"] == ["turn", "stills", "walk"] and r["video_first"] == "turn"
