"""Extend a shot, measured in the miniature world (#20 stage 7): do frames made past the plate's last frame keep
the character, and does that hold from the first chunk to the last?

For each held-out character (the image experiment's, never in either base model's training set), the plate is
a turntable that stops before the back of the head comes into view (yaw up to ``plate_last`` degrees: the
marking is not seen); extend continues it through the server's extend job on the world's baked video model
(bake_video.py), ``conditioning`` plate frames known, in chunks of the model's 9-frame window. The ground truth is
the character rendered on at the same speed: the extended frames turn to the back, where only the marking tells
the look-alikes apart. Rows:

    (a) base video model alone     (b) the character's own video adapter    (c) its look-alike's video adapter

(video adapters from the server's train job on the image experiment's references: front/side turntables and two
back views, as 1-frame clips), beside the last plate frame held (what a model that cannot move makes), the
truth through the video VAE (the ceiling of any extension on this model) and the ground truth itself (the
judge's own ceiling on these frames).
Scores per extended frame against the truth: PSNR over the head's box (the head and some background), and on
the back-facing frames the judge's top-1 identity, per chunk: drift is the first chunk's identity minus the
last's.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import characters as chars
from . import experiment, world

ROWS = (("a", "base video model, no adapter"), ("b", "own video adapter"), ("c", "look-alike's video adapter"),
        ("hold", "last plate frame held (reference)"), ("vae", "truth through the video VAE (ceiling)"),
        ("truth", "ground truth (reference)"))


@dataclass(frozen=True)
class ExtendSettings:
    characters: int = 3
    plate: int = 96                    # square plates as the video model was baked on (extend resizes the whole
                                       # plate to the model's 64 px: on the image experiment's 160 px plates
                                       # the head would be a few pixels)
    plate_frames: int = 5
    plate_last: float = 100.0          # the plate's last yaw (degrees): the marking shows from about 105 on
    speed: float = 6.0                 # degrees a frame, the plate's and the truth's
    count: int = 20                    # frames extended
    conditioning: int = 3              # plate frames known to each chunk (motion needs more than one)
    back: float = 60.0                 # a frame is back-facing within +- this of 180 (the judge reads the marking)
    train_steps: int = 300
    steps: int = 20
    guidance: float = 2.0
    rows: tuple = ("a", "b", "c", "hold", "vae", "truth")
    footage_frames: int = 0            # references as clips of this many frames (experiment.py's), 0: stills
    footage_turn: float = 3.0          # degrees the head turns a frame of those clips (0: each still held)

    def experiment(self) -> experiment.ExperimentSettings:
        return experiment.ExperimentSettings(characters=self.characters, train_steps=self.train_steps,
                                             footage_frames=self.footage_frames, footage_turn=self.footage_turn)


QUICK = ExtendSettings(characters=2, count=12, train_steps=100)
# The CI check: one character, the base video model against the last plate frame held and the VAE's ceiling (no
# training), two chunks of few steps.
CI = ExtendSettings(characters=1, count=8, steps=8, rows=("a", "hold", "vae"))


def write_plate(root: Path, data: experiment.CharacterData, s: ExtendSettings, es) -> dict:
    """The plate (the character turning, up to ``plate_last``) and the truth of the frames extend makes."""
    c = data.character
    shot = chars.random_shot(chars._rng(es.seed, "extend-shot", c.name), s.plate, s.plate)
    folder, first = root / "extend" / c.name, data.first
    yaws = [s.plate_last - s.speed * (s.plate_frames - 1 - i) for i in range(s.plate_frames + s.count)]
    truth = []
    for i, yaw in enumerate(yaws):
        rgb, matte = chars.render(c, shot, yaw)
        kind = "plate" if i < s.plate_frames else "truth"
        world.write_plate(folder / f"{kind}.{first + i:04d}.exr", rgb, {"character": c.name, "yaw": yaw})
        world.write_matte(folder / f"matte.{first + i:04d}.exr", matte)
        if kind == "truth":
            truth.append((first + i, yaw))
    return {"plate": str(folder / "plate.####.exr"), "first": first, "last": first + s.plate_frames - 1,
            "truth": truth, "folder": folder}


def extend(client, shot: dict, adapter: str | None, trigger: str, s: ExtendSettings, out: Path) -> dict:
    from bodydouble.jobspec import AdapterRef, ExtendRequest, sequence_frames

    request = ExtendRequest(frames=sequence_frames(shot["plate"], shot["first"], shot["last"]), count=s.count,
                            adapters=[AdapterRef(adapter)] if adapter else [],
                            prompt=f"{trigger} turning around".strip(), seed=7, steps=s.steps,
                            guidance=s.guidance, conditioning=s.conditioning, output_dir=str(out))
    result = client.submit(request).wait(timeout=1800)
    return {frame: result.frames[frame] for frame, _ in shot["truth"]}


def vae_round_trip(truth: list[np.ndarray], colour) -> list[np.ndarray]:
    """The truth frames as the video model at best gives them back: in the model's encoding, resized to its size
    (extend's framing: the whole plate), through its VAE in windows of the model's window and back: the ceiling
    of any extension on this model (a latent model cannot give back what its VAE loses)."""
    import torch
    from diffusers import AutoencoderKLWan

    from ..models import miniworld as family

    def resize(x, size):
        return torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)

    vae = AutoencoderKLWan.from_pretrained(str(experiment.VIDEO_MODEL / "vae")).eval()
    window = min(family.VIDEO_WINDOW, len(truth))
    window -= (window - 1) % family.MINIWORLD_VIDEO.temporal_multiple        # Wan's frame rule, 4k + 1
    x = torch.from_numpy(np.stack([colour.to_model(t[:, :, :3]) for t in truth])).permute(0, 3, 1, 2).float()
    small = resize(x, (family.RESOLUTION, family.RESOLUTION))
    out = torch.empty_like(small)
    starts = sorted({*range(0, len(truth) - window + 1, window), max(len(truth) - window, 0)})
    with torch.no_grad():
        for start in starts:
            clip = small[start:start + window].permute(1, 0, 2, 3)[None] * 2 - 1
            made = vae.decode(vae.encode(clip).latent_dist.mode()).sample.clamp(-1, 1)
            out[start:start + window] = (made[0].permute(1, 0, 2, 3) + 1) / 2
    back = resize(out, truth[0].shape[:2]).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return [colour.from_model(b) for b in back]


def chunk_of(index: int, s: ExtendSettings, window: int, temporal_multiple: int) -> int:
    """The chunk (0-based) that made extended frame ``index`` new, as extend plans them (chunks.plan, with
    ExtendRequest's default overlap)."""
    from dataclasses import fields

    from bodydouble.jobspec import ExtendRequest

    from ..operations import chunks

    overlap = {f.name: f.default for f in fields(ExtendRequest)}["overlap"]
    plan = chunks.plan(s.count, s.conditioning, overlap, window, temporal_multiple)
    return next(c.index for c in plan if c.start + c.overlap <= index < c.start + c.outputs)


def score(scorer, made: np.ndarray, truth: np.ndarray, matte: np.ndarray, yaw: float, s: ExtendSettings) -> dict:
    inside = matte > 0.5
    ys, xs = np.nonzero(inside)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    made_d, truth_d = scorer.display(made), scorer.display(truth)
    row = {"psnr": experiment.psnr(np.clip(made_d[box], 0, 1), np.clip(truth_d[box], 0, 1)), "yaw": yaw,
           "back": abs(chars.wrap_yaw(yaw - 180.0)) <= s.back}
    if row["back"]:
        model_rgb, model_mask, _ = world.model_sample(scorer.colour, made[:, :, :3], matte, scorer.framing)
        row["judged"] = scorer.judge.predict(model_rgb[None], model_mask[None])[0]
    return row


def run(settings: ExtendSettings, root: Path, log=print, server: dict | None = None) -> dict:
    """Every row for every character through one server (the baked image and video models)."""
    from ..models import miniworld as family

    started = time.monotonic()
    root = Path(root)
    es = settings.experiment()
    cast = chars.eval_characters(es.seed, settings.characters)
    datas = [experiment.write_references(root, c, es) for c in cast]
    shots = [write_plate(root, d, settings, es) for d in datas]
    per_row: dict[str, list[dict]] = {key: [] for key, _ in ROWS}
    timings = {"train_s": 0.0, "extend_s": 0.0}
    with experiment.served(root, video_model=experiment.VIDEO_MODEL, server=server) as (client, hello, scorer):
        t = time.monotonic()
        adapters = {d.character.name: experiment.train(client, d, "b", es, root / "adapters", log, kind="video")
                    ["adapter"] for d in datas if {"b", "c"} & set(settings.rows)}
        timings["train_s"] = time.monotonic() - t
        t = time.monotonic()
        for index, (data, shot) in enumerate(zip(datas, shots)):
            c, look_alike = data.character, experiment.look_alike_of(datas, index)
            last_plate = world.read_exr(Path(shot["plate"].replace("####", f"{shot['last']:04d}")))
            truths = {frame: world.read_exr(shot["folder"] / f"truth.{frame:04d}.exr")
                      for frame, _ in shot["truth"]}
            mattes = {frame: world.read_exr(shot["folder"] / f"matte.{frame:04d}.exr")[:, :, 0]
                      for frame in truths}
            for row in settings.rows:
                if row == "hold":
                    made = {frame: last_plate for frame in truths}
                elif row == "truth":
                    made = truths
                elif row == "vae":
                    made = dict(zip(truths, vae_round_trip(list(truths.values()), scorer.colour)))
                else:
                    owner = {"a": None, "b": c, "c": look_alike}[row]
                    adapter = adapters[owner.name] if owner else None
                    trigger = f"<{owner.name}>" if owner else ""
                    made = {f: world.read_exr(Path(p)) for f, p in
                            extend(client, shot, adapter, trigger, settings, root / "takes" / c.name / row).items()}
                for i, (frame, yaw) in enumerate(shot["truth"]):
                    per_row[row].append({**score(scorer, made[frame], truths[frame], mattes[frame], yaw, settings),
                                         "truth": c.name, "frame": i,
                                         "chunk": chunk_of(i, settings, family.VIDEO_WINDOW,
                                                           family.MINIWORLD_VIDEO.temporal_multiple)})
            log(f"extended {c.name}: rows {', '.join(settings.rows)}")
        timings["extend_s"] = time.monotonic() - t
    return summarise(settings, per_row, hello, timings, time.monotonic() - started)


def summarise(settings: ExtendSettings, per_row: dict, hello: dict, timings: dict, wall_s: float) -> dict:
    rows = {}
    for key, title in ROWS:
        scores = per_row.get(key) or []
        if not scores:
            continue
        back = [r for r in scores if r["back"]]
        chunks = sorted({r["chunk"] for r in back})
        by_chunk = [float(np.mean([r["judged"] == r["truth"] for r in back if r["chunk"] == k])) for k in chunks]
        rows[key] = {"title": title, "frames": len(scores), "back_frames": len(back),
                     "psnr_db": float(np.mean([r["psnr"] for r in scores])),
                     "psnr_by_chunk": [float(np.mean([r["psnr"] for r in scores if r["chunk"] == k]))
                                       for k in sorted({r["chunk"] for r in scores})],
                     "identity": float(np.mean([r["judged"] == r["truth"] for r in back])) if back else None,
                     "identity_by_chunk": by_chunk,
                     "drift": by_chunk[0] - by_chunk[-1] if len(by_chunk) > 1 else None}
    model = hello.get("model") or {}
    return {"settings": asdict(settings), "rows": rows,
            "video_model": {k: (model.get("video_model") or {}).get(k) for k in ("name", "family", "test_model")},
            "timings_s": {**{k: round(v, 1) for k, v in timings.items()}, "wall": round(wall_s, 1)}}


def format_table(results: dict) -> str:
    lines = [f"{'row':<40} {'frames':>6} {'PSNR dB':>8} {'back':>5} {'identity':>8}  {'by chunk':<18} {'drift':>6}"]
    for key, row in results["rows"].items():
        label = f"({key}) {row['title']}" if len(key) == 1 else f"    {row['title']}"
        identity = "-" if row["identity"] is None else f"{row['identity']:.2f}"
        chunks = " ".join(f"{v:.2f}" for v in row["identity_by_chunk"])
        drift = "-" if row["drift"] is None else f"{row['drift']:+.2f}"
        lines.append(f"{label:<40} {row['frames']:>6} {row['psnr_db']:>8.2f} {row['back_frames']:>5} {identity:>8}  "
                     f"{chunks:<18} {drift:>6}")
    lines.append("PSNR over the head's box; identity: the judge's top-1 on back-facing extended frames (chance within a "
                 "look-alike group 0.33); drift: first chunk's identity - last chunk's")
    return "\n".join(lines)
