"""End-to-end extend through ZeroMQ vs the same video pipeline call in-process (same model, frames, steps).

Everything the server adds is in the numerator: socket round trip, EXR reads of the conditioning frames,
OCIO both ways, chunk planning, seam measurement and colour match, atomic EXR writes, take bookkeeping.
Target: ratio <= 1.10 (frames per second in-process / through the server) on the embedded test video model.
Both sides run interleaved in one process; prints medians and their ratio.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512, help="generation size (square, a multiple of 16)")
    parser.add_argument("--conditioning", type=int, default=1, help="K plate frames")
    parser.add_argument("--count", type=int, default=12, help="new frames (K + count must be 4k+1: one call)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch

    from benchlib import interleaved, served
    from bodydouble.jobspec import ExtendRequest, sequence_frames
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig

    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(tempfile.mkdtemp(prefix="bd-bench-extend-"))
    size, k, total = args.size, args.conditioning, args.conditioning + args.count
    # Plates exactly the generation size: no resize either way, so both sides run the pipeline at size x size.
    plates = [samples.plate_pixels(size, size, frame) for frame in range(1, k + 1)]
    for frame, pixels in enumerate(plates, start=1):
        samples.write_exr(root / f"plate.{frame:04d}.exr", pixels, ("R", "G", "B", "A"))
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(root / "adapters"), output_root=str(root / "takes"),
                          video_resolution=size, video_window=max(total, 13))
    request = ExtendRequest(frames=sequence_frames(str(root / "plate.####.exr"), 1, k), count=args.count,
                            conditioning=k, prompt="bench", steps=args.steps, seed=3, guidance=5.0)
    # The bare call: what the server's Wan VACE call makes of the same frames (known frames mask 0, new ones 1).
    video = np.full((1, total, size, size, 3), 0.5, np.float32)
    video[0, :k] = np.clip(np.stack(plates)[..., :3], 0, 1)
    mask = np.ones((1, total, size, size, 1), np.float32)
    mask[0, :k] = 0.0

    with served(config) as (server, client):
        client.submit(request).wait(timeout=600)      # loads the video pipeline (lazily, on the first extend)
        pipe = server.engine.video.pipeline()         # the very same resident pipeline object

        def in_process() -> None:
            pipe(video=video, mask=mask, prompt="bench", height=size, width=size, num_frames=total,
                 num_inference_steps=args.steps, guidance_scale=5.0, generator=torch.Generator().manual_seed(3),
                 output_type="np")

        bare, through = interleaved(in_process, lambda: client.submit(request).wait(timeout=600), args.repeats)
    print(f"extend {size}x{size}, K={k} + {args.count} new frames, {args.steps} steps, embedded test video model "
          f"(Wan VACE), {args.repeats} interleaved runs")
    for label, seconds in (("in-process pipeline call", bare), ("through ZeroMQ server", through)):
        print(f"  {label:<25}: {seconds * 1000:8.1f} ms (median)  {args.count / seconds:6.2f} new frames/s")
    print(f"  ratio server/in-process  : {through / bare:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
