"""The data report: what a set of reference frames covers and lacks, before any training.

Counts, resolutions, duplicates (exact by decoded-pixel hash, near by a 64-bit difference hash),
exposure, colour spaces, masks, captions and view coverage against the standard views, with the
gaps named. ``Thresholds`` decide whether training may start; below them it refuses unless forced.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .dataset import STANDARD_VIEWS, Dataset, TrainingFrame

# What a model cannot learn when a view is missing: said plainly so a TD knows what to shoot.
VIEW_CONSEQUENCES = {
    "front": "the face itself cannot be learned from this set",
    "three-quarter-left": "turns of the head to the left will be guessed",
    "three-quarter-right": "turns of the head to the right will be guessed",
    "profile-left": "the left side of the head in profile cannot be learned from this set",
    "profile-right": "the right side of the head in profile cannot be learned from this set",
    "back": "the back of the head cannot be learned from this set",
    "top": "the top of the head cannot be learned from this set",
}


@dataclass
class Thresholds:
    min_frames: int = 8
    min_per_view: int = 1
    required_views: tuple[str, ...] = tuple(v for v in STANDARD_VIEWS if v != "top")
    near_duplicate_bits: int = 4        # difference-hash distance (of 64) at or below which frames look alike


def difference_hash(rgb: np.ndarray) -> int:
    """dHash: 9x8 grey thumbnail, one bit per horizontal neighbour comparison. Robust to re-encoding and scaling."""
    grey = rgb.mean(axis=2)
    rows = np.array_split(np.arange(grey.shape[0]), 8)
    cols = np.array_split(np.arange(grey.shape[1]), 9)
    thumb = np.array([[grey[np.ix_(r, c)].mean() for c in cols] for r in rows])
    bits = (thumb[:, 1:] > thumb[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _exposure(frame: TrainingFrame) -> dict:
    luma = frame.rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return {"mean": float(luma.mean()), "p01": float(np.percentile(luma, 1)), "p99": float(np.percentile(luma, 99)),
            "clipped": float((luma >= 0.999).mean()), "crushed": float((luma <= 0.001).mean()),
            "rgb_mean": [float(v) for v in frame.rgb.reshape(-1, 3).mean(axis=0)]}


# Lists in the report stop at these lengths (their totals are counted): a report on tens of thousands of
# frames stays readable and fits a reply (the protocol's headers are at most 1 MiB).
LISTED = 500               # duplicate groups, near-duplicate pairs, clipped frames
LISTED_PER_GROUP = 50      # paths shown per exact-duplicate group
LISTED_EXPOSURES = 1000    # per-frame exposure entries


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):   # numpy >= 2
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def _duplicates(frames: list[TrainingFrame], max_bits: int) -> dict:
    """Exact duplicates (same decoded pixels) as groups of paths; near duplicates as pairs of distinct frames
    whose difference hashes differ in at most ``max_bits`` bits (vectorised per row: n² pairs stay fast)."""
    groups: dict[str, list[str]] = {}
    for f in frames:
        groups.setdefault(f.content_hash, []).append(str(f.path))
    exact = [g for g in groups.values() if len(g) > 1]
    content = {h: i for i, h in enumerate(groups)}
    ids = np.array([content[f.content_hash] for f in frames], dtype=np.int64)
    hashes = np.array([difference_hash(f.rgb) for f in frames], dtype=np.uint64)
    near, near_total = [], 0
    for i in range(len(frames) - 1):
        distance = _popcount(hashes[i] ^ hashes[i + 1:])
        alike = np.flatnonzero((distance <= max_bits) & (ids[i + 1:] != ids[i]))
        near_total += len(alike)
        for k in alike[:max(0, LISTED - len(near))]:
            near.append({"a": str(frames[i].path), "b": str(frames[i + 1 + k].path), "distance": int(distance[k])})
    return {"exact": [g[:LISTED_PER_GROUP] for g in exact[:LISTED]], "exact_groups": len(exact),
            "exact_frames": sum(len(g) for g in exact), "near": sorted(near, key=lambda p: p["distance"]),
            "near_pairs": near_total}


def build_report(dataset: Dataset, thresholds: Thresholds | None = None) -> dict:
    thresholds = thresholds or Thresholds()
    frames = dataset.frames
    duplicates = _duplicates(frames, thresholds.near_duplicate_bits)
    views = {v: sum(f.view == v for f in frames) for v in (*STANDARD_VIEWS, *thresholds.required_views)}
    other_views = sorted({f.view for f in frames if f.view and f.view not in STANDARD_VIEWS})
    untagged = sum(not f.view for f in frames)
    gaps = [{"view": v, "frames": views[v], "message": f"no `{v}` frames: {_consequence(v)}" if not views[v]
             else f"only {views[v]} `{v}` frame(s) (want {thresholds.min_per_view})"}
            for v in thresholds.required_views if views.get(v, 0) < thresholds.min_per_view]
    exposures = [_exposure(f) for f in frames]
    clipped = [str(f.path) for f, e in zip(frames, exposures) if e["clipped"] > 0.05]
    unique = len(frames) - duplicates["exact_frames"] + duplicates["exact_groups"]
    refusals = []
    if unique < thresholds.min_frames:
        refusals.append(f"{unique} distinct frame(s); training needs at least {thresholds.min_frames}")
    refusals += [g["message"] for g in gaps]
    return {
        "sources": dataset.sources,
        "frame_count": len(frames),
        "distinct_frames": unique,
        "resolutions": _histogram(f"{f.width}x{f.height}" for f in frames),
        "aspects": _histogram(f"{f.width / f.height:.3f}" for f in frames),
        "channels": _histogram(str(f.channels) for f in frames),
        "colourspaces": _histogram(f.colourspace for f in frames),
        "duplicates": duplicates,
        "exposure": {
            "mean": float(np.mean([e["mean"] for e in exposures])) if exposures else 0.0,
            "darkest": min(exposures, key=lambda e: e["mean"])["mean"] if exposures else 0.0,
            "brightest": max(exposures, key=lambda e: e["mean"])["mean"] if exposures else 0.0,
            "clipped_frames": clipped[:LISTED],
            "clipped_count": len(clipped),
            "per_frame": {str(f.path): e for f, e in zip(frames[:LISTED_EXPOSURES], exposures)},
        },
        "masks_present": sum(f.mask is not None for f in frames),
        "captions_present": sum(bool(f.caption) for f in frames),
        "views": {"counts": views, "other": other_views, "untagged": untagged, "gaps": gaps},
        "problems": list(dataset.problems),
        "thresholds": asdict(thresholds),
        "refusals": refusals,
        "ok_to_train": not refusals and not dataset.problems,
    }


def _consequence(view: str) -> str:
    return VIEW_CONSEQUENCES.get(view, f"the `{view}` view cannot be learned from this set")


def _histogram(values) -> dict:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def check_trainable(report: dict, force: bool = False) -> None:
    """Raise with every reason when training must not start. Problems (bad files) are never forceable."""
    from bodydouble import errors

    details = {"problems": report["problems"], "refusals": report["refusals"]}
    if report["problems"]:
        raise errors.RequestError("the training set has problems:\n  " + "\n  ".join(report["problems"]),
                                  code=errors.INVALID_REQUEST, details=details)
    if report["refusals"] and not force:
        raise errors.RequestError("training refused (use --force, or force: true in a train request, to train "
                                  "anyway):\n  " + "\n  ".join(report["refusals"]), code=errors.INVALID_REQUEST,
                                  details=details)


def summary_text(report: dict) -> str:
    lines = [f"{report['frame_count']} frame(s), {report['distinct_frames']} distinct"]
    lines.append("resolutions: " + ", ".join(f"{k} x{v}" for k, v in report["resolutions"].items()))
    lines.append("colour spaces: " + ", ".join(f"{k} x{v}" for k, v in report["colourspaces"].items()))
    lines.append(f"masks: {report['masks_present']}/{report['frame_count']}   "
                 f"captions: {report['captions_present']}/{report['frame_count']}")
    exp = report["exposure"]
    lines.append(f"exposure (display luma): mean {exp['mean']:.2f}, darkest {exp['darkest']:.2f}, "
                 f"brightest {exp['brightest']:.2f}, {exp['clipped_count']} frame(s) >5% clipped")
    duplicates = report["duplicates"]
    for group in duplicates["exact"]:
        lines.append("exact duplicates: " + ", ".join(group))
    if duplicates["exact_groups"] > len(duplicates["exact"]):
        lines.append(f"... {duplicates['exact_groups']} groups of exact duplicates in all")
    for pair in duplicates["near"]:
        lines.append(f"near duplicates ({pair['distance']} bits): {pair['a']} ~ {pair['b']}")
    if duplicates["near_pairs"] > len(duplicates["near"]):
        lines.append(f"... {duplicates['near_pairs']} near-duplicate pairs in all")
    views = report["views"]
    lines.append("views: " + ", ".join(f"{v} {n}" for v, n in views["counts"].items())
                 + (f", untagged {views['untagged']}" if views["untagged"] else ""))
    lines += [f"GAP: {g['message']}" for g in views["gaps"]]
    lines += [f"PROBLEM: {p}" for p in report["problems"]]
    if report["ok_to_train"]:
        lines.append("ready to train")
    else:
        lines += [f"REFUSED: {r}" for r in report["refusals"]]
    return "\n".join(lines)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False)
