"""Fill a shot, measured in the miniature world (#18): does the filled back of the head flicker, and does a
coherent fill keep the likeness?

Held-out characters (experiment.py's: never in the base model's training set), each with its own adapter from
the server's train job (front/side views and two back views, experiment.py's row (b)), fill the held-out shot's
back-facing turntable (the camera panning; the plate shows a stand-in) through the real server:

    per-frame    the image engine, each frame on its own (today's fill)
    coherent     the image engine at ``coherence`` (each frame started from the previous result, carried by flow)
    carried      the image engine at coherence 1 (the first frame's fill carried through the shot)
    video        the video engine, on the world's baked video model (bake_video.py, Wan-VACE-shaped), with the
                 character's own video adapter from the server's train job (the same references, 1-frame clips)
    keyed        the video engine keyed by per-frame fill's first frame (``key_adapters``: the server fills it
                 with the character's image adapter; the base model alone: that fill's file as ``key_frame``)
    key_carried  the same at strength ``key_strength``: the video model starts from the key carried through the
                 shot along its motion (as ``carried``), the rest of its schedule run

Scores, in the model's display-referred encoding: **flicker** inside the mask = mean |change between consecutive
filled frames| / the ground truth's own mean change there (1.0: as much change as the truth, the head turning;
0: a frozen fill), and beside it experiment.py's masked PSNR and the judge's identity.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from . import characters as chars
from . import experiment, world

ROWS = (
    ("frame", "per-frame fill (image engine)"),
    ("coherent", "coherent image fill"),
    ("carried", "image fill carried (coherence 1)"),
    ("video", "video engine (world's video model)"),
    ("keyed", "video engine + per-frame key frame"),
    ("key_carried", "video engine + key frame carried, strength"),
)
KEYED = ("keyed", "key_carried")        # the rows given per-frame fill's first frame as their key frame
REFERENCES = (("plate", "stand-in plate untouched (reference)"), ("truth", "ground truth (reference)"))


@dataclass(frozen=True)
class ShotSettings:
    characters: int = 3
    test_frames: int = 8               # the held-out turntable: back-facing, +-test_yaw around 180
    test_yaw: float = 30.0
    pan: float = 2.0                   # camera pan, px a frame (160 px wide plates)
    grain: float = 0.04                # the plate's grain: relative standard deviation, new every frame
    coherence: float = 0.5
    key_strength: float = 0.5          # the key_carried row's strength
    adapters: bool = True              # train each character's own adapter (else the base model alone)
    train_steps: int = 150
    fill_steps: int = 20
    video_steps: int = 20
    rows: tuple = ("frame", "coherent", "carried", "video", "keyed")     # key_carried: --rows
    footage_frames: int = 0            # references as clips of this many frames (experiment.py's), 0: stills;
                                       # the video adapters from them are fill adapters (clip_fill 1)
    footage_turn: float = 3.0          # degrees the head turns a frame of those clips (0: each still held)
    still_clip_frames: int = 5         # video adapters from stills: fill adapters, stills held as 5-frame clips
                                       # (the train job's recipe for the video engine); 1: 1-frame clips

    def experiment(self) -> experiment.ExperimentSettings:
        return experiment.ExperimentSettings(characters=self.characters, test_frames=self.test_frames,
                                             test_yaw=self.test_yaw, train_steps=self.train_steps,
                                             fill_steps=self.fill_steps, rows=("b",),
                                             footage_frames=self.footage_frames, footage_turn=self.footage_turn,
                                             footage_fill=1.0, still_clip_frames=self.still_clip_frames)


QUICK = ShotSettings(characters=2, test_frames=6, train_steps=100)
# The CI check: one character, the base models, a few frames and steps (seconds).
CI = ShotSettings(characters=1, test_frames=4, adapters=False, fill_steps=8, video_steps=8,
                  rows=("frame", "coherent", "video", "keyed"))
# The CI check of video adapters: one character's own, from stills or (footage_frames) a fill adapter from clips,
# on the video engine; 100 training steps (about 1.5 min each on 2 cores).
CI_VIDEO_ADAPTER = ShotSettings(characters=1, test_frames=4, train_steps=100, rows=("video",))


def flicker(filled: list[np.ndarray], truth: list[np.ndarray], masks: list[np.ndarray],
            feather: int = experiment.FEATHER) -> tuple[float, float]:
    """(mean |filled change|, mean |truth change|) between consecutive frames, over the pixels filled whole in
    both frames (the mask inside its feather: at the feather the composite keeps some plate, the stand-in);
    images already in the display encoding."""
    from ..imaging import regions

    whole = [regions.feathered(m, feather) >= 1.0 for m in masks]
    made, real = [], []
    for t in range(1, len(filled)):
        inside = whole[t] & whole[t - 1]
        made.append(np.abs(filled[t] - filled[t - 1])[inside].mean())
        real.append(np.abs(truth[t] - truth[t - 1])[inside].mean())
    return float(np.mean(made)), float(np.mean(real))


def write_shot(root: Path, data: experiment.CharacterData, s: ShotSettings, es) -> experiment.CharacterData:
    """The held-out shot, with the camera panning ``pan`` px a frame and grain on the plate (experiment.py's own
    test shot stands still and is clean: with a fixed seed, per-frame fill then has nothing to flicker on): the
    plate shows the stand-in's head turning from the back, the truth this character's, the mask both heads."""
    c, width, height = data.character, es.plate_width, es.plate_height
    travel = int(np.ceil(s.pan * (s.test_frames - 1)))
    shot = chars.random_shot(chars._rng(es.seed, "pan-shot", c.name), width + travel, height)
    shot = replace(shot, cx=(width + travel) / 2.0)
    double, folder = chars.stand_in(es.seed), root / "pan" / c.name
    grain = chars._rng(es.seed, "grain", c.name)
    truths = []
    for i, yaw in enumerate(chars.turntable(180 - s.test_yaw, 180 + s.test_yaw, s.test_frames)):
        frame, x0 = data.first + i, int(round(i * s.pan))
        truth, matte = chars.render(c, shot, yaw)
        plate, matte_double = chars.render(c, shot, yaw, head=double)
        # Film grain, new every frame (multiplicative, as on a scanned or sensor plate): the model's context
        # changes from frame to frame as it does on a real plate. The truth has none (a grain-free target).
        plate = plate * (1.0 + s.grain * grain.standard_normal(plate.shape)).astype(np.float32)
        window = (slice(None), slice(travel - x0, travel - x0 + width))      # the camera moves right
        world.write_plate(folder / f"truth.{frame:04d}.exr", truth[window], {"character": c.name, "yaw": yaw})
        world.write_plate(folder / f"plate.{frame:04d}.exr", plate[window], {"character": "stand-in", "yaw": yaw})
        world.write_matte(folder / f"mask.{frame:04d}.exr", np.maximum(matte, matte_double)[window])
        truths.append(folder / f"truth.{frame:04d}.exr")
    return replace(data, plate=str(folder / "plate.####.exr"), mask=str(folder / "mask.####.exr"), truth=truths)


def _request(data: experiment.CharacterData, row: str, adapter: str | None, s: ShotSettings, out: Path,
             key_frame: str | None = None, key_adapter: str | None = None, last: int | None = None):
    """Row ``row``'s request. Keyed rows: the key filled on the server with the character's image adapter
    (``key_adapters``, as the hosts send it), else (the base model alone) per-frame fill's first frame's file."""
    from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames

    last = last or data.first + len(data.truth) - 1
    trigger = f"<{data.character.name}> " if adapter else ""
    key = {"key_adapters": [AdapterRef(key_adapter)]} if key_adapter else {"key_frame": key_frame}
    fields = {"frame": {"engine": "image"}, "coherent": {"engine": "image", "coherence": s.coherence},
              "carried": {"engine": "image", "coherence": 1.0},
              "video": {"engine": "video", "steps": s.video_steps},
              "keyed": {"engine": "video", "steps": s.video_steps, **key},
              "key_carried": {"engine": "video", "steps": s.video_steps, "strength": s.key_strength, **key}}[row]
    return FillRequest(frames=sequence_frames(data.plate, data.first, last, data.mask),
                       adapters=[AdapterRef(adapter)] if adapter else [],
                       prompt=f"{trigger}back of the head", seed=7, feather=experiment.FEATHER,
                       **{"steps": s.fill_steps, "strength": 1.0, "guidance": experiment.ExperimentSettings.guidance,
                          **fields},
                       output_dir=str(out))


def run(settings: ShotSettings, root: Path, log=print, server: dict | None = None) -> dict:
    """Every row for every character, through one server (the world's baked image and video models)."""
    started = time.monotonic()
    root = Path(root)
    es = settings.experiment()
    cast = chars.eval_characters(es.seed, settings.characters)
    datas = [write_shot(root, experiment.write_references(root, c, es), settings, es) for c in cast]
    per_row: dict[str, dict] = {key: {"scores": [], "made": [], "real": [], "seconds": 0.0, "key_held": []}
                                for key, _ in ROWS + REFERENCES}
    with experiment.served(root, video_model=experiment.VIDEO_MODEL, server=server) as (client, hello, scorer):
        for data in datas:
            kinds = {_kind(row) for row in settings.rows} | ({"image"} if set(KEYED) & set(settings.rows) else set())
            adapters = {kind: experiment.train(client, data, "b", es, root / "adapters", log, kind=kind)["adapter"]
                        for kind in sorted(kinds) if settings.adapters}
            frames = range(data.first, data.first + len(data.truth))
            masks = [world.read_exr(Path(data.mask.replace("####", f"{f:04d}")))[:, :, 0] for f in frames]
            truths = [world.read_exr(p) for p in data.truth]
            shown_truth = [scorer.display(t) for t in truths]
            key_frame = None                     # per-frame fill's first frame: what the keyed rows' key is
            for row in settings.rows:
                t = time.monotonic()
                takes = root / "takes" / data.character.name / row
                if row in KEYED and key_frame is None:
                    key_frame = client.submit(_request(data, "frame", adapters.get("image"), settings, takes,
                                                       last=data.first)).wait(timeout=1800).frames[data.first]
                result = client.submit(_request(data, row, adapters.get(_kind(row)), settings, takes,
                                                key_frame=key_frame, key_adapter=adapters.get("image"))
                                       ).wait(timeout=1800)
                if row == "frame":
                    key_frame = result.frames[data.first]
                per_row[row]["seconds"] += time.monotonic() - t
                filled = [world.read_exr(Path(result.frames[f])) for f in frames]
                _score(per_row[row], scorer, filled, truths, shown_truth, masks, data.character.name)
                if row in KEYED:                  # how closely the take's first frame keeps its key frame
                    inside = masks[0] > 0.5
                    per_row[row]["key_held"].append(experiment.psnr(
                        scorer.display(filled[0])[inside], scorer.display(world.read_exr(Path(key_frame)))[inside]))
            plates = [world.read_exr(Path(data.plate.replace("####", f"{f:04d}"))) for f in frames]
            _score(per_row["plate"], scorer, plates, truths, shown_truth, masks, data.character.name)
            _score(per_row["truth"], scorer, truths, truths, shown_truth, masks, data.character.name)
            log(f"filled {data.character.name}: {', '.join(settings.rows)}")
    return summarise(settings, per_row, hello, time.monotonic() - started)


def _kind(row: str) -> str:
    """The model (and so the adapter) a row runs on."""
    return "video" if row in ("video",) + KEYED else "image"


def _score(row: dict, scorer, filled, truths, shown_truth, masks, name: str) -> None:
    shown = [scorer.display(f) for f in filled]
    made, real = flicker(shown, shown_truth, masks)
    row["made"].append(made)
    row["real"].append(real)
    row["scores"] += [{**scorer.frame(f, t, m), "truth": name} for f, t, m in zip(filled, truths, masks)]


def summarise(settings: ShotSettings, per_row: dict, hello: dict, wall_s: float) -> dict:
    rows = {}
    for key, title in ROWS + REFERENCES:
        row = per_row.get(key)
        if not row or not row["scores"]:
            continue
        scores = row["scores"]
        rows[key] = {"title": title + {"coherent": f" {settings.coherence:g}",
                                       "key_carried": f" {settings.key_strength:g}"}.get(key, ""),
                     "frames": len(scores), "flicker": float(np.sum(row["made"]) / max(np.sum(row["real"]), 1e-9)),
                     "psnr_db": float(np.mean([s["psnr"] for s in scores])),
                     "identity": float(np.mean([s["judged"] == s["truth"] for s in scores])),
                     # Frame by frame of the shot, over the characters (scores come a character's shot at a time):
                     # the video engine codes a chunk's first frame alone, the rest four to a latent frame.
                     "psnr_db_by_frame": [float(np.mean([s["psnr"] for s in scores[i::settings.test_frames]]))
                                          for i in range(settings.test_frames)],
                     "seconds": round(row["seconds"], 1),
                     **({"key_held_db": float(np.mean(row["key_held"]))} if row["key_held"] else {})}
    model = hello.get("model") or {}
    return {"settings": asdict(settings), "rows": rows,
            "model": {k: model.get(k) for k in ("name", "family", "test_model")},
            "video_model": {k: (model.get("video_model") or {}).get(k) for k in ("name", "family", "test_model")},
            "wall_s": round(wall_s, 1)}


def format_table(results: dict) -> str:
    lines = [f"{'row':<44} {'frames':>6} {'flicker':>8} {'PSNR dB':>8} {'identity':>8} {'fill s':>7}"]
    for key, row in results["rows"].items():
        lines.append(f"{row['title']:<44} {row['frames']:>6} {row['flicker']:>8.2f} {row['psnr_db']:>8.2f} "
                     f"{row['identity']:>8.2f} {row['seconds']:>7.1f}")
    lines.append("flicker: mean |change between consecutive filled frames| inside the mask / the truth's own; "
                 "goal <= 1.2")
    held = {key: row["key_held_db"] for key, row in results["rows"].items() if "key_held_db" in row}
    if held:
        lines.append("key frame held: the keyed take's first frame against its key, inside the mask: "
                     + ", ".join(f"{results['rows'][key]['title']} {db:.2f} dB" for key, db in held.items()))
    lines.append("PSNR dB by frame of the shot (the video engine's chunks start at frame 0, coded alone by its VAE):")
    for key, row in results["rows"].items():
        if key != "truth":
            lines.append(f"  {row['title']:<42} " + " ".join(f"{v:5.2f}" for v in row["psnr_db_by_frame"]))
    return "\n".join(lines)
