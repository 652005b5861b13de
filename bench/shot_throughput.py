"""Whole shots at plate resolution through the real server: is the GPU ever waiting on the CPU? (#16)

A 24-frame 2048x1080 shot (400x400 mask) and a 12-frame 4096x2160 shot (800x800 mask): ACEScg RGBA half EXRs
with film grain (so ZIP costs what it costs on real plates) and a mask EXR per frame, filled through a real
server (ZeroMQ, EXR read, OCIO view on the crop, resize, inverse view, composite, atomic EXR write) on the
test stand-in model, which sleeps like a GPU without holding the CPU (``test:standin``,
$BODYDOUBLE_STANDIN_STEP_S x steps = 1.0 s a frame). Printed, all from one run:

- served / stand-in: the shot's wall time (submit to result) over the stand-in's own time for its frames
  (targets <= 1.03 at 2K, <= 1.05 at 4K);
- the CPU critical path per frame: how long the model waits between two frames' pipeline calls (median), plus
  the lead-in (submit -> first call) and the drain (last call -> result) that a shot pays once;
- the CPU the server burned per frame in all its threads (what a GPU box's cores must cover within a frame);
- each CPU stage's own time a frame (reading and preparing; finishing, writing and sealing): the pace a box
  with a core free for each stage would keep;
- for reference, a real diffusers model at 2K: served / bare pipeline calls at the same size: the embedded tiny
  model, or ``--model test:sd15-size`` (SD 1.5 inpaint's real size, random weights) on a GPU, at
  ``--model-steps`` steps a frame.

Usage: python bench/shot_throughput.py [--frames-2k 24] [--frames-4k 12] [--tiny-frames 4] [--step 0.25]
                                       [--model test:sd15-size --model-steps 25]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = 4
# Progress previews off (the stand-in has no latents anyway); an older checkout (PYTHONPATH, for a before/after
# table) has no such field.
_NO_PREVIEW = {"preview": None} if "preview" in getattr(__import__("bodydouble.jobspec").jobspec.FillRequest,
                                                        "__dataclass_fields__", {}) else {}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_shot(folder: Path, width: int, height: int, frames: int, mask_side: int) -> list:
    """Plates with grain and a square mask drifting across the head; returns the FrameInputs."""
    import numpy as np

    from bodydouble.jobspec import FrameInput, ImageRef
    from bodydouble_server import samples

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    items = []
    for frame in range(1001, 1001 + frames):
        plate = samples.plate_pixels(width, height, frame)
        plate[:, :, :3] *= 1.0 + 0.03 * rng.standard_normal((height, width, 1), dtype=np.float32)
        mask = np.zeros((height, width, 1), np.float32)
        x0 = width // 2 - mask_side // 2 + 4 * (frame - 1001)
        y0 = height // 2 - mask_side // 2
        mask[y0:y0 + mask_side, x0:x0 + mask_side] = 1.0
        plate_path, mask_path = folder / f"plate.{frame}.exr", folder / f"mask.{frame}.exr"
        samples.write_exr(plate_path, plate, ("R", "G", "B", "A"))
        samples.write_exr(mask_path, mask, ("A",))
        items.append(FrameInput(frame, ImageRef(path=str(plate_path)), ImageRef(path=str(mask_path))))
    return items


class CallClock:
    """Wraps the resident pipeline object to record when each call starts and ends (the model's busy time)."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.pipe(*args, **kwargs)
        finally:
            with self._lock:
                self.calls.append((start, time.perf_counter()))


class StageClock:
    """Times the fill's two CPU stages in the server's own threads, summed over the shot: reading and preparing
    frames (the reader thread: read_inputs + prepare_frame) and finishing, writing and sealing them (the writer
    thread: TakeWriter._write). With the model, they are the three stages of the frame pipeline: on a box with
    a core free for each, the shot runs at the slowest stage's pace."""

    def __init__(self):
        from bodydouble_server.operations import common, fill

        self.seconds = {"read": 0.0, "write": 0.0}
        self._patches = [(fill, "read_inputs", "read"), (fill, "prepare_frame", "read"),
                         (common.TakeWriter, "_write", "write")]
        self._saved = []

    def __enter__(self) -> "StageClock":
        for owner, name, stage in self._patches:
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._timed(original, stage))
        return self

    def _timed(self, fn, stage: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        return timed

    def __exit__(self, *exc) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)


def _patch_pipeline(server) -> CallClock:
    slot = server.engine.model_for("fill")
    pipe = slot.pipeline("fill")
    clock = CallClock(pipe)
    slot.pipeline = lambda *_a, **_k: clock          # the fill operation asks the slot for its pipeline
    return clock


def run_shot(label: str, root: Path, items: list, model: str | None, step: float, repeats: int = 1,
             steps: int = STEPS, batch: int = 0) -> dict:
    from benchlib import served
    from bodydouble.jobspec import FillRequest
    from bodydouble_server.config import ServerConfig

    os.environ["BODYDOUBLE_STANDIN_STEP_S"] = f"{step}"
    config = ServerConfig(port=0, model=model, video_model="none", roots=[str(root)], fill_batch=batch,
                          adapters=str(root / "adapters"), output_root=str(root / "takes"),
                          consent_dir=str(root / "consent"), audit_log=str(root / "audit.log"))
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with served(config) as (server, client):
        clock = _patch_pipeline(server)
        pipe = clock.pipe
        shot = "".join(c for c in label.lower() if c.isalnum())
        request = FillRequest(frames=items, prompt="bench", steps=steps, seed=7, shot=shot, **_NO_PREVIEW)
        client.submit(FillRequest(frames=items[:1], prompt="warm", steps=1, seed=1, shot="warm",
                                  **_NO_PREVIEW)).wait(timeout=600)
        clock.calls.clear()
        with StageClock() as stages:
            cpu0, start = _cpu_seconds(), time.perf_counter()
            client.submit(request).wait(timeout=3600)
            served_s, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
        calls = list(clock.calls)
        # The same pipeline, bare: one call per frame at the shot's model size, nothing else.
        import numpy as np

        gen = next(iter(_model_sizes(server, items[:1])))
        image = np.full((1, *gen, 3), 0.5, np.float32)
        mask = np.ones((1, *gen, 1), np.float32)
        bare = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            pipe(prompt="bench", image=image, mask_image=mask, height=gen[0], width=gen[1], num_inference_steps=steps,
                 strength=1.0, guidance_scale=7.5, generator=torch.Generator().manual_seed(7), output_type="np")
            bare.append(time.perf_counter() - t)
    frames = len(items)
    gaps = [b[0] - a[1] for a, b in zip(calls, calls[1:])]
    bare_s = statistics.median(bare) * frames
    return {"label": label, "frames": frames, "served": served_s, "bare": bare_s, "ratio": served_s / bare_s,
            "gap_ms": 1000 * statistics.median(gaps) if gaps else 0.0,
            "gap_max_ms": 1000 * max(gaps) if gaps else 0.0,
            "lead_ms": 1000 * (calls[0][0] - start), "drain_ms": 1000 * (start + served_s - calls[-1][1]),
            "over_ms": 1000 * (served_s - bare_s) / frames, "cpu_ms": 1000 * cpu / frames,
            "read_ms": 1000 * stages.seconds["read"] / frames, "write_ms": 1000 * stages.seconds["write"] / frames,
            "size": gen, "gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def _model_sizes(server, items) -> set:
    """(gen_h, gen_w) the fill operation picks for these frames (as prepare_frame does)."""
    from bodydouble_server.imaging import frames as frame_io
    from bodydouble_server.imaging import regions
    from bodydouble_server.operations import fill

    model = server.engine.model_for("fill")
    sizes = set()
    for item in items:
        plate = frame_io.read_frame(Path(item.plate.path), server.engine.config.limits)
        mask, _ = fill._mask_for(server.engine, item, plate, None)
        box = regions.context_box(regions.mask_box(mask), *plate.shape, 0.5)
        sizes.add(regions.model_size(box, plate.pixel_aspect, model.resolution, model.family.multiple))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames-2k", type=int, default=24)
    parser.add_argument("--frames-4k", type=int, default=12)
    parser.add_argument("--tiny-frames", type=int, default=4, help="frames for the real model row (0: skip)")
    parser.add_argument("--model", default=None, help="the real model row's model (default: the embedded tiny one; "
                                                      "test:sd15-size on a GPU)")
    parser.add_argument("--model-steps", type=int, default=STEPS, help="the real model row's steps a frame")
    parser.add_argument("--model-batches", default="0", help="the real model row once per fill_batch setting, "
                                                             "comma-separated (0: the server's auto choice)")
    parser.add_argument("--step", type=float, default=0.25, help="stand-in seconds per step (4 steps a frame)")
    parser.add_argument("--standin-batch", type=int, default=0,
                        help="the stand-in rows' fill_batch (0: the server's auto choice, 1 on a CPU; 4 is what a "
                             "GPU with 16 GiB free picks)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bd-shot-"))
    rows = []
    t = time.perf_counter()
    shot_2k = write_shot(root / "2k", 2048, 1080, args.frames_2k, 400)
    shot_4k = write_shot(root / "4k", 4096, 2160, args.frames_4k, 800) if args.frames_4k else []
    print(f"plates written in {time.perf_counter() - t:.1f} s under {root}", flush=True)
    suffix = f" b{args.standin_batch}" if args.standin_batch else ""
    rows.append(run_shot("2K stand-in" + suffix, root, shot_2k, "test:standin", args.step, batch=args.standin_batch))
    if shot_4k:
        rows.append(run_shot("4K stand-in" + suffix, root, shot_4k, "test:standin", args.step,
                             batch=args.standin_batch))
    if args.tiny_frames:
        name = args.model.removeprefix("test:") if args.model else "tiny real model"
        for batch in (int(b) for b in args.model_batches.split(",")):
            label = f"2K {name}" + (f" b{batch}" if batch else "")
            rows.append(run_shot(label, root, shot_2k[:args.tiny_frames], args.model, args.step, repeats=3,
                                 steps=args.model_steps, batch=batch))

    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"\nfill, {STEPS} steps a frame, stand-in {args.step * STEPS:.2f} s a frame (real model row: "
          f"{args.model_steps} steps); {os.cpu_count()} CPUs, {gpu}; ratios from this one run")
    print(f"{'shot':20} {'frames':>6} {'served s':>9} {'model s':>8} {'ratio':>6} {'crit ms/f':>9} "
          f"{'max ms':>7} {'lead ms':>8} {'drain ms':>8} {'over ms/f':>9} {'CPU ms/f':>8} {'cores':>5} "
          f"{'read ms/f':>9} {'write ms/f':>10}")
    for r in rows:
        print(f"{r['label']:20} {r['frames']:6d} {r['served']:9.2f} {r['bare']:8.2f} {r['ratio']:6.3f} "
              f"{r['gap_ms']:9.1f} {r['gap_max_ms']:7.1f} {r['lead_ms']:8.0f} {r['drain_ms']:8.0f} "
              f"{r['over_ms']:9.1f} {r['cpu_ms']:8.0f} {r['cpu_ms'] / (1000 * r['bare'] / r['frames']):5.2f} "
              f"{r['read_ms']:9.0f} {r['write_ms']:10.0f}")
    for r in rows:
        if r["gpu_gib"] is not None:
            print(f"  {r['label']}: model size {r['size'][1]}x{r['size'][0]}, bare {1000 * r['bare'] / r['frames']:.0f} "
                  f"ms a frame, GPU memory peak {r['gpu_gib']:.2f} GiB")
    targets = {"2K stand-in" + suffix: 1.03, "4K stand-in" + suffix: 1.05}
    for r in rows:
        target = targets.get(r["label"])
        if target is not None:
            met = "met" if r["ratio"] <= target else "NOT met"
            print(f"  {r['label']}: served/stand-in {r['ratio']:.3f} (target <= {target}: {met}); "
                  f"critical path {r['gap_ms']:.1f} ms/frame (target <= 60 ms at 2K)")
    print("columns: model s = the bare pipeline's time for the frames; crit = median wait of the model between two "
          "frames' calls; over = (served - model) / frames, lead-in and drain included; CPU = all threads; cores = "
          "CPU per frame / model time per frame: free cores the pipeline needs to keep the model busy; read / "
          "write = the reader's and the writer's thread time a frame (their own latency, waits for a busy CPU "
          "included): with a core free for each, the model is never starved while both stay under its time a frame")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work shares them)")


if __name__ == "__main__":
    main()
