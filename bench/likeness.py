"""Does the adapter keep the likeness? The miniature world's experiment through the real product.

Held-out synthetic characters (look-alike groups of 3 that differ only in the back-of-head marking) get
adapters from the server's train job (front/side views + two back views), then the server fills a held-out
shot's back-facing head (the plate shows a stand-in) with (a) the base model, (b) the own adapter, (c) the
look-alike's adapter, (d) an adapter that also saw the held-out shot, (e) an adapter without back views.
Scores inside the mask against the rendered truth: PSNR, SSIM, and the judge's top-1 identity, with the
issue's goals printed beside them. All rows come from one run. See docs/likeness.md.

    python bench/likeness.py                  # 6 characters (~25-40 min on 2 CPU cores)
    python bench/likeness.py --quick          # 3 characters (one group), shorter training (~8-12 min)
    python bench/likeness.py --characters 12 --json likeness.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--characters", type=int, help="held-out characters (default 6; whole groups of 3 first)")
    parser.add_argument("--quick", action="store_true", help="3 characters, 150 training steps, 4 test frames")
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--test-frames", type=int)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--model", help="the baked base model folder (default: the committed one)")
    parser.add_argument("--judge", help="the judge's folder (default: the committed one)")
    parser.add_argument("--keep", help="work in this folder and keep it (plates, adapters, takes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core CPU two threads run several times slower)")
    args = parser.parse_args(argv)
    # Before torch loads, here and in the server's training process (it inherits the environment).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    from bodydouble_server.engine import quiet_libraries
    from bodydouble_server.miniworld import experiment

    torch.set_num_threads(args.threads)
    quiet_libraries()
    settings = experiment.QUICK if args.quick else experiment.ExperimentSettings()
    settings = experiment.with_overrides(settings, characters=args.characters, train_steps=args.train_steps,
                                         test_frames=args.test_frames)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bd-likeness-"))
    root.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)

    results = experiment.run(settings, root, Path(args.model or experiment.BASE_MODEL),
                             Path(args.judge or experiment.JUDGE), log)
    model = results["model"] or {}
    print(f"likeness: {settings.characters} held-out characters, {settings.test_frames} back-facing test frames each, "
          f"adapters rank {settings.rank} x {settings.train_steps} steps; model {model.get('name')} "
          f"(test model: {model.get('test_model')}); {results['timings_s']}")
    print(experiment.format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
