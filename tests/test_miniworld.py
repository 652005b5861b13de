"""The miniature world's parts: characters and renderer, the bake script at its tiny setting, the judge's files."""
import json

import numpy as np
import pytest

from bodydouble_server.miniworld import characters as chars
from bodydouble_server.miniworld import world

SEED = 20261203


def shot(seed=3):
    return chars.random_shot(np.random.default_rng(seed), 96, 80)


def test_renders_are_deterministic_scene_linear_and_framed_like_fill():
    c = chars.eval_characters(SEED, 1)[0]
    rgb, matte = chars.render(c, shot(), 30.0)
    again, _ = chars.render(chars.eval_characters(SEED, 1)[0], shot(), 30.0)
    assert np.array_equal(rgb, again)
    assert rgb.dtype == np.float32 and rgb.shape == (80, 96, 3) and 0 < matte.sum() < matte.size
    bright = max(chars.render(c, chars.random_shot(np.random.default_rng(s), 96, 80), 0.0)[0].max() for s in range(6))
    assert bright > 1.0                          # scene-linear: highlights above display white
    from bodydouble_server.imaging.colour import ColourTransform

    model_rgb, model_mask, box = world.model_sample(ColourTransform("ACEScg"), rgb, matte, world.Framing(64, 16))
    assert model_rgb.shape == (64, 64, 3) and 0 <= model_rgb.min() and model_rgb.max() <= 1
    assert box.y0 <= np.nonzero(matte)[0].min() and model_mask.mean() > 0.1


def test_look_alikes_differ_only_on_the_back_of_the_head():
    group = chars.eval_group(SEED, 0)
    assert len({(c.marking_shape, c.marking_colour) for c in group}) == 3
    s = shot()
    fronts = [chars.render(c, s, 0.0)[0] for c in group]
    backs = [chars.render(c, s, 180.0)[0] for c in group]
    assert all(np.array_equal(fronts[0], f) for f in fronts[1:])
    for yaw in (-70.0, 70.0):                   # the marking is not seen from a side view...
        sides = [chars.render(c, s, yaw)[0] for c in group]
        assert all(np.array_equal(sides[0], f) for f in sides[1:])
    for yaw in (-80.0, 80.0):                   # ...and at +-80 degrees only at the silhouette's edge
        sides = [chars.render(c, s, yaw)[0] for c in group]
        assert all((np.abs(sides[0] - f).max(axis=2) > 0.01).sum() <= 3 for f in sides[1:])
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(backs[i] - backs[j]).max() > 0.2
    other = chars.eval_group(SEED, 1)[0]
    assert not np.array_equal(chars.render(other, s, 0.0)[0], fronts[0])


def test_sampled_views_know_where_the_marking_shows():
    """The bake's marking masks: the render's own pixels that differ from the same shot without the marking,
    framed as fill frames it: on the head, none from the front, a marking's worth from the back."""
    from bodydouble_server.imaging.colour import ColourTransform

    c = chars.eval_characters(SEED, 1)[0]
    rgb, mask, _, marks = world.sample_views(np.random.default_rng(5), c, 2, 96, 96, world.Framing(64, 16),
                                             ColourTransform("ACEScg"), yaws=[20.0, 180.0], markings=True)
    again, _, _ = world.sample_views(np.random.default_rng(5), c, 2, 96, 96, world.Framing(64, 16),
                                     ColourTransform("ACEScg"), yaws=[20.0, 180.0])
    assert np.array_equal(rgb, again)                 # asking for the masks changes no render
    assert marks[0].sum() == 0 and 0.02 < marks[1].sum() / mask[1].sum() < 0.2
    assert (marks[1] & mask[1]).sum() >= 0.9 * marks[1].sum()


def test_stand_in_head_keeps_the_plate_outside_the_head(tmp_path):
    c, s = chars.eval_characters(SEED, 1)[0], shot()
    truth, matte = chars.render(c, s, 180.0)
    plate, matte_double = chars.render(c, s, 180.0, head=chars.stand_in(SEED))
    assert np.array_equal(matte, matte_double)
    assert np.array_equal(truth[matte == 0], plate[matte == 0]) and not np.array_equal(truth, plate)
    path = world.write_plate(tmp_path / "plate.1001.exr", plate)
    back = world.read_exr(path)
    assert back.shape == (80, 96, 4) and np.allclose(back[:, :, :3], plate, rtol=1e-3, atol=1e-3)


def test_views_of_yaws():
    assert [chars.view_of(y) for y in (0, 45, -45, 90, -90, 180, 150, -150)] == [
        "front", "three-quarter-left", "three-quarter-right", "profile-left", "profile-right", "back", "back", "back"]


def test_footage_references_are_clips_the_trainer_cuts_whole(tmp_path):
    """With footage_frames, every reference still becomes a clip of that many frames in its view's folder (the
    head turning footage_turn degrees a frame, each frame with its matte), which the video trainer's cutter takes
    whole: one clip per still, no frame left out; the same references as stills are the stills themselves."""
    from bodydouble_server.miniworld import experiment
    from bodydouble_server.training import clips, dataset

    settings = experiment.ExperimentSettings(characters=1, side_shots=1, side_frames=3, back_views=2, test_frames=1,
                                             footage_frames=5)
    c = chars.eval_characters(SEED, 1)[0]
    data = experiment.write_references(tmp_path / "footage", c, settings)
    frames = dataset.load([data.refs["side"], data.refs["back"]], 64).frames
    found = clips.cut(frames, 5)
    assert found.summary() | {"sequences": None} == {"clip_frames": 5, "clips": 5, "sequences": None,
                                                     "frames_in_clips": 25, "frames_held": 0, "frames_left_out": 0,
                                                     "stills": 0}
    assert all(f.mask is not None for f in frames)
    assert sorted(c.view for c in found.clips).count("back") == 2
    import OpenImageIO as oiio

    def yaw(path) -> float:
        image = oiio.ImageInput.open(str(path))
        try:
            return image.spec().getattribute("miniworld:yaw")
        finally:
            image.close()

    for clip in found.clips:
        yaws = [yaw(f.path) for f in clip.frames]
        assert len({f.path.parent for f in clip.frames}) == 1 and clip.last - clip.first == 4
        assert np.allclose(np.diff(yaws), settings.footage_turn), yaws
    stills = experiment.write_references(tmp_path / "stills", c, experiment.ExperimentSettings(
        characters=1, side_shots=1, side_frames=3, back_views=2, test_frames=1))
    assert len(dataset.load([stills.refs["side"], stills.refs["back"]], 64).frames) == 5


def test_tiny_bake_writes_a_test_model_the_family_registry_claims(tmp_path):
    from bodydouble_server import models
    from bodydouble_server.miniworld import bake

    out = tmp_path / "model"
    assert bake.main([str(out), "--tiny", "--work", str(tmp_path / "work")]) == 0
    declared = json.loads((out / models.miniworld.DECLARATION).read_text())
    assert declared["test_model"] is True and "TEST MODEL" in declared["label"]
    family = models.detect_family(out, kind="image")
    assert family.name == "miniworld" and family.test_label == declared["label"]
    assert family.resolution == 64 and family.multiple == 16
    metrics = json.loads((out / bake.METRICS_FILE).read_text())
    assert metrics["unet"]["steps"] == bake.TINY.unet_steps and "grey_fill_psnr_db" in metrics["evaluation"]
    # A plain SD-inpaint folder otherwise: diffusers loads it, and 64 px makes 32x32 latents (two VAE blocks).
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(out), local_files_only=True)
    assert pipe.vae_scale_factor == 2 and pipe.tokenizer("back of the head").input_ids[1] != \
        pipe.tokenizer("front").input_ids[1]


def test_a_three_block_vae_quarters_the_latents_and_the_unet_is_sized_to_them(tmp_path):
    """``--vae-channels 32,64,64``: a VAE of three blocks codes 64 px as 16x16 latents (the first committed
    bake's; the default two blocks make 32x32), the UNet is built for that size, and the folder still fills at
    64 px."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from bodydouble_server.miniworld import bake

    out = tmp_path / "model"
    assert bake.main([str(out), "--tiny", "--work", str(tmp_path / "work"), "--vae-channels", "32,64,64"]) == 0
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(out), local_files_only=True)
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16
    image = np.full((1, 64, 64, 3), 0.5, np.float32)
    mask = np.zeros((1, 64, 64, 1), np.float32)
    mask[:, 16:48, 16:48] = 1
    latents = []
    pipe.set_progress_bar_config(disable=True)
    out_image = pipe(prompt="back", image=image, mask_image=mask, height=64, width=64, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(0), output_type="np",
                     callback_on_step_end=lambda p, i, t, kw: latents.append(kw["latents"].shape) or kw).images
    assert out_image.shape == (1, 64, 64, 3) and latents[0] == (1, 4, 16, 16)


def test_a_unet_rebaked_on_a_kept_vae_ships_that_vae_to_the_byte(tmp_path):
    """``--vae-from``: the UNet is baked on another model's VAE (how a model's UNet is retrained without moving
    its latents), and the folder ships that VAE unchanged; the UNet's widths and the marking's captions and loss
    weight are settings too."""
    from bodydouble_server.miniworld import bake

    first = tmp_path / "first"
    assert bake.main([str(first), "--tiny", "--work", str(tmp_path / "first.work")]) == 0
    second = tmp_path / "second"
    assert bake.main([str(second), "--tiny", "--work", str(tmp_path / "second.work"), "--vae-from", str(first),
                      "--unet-channels", "16,32,48", "--marking-captions", "0.5", "--marking-weight", "20",
                      "--device", "cpu", "--batch", "3", "--unet-attention", "1,1,0"]) == 0
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (first / vae).read_bytes() == (second / vae).read_bytes()
    assert not (tmp_path / "second.work" / "vae").exists()
    metrics = json.loads((second / bake.METRICS_FILE).read_text())
    assert metrics["vae"]["from"] == str(first) and metrics["settings"]["unet_channels"] == [16, 32, 48]
    assert metrics["settings"]["marking_weight"] == 20 and metrics["settings"]["marking_captions"] == 0.5
    assert metrics["settings"]["device"] == "cpu" and metrics["settings"]["batch"] == 3
    unet = json.loads((second / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [16, 32, 48]
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert unet["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]


def test_base_captions_name_the_marking_where_a_render_shows_it():
    """With ``--marking-captions 0.5`` the base model's captions describe the back marking ("red ring marking")
    half the time on renders that show it, never on ones that cannot (yaw within 90 degrees of the face), in
    whole tokens; with ``named`` 0 never."""
    from bodydouble_server.miniworld import bake

    character = chars.base_character(7, 0)
    words = f"{character.marking_colour} {character.marking_shape} {bake.MARKING_WORD}"
    assert bake.marking_caption(character, 40.0) is None and bake.marking_caption(character, -89.0) is None
    rng = np.random.default_rng(0)
    backs = [bake.prompt_for(rng, "back", bake.marking_caption(character, 200.0), 0.5) for _ in range(400)]
    named = sum(words in p for p in backs)
    assert 120 < named < 240, named
    assert not any(words in bake.prompt_for(rng, "back", bake.marking_caption(character, 200.0)) for _ in range(100))
    tok = bake.tokenizer()
    assert len(tok(words).input_ids) == 5      # start, three whole words, end


def test_an_interrupted_bake_resumes_to_the_bytes_of_an_uninterrupted_one(tmp_path):
    """The bake checkpoints every phase (weights, optimizer, EMA) and resumes: stopped once in the VAE phase and
    once in the UNet phase, it publishes the same weights, byte for byte, as a bake that ran straight through."""
    from dataclasses import replace

    from bodydouble_server.miniworld import bake

    settings = replace(bake.TINY, vae_steps=6, unet_steps=6, checkpoint_every=2)

    class Stop(Exception):
        pass

    def stop_at(message: str):
        def log(line: str) -> None:
            if line.startswith(message):
                raise Stop(line)
        return log

    bake.bake(tmp_path / "straight", settings, tmp_path / "straight.work", log=lambda line: None)
    for stop in ("vae: step 2/", "unet: step 4/"):
        with pytest.raises(Stop):
            bake.bake(tmp_path / "resumed", settings, tmp_path / "resumed.work", log=stop_at(stop))
    bake.bake(tmp_path / "resumed", settings, tmp_path / "resumed.work", log=lambda line: None)
    parts = sorted(p.relative_to(tmp_path / "straight") for p in (tmp_path / "straight").rglob("*.safetensors"))
    assert len(parts) == 3
    for part in parts:
        assert (tmp_path / "straight" / part).read_bytes() == (tmp_path / "resumed" / part).read_bytes(), part


def test_tiny_video_bake_writes_a_wan_vace_test_model_the_video_family_claims(tmp_path):
    """bake_video.py at its tiny setting: a WanVACEPipeline folder that diffusers loads, with latents /4 in space
    and time, claimed by the miniworld-video family (not plain wan-vace), labelled TEST MODEL, and extending
    and inpainting through the family's own calls at the declared size. Baked twice, bit-identical (the first
    version trained on text embeddings with UMT5's dropout on: every prompt a new random embedding)."""
    import torch
    from diffusers import WanVACEPipeline

    from bodydouble_server import models
    from bodydouble_server.miniworld import bake_video

    out = tmp_path / "video"
    for folder in (out, tmp_path / "again"):
        assert bake_video.main([str(folder), "--tiny", "--work", str(folder) + ".work"]) == 0
    for part in ("vae/diffusion_pytorch_model.safetensors", "transformer/diffusion_pytorch_model.safetensors"):
        assert (out / part).read_bytes() == (tmp_path / "again" / part).read_bytes(), part
    declared = json.loads((out / models.miniworld.DECLARATION).read_text())
    assert declared["family"] == "miniworld-video" and declared["test_model"] and "TEST MODEL" in declared["label"]
    family = models.detect_family(out, kind="video")
    assert family.name == "miniworld-video" and family.test_label == declared["label"]
    assert (family.resolution, family.multiple, family.window, family.temporal_multiple) == (64, 8, 9, 4)
    metrics = json.loads((out / bake_video.METRICS_FILE).read_text())
    assert metrics["transformer"]["steps"] == bake_video.TINY.transformer_steps
    assert {"extend_psnr_db", "hold_psnr_db", "fill_psnr_db", "grey_psnr_db"} <= set(metrics["evaluation"])
    pipe = WanVACEPipeline.from_pretrained(str(out), local_files_only=True)
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (4, 4)
    # The measured latent statistics replaced the placeholders, one per latent channel.
    assert len(pipe.vae.config.latents_std) == bake_video.TINY.z_dim and pipe.vae.config.latents_std != [1.0] * bake_video.TINY.z_dim
    settings = dict(height=64, width=64, prompt="back of the head", negative_prompt="", steps=2, guidance=1.0,
                    fps=24.0, generator=torch.Generator().manual_seed(0), on_step=lambda *a: None)
    context = np.full((1, 64, 64, 3), 0.5, np.float32)
    assert family.extend(pipe, context, 4, **settings).shape == (4, 64, 64, 3)
    mask = np.zeros((5, 64, 64), np.float32)
    mask[:, 16:48, 16:48] = 1
    assert family.inpaint(pipe, np.repeat(context, 5, 0), mask, **settings).shape == (5, 64, 64, 3)


def test_committed_weights_are_safetensors_within_budget():
    from bodydouble_server.miniworld import experiment

    files = [p for p in experiment.BAKED.rglob("*") if p.is_file()]
    if not files:
        pytest.fail(f"no baked weights under {experiment.BAKED}")
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"}]
    info = json.loads((experiment.JUDGE / "judge.json").read_text())
    accuracy = info["accuracy_clean_heldout"]       # 12 characters: chance 0.08, 0.33 within a look-alike group
    assert accuracy["back"] >= 0.5 and accuracy["back_group"] >= 0.8


def test_goals_read_each_row_of_the_table():
    """The goals printed beside the table name the right rows (an unpacking slip once printed (a)'s identity
    as (b)'s)."""
    from bodydouble_server.miniworld import experiment

    rows = {key: {"identity": identity, "psnr_db": psnr} for key, identity, psnr in
            (("a", 0.2, 10.0), ("b", 0.96, 17.0), ("c", 0.05, 11.0), ("d", 1.0, 18.0), ("e", 0.5, 12.0))}
    measured = {g["goal"]: (g["measured"], g["met"]) for g in experiment.goals(rows)}
    assert measured["identity (b) >= 0.95"] == (0.96, True)
    assert measured["identity (a) <= 0.4"] == (0.2, True)
    assert measured["identity (c) <= 0.1"] == (0.05, True)
    assert measured["identity (e) <= (b) - 0.3"] == (0.46, True)
    assert measured["PSNR (b) >= (a) + 6 dB"] == (7.0, True)
    assert measured["PSNR (b) >= (d) - 2 dB"] == (-1.0, True)
    rows["b"]["identity"] = 0.9
    assert experiment.goals(rows)[0]["met"] is False


def test_the_table_says_what_each_characters_fills_were_taken_for():
    """Per character: the share of its frames the judge named right, and the name it gave most often (a fill
    taken for its look-alike reads differently from one taken for another group's member)."""
    from bodydouble_server.miniworld import experiment

    def frames(truth, judged):
        return [{"psnr": 15.0, "ssim": 0.5, "judged": j, "character": truth, "truth": truth} for j in judged]

    per_row = {"a": frames("g0a", ["g1a", "g1a"]) + frames("g0b", ["g0c", "g0c"]),
               "b": frames("g0a", ["g0a", "g0b", "g0a"]) + frames("g0b", ["g3b", "g3b"])}
    results = experiment.summarise(experiment.ExperimentSettings(characters=2), per_row, {}, {}, 1.0)
    assert results["rows"]["b"]["by_character"] == {"g0a": {"identity": 2 / 3, "named": "g0a"},
                                                    "g0b": {"identity": 0.0, "named": "g3b"}}
    assert results["rows"]["b"]["identity"] == 0.4
    by_character = experiment.format_table(results).split("identity by character")[1].splitlines()
    assert by_character[2].startswith("(b) own adapter") and by_character[2].endswith("0.67  g0a  0.00  g3b")
