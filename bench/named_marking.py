"""Can a base model draw a back marking it is told by name? The probe to run on a bake before the likeness
experiment (docs/likeness.md).

Held-out characters' back views (yaw 180 +- 40, fill's framing), the head masked, inpainted by the base
pipeline itself (not through the server: this asks what the model can draw, not what the product does) with
"back of the head" alone and with the marking's words ("back of the head red ring marking", as the bake's
captions name it), each judged. An adapter teaches the model which marking a character wears; a model that
cannot draw a named marking at all leaves it nothing to teach it to. A weak probe: the base model alone
draws no held-out character's hair (it never saw them), so the judge names none of its fills whatever marking
they show; the committed bake reads 0.00 both ways while its adapters are named from the back half the time.

    python bench/named_marking.py MODEL_FOLDER                      # 6 characters x 4 views: about 1 min
    python bench/named_marking.py MODEL_FOLDER --sheet probe.png    # with a picture: truth, view, named
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a baked base model folder")
    parser.add_argument("--characters", type=int, default=6)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=2.0, help="the experiment's (2.0)")
    parser.add_argument("--device", default="cpu", help="where the base pipeline runs (the judge: the CPU)")
    parser.add_argument("--sheet", help="write a PNG: per character, the truths, then the fills of each prompt")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from bodydouble_server.imaging.colour import ColourTransform
    from bodydouble_server.miniworld import bake, experiment, world
    from bodydouble_server.miniworld import characters as chars
    from bodydouble_server.miniworld.judge import Judge
    from bodydouble_server.models import miniworld as family

    torch.set_num_threads(1)
    pipe = StableDiffusionInpaintPipeline.from_pretrained(args.model, local_files_only=True, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.to(args.device).set_progress_bar_config(disable=True)
    judge, colour = Judge(experiment.JUDGE), ColourTransform(world.PLATE_COLOURSPACE)
    framing = world.Framing(family.RESOLUTION, family.MULTIPLE)
    named, rows = {"truth": [], "view": [], "named": []}, []
    for c in chars.eval_characters(experiment.ExperimentSettings().seed, args.characters):
        rng = chars._rng(1, "named-marking-probe", c.name)
        rgb, mask, _ = world.sample_views(rng, c, args.views, 96, 96, framing, colour,
                                          yaws=180 + rng.uniform(-40, 40, args.views))
        rgb = rgb.astype(np.float32)
        named["truth"] += [n == c.name for n in judge.predict(rgb, mask)]
        row = [rgb]
        for label, words in (("view", ""), ("named", f" {bake.marking_caption(c, 180.0)} {bake.MARKING_WORD}")):
            fills = np.stack([np.where(mask[i][..., None], pipe(
                prompt="back of the head" + words, image=rgb[i:i + 1],
                mask_image=mask[i:i + 1, :, :, None].astype(np.float32),
                height=framing.resolution, width=framing.resolution, num_inference_steps=20,
                guidance_scale=args.guidance, generator=torch.Generator().manual_seed(i), output_type="np").images[0],
                rgb[i]) for i in range(args.views)])
            named[label] += [n == c.name for n in judge.predict(fills, mask)]
            row.append(fills)
        rows.append(np.concatenate([np.concatenate(list(r), axis=1) for r in row], axis=0))
    print(f"named marking probe: {args.model}, {args.characters} held-out characters x {args.views} back views, "
          f"guidance {args.guidance}")
    for label, title in (("truth", "the render (the judge's ceiling)"), ("view", '"back of the head"'),
                         ("named", '"back of the head <colour> <shape> marking"')):
        print(f"  {title:48} identity {np.mean(named[label]):.2f} ({len(named[label])} views)")
    if args.sheet:
        import OpenImageIO as oiio

        sheet = np.concatenate(rows, axis=1).repeat(3, 0).repeat(3, 1).astype(np.float32)
        oiio.ImageBuf(np.ascontiguousarray(sheet)).write(args.sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
