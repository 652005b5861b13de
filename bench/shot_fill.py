"""Fill a shot, not a frame (#18): flicker inside the mask, identity and masked PSNR of per-frame fill, coherent
image fill and the video engine, on held-out miniature-world shots (server/bodydouble_server/miniworld/shots.py).

Flicker = mean |change between consecutive filled frames| inside the mask / the ground truth's own change there
(issue #18's goal: <= 1.2). Every row comes from one run through one server. The video row runs on the world's
baked video model (miniworld/bake_video.py) with each character's own video adapter.

    python bench/shot_fill.py                 # 3 characters, own adapters trained (~10-15 min on 2 CPU cores)
    python bench/shot_fill.py --quick         # 2 characters, 6 frames, shorter training (~5 min)
    python bench/shot_fill.py --no-adapters   # the base model alone (~1 min)
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 characters, 6 frames, 100 training steps")
    parser.add_argument("--characters", type=int)
    parser.add_argument("--test-frames", type=int)
    parser.add_argument("--coherence", type=float, help="the coherent row's coherence (default 0.5)")
    parser.add_argument("--no-adapters", action="store_true", help="fill with the base model alone (no training)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", help="work in this folder and keep it (plates, adapters, takes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core CPU)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from bodydouble_server.miniworld import shots

    settings = shots.with_overrides(shots.QUICK if args.quick else shots.ShotSettings(), characters=args.characters,
                                    test_frames=args.test_frames, coherence=args.coherence,
                                    adapters=False if args.no_adapters else None)
    if args.keep:
        results = shots.run(settings, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="bodydouble-shotfill-") as work:
            results = shots.run(settings, Path(work))
    print(f"model: {results['model']['name']}; video model: {results['video_model']['name']}")
    print(f"{settings.characters} held-out characters x {settings.test_frames} frames, camera pan "
          f"{settings.pan:g} px/frame, {'own adapters' if settings.adapters else 'base model'}; "
          f"wall {results['wall_s']:.0f} s")
    print(shots.format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
