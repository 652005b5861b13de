"""Video adapters trained on clips of footage (``clip_frames`` > 1), on the embedded tiny Wan VACE.

Plate sequences of a moving character are cut into 5-frame clips and trained with extend's objective
(first frames known, the rest generated) and the video engine's fill (the matte made on every frame): through
the server's train job (published, manifest records the clips, changes extend), in process (stop + resume = an
uninterrupted run), each control as serving builds it, and bad input.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, TrainRequest
from bodydouble_server import samples

from .support import server_thread
from .test_train_video import extend     # a 4-frame extend of studio['plate'], seed 5
from .test_training import write_frames

SIZE = 64
TRAIN = {"character": "Hero", "model_kind": "video", "resolution": SIZE, "steps": 4, "checkpoint_every": 2,
         "learning_rate": 1e-2, "preview_steps": 1, "preview_count": 1, "rights_holder": "Studio test data",
         "licence": "test frames, consent n/a", "clip_frames": 5}
VIEWS = ("front", "back")     # the footage's views: what the data report requires here


def write_footage(root: Path, view: str, name: str, first: int, last: int, masks: bool = True) -> None:
    """A sequence of the character moving across frame (shifted 3 px a frame), with its mattes."""
    (root / view / "masks").mkdir(parents=True, exist_ok=True)
    for n in range(first, last + 1):
        px = np.roll(samples.plate_pixels(SIZE, SIZE, 0), 3 * (n - first) - 12, axis=1)
        samples.write_exr(root / view / f"{name}.{n:04d}.exr", px, ("R", "G", "B", "A"))
        if masks:
            samples.write_exr(root / view / "masks" / f"{name}.{n:04d}.exr", px[:, :, 3:], ("A",))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A server with the embedded video model; footage: front 15 frames + a still, back 12 frames (no mattes)."""
    from bodydouble_server.config import ServerConfig

    root = tmp_path_factory.mktemp("train-clips")
    footage = root / "footage"
    write_footage(footage, "front", "hero_walk", 1001, 1015)          # 3 clips
    write_footage(footage, "back", "hero_turn", 1001, 1012, masks=False)   # 2 clips, 2 frames left
    samples.write_exr(footage / "front" / "hero_still.exr", samples.plate_pixels(SIZE, SIZE, 3), ("R", "G", "B", "A"))
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(root / "adapters"), output_root=str(root / "takes"),
                          resolution=SIZE, video_resolution=SIZE, video_window=9, device="cpu")
    plate, _ = samples.write_sequence(root / "plates", 1001, 1002, SIZE, SIZE)
    with server_thread(config) as server:
        yield {"root": root, "adapters": root / "adapters", "footage": footage, "plate": plate,
               "stills": write_frames(root / "stills", views=["front", "back"]), "address": server.bound_address}


@pytest.fixture
def client(studio):
    with Client(studio["address"], timeout=60) as c:
        yield c


def test_train_job_on_clips_publishes_an_adapter_that_changes_extend(client, studio):
    plain = extend(client, studio, [])
    progress = []
    result = client.submit(TrainRequest(frames=[str(studio["footage"])], name="hero_walk", required_views=list(VIEWS),
                                        **TRAIN)) \
        .wait(timeout=300, on_progress=progress.append)

    assert [p.step for p in progress if p.raw.get("phase") == "train"] == [1, 2, 3, 4]
    assert result.adapter == "hero_walk" and result.info["adapter_status"] == "ready", result.info["adapter_reason"]
    assert [m["step"] for m in result.metrics] == [2, 4] and all(m["heldout"] > 0 for m in result.metrics)
    folder = Path(result.adapter_dir)
    training = json.loads((folder / "manifest.json").read_text())["training"]
    assert training["settings"]["clip_frames"] == 5 and training["settings"]["clip_conditioning"] == 1
    # The reply carries the clip summary (the manifest also lists every clip).
    assert result.info["clips"]["clips"] == 5 and result.info["clips"]["frames_left_out"] == 3
    assert "list" not in result.info["clips"]
    assert training["objective"].startswith("flow matching") and "5-frame clips" in training["objective"]
    clips = training["clips"]
    assert {k: clips[k] for k in ("clip_frames", "clip_conditioning", "clips", "sequences", "frames_in_clips",
                                  "frames_left_out", "stills", "heldout_clips")} == {
        "clip_frames": 5, "clip_conditioning": 1, "clips": 5, "sequences": 2, "frames_in_clips": 25,
        "frames_left_out": 3, "stills": 1, "heldout_clips": 2}
    held = [(Path(c["pattern"]).name, c["first"], c["last"]) for c in clips["list"] if c["heldout"]]
    assert held == [("hero_turn.####.exr", 1006, 1010), ("hero_walk.####.exr", 1011, 1015)]   # the last clip a view
    held_frames = sorted(Path(f["path"]).name for f in training["frames"] if f["heldout"])
    assert held_frames == [f"hero_turn.{n}.exr" for n in range(1006, 1011)] + \
        [f"hero_walk.{n}.exr" for n in range(1011, 1016)]
    assert result.info["previews"] == ["previews/00_back_hero_turn.1006.png"]   # clip above its extend

    listed = {a.name: a for a in client.list_adapters()}
    assert listed["hero_walk"].status == "ready" and listed["hero_walk"].serves("extend")
    # Clips on extend's objective alone: the picker says what it is for.
    assert listed["hero_walk"].trained_for == "extend" and listed["hero_walk"].label.endswith(" · for extend")
    trained = extend(client, studio, [AdapterRef("hero_walk")])
    assert trained.shape == plain.shape and not np.array_equal(trained, plain)
    assert np.array_equal(extend(client, studio, []), plain)     # same seed, no adapter: the same frames


def test_stopped_and_resumed_clip_run_matches_an_uninterrupted_one(tmp_path, studio):
    import torch
    from safetensors.torch import load_file

    from bodydouble_server.config import ServerConfig
    from bodydouble_server.training.report import Thresholds
    from bodydouble_server.training.run import train_adapter
    from bodydouble_server.training.loop import TrainingCancelled
    from bodydouble_server.training.settings import TrainSettings
    from bodydouble_server.models.slots import open_model

    video = open_model("video", ServerConfig(port=0, adapters="/nonexistent-bodydouble-adapters"), "cpu", torch.float32)
    pipe = video.pipeline()
    # Half the samples on fill's objective (back footage without mattes: the whole frame made), half on extend's:
    # the per-sample draw replays on resume like every other draw of a step.
    settings = TrainSettings(**{**TRAIN, "steps": 5, "preview_count": 0, "seed": 9, "batch": 2,
                                "clip_conditioning": 2, "clip_fill": 0.5})
    thresholds = Thresholds(required_views=VIEWS)
    straight, _ = train_adapter(pipe, video.identity, [studio["footage"]], settings, tmp_path / "straight",
                                thresholds=thresholds)
    steps = []
    with pytest.raises(TrainingCancelled) as caught:
        train_adapter(pipe, video.identity, [studio["footage"]], settings, tmp_path / "resumed", thresholds=thresholds,
                      on_progress=lambda p: steps.append(p["step"]), should_stop=lambda: steps[-1:] == [3])
    assert caught.value.step == 3
    resumed, _ = train_adapter(pipe, video.identity, [studio["footage"]], settings, tmp_path / "resumed",
                               thresholds=thresholds, on_progress=lambda p: steps.append(p["step"]))
    assert steps == [1, 2, 3, 4, 5]

    a = load_file(str(straight / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    manifests = [json.loads((f / "manifest.json").read_text())["training"] for f in (straight, resumed)]
    held = [{m["step"]: m["heldout"] for m in t["metrics"]} for t in manifests]
    assert held[1].pop(3) and held[0] == held[1]
    assert manifests[0]["clips"] == manifests[1]["clips"] and manifests[0]["clips"]["clip_conditioning"] == 2
    assert "50% extend" in manifests[0]["objective"] and "50% fill" in manifests[0]["objective"]


@pytest.mark.parametrize("source, changes, text", [
    ("footage", {"clip_frames": 4}, "clip_frames must be 1 or 4k+1"),
    ("stills", {"force": True}, "make none"),
    ("footage", {"model_kind": "image"}, "clip_frames 5 is for video training"),
    ("footage", {"clip_conditioning": 5}, "clip_conditioning (known frames at the start of each clip) must be in 1..4"),
    ("footage", {"clip_frames": 85}, "clip_frames must be in 1..81"),
    ("footage", {"clip_fill": 1.5}, "clip_fill (the share of clips trained on fill, the rest on extend) must be in 0..1"),
])
def test_bad_clip_training_requests_are_clear_errors(client, studio, source, changes, text):
    with pytest.raises(errors.RequestError) as caught:
        client.submit(TrainRequest(frames=[str(studio[source])], name="bad", required_views=list(VIEWS),
                                   **{**TRAIN, **changes})).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST and text in caught.value.message, caught.value.message
    assert client.heartbeat()["state"] == "ready" and not (studio["adapters"] / "bad").exists()


def test_cli_flags_reach_the_request():
    from bodydouble.cli import build_parser, train_request

    args = build_parser().parse_args(["train", "/refs", "--character", "Hero", "--model-kind", "video",
                                      "--clip-frames", "9", "--clip-conditioning", "3"])
    request = train_request(args)
    assert (request.clip_frames, request.clip_conditioning) == (9, 3)
    request.validate()


def test_cut_sequences_into_clips(tmp_path):
    from bodydouble_server.training import clips
    from bodydouble_server.training.dataset import TrainingFrame

    def frame(name):
        return TrainingFrame(tmp_path / name, "", "", 8, 8, 3, "raw", np.zeros((8, 8, 3), np.float32), None)

    names = [f"a.{n}.exr" for n in (1001, 1002, 1003, 1004, 1005, 1006, 1008, 1009, 1010)] + \
        ["still.exr", "b_0001.png", "b_0002.png", "b_0003.png", "a.1001.png"]
    found = clips.cut([frame(n) for n in names], 3)
    assert [(Path(c.pattern).name, c.first, c.last) for c in found.clips] == [
        ("a.####.exr", 1001, 1003), ("a.####.exr", 1004, 1006), ("a.####.exr", 1008, 1010),
        ("b_####.png", 1, 3)]                  # the gap at 1007 ends a run; a.####.png is its own sequence
    assert found.summary() == {"clip_frames": 3, "clips": 4, "sequences": 4, "frames_in_clips": 12,
                               "frames_held": 0, "frames_left_out": 2, "stills": 1}

    # Fill alone (hold): every frame in no clip is held as a clip of its own, in the order given; a file given
    # twice is still left out.
    given = [frame(n) for n in names + ["a.1002.exr", "c.0005.exr"]]
    held = clips.cut(given, 3, hold=True)
    assert [(Path(c.pattern).name, c.first, c.last, c.held) for c in held.clips] == [
        ("a.####.exr", 1001, 1003, False), ("a.####.exr", 1004, 1006, False), ("a.####.exr", 1008, 1010, False),
        ("b_####.png", 1, 3, False), ("still.exr", 0, 0, True), ("a.1001.png", 1001, 1001, True),
        ("c.0005.exr", 5, 5, True)]
    assert all(c.frames == [c.frames[0]] * 3 for c in held.clips if c.held)
    assert [Path(f.path).name for f in held.left_out] == ["a.1002.exr"]
    assert held.summary() == {"clip_frames": 3, "clips": 7, "sequences": 5, "frames_in_clips": 15,
                              "frames_held": 3, "frames_left_out": 1, "stills": 1}


def _trainer_and_served_control(tmp_path, studio, changes: dict, serve, source: Path | None = None):
    """A video trainer on ``source`` (the front footage; TRAIN with ``changes``) and the ``control_hidden_states`` the
    pipeline hands the transformer when ``serve(family, pipe, clip)`` runs it on the trainer's second clip."""
    import torch

    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import get_family
    from bodydouble_server.models.slots import open_model
    from bodydouble_server.training import dataset
    from bodydouble_server.training.settings import TrainSettings
    from bodydouble_server.training.video import VideoTrainer

    video = open_model("video", ServerConfig(port=0, adapters="/nonexistent-bodydouble-adapters"), "cpu", torch.float32)
    pipe = video.pipeline()
    settings = TrainSettings(**{**TRAIN, "holdout_per_view": 0, **changes})
    frames = dataset.load([source or studio["footage"] / "front"], SIZE)
    trainer = VideoTrainer(pipe, video.identity, frames, settings, tmp_path / "work")
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["control_hidden_states"]), with_kwargs=True)
    try:
        serve(get_family(video.identity.family), pipe, trainer.train_frames[1])
    finally:
        hook.remove()
    return trainer, seen[0]


def _one_step(**settings):
    import torch

    return {"height": SIZE, "width": SIZE, "prompt": "", "negative_prompt": "", "steps": 1, "guidance": 1.0,
            "fps": 16, "generator": torch.Generator().manual_seed(0), "on_step": lambda s, n: None, **settings}


def test_clip_control_is_what_extend_gives_the_transformer(tmp_path, studio):
    """The control a clip trains with is, to float precision, the ``control_hidden_states`` the pipeline hands
    the transformer when extend runs on the clip's known frames: training sees what serving sees."""
    import torch

    trainer, served = _trainer_and_served_control(
        tmp_path, studio, {"clip_conditioning": 2},
        lambda family, pipe, clip: family.extend(pipe, np.stack([f.rgb for f in clip.frames[:2]]), 3, **_one_step()))
    control = trainer.data.control[1:2]
    assert control.shape == served.shape and control.shape[1] == 2 * trainer.pipe.vae.config.z_dim + 64
    assert torch.allclose(control, served, atol=1e-4), float((control - served).abs().max())
    assert not torch.allclose(control, trainer.data.control[0:1], atol=1e-4)   # another clip, another control


def test_clip_fill_control_is_what_the_video_engine_gives_the_transformer(tmp_path, studio):
    """A clip drawn for fill (``clip_fill``) trains with, to float precision, the ``control_hidden_states`` the
    video engine's fill hands the transformer for those frames with the character's matte to make."""
    import torch

    trainer, served = _trainer_and_served_control(
        tmp_path, studio, {"clip_fill": 1.0},
        lambda family, pipe, clip: family.inpaint(pipe, np.stack([f.rgb for f in clip.frames]),
                                                  np.stack([f.mask > 0.5 for f in clip.frames]).astype(np.float32),
                                                  **_one_step()))
    assert "100% fill" in trainer.objective()
    control = trainer.data.fill_control[1:2]
    assert control.shape == served.shape
    assert torch.allclose(control, served, atol=1e-4), float((control - served).abs().max())
    assert not torch.allclose(control, trainer.data.control[1:2], atol=1e-4)     # not extend's control
    # The loss weight of a fill clip: the matte on every latent frame.
    weight = trainer.data.fill_weight[1]
    assert weight.shape[1] == trainer.data.mean.shape[2] and bool((weight.sum(dim=(-2, -1)) > 0).all())


def test_a_fill_adapter_holds_stills_as_clips_and_trains_each_as_the_video_engine_fills_it(tmp_path, studio):
    """Stills and clip_fill 1: each still is held (a clip of the still repeated), and trains with, to float
    precision, the control the video engine's fill gives the transformer for that still held over 5 frames with
    the character's matte to make, the loss on the matte on every latent frame."""
    import torch

    trainer, served = _trainer_and_served_control(
        tmp_path, studio, {"clip_fill": 1.0},
        lambda family, pipe, clip: family.inpaint(pipe, np.stack([f.rgb for f in clip.frames]),
                                                  np.stack([f.mask > 0.5 for f in clip.frames]).astype(np.float32),
                                                  **_one_step()), source=studio["stills"])
    assert all(c.held and len(set(map(id, c.frames))) == 1 for c in trainer.train_frames)
    assert trainer.clips.summary()["frames_held"] == 4 and "(4 of them stills held)" in trainer.objective()
    control = trainer.data.fill_control[1:2]
    assert torch.allclose(control, served, atol=1e-4), float((control - served).abs().max())
    weight = trainer.data.fill_weight[1]
    assert weight.shape[1] == trainer.data.mean.shape[2] and bool((weight.sum(dim=(-2, -1)) > 0).all())


def test_train_job_on_stills_for_fill_publishes_a_fill_adapter(client, studio):
    """The train job with stills only, clip_frames 5 and clip_fill 1: a fill adapter (listed "for fill", its
    clip length 5 in the manifest, so keyed chunks are 5 frames), every still held; with clip_fill < 1 the same
    stills make no clip (extend's objective never gets a held still)."""
    result = client.submit(TrainRequest(frames=[str(studio["stills"])], name="hero_still_fill", clip_fill=1.0,
                                        min_frames=4, required_views=list(VIEWS), **TRAIN)).wait(timeout=300)
    assert result.info["adapter_status"] == "ready", result.info["adapter_reason"]
    clips = json.loads((Path(result.adapter_dir) / "manifest.json").read_text())["training"]["clips"]
    assert (clips["clips"], clips["frames_held"], clips["frames_left_out"]) == (4, 4, 0)
    assert all(c["held"] and c["first"] == c["last"] for c in clips["list"])
    listed = {a.name: a for a in client.list_adapters()}["hero_still_fill"]
    assert listed.trained_for == "fill"
    with pytest.raises(errors.RequestError) as caught:
        client.submit(TrainRequest(frames=[str(studio["stills"])], name="bad", clip_fill=0.5, min_frames=4,
                                   required_views=list(VIEWS), **TRAIN)).wait(timeout=60)
    assert "make none" in caught.value.message and "clip_fill 1: stills are held" in caught.value.message


@pytest.mark.parametrize("settings, purpose", [
    ({"clip_frames": 5, "clip_fill": 1.0}, "fill"), ({"clip_frames": 5, "clip_fill": 0.0}, "extend"),
    ({"clip_frames": 5, "clip_fill": 0.5}, ""), ({"clip_frames": 1, "clip_fill": 0.0}, ""), ({}, ""),
    ({"clip_frames": "5", "clip_fill": 1.0}, ""), ({"clip_frames": 5, "clip_fill": "all"}, "")])
def test_a_video_adapter_from_clips_is_listed_with_the_job_it_was_trained_for(tmp_path, settings, purpose):
    """Only an adapter trained on clips for one job (fill or extend) says so; stills, a mix, or a manifest whose
    settings are not what the trainer writes say nothing."""
    from bodydouble.client import AdapterInfo
    from bodydouble_server.adapters import Adapter

    entry = Adapter("hero", tmp_path, manifest={"character": "Hero", "model_kind": "video",
                                                "training": {"settings": settings}}).describe()
    assert entry["trained_for"] == purpose
    info = AdapterInfo(name=entry["name"], character=entry["character"], trigger="", base_model="", status="ready",
                       raw=entry)
    assert info.label.endswith(f" · for {purpose}") == bool(purpose)
