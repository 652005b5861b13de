"""The model encoding's inverse, measured: bounded, well conditioned, exact where the plate has values.

For the server's OCIO config (ACEScg plates through its default view unless --colorspace) it prints, for the
plain view inverse (what BodyDouble did before #14), the view inverse capped at the ceiling, and the model
encoding at several knees (imaging/colour.py):

- what display values near white come back as (bounded?);
- the worst relative change in the plate's value that a one-code display error causes (1/255: an 8-bit-precise
  model output; 1/1023), over the whole display range: how well conditioned the inverse is;
- the worst round-trip error for plate values up to the ceiling (neutral, and +-30 % chroma);
- how far the model's picture moves from the plain view, for plate values up to 1, 2 and 4;
- whether a fine near-white ramp stays monotonic;
- the time to encode and decode 1 M pixels, as a ratio to the plain view both ways (measured in this run).

    .venv/bin/python bench/colour_encoding.py [--colorspace ACEScg] [--ceiling 16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


class _Plain:
    """The view and its own inverse (before #14), optionally capped at a ceiling."""

    def __init__(self, colour, cap: float | None = None):
        self.colour, self.cap = colour, cap

    def to_model(self, rgb):
        return self.colour.to_model(rgb)

    def from_model(self, rgb):
        out = self.colour._apply(rgb.astype(np.float32), inverse=True)
        return out if self.cap is None else np.minimum(out, self.cap)


def _neutral(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.float32)[:, None], 3, axis=1)


def _amplification(encoding, step: float) -> float:
    """max over display d >= 0.5 (mid-grey up: where whites land) of |L(d + step) - L(d)| / L(d): what a
    one-code error in the model's output does to the plate value, relative."""
    d = np.linspace(0.5, 1.0 - step, 4001, dtype=np.float32)
    low, high = encoding.from_model(_neutral(d))[:, 0], encoding.from_model(_neutral(d + step))[:, 0]
    return float(np.max(np.abs(high - low) / np.abs(low)))


def _round_trip(encoding, ceiling: float, rng) -> tuple[float, float]:
    neutral = _neutral(np.exp(np.linspace(np.log(0.005), np.log(ceiling), 400)))
    lum = np.exp(rng.uniform(np.log(0.005), np.log(ceiling / 1.3), (4000, 1)))
    tinted = (lum * (1.0 + 0.3 * rng.uniform(-1, 1, (4000, 3)))).astype(np.float32)

    def worst(x):
        if isinstance(encoding, _Plain):
            crop_encoding, pixels = encoding, encoding.to_model(x)
        else:         # the crop's own encoding, as fill builds it
            crop_encoding, pixels = encoding.colour.encode(x, ceiling, encoding.knee_value)
        back = crop_encoding.from_model(pixels)
        return float(np.max(np.abs(back - x) / np.maximum(np.abs(x), 1.0)))
    return worst(neutral), worst(tinted)


def _shift(encoding, plain, upto: float) -> float:
    x = _neutral(np.linspace(0.0, upto, 200))
    return float(np.max(np.abs(encoding.to_model(x) - plain.to_model(x))))


def _monotonic(encoding) -> bool:
    d = np.linspace(0.9, 1.0, 2001, dtype=np.float32)
    out = encoding.from_model(_neutral(d))[:, 0]
    return bool(np.all(np.diff(out) >= 0))


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    from bodydouble_server.imaging.colour import DEFAULT_CEILING, KNEE, ColourTransform, config_in_use

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--colorspace", default="ACEScg")
    parser.add_argument("--ceiling", type=float, default=DEFAULT_CEILING)
    args = parser.parse_args()
    colour = ColourTransform(args.colorspace)
    print(f"config {config_in_use()[0].configname()}; {colour.describe()}; ceiling {args.ceiling:g}; "
          f"default knee {KNEE:g}\n")
    plain = _Plain(colour)
    candidates = [("view inverse (before)", plain), (f"view inverse, capped at {args.ceiling:g}",
                                                     _Plain(colour, args.ceiling))]
    for k in (1.0, 2.0, 4.0):
        encoding = colour.encoding(0.0, args.ceiling, k)
        object.__setattr__(encoding, "knee_value", k)
        candidates.append((f"encoding, knee {k:g}{' (default)' if k == KNEE else ''}", encoding))
    near_white = (0.95, 0.98, 0.99, 1.0)
    print("display -> plate value".ljust(34) + "".join(f"{d:>9g}" for d in near_white))
    for name, encoding in candidates:
        values = encoding.from_model(_neutral(near_white))[:, 0]
        print(name.ljust(34) + "".join(f"{v:9.3f}" for v in values))
    rng = np.random.default_rng(14)
    print("\n" + "".ljust(34) + "1-code error (rel. worst)   round trip <= ceiling   model sees vs view   monotonic")
    print("".ljust(34) + "  1/255    1/1023          neutral   +-30% chroma    <=1     <=2     <=4")
    for name, encoding in candidates:
        trip = _round_trip(encoding, args.ceiling, rng)
        print(name.ljust(34) + f"{_amplification(encoding, 1 / 255):7.3f}  {_amplification(encoding, 1 / 1023):7.3f}"
              f"        {trip[0]:9.2e}  {trip[1]:9.2e}   " + "".join(f"{_shift(encoding, plain, u):8.4f}" for u in (1, 2, 4))
              + f"   {_monotonic(encoding)}")
    crop = (np.exp(rng.uniform(np.log(0.005), np.log(args.ceiling), (1 << 20, 1)))
            * rng.uniform(0.7, 1.3, (1 << 20, 3))).astype(np.float32)
    encoding = colour.encoding(0.0, args.ceiling)
    pixels = encoding.to_model(crop)
    view_s = _seconds(plain.to_model, crop) + _seconds(plain.from_model, pixels)
    encoding_s = _seconds(encoding.to_model, crop) + _seconds(encoding.from_model, pixels)
    print(f"\n1 M pixels there and back: encoding / plain view = {encoding_s / view_s:.2f} "
          f"({encoding_s:.3f} s vs {view_s:.3f} s, this run)")


if __name__ == "__main__":
    main()
