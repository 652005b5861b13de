"""A training run's settings: the request's ``TrainOptions`` with the adapter name and trigger filled in,
and what may change on resume (the fingerprint)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from bodydouble import errors
from bodydouble.jobspec import TrainOptions


@dataclass
class TrainSettings(TrainOptions):
    version: str = "1"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.name or re.sub(r"[^0-9A-Za-z_-]+", "_", self.character.strip()).strip("_").lower()
        self.trigger = self.trigger or f"<{self.name}>"
        try:
            if not self.name and self.character.strip():
                raise ValueError(f"character {self.character!r} gives no folder name: set an adapter name")
            self.validate()
        except ValueError as exc:
            raise errors.RequestError(str(exc), code=errors.INVALID_REQUEST) from None

    def fingerprint_fields(self) -> dict:
        # Steps and checkpoint cadence may change on resume (train longer); nothing else may. Fields left at what
        # runs before them did are left out (no clips; clips without a fill share): their checkpoints still resume.
        unfingerprinted = ("steps", "checkpoint_every", "preview_steps", "preview_count") + \
            (("clip_frames", "clip_conditioning", "clip_fill") if self.clip_frames == 1 else ()) + \
            (("clip_fill",) if self.clip_fill == 0 else ())
        return {k: v for k, v in asdict(self).items() if k not in unfingerprinted}
