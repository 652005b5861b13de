"""Extend a shot in the miniature world (#20 stage 7): the judge's identity of frames extended past the plate on
the world's baked video model, per chunk (drift), for the base video model, the character's own video adapter
and its look-alike's (server/bodydouble_server/miniworld/extension.py).

Every row comes from one run through one server: plates written as EXRs, video adapters trained by the server's
train job, frames made by its extend job, scores read back from the EXR takes.

    python bench/extend_likeness.py                 # 3 characters (one look-alike group), 20 frames extended (~8 min)
    python bench/extend_likeness.py --quick         # 2 characters, 12 frames, 100 training steps (~2 min)
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    from benchlib import server_options, world_options, world_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    world_options(parser, quick="2 characters, 12 frames, 100 training steps")
    parser.add_argument("--count", type=int, help="frames to extend")
    args = parser.parse_args(argv)
    from bodydouble_server.miniworld import experiment, extension

    settings = experiment.with_overrides(extension.QUICK if args.quick else extension.ExtendSettings(),
                                         characters=args.characters, count=args.count, train_steps=args.train_steps,
                                         footage_frames=args.footage, footage_turn=args.footage_turn)
    results = world_run(args, lambda root, log: extension.run(settings, root, log, server_options(args)))
    print(f"video model: {results['video_model']['name']} (test model: {results['video_model']['test_model']})")
    print(f"{settings.characters} held-out characters, plate turning to {settings.plate_last:g} degrees at "
          f"{settings.speed:g} a frame, {settings.count} frames extended ({settings.conditioning} known a chunk); "
          f"{results['timings_s']}")
    print(extension.format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
