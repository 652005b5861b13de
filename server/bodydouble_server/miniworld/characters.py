"""Synthetic characters whose identity lives in features seen only from some angles, and a renderer.

A character is a head (an ellipsoid seen orthographically) with a face on the front (eyes, brows,
nose, mouth), ears and an optional earring on the sides, hair over the top and back, a neck and a
shirt, and a *marking* on the back of the head (a coloured shape in the hair). A shot is a plate
with a background, a key light, an ambient level and the head's position and size; a frame of a
shot is the head at one yaw (a turntable). Everything is scene-linear ACEScg: albedos times light,
with highlights above 1.0, as a studio plate is.

Held-out characters come in *look-alike groups*: the members share every trait except the back
marking, so from the front they are the same person and only the unseen side tells them apart.

A numpy renderer rather than Blender: 10,000 renders take about a minute on one core, deterministic
bit for bit from a seed, and the geometry (a sphere and its longitude/latitude) is all this world
needs. Yaw 0 shows the face, 180 the back; positive yaw turns the head to its own left (the camera
then sees its right side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Back markings: shape names (see ``_marking``) and saturated scene-linear colours.
SHAPES = ("bar", "stripe", "ring", "disc", "cross", "dots", "chevron", "diagonals")
COLOURS = {
    "red": (0.80, 0.05, 0.04), "green": (0.06, 0.65, 0.08), "blue": (0.05, 0.12, 0.85),
    "yellow": (0.85, 0.75, 0.05), "magenta": (0.75, 0.05, 0.70), "cyan": (0.05, 0.70, 0.75),
    "white": (0.90, 0.90, 0.90), "orange": (0.90, 0.35, 0.03),
}
GROUP_SIZE = 3
HEAD_ASPECT = 1.05        # height / width of the head's silhouette
VIEWS = ("front", "three-quarter-left", "three-quarter-right", "profile-left", "profile-right", "back")


@dataclass(frozen=True)
class Character:
    name: str
    skin: tuple
    hair: tuple
    hair_front: float         # hairline latitude at the forehead (radians)
    hair_back: float          # hairline latitude at the nape
    hair_waves: float         # frequency of the hair's latitude stripes
    eye: tuple
    eye_spacing: float
    eye_height: float
    mouth: tuple
    mouth_width: float
    earring: tuple | None
    shirt: tuple
    marking_shape: str
    marking_colour: str
    marking_height: float

    def describe(self) -> str:
        return f"{self.name}: {self.marking_colour} {self.marking_shape} on the back of the head"


@dataclass(frozen=True)
class Shot:
    """One plate's set-up: where the head is, how it is lit, what is behind it."""
    width: int
    height: int
    cx: float
    cy: float
    radius: float             # head half-width in pixels
    light: tuple              # unit vector (view space: x right, y up, z toward the camera)
    key: float                # key light intensity (scene-linear)
    ambient: float
    tint: tuple               # light colour
    background: tuple         # two colours (top, bottom) and blob parameters, see ``_background``


def _rng(*key) -> np.random.Generator:
    """Independent, reproducible streams: one per (seed, purpose, ids...)."""
    return np.random.default_rng([abs(hash_int(k)) for k in key])


def hash_int(value) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    # Python's str hash is salted per process: a stable one instead.
    h = 1469598103934665603
    for byte in str(value).encode():
        h = ((h ^ byte) * 1099511628211) % (2**61 - 1)
    return h


def _colour(rng, low, high) -> tuple:
    return tuple(float(v) for v in rng.uniform(low, high, 3))


def _traits(rng) -> dict:
    skin_tone = rng.uniform(0.08, 0.6)
    warmth = rng.uniform(0.55, 0.8)
    return dict(
        skin=(float(skin_tone), float(skin_tone * warmth), float(skin_tone * warmth * rng.uniform(0.6, 0.85))),
        hair=_colour(rng, 0.01, 0.5),
        hair_front=float(rng.uniform(0.45, 0.8)), hair_back=float(rng.uniform(-0.9, -0.45)),
        hair_waves=float(rng.uniform(8, 30)),
        eye=_colour(rng, 0.02, 0.45), eye_spacing=float(rng.uniform(0.28, 0.45)),
        eye_height=float(rng.uniform(0.02, 0.2)),
        mouth=_colour(rng, (0.25, 0.03, 0.03), (0.6, 0.25, 0.25)), mouth_width=float(rng.uniform(0.15, 0.32)),
        earring=_colour(rng, 0.3, 0.9) if rng.random() < 0.4 else None,
        shirt=_colour(rng, 0.02, 0.6),
        marking_height=float(rng.uniform(-0.1, 0.25)),
    )


def base_character(seed: int, index: int) -> Character:
    """One of the base model's training characters: every trait random, markings included."""
    rng = _rng(seed, "base", index)
    traits = _traits(rng)
    return Character(name=f"base-{index:02d}", marking_shape=SHAPES[rng.integers(len(SHAPES))],
                     marking_colour=list(COLOURS)[rng.integers(len(COLOURS))], **traits)


def eval_group(seed: int, group: int) -> list[Character]:
    """A look-alike group: shared traits, three different marking shapes in three different colours."""
    rng = _rng(seed, "eval", group)
    traits = _traits(rng)
    shapes = rng.choice(len(SHAPES), GROUP_SIZE, replace=False)
    colours = rng.choice(len(COLOURS), GROUP_SIZE, replace=False)
    return [Character(name=f"g{group}{'abc'[m]}", marking_shape=SHAPES[shapes[m]],
                      marking_colour=list(COLOURS)[colours[m]], **traits) for m in range(GROUP_SIZE)]


def eval_characters(seed: int, count: int) -> list[Character]:
    """The first ``count`` held-out characters, whole look-alike groups first (g0a, g0b, g0c, g1a, ...)."""
    groups = -(-count // GROUP_SIZE)
    return [c for g in range(groups) for c in eval_group(seed, g)][:count]


def stand_in(seed: int) -> Character:
    """The body double on set: a generic head with no marking (what the plate shows inside the mask)."""
    rng = _rng(seed, "stand-in")
    traits = _traits(rng) | dict(hair=(0.03, 0.025, 0.02), skin=(0.3, 0.2, 0.14))
    return Character(name="stand-in", marking_shape="none", marking_colour="white", **traits)


def wrap_yaw(yaw: float) -> float:
    """A yaw (degrees) in [-180, 180): 0 the face, +-180 the back."""
    return (yaw + 180.0) % 360.0 - 180.0


def view_of(yaw: float) -> str:
    """The standard view tag of a yaw (degrees)."""
    y = wrap_yaw(yaw)
    a = abs(y)
    if a <= 30:
        return "front"
    side = "left" if y > 0 else "right"
    if a <= 60:
        return f"three-quarter-{side}"
    if a <= 120:
        return f"profile-{side}"
    return "back"


def random_shot(rng: np.random.Generator, width: int, height: int, radius: tuple = (13.0, 22.0)) -> Shot:
    r = float(rng.uniform(*radius))
    margin = r * 1.2
    azimuth = math.radians(rng.uniform(-70, 70))
    elevation = math.radians(rng.uniform(0, 50))
    light = (math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation))
    return Shot(
        width=width, height=height, cx=float(rng.uniform(margin, width - margin)),
        cy=float(rng.uniform(margin, height - margin * 1.3)), radius=r, light=light,
        key=float(rng.uniform(0.9, 2.2)), ambient=float(rng.uniform(0.2, 0.45)),
        tint=tuple(float(v) for v in 1.0 + rng.uniform(-0.12, 0.12, 3)),
        background=(_colour(rng, 0.01, 0.5), _colour(rng, 0.01, 0.5),
                    tuple(float(v) for v in rng.uniform(0, 1, 8))),
    )


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _marking(shape: str, a, b):
    """Coverage of a marking shape at local angular coordinates (a across, b up) around its centre."""
    r = np.sqrt(a * a + b * b)
    if shape == "bar":
        return (np.abs(b) < 0.09) & (np.abs(a) < 0.34)
    if shape == "stripe":
        return (np.abs(a) < 0.09) & (np.abs(b) < 0.36)
    if shape == "ring":
        return (r > 0.17) & (r < 0.3)
    if shape == "disc":
        return r < 0.22
    if shape == "cross":
        return ((np.abs(a) < 0.07) & (np.abs(b) < 0.32)) | ((np.abs(b) < 0.07) & (np.abs(a) < 0.32))
    if shape == "dots":
        return (np.hypot(a - 0.17, b) < 0.1) | (np.hypot(a + 0.17, b) < 0.1)
    if shape == "chevron":
        return (np.abs(b - (np.abs(a) - 0.15)) < 0.07) & (np.abs(a) < 0.32)
    if shape == "diagonals":
        return (np.abs(a) < 0.3) & (np.abs(b) < 0.3) & (np.sin((a + b) * 14.0) > 0.2)
    return np.zeros_like(a, dtype=bool)


def _background(shot: Shot, xs, ys):
    top, bottom, blob = shot.background
    t = (ys / shot.height)[..., None]
    image = np.asarray(top) * (1 - t) + np.asarray(bottom) * t
    # A few soft blobs: something for the model's context to carry, different per shot.
    for k in range(2):
        bx, by, amp, size = blob[4 * k] * shot.width, blob[4 * k + 1] * shot.height, blob[4 * k + 2], blob[4 * k + 3]
        sigma = (0.15 + 0.3 * size) * max(shot.width, shot.height)
        image = image * (1 + 0.8 * amp * np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * sigma**2)))[..., None]
    return image


def render(character: Character, shot: Shot, yaw: float, head: Character | None = None,
           supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(RGB scene-linear ACEScg float32 (H, W, 3), head matte float32 (H, W)) of ``character`` at ``yaw``.

    ``head``: another character's head on this character's body and shot (the stand-in on set)."""
    s = supersample
    ys, xs = np.mgrid[0:shot.height * s, 0:shot.width * s].astype(np.float64)
    xs, ys = (xs + 0.5) / s, (ys + 0.5) / s
    image = _background(shot, xs, ys)
    light = np.asarray(shot.light)
    tint = np.asarray(shot.tint)
    r, cx, cy = shot.radius, shot.cx, shot.cy

    def lit(albedo, normal_dot):
        return np.asarray(albedo) * tint * (shot.ambient + shot.key * np.clip(normal_dot, 0, None))[..., None]

    # Shirt (shoulders) and neck: lit as surfaces facing the camera, slightly rounded.
    sx, sy = (xs - cx) / (2.0 * r), (ys - (cy + 2.6 * r)) / (1.3 * r)
    shoulders = sx**2 + sy**2 < 1
    n_dot = light[2] * 0.8 + light[0] * np.clip(sx, -1, 1) * 0.5
    image = np.where(shoulders[..., None], lit(character.shirt, n_dot), image)
    neck = (np.abs(xs - cx) < 0.42 * r) & (ys > cy) & (ys < cy + 1.8 * r)
    image = np.where(neck[..., None], lit(character.skin, light[2] * 0.7 - 0.15 * (xs - cx) / r * light[0])
                     * 0.8, image)

    # The head: an ellipsoid, normals from the unit sphere.
    u = (xs - cx) / r
    v = -(ys - cy) / (r * HEAD_ASPECT)
    inside = u * u + v * v < 1.0
    uu, vv = u[inside], v[inside]
    z = np.sqrt(np.clip(1 - uu * uu - vv * vv, 0, 1))
    psi = np.arctan2(uu, z)                      # view longitude, 0 at the centre
    lat = np.arcsin(np.clip(vv, -1, 1))
    phi = _wrap(psi - math.radians(yaw))         # head longitude: 0 = face, pi = back
    albedo = _head_albedo(head or character, phi, lat)
    if head is None and character.marking_shape != "none":
        c = character
        mark = _marking(c.marking_shape, _wrap(phi - np.pi) * np.cos(lat), lat - c.marking_height)
        albedo[mark] = np.asarray(COLOURS[c.marking_colour]) * 0.8
    n_dot = uu * light[0] + vv * light[1] + z * light[2]
    head_rgb = albedo * tint * (shot.ambient + shot.key * np.clip(n_dot, 0, None))[:, None]
    image[inside] = head_rgb
    matte = inside.astype(np.float32)
    if s > 1:
        h, w = shot.height, shot.width
        image = image.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        matte = matte.reshape(h, s, w, s).mean(axis=(1, 3))
    return image.astype(np.float32), matte.astype(np.float32)


def _head_albedo(c: Character, phi, lat):
    n = phi.shape[0]
    albedo = np.broadcast_to(np.asarray(c.skin), (n, 3)).copy()
    # Nose: a little darker, centre of the face.
    nose = (np.abs(phi) < 0.09) & (np.abs(lat + 0.12) < 0.12)
    albedo[nose] *= 0.8
    # Ears on the sides, an earring below the right one (the camera sees it at positive yaw).
    for side in (-1, 1):
        ear = (np.abs(phi - side * np.pi / 2) < 0.13) & (lat > -0.28) & (lat < 0.12)
        albedo[ear] = np.asarray(c.skin) * 0.7
    if c.earring is not None:
        ring = np.hypot(phi + np.pi / 2, lat + 0.38) < 0.08
        albedo[ring] = c.earring
    # Eyes (white, iris) and brows.
    for side in (-1, 1):
        d = np.hypot(phi - side * c.eye_spacing, lat - c.eye_height)
        albedo[d < 0.1] = (0.8, 0.8, 0.78)
        albedo[d < 0.055] = c.eye
        brow = (np.abs(phi - side * c.eye_spacing) < 0.12) & (np.abs(lat - c.eye_height - 0.15) < 0.03)
        albedo[brow] = c.hair
    mouth = (np.abs(phi) < c.mouth_width) & (np.abs(lat + 0.42) < 0.045)
    albedo[mouth] = c.mouth
    # Hair: high on the forehead, low at the nape; latitude stripes give it texture.
    line = c.hair_front + (c.hair_back - c.hair_front) * (1 - np.cos(phi)) / 2
    hair = lat > line
    shade = 0.8 + 0.2 * np.sin(lat * c.hair_waves + phi * 2.0)
    albedo[hair] = np.asarray(c.hair) * shade[hair, None]
    return albedo


def turntable(start: float, stop: float, frames: int) -> list[float]:
    """Evenly spaced yaws from ``start`` to ``stop`` degrees (both included)."""
    if frames == 1:
        return [float(start)]
    return [float(start + (stop - start) * i / (frames - 1)) for i in range(frames)]
