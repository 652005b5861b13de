"""Continuity where the plate ends and generated frames begin: measure it, and match colour across it.

Everything here works on the display-referred [0, 1] frames the video model sees, so a practical light at
16.0 in scene-linear weighs as much as any other white and cannot swing the statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A correction stronger than this is a different shot, not a drift: leave it visible rather than force it.
GAIN_RANGE = (0.5, 2.0)


def stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = rgb.reshape(-1, 3).astype(np.float64)
    return flat.mean(axis=0), flat.std(axis=0)


def difference(reference: np.ndarray, generated: np.ndarray) -> dict:
    """Per-channel (R, G, B) mean and standard-deviation difference, generated minus reference."""
    (m_ref, s_ref), (m_gen, s_gen) = stats(reference), stats(generated)
    return {"mean_diff": [round(float(v), 6) for v in m_gen - m_ref],
            "std_diff": [round(float(v), 6) for v in s_gen - s_ref]}


@dataclass(frozen=True)
class ColourMatch:
    """Per-channel gain and offset that give the first generated frame the last plate frame's mean and spread."""

    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def between(cls, reference: np.ndarray, generated: np.ndarray) -> "ColourMatch":
        (m_ref, s_ref), (m_gen, s_gen) = stats(reference), stats(generated)
        gain = np.clip(s_ref / np.maximum(s_gen, 1e-6), *GAIN_RANGE)
        offset = m_ref - gain * m_gen
        return cls(tuple(round(float(g), 6) for g in gain), tuple(round(float(o), 6) for o in offset))

    def apply(self, frames: np.ndarray) -> np.ndarray:
        # One correction for every generated frame: it removes the jump at the seam, not motion or lighting changes.
        out = frames * np.asarray(self.gain, np.float32) + np.asarray(self.offset, np.float32)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"gain": list(self.gain), "offset": list(self.offset)}
