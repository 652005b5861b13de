"""Extend a shot in the miniature world (#20 stage 7): the judge's identity of frames extended past the plate on
the world's baked video model, per chunk (drift), for the base video model, the character's own video adapter
and its look-alike's (server/bodydouble_server/miniworld/extension.py).

Every row comes from one run through one server: plates written as EXRs, video adapters trained by the server's
train job, frames made by its extend job, scores read back from the EXR takes.

    python bench/extend_likeness.py                 # 3 characters (one look-alike group), 20 frames extended
    python bench/extend_likeness.py --quick         # 2 characters, 12 frames, 100 training steps
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
    parser.add_argument("--quick", action="store_true", help="2 characters, 12 frames, 100 training steps")
    parser.add_argument("--characters", type=int)
    parser.add_argument("--count", type=int, help="frames to extend")
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", help="work in this folder and keep it (plates, adapters, takes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core CPU)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from bodydouble_server.miniworld import extension

    settings = extension.with_overrides(extension.QUICK if args.quick else extension.ExtendSettings(),
                                        characters=args.characters, count=args.count, train_steps=args.train_steps)
    if args.keep:
        results = extension.run(settings, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="bodydouble-extend-") as work:
            results = extension.run(settings, Path(work))
    print(f"video model: {results['video_model']['name']} (test model: {results['video_model']['test_model']})")
    print(f"{settings.characters} held-out characters, plate turning to {settings.plate_last:g} degrees at "
          f"{settings.speed:g} a frame, {settings.count} frames extended ({settings.conditioning} known a chunk); "
          f"{results['timings_s']}")
    print(extension.format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
