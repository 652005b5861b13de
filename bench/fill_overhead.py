"""End-to-end fill through ZeroMQ vs the same pipeline call in-process (same frame, model, steps).

Everything the server adds is in the numerator: socket round trip, EXR read, OCIO both ways, crop/resize,
feather, composite, atomic EXR write, take bookkeeping. Target: ratio <= 1.10 on the embedded model at 512^2.
Runs both sides interleaved in one process and prints medians and their ratio.

A 512^2 plate hides what a real plate costs: ``--plate 2048x1080`` fills a 2K plate through a 400x400 mask
(the model still works at --size). One frame per job, so nothing overlaps: this is a one-frame job's cost;
bench/shot_throughput.py measures whole shots through the frame pipeline (#16).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512, help="generation size (square)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plate", default="", help="WxH plate (e.g. 2048x1080) with a 400x400 mask; default: size^2")
    args = parser.parse_args()

    import numpy as np
    import torch

    from bodydouble.client import Client
    from bodydouble.jobspec import FillRequest, FrameInput, ImageRef
    from bodydouble_server import samples
    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig

    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(tempfile.mkdtemp(prefix="bd-bench-"))
    size = args.size
    if args.plate:
        # A real plate: a 400x400 mask in the middle, its 800x800 crop generated at size x size.
        width, height = (int(v) for v in args.plate.lower().split("x"))
        plate = samples.plate_pixels(width, height, 1)
        mask = np.zeros((height, width), np.float32)
        mask[height // 2 - 200:height // 2 + 200, width // 2 - 200:width // 2 + 200] = 1.0
    else:
        # A plate exactly the generation size with a mask whose box + context covers it: no resize either way,
        # so both sides run the pipeline at size x size.
        plate = samples.plate_pixels(size, size, 1)
        mask = np.zeros((size, size), np.float32)
        q = size // 4
        mask[q:-q, q:-q] = 1.0
    samples.write_exr(root / "plate.0001.exr", plate, ("R", "G", "B", "A"))
    samples.write_exr(root / "mask.0001.exr", mask[:, :, None], ("A",))

    config = ServerConfig(port=0, roots=[str(root)], adapters=str(root / "adapters"), output_root=str(root / "takes"),
                          resolution=size)
    server, thread = start_in_thread(config)
    client = Client(server.bound_address, timeout=60)
    client.wait_ready()
    pipe = server.engine.pipelines["fill"]  # the very same resident pipeline object
    request = FillRequest(frames=[FrameInput(1, ImageRef(path=str(root / "plate.0001.exr")),
                                             ImageRef(path=str(root / "mask.0001.exr")))],
                          prompt="bench", steps=args.steps, seed=3, context=0.5 if args.plate else 1.0)
    image = np.full((1, size, size, 3), 0.5, np.float32)
    model_mask = np.ones((1, size, size, 1), np.float32)

    def in_process() -> float:
        t = time.perf_counter()
        pipe(prompt="bench", image=image, mask_image=model_mask, height=size, width=size,
             num_inference_steps=args.steps, strength=1.0, guidance_scale=7.5,
             generator=torch.Generator().manual_seed(3), output_type="np")
        return time.perf_counter() - t

    def through_server() -> float:
        t = time.perf_counter()
        client.submit(request).wait(timeout=600)
        return time.perf_counter() - t

    in_process(), through_server()  # warm-up
    bare, served = [], []
    for _ in range(args.repeats):
        bare.append(in_process())
        served.append(through_server())
    client.close()
    server.stop()
    thread.join(10)
    b, s = statistics.median(bare), statistics.median(served)
    print(f"fill {args.plate or f'{size}x{size}'} plate at {size}x{size}, {args.steps} steps, embedded model, "
          f"{args.repeats} interleaved runs")
    print(f"  in-process pipeline call : {b * 1000:8.1f} ms (median)")
    print(f"  through ZeroMQ server    : {s * 1000:8.1f} ms (median)")
    print(f"  ratio server/in-process  : {s / b:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
