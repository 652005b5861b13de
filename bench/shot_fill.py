"""Fill a shot, not a frame (#18): flicker inside the mask, identity and masked PSNR of per-frame fill, coherent
image fill and the video engine, on held-out miniature-world shots (server/bodydouble_server/miniworld/shots.py).

Flicker = mean |change between consecutive filled frames| inside the mask / the ground truth's own change there
(issue #18's goal: <= 1.2). Every row comes from one run through one server. The video row runs on the world's
baked video model (miniworld/bake_video.py) with each character's own video adapter; the keyed row with key
adapters (the character's image adapter keys every chunk), as the hosts send it.

    python bench/shot_fill.py                 # 3 characters, own image and video adapters (~5 min, 2 CPU cores)
    python bench/shot_fill.py --quick         # 2 characters, 6 frames, shorter training (~3 min)
    python bench/shot_fill.py --no-adapters   # the base model alone (~1 min)
    python bench/shot_fill.py --rows video    # one row (frame, coherent, carried, video, keyed, key_carried)
    python bench/shot_fill.py --footage 5     # references as 5-frame clips: fill adapters from clips (~5.5 min)
    python bench/shot_fill.py --footage 9     # 9-frame clips, the world's whole window (~7 min)
    python bench/shot_fill.py --characters 6 --rows frame,video,keyed    # 48 frames (~10 min)
    python bench/shot_fill.py --keep DIR ...  # keep plates, adapters, takes; a rerun reuses the adapters (~1.5 min)
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    from benchlib import server_options, world_options, world_run
    from bodydouble_server.miniworld.shots import ROWS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    world_options(parser, quick="2 characters, 6 frames, 100 training steps")
    parser.add_argument("--test-frames", type=int)
    parser.add_argument("--coherence", type=float, help="the coherent row's coherence (default 0.5)")
    parser.add_argument("--key-strength", type=float, help="the key_carried row's strength (default 0.5)")
    parser.add_argument("--still-clips", type=int,
                        help="video adapters from stills: held as clips of this many frames for fill (default 5); "
                             "1: 1-frame clips")
    parser.add_argument("--no-adapters", action="store_true", help="fill with the base model alone (no training)")
    parser.add_argument("--rows", help=f"comma-separated rows to run (default: all of {','.join(k for k, _ in ROWS)})")
    args = parser.parse_args(argv)
    rows = tuple(args.rows.split(",")) if args.rows else None
    unknown = set(rows or ()) - {k for k, _ in ROWS}
    if unknown:
        parser.error(f"--rows: no row {', '.join(sorted(unknown))} (rows: {', '.join(k for k, _ in ROWS)})")
    from bodydouble_server.miniworld import experiment, shots

    settings = experiment.with_overrides(shots.QUICK if args.quick else shots.ShotSettings(),
                                         characters=args.characters, test_frames=args.test_frames,
                                         coherence=args.coherence,
                                         key_strength=args.key_strength, adapters=False if args.no_adapters else None,
                                         rows=rows, footage_frames=args.footage, footage_turn=args.footage_turn,
                                         still_clip_frames=args.still_clips,
                                         train_steps=args.train_steps)
    results = world_run(args, lambda root, log: shots.run(settings, root, log, server_options(args)))
    print(f"model: {results['model']['name']}; video model: {results['video_model']['name']}")
    print(f"{settings.characters} held-out characters x {settings.test_frames} frames, camera pan "
          f"{settings.pan:g} px/frame, {'own adapters' if settings.adapters else 'base model'}"
          f"{_references(settings) if settings.adapters else ''}; "
          f"wall {results['wall_s']:.0f} s")
    print(shots.format_table(results))
    return 0


def _references(settings) -> str:
    if settings.footage_frames:
        return f" from {settings.footage_frames}-frame footage clips"
    held = settings.still_clip_frames
    video = f"fill adapters, stills held as {held}-frame clips" if held > 1 else "1-frame clips"
    return f" from stills (video: {video})"


if __name__ == "__main__":
    raise SystemExit(main())
