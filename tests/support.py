"""Helpers for tests: a real server (thread or process) on the embedded model, adapters, plates."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_adapters(folder: Path, names_and_seeds: dict[str, int], identity=None, pipe=None) -> None:
    """Synthetic LoRA adapters for the embedded model (random weights, labelled as such)."""
    from bodydouble_server.adapter_files import synthetic_adapter
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine

    if pipe is None:
        engine = Engine(ServerConfig(port=0, roots=[str(folder)], adapters=str(folder / "__none__")))
        engine.load()
        pipe, identity = engine.pipelines["fill"], engine.identity
    for name, seed in names_and_seeds.items():
        if not (folder / name).exists():
            synthetic_adapter(pipe, identity, folder / name, character=name.replace("_", " ").title(), seed=seed)


def make_video_adapters(folder: Path, names_and_seeds: dict[str, int], config=None,
                        characters: dict[str, str] | None = None) -> None:
    """Synthetic LoRA adapters for a server's video model (the embedded test one unless ``config`` names one);
    ``characters``: an adapter's character where it is not its name's (a video adapter of an image one's)."""
    import torch

    from bodydouble_server.adapter_files import synthetic_adapter
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models.slots import open_model

    video = open_model("video", config or ServerConfig(port=0, adapters=str(folder / "__none__")), "cpu",
                       torch.float32)
    for name, seed in names_and_seeds.items():
        if not (folder / name).exists():
            synthetic_adapter(video.pipeline(), video.identity, folder / name,
                              character=(characters or {}).get(name, name.replace("_", " ").title()), seed=seed)


@contextlib.contextmanager
def server_thread(config):
    """A real server on a background thread (real ROUTER socket, real models), ready when it is yielded."""
    from bodydouble.client import Client
    from bodydouble_server.cli import start_in_thread

    srv, thread = start_in_thread(config)
    try:
        with Client(srv.bound_address, timeout=60) as client:
            client.wait_ready()
        yield srv
    finally:
        srv.stop()
        thread.join(10)


def cancel_at_chunk(client, request, chunk: int = 2) -> tuple[Path, dict]:
    """Submit a chunked job (extend, a video-engine fill), cancel it once chunk ``chunk`` is under way, expect
    ``JobCancelled`` and return its take folder and take.json; the server must still be ready."""
    import json

    import pytest

    from bodydouble import errors

    job = client.submit(request)
    for progress in job.events(timeout=120):
        if progress.raw.get("chunk") == chunk:
            job.cancel()
            break
    with pytest.raises(errors.JobCancelled):
        job.wait(timeout=120)
    take_dir = Path(client.status(job.job_id)["take_dir"])
    assert client.heartbeat()["state"] == "ready"
    return take_dir, json.loads((take_dir / "take.json").read_text())


def start_server_process(root: Path, adapters: Path, port: int | None = None, extra: list[str] | None = None,
                         timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`bodydouble serve` in a subprocess; returns once it answers hello with state ready."""
    from bodydouble.client import Client

    port = port or free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bodydouble", "serve", "--port", str(port), "--root", str(root),
         "--adapters", str(adapters), "--output-root", str(root / "takes"), *(extra or [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    address = f"tcp://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{proc.stdout.read()}")
        try:
            with Client(address, timeout=2) as client:
                client.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                return proc, address
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def tiny_sdxl_inpaint():
    """A random-weight SDXL inpaint pipeline shaped like the real one (added text/time conditioning, two encoders)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=8,
    )
    vae = AutoencoderKL(block_out_channels=(16, 32, 32, 32), in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, norm_num_groups=8, sample_size=128)
    from bodydouble_server.models import embedded

    tokenizer = embedded._tokenizer()
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(tokenizer), projection_dim=32)
    return StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear", timestep_spacing="leading"),
        requires_aesthetics_score=False,
    )


NUKE_DIR = REPO / "host_integration" / "nuke"
FAKE_NUKE_DIR = REPO / "tests" / "fake_nuke"


@contextlib.contextmanager
def fake_nuke_session(address: str, tmp_path: Path, monkeypatch):
    """A fresh fake Nuke GUI session with the plugin installed as NUKE_PATH would (init.py, menu.py), talking to
    ``address``; jobs still running at the end are cancelled."""
    import runpy

    for path in (str(FAKE_NUKE_DIR), str(NUKE_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import nuke as fake

    assert Path(fake.__file__).parent == FAKE_NUKE_DIR, "the fake nuke must shadow any other"
    fake._reset(gui=True, script=str(tmp_path / "comp_v001.nk"))
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", address)
    monkeypatch.setenv("BODYDOUBLE_NUKE_PREFS", str(tmp_path / "prefs.json"))
    runpy.run_path(str(NUKE_DIR / "init.py"))
    runpy.run_path(str(NUKE_DIR / "menu.py"))
    try:
        yield fake
    finally:
        from bodydouble_nuke import commands

        for running in list(commands._running.values()):
            running.job.cancel()
            running.job.join(30)
        commands._running.clear()
