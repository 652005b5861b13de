"""Training: data report, refusals, bad input, a tiny adapter that loads and changes fill, kill + resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bodydouble import errors
from bodydouble_server import samples
from bodydouble_server.training import dataset as dataset_mod
from bodydouble_server.training.report import Thresholds, build_report, summary_text
from bodydouble_server.training.run import data_report, train_adapter
from bodydouble_server.training.settings import TrainSettings

from .support import REPO

VIEWS = ["front", "three-quarter-left", "three-quarter-right", "profile-left", "profile-right", "back"]
SIZE = 64


def frame_pixels(seed: int) -> np.ndarray:
    """The sample 'head' over a per-frame random texture: distinct to the perceptual hash."""
    rng = np.random.default_rng(seed)
    px = samples.plate_pixels(SIZE, SIZE, seed)
    coarse = rng.random((8, 8, 3), dtype=np.float32)
    px[..., :3] += np.kron(coarse, np.ones((SIZE // 8, SIZE // 8, 1), np.float32)) * 0.6
    return px


def write_frames(root: Path, views=VIEWS, per_view: int = 2, masks: bool = True) -> Path:
    for i, view in enumerate(views):
        (root / view).mkdir(parents=True, exist_ok=True)
        for k in range(per_view):
            px = frame_pixels(i * 10 + k)
            samples.write_exr(root / view / f"hero_{i}{k}.exr", px, ("R", "G", "B", "A"))
            if masks:
                (root / view / "masks").mkdir(exist_ok=True)
                samples.write_exr(root / view / "masks" / f"hero_{i}{k}.exr", px[:, :, 3:], ("A",))
    return root


def settings(**kw) -> TrainSettings:
    return TrainSettings(**{"character": "Hero", "resolution": SIZE, "rank": 4, "steps": 6, "checkpoint_every": 3,
                            "preview_steps": 2, "rights_holder": "Studio test data", "licence": "test frames, consent n/a",
                            **kw})


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def base():
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine

    engine = Engine(ServerConfig(port=0, device="cpu", adapters="/nonexistent-bodydouble-adapters"))
    engine.load()
    return engine.pipelines["fill"], engine.identity


def test_report_finds_planted_duplicates_and_the_missing_view(tmp_path):
    root = write_frames(tmp_path / "frames", views=VIEWS[:-1])       # no back view
    front = root / "front"
    shutil.copy(front / "hero_00.exr", front / "hero_00_copy.exr")   # exact duplicate (another file, same pixels)
    near = frame_pixels(0)
    near[..., :3] *= 1.01                                            # near duplicate: a slight grade
    samples.write_exr(front / "hero_00_graded.exr", near, ("R", "G", "B", "A"))
    _, report = data_report([root], SIZE)
    assert report["frame_count"] == 12 and report["distinct_frames"] == 11
    assert sorted(Path(p).name for p in report["duplicates"]["exact"][0]) == ["hero_00.exr", "hero_00_copy.exr"]
    assert any({Path(d["a"]).name, Path(d["b"]).name} == {"hero_00.exr", "hero_00_graded.exr"}
               for d in report["duplicates"]["near"])
    assert [g["view"] for g in report["views"]["gaps"]] == ["back"]
    assert "no `back` frames: the back of the head cannot be learned" in summary_text(report)
    assert report["masks_present"] == 10 and report["colourspaces"] == {"ACEScg": 12}
    assert not report["ok_to_train"]
    json.dumps(report)   # the report is plain JSON


def test_report_on_a_huge_set_stays_bounded_and_counts_everything():
    """Thousands of frames, most of them near-identical: millions of near-duplicate pairs are counted, a few
    hundred listed, and the report still fits a protocol reply."""
    from bodydouble import protocol
    from bodydouble_server.training.dataset import Dataset, TrainingFrame
    from bodydouble_server.training.report import LISTED, LISTED_EXPOSURES

    rng = np.random.default_rng(0)
    base = rng.random((16, 16, 3), dtype=np.float32)
    frames = []
    for i in range(1800):
        rgb = base + rng.random((16, 16, 3), dtype=np.float32) * 1e-3 if i < 1500 else \
            rng.random((16, 16, 3), dtype=np.float32)
        path = Path(f"/shows/x/refs/front/a_very_long_reference_frame_name_for_the_hero_{i:05d}.exr")
        frames.append(TrainingFrame(path=path, sha256=f"{i:064x}", content_hash=f"{i:064x}", width=4096, height=2160,
                                    channels=3, colourspace="ACEScg", rgb=np.clip(rgb, 0, 1), mask=None, view="front"))
    frames += [TrainingFrame(**{**vars(frames[0]), "path": Path(f"/shows/x/copy_{k}.exr")}) for k in range(700)]
    report = build_report(Dataset(frames=frames, sources=["/shows/x/refs"]), Thresholds(min_frames=8))
    dup = report["duplicates"]
    assert dup["exact_groups"] == 1 and dup["exact_frames"] == 701 and len(dup["exact"][0]) == 50
    assert report["distinct_frames"] == 1800
    assert dup["near_pairs"] >= 1500 * 1499 // 2 and len(dup["near"]) == LISTED
    assert len(report["exposure"]["per_frame"]) == LISTED_EXPOSURES
    assert len(json.dumps(report).encode()) < protocol.Limits().max_header_bytes // 2
    assert "near-duplicate pairs in all" in summary_text(report)


def test_report_only_cli_prints_json(frames_dir):
    out = subprocess.run([sys.executable, "-m", "bodydouble", "train", str(frames_dir), "--character", "Hero",
                          "--report-only", "--json", "--resolution", str(SIZE), "--min-frames", "4"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok_to_train"] and report["views"]["counts"]["back"] == 2


def test_training_below_threshold_refuses_with_the_reason(tmp_path, base):
    root = write_frames(tmp_path / "few", views=["front"], per_view=3)
    with pytest.raises(errors.RequestError) as caught:
        train_adapter(*base, [root], settings(), tmp_path / "adapters")
    message = str(caught.value)
    assert "3 distinct frame(s); training needs at least 8" in message
    assert "no `back` frames" in message and "--force" in message
    assert not (tmp_path / "adapters" / "hero").exists()


@pytest.mark.parametrize("case", ["empty", "unreadable", "mixed_channels", "mask_size"])
def test_bad_input_is_reported_and_never_trained(tmp_path, base, case):
    root = tmp_path / "frames"
    root.mkdir()
    expected = {"empty": "no frames found", "unreadable": "not an image OpenImageIO can read",
                "mixed_channels": "mixed channel counts", "mask_size": "is 32x32 but frame"}[case]
    if case != "empty":
        write_frames(root, views=["front"], per_view=2, masks=False)
    if case == "unreadable":
        (root / "front" / "broken.exr").write_bytes(b"not an exr at all")
    elif case == "mixed_channels":
        samples.write_exr(root / "front" / "grey.exr", frame_pixels(99)[:, :, :1], ("Y",))
    elif case == "mask_size":
        samples.write_exr(root / "front" / "hero_00_mask.exr", np.ones((32, 32, 1), np.float32), ("A",))
    _, report = data_report([root], SIZE)
    assert any(expected in p for p in report["problems"]), report["problems"]
    with pytest.raises(errors.RequestError, match="problems"):
        train_adapter(*base, [root], settings(), tmp_path / "adapters", force=True)


def test_trained_adapter_loads_in_server_and_plain_diffusers_and_changes_fill(tmp_path, frames_dir, base):
    from bodydouble.client import Client
    from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames
    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import embedded

    adapters = tmp_path / "adapters"
    progress = []
    folder, _ = train_adapter(*base, [frames_dir], settings(steps=4, checkpoint_every=2, learning_rate=1e-2,
                                                                        preview_count=2),
                              adapters, thresholds=Thresholds(min_frames=4), on_progress=progress.append)
    assert [p["step"] for p in progress] == [1, 2, 3, 4] and progress[-1]["eta_s"] == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["trigger"] == "<hero>" and manifest["base_model"]["sha256"] == base[1].sha256
    assert len(manifest["training"]["frames"]) == 12 and all(len(f["sha256"]) == 64 for f in manifest["training"]["frames"])
    assert sum(f["heldout"] for f in manifest["training"]["frames"]) == 6
    assert [m["step"] for m in manifest["training"]["metrics"]] == [2, 4]
    assert all(m["heldout"] > 0 for m in manifest["training"]["metrics"])
    assert len(list((folder / "previews").glob("*.png"))) == 2
    assert not list(adapters.glob(".hero-*"))    # no staging left behind

    from diffusers import StableDiffusionInpaintPipeline
    plain = StableDiffusionInpaintPipeline.from_pretrained(str(embedded.embedded_model_path()), local_files_only=True)
    plain.load_lora_weights(str(folder), adapter_name="hero")

    plates = tmp_path / "plates"
    plate, mask = samples.write_sequence(plates, 1001, 1001, 64, 64)
    config = ServerConfig(port=0, roots=[str(tmp_path)], adapters=str(adapters), output_root=str(tmp_path / "takes"),
                          resolution=64, device="cpu")
    srv, thread = start_in_thread(config)
    try:
        with Client(srv.bound_address, timeout=60) as client:
            client.wait_ready()
            listed = {a.name: a for a in client.list_adapters()}
            assert listed["hero"].status == "ready", listed["hero"].reason

            def fill(adapters_used):
                req = FillRequest(frames=sequence_frames(plate, 1001, 1001, mask), adapters=adapters_used,
                                  prompt="<hero> back of head", seed=3, steps=2, return_pixels=True)
                return client.submit(req).wait(timeout=120)

            with_adapter = fill([AdapterRef("hero")])
            without = fill([])
            assert not np.array_equal(with_adapter.pixels[1001], without.pixels[1001])
    finally:
        srv.stop()
        thread.join(10)


TRAIN_SCRIPT = """
import sys, time
from pathlib import Path
from bodydouble_server.config import ServerConfig
from bodydouble_server.engine import Engine
from bodydouble_server.training.report import Thresholds
from bodydouble_server.training.run import train_adapter
from bodydouble_server.training.settings import TrainSettings
frames, adapters, pause_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
engine = Engine(ServerConfig(port=0, device="cpu", adapters="/nonexistent-bodydouble-adapters"))
engine.load()
def on_progress(p):
    if p["step"] == pause_at:
        print("PAUSED", flush=True)
        time.sleep(600)   # the test kills us here: a real crash, mid-run
train_adapter(engine.pipelines["fill"], engine.identity, [frames], TrainSettings(
    character="Hero", resolution=64, rank=4, steps=8, checkpoint_every=3, preview_count=0, seed=5,
    rights_holder="Studio", licence="test"), adapters, thresholds=Thresholds(min_frames=3, required_views=("front",)),
    on_progress=on_progress)
print("DONE", flush=True)
"""


def _train_process(frames, adapters, pause_at=0):
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(frames), str(adapters), str(pause_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))  # two at once on 2 cores


def test_killed_training_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    frames_dir = write_frames(tmp_path / "frames", views=VIEWS[:3], per_view=2)

    straight = _train_process(frames_dir, tmp_path / "straight")
    killed = _train_process(frames_dir, tmp_path / "resumed", pause_at=5)
    try:
        assert killed.stdout.readline().strip() == "PAUSED", killed.stderr.read()
        checkpoints_dir = tmp_path / "resumed" / ".training" / "hero" / "checkpoints"
        assert [p.name for p in checkpoints_dir.glob("step_*")] == ["step_0000003"]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        out, err = straight.communicate(timeout=120)
        assert "DONE" in out, err
    finally:
        for proc in (straight, killed):
            if proc.poll() is None:
                proc.kill()
    assert not (tmp_path / "resumed" / "hero").exists()
    resumed = _train_process(frames_dir, tmp_path / "resumed")
    out, err = resumed.communicate(timeout=120)
    assert "DONE" in out, err
    a = load_file(str(tmp_path / "straight" / "hero" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "hero" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    metrics_a = json.loads((tmp_path / "straight" / "hero" / "manifest.json").read_text())["training"]["metrics"]
    metrics_b = json.loads((tmp_path / "resumed" / "hero" / "manifest.json").read_text())["training"]["metrics"]
    assert [m["heldout"] for m in metrics_a] == [m["heldout"] for m in metrics_b]


def test_training_frames_hold_the_pixels_fill_hands_the_model(tmp_path):
    """An adapter must learn what fill shows the model: the crop's encoding with its highlight stretch, not
    the plain view (which squeezes a 6.0 and a 12.0 highlight together and would teach the adapter other pixels)."""
    from bodydouble_server.imaging.colour import ColourTransform
    from bodydouble_server.miniworld import world

    size = 32
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0.02, 0.8, (size, size, 3)).astype(np.float32)
    rgb[4:12, 4:12] = 6.0
    rgb[20:28, 20:28] = 12.0                      # highlights above the knee (4.0), below the ceiling (16.0)
    world.write_plate(tmp_path / "frames" / "front" / "f.exr", rgb)
    frame, = dataset_mod.load([tmp_path / "frames"], size, colourspace="ACEScg").frames
    colour = ColourTransform("ACEScg")
    _, fill_pixels = colour.encode(rgb.copy())
    assert np.allclose(frame.rgb, fill_pixels, atol=2e-3)          # half-float plate: a rounding step
    plain = colour.to_model(rgb.copy())
    assert np.abs(plain - fill_pixels).max() > 0.01                # the plain view really is other pixels
    assert frame.rgb[24, 24, 1] - frame.rgb[8, 8, 1] > 1.3 * (plain[24, 24, 1] - plain[8, 8, 1])


def test_local_training_applies_the_servers_consent_rules_and_audits(tmp_path, frames_dir, capsys):
    """`bodydouble train` in its own process answers to the same consent records as a server: refused without
    one (nothing published), trained with one, both in the audit log with the outcome and the adapter."""
    from bodydouble.cli import main

    from bodydouble_server.policy import audit as audit_log

    from .test_policy_consent import write_record

    consent, audit, out = tmp_path / "consent", tmp_path / "audit.log", tmp_path / "adapters"
    consent.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(f'consent_dir = "{consent}"\naudit_log = "{audit}"\nconsent_exempt_test_models = false\n')
    argv = ["train", str(frames_dir), "--character", "Hero", "--config", str(config), "--out", str(out),
            "--resolution", str(SIZE), "--steps", "2", "--rank", "2", "--checkpoint-every", "2", "--min-frames", "4",
            "--rights-holder", "Studio", "--licence", "test", "--quiet", "--preview-count", "0", "--holdout-per-view", "0"]
    assert main(argv) == 1
    assert "no consent record" in capsys.readouterr().err and not out.exists()

    write_record(consent, "hero-training", "Hero", "Show A", ["train"], ["*"], "2099-12-31")
    assert main(argv) == 0
    assert (out / "hero" / "manifest.json").is_file()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(line["event"], line.get("decision") or line.get("outcome")) for line in lines] == [
        ("submit", "refused"), ("submit", "accepted"), ("outcome", "complete")]
    assert lines[2]["adapter_dir"] == str(out / "hero") and audit_log.verify(audit).ok
