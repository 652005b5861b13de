"""Does the adapter keep the likeness? The miniature world's experiment through the real product.

Held-out synthetic characters (look-alike groups of 3 that differ only in the back-of-head marking) get
adapters from the server's train job (front/side views + two back views), then the server fills a held-out
shot's back-facing head (the plate shows a stand-in) with (a) the base model, (b) the own adapter, (c) the
look-alike's adapter, (d) an adapter that also saw the held-out shot, (e) an adapter without back views.
Scores inside the mask against the rendered truth: PSNR, SSIM, and the judge's top-1 identity, with the
issue's goals printed beside them. All rows come from one run. See docs/likeness.md.

    python bench/likeness.py                  # 6 characters, 3 fill seeds: 54 min on 2 busy CPU cores
    python bench/likeness.py --quick          # 3 characters (one group), shorter training: 14 min
    python bench/likeness.py --characters 12 --json likeness.json     # about 110 min
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    from benchlib import server_options, world_options, world_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    world_options(parser, quick="3 characters, 150 training steps, 4 test frames")
    parser.add_argument("--test-frames", type=int)
    parser.add_argument("--model", help="the baked base model folder (default: the committed one)")
    parser.add_argument("--judge", help="the judge's folder (default: the committed one)")
    parser.add_argument("--strength", type=float, help="fill's strength (default 1.0: the whole mask from noise)")
    parser.add_argument("--fill-seeds", type=int, help="fills of each row, seeds 7, 8, ... (default 3)")
    args = parser.parse_args(argv)
    from bodydouble_server.miniworld import experiment

    settings = experiment.with_overrides(experiment.QUICK if args.quick else experiment.ExperimentSettings(),
                                         characters=args.characters, train_steps=args.train_steps,
                                         test_frames=args.test_frames, footage_frames=args.footage,
                                         footage_turn=args.footage_turn, strength=args.strength,
                                         fill_seeds=args.fill_seeds)
    results = world_run(args, lambda root, log: experiment.run(
        settings, root, Path(args.model or experiment.BASE_MODEL), Path(args.judge or experiment.JUDGE), log,
        server_options(args)))
    model = results["model"] or {}
    print(f"likeness: {settings.characters} held-out characters, {settings.test_frames} back-facing test frames each "
          f"x {settings.fill_seeds} fill seeds, "
          f"adapters rank {settings.rank} x {settings.train_steps} steps; model {model.get('name')} "
          f"(test model: {model.get('test_model')}); {results['timings_s']}")
    print(experiment.format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
