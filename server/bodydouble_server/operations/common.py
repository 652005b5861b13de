"""What every generating operation shares: submit-time checks, inputs under the allowed roots, take folders,
provenance.

Submit-time validation (``validate(request, engine)`` in each operation module) runs on the socket loop's
thread before the request is ``accepted``: cheap checks only (no pixels decoded, nothing written, no model
called), and safe while the worker uses the engine (lookups only). What needs the loaded model is skipped
while the server is still loading; the worker checks everything again when it runs the job.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bodydouble import __version__, errors, protocol
from bodydouble import frames
from bodydouble.jobspec import ImageRef

from .. import takes
from ..engine import Engine
from ..imaging import frames as frame_io
from ..imaging import regions
from ..jobs import Cancelled

log = logging.getLogger("bodydouble.operations")

def load_image(engine: Engine, ref: ImageRef, what: str) -> frame_io.Frame:
    if ref.pixels is not None:
        return frame_io.frame_from_buffer(ref.pixels, what)
    path = engine.roots.readable_file(ref.path, what)
    return frame_io.read_frame(path, engine.config.limits, what)


def model_input(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The model encoding's [0, 1] pixels (imaging/colour.py) at the model's size.

    Clipped after resizing too: the resize filter rings past 0 and 1 at hard edges, and diffusers' image
    processors skip their [0, 1] -> [-1, 1] scaling for any input that dips below 0.
    """
    return np.clip(regions.resize(pixels, height, width), 0.0, 1.0)


def check_inputs(engine: Engine, refs: list[tuple[ImageRef, str]]) -> None:
    """Refuse paths outside the roots or missing files before any take folder exists."""
    for ref, what in refs:
        if ref.path is not None:
            engine.roots.readable_file(ref.path, what)


def check_headers(engine: Engine, refs: list[tuple[ImageRef, str]]) -> None:
    """Submit time: these files' headers are readable and within the limits (regular files, not deep, sizes and
    channels), so a plate that can never be read is refused before any take exists. No pixel is decoded."""
    for ref, what in refs:
        if ref is not None and ref.path is not None:
            frame_io.check_header(engine.roots.readable_file(ref.path, what), engine.config.limits, what)


def check_output(engine: Engine, output_dir: str | None, shot: str) -> None:
    """Submit time: the take's folder would lie inside the roots, in a folder the server can write.

    Judged on ``<shot_dir>/bodydouble`` (links followed), so a ``bodydouble`` entry that links out of the roots is
    refused here; take.allocate checks every folder again when it makes them."""
    engine.roots.writable_dir(shot_dir_for(engine, output_dir, shot) / "bodydouble",
                              "output_dir" if output_dir else "output folder")


def check_adapters(library, refs) -> None:
    """Submit time: every adapter exists, is ready and was trained on this model (``library`` None: loading)."""
    if library is not None:
        library.resolve(refs)


def shot_dir_for(engine: Engine, output_dir: str | None, shot: str) -> Path:
    return Path(output_dir) if output_dir else Path(engine.config.output_root) / shot


def shot_name(explicit: str | None, output_dir: str | None, first_plate: ImageRef) -> str:
    """The request's shot, else the output folder's name (it *is* the shot folder), else the plate's stem."""
    if explicit:
        return explicit
    if output_dir:
        return takes.safe_label(Path(output_dir).name)
    if first_plate.path:
        return takes.safe_label(frames.stem(first_plate.path) or Path(first_plate.path).name.split(".")[0])
    return "untitled"


def open_take(engine: Engine, job, output_dir: str | None, shot: str, label: str, info: dict) -> takes.Take:
    """A new take folder; every folder on the way is created and checked against the roots as it is made."""
    shot_dir = shot_dir_for(engine, output_dir, shot)
    take = takes.allocate(shot_dir, shot, label, {"job": job.id, **info}, roots=engine.roots)
    take.seal = engine.policy.seal_take       # C2PA manifests before the take is marked complete
    take.seal_frame = engine.policy.seal_frame    # each frame's sidecar as it is written (TakeWriter)
    job.opened_take(take)
    return take


def provenance(engine: Engine, operation: str, adapters, req, take: takes.Take, job, identity=None) -> dict:
    """The ``bodydouble:*`` attributes every generated EXR carries (``identity``: the model that made it)."""
    identity = identity or engine.identity
    return {
        "operation": operation,
        "adapter": "+".join(a.name for a, _ in adapters) or "none",
        "adapter_sha256": "+".join(a.sha256 for a, _ in adapters),
        "adapter_weights": "+".join(f"{w:g}" for _, w in adapters),
        "adapter_character": "+".join(a.manifest.get("character", "") for a, _ in adapters),
        "base_model": identity.name,
        "base_model_sha256": identity.sha256,
        "base_model_family": identity.family,
        "test_model": identity.test_model,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": int(req.seed) if req.seed < 2**31 else str(req.seed),
        "steps": int(req.steps),
        "strength": float(getattr(req, "strength", 1.0)),
        "guidance": float(req.guidance),
        "colorspace": req.colorspace,
        "highlight_ceiling": float(getattr(req, "highlight_ceiling", 0.0)),
        "take": take.number,
        "job": job.id,
        "tool_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def adapter_label(adapters) -> str:
    return takes.safe_label("+".join(a.name for a, _ in adapters) or "base")


def result_body(job, operation: str, take: takes.Take, info: dict, pixels: dict[int, np.ndarray] | None,
                buffers: list) -> dict:
    frames = []
    for frame, path in sorted(take.frames.items()):
        entry = {"frame": frame, "path": path}
        if pixels is not None:
            buffers.append(pixels[frame])
            entry["buffer"] = len(buffers) - 1
        frames.append(entry)
    return {
        "job": job.id, "operation": operation, "take": take.number, "take_dir": str(take.dir),
        "pattern": take.pattern, "first": min(take.frames), "last": max(take.frames), "frames": frames, **info,
    }


@contextlib.contextmanager
def completing(take: takes.Take):
    """Marks the take complete when the block ends, else cancelled or failed (and re-raises): never half-complete.

    If marking it fails too (the disk that refused a frame refuses take.json), the job still reports the first,
    real error; the take stays ``running`` and the next start of the server marks it ``interrupted``."""
    try:
        yield take
    except BaseException as exc:
        if isinstance(exc, OSError):   # a write the operation did not wrap: the real reason, with its path
            exc = errors.write_failed(getattr(exc, "filename", None) or take.dir, exc)
        try:
            take.finish("cancelled" if isinstance(exc, Cancelled) else "failed", error=str(exc) or type(exc).__name__)
        except (OSError, errors.BodyDoubleError) as marking:
            log.warning("take %s: could not be marked failed (%s); first error: %s", take.dir, marking, exc)
        if isinstance(exc, errors.BodyDoubleError):
            raise exc from None
        raise
    take.finish("complete")


def wire_pixels(plate: frame_io.Frame, pixels: np.ndarray) -> np.ndarray:
    """A frame as it goes back to the client: float16 for half plates, float32 otherwise."""
    return pixels.astype(np.float16 if plate.pixel_type == "half" else np.float32)


def result_message(job, operation: str, take: takes.Take, info: dict,
                   pixels: dict[int, np.ndarray] | None) -> protocol.Message:
    buffers: list[np.ndarray] = []
    body = result_body(job, operation, take, info, pixels, buffers)
    return protocol.Message(type="result", id=job.request_id, body=body, buffers=buffers,
                            meanings=[f"frame {f}" for f in sorted(pixels or {})])


# -- the frame pipeline (docs/frame-pipeline.md) ----------------------------------------------------------------
def fill_batch(engine: Engine) -> int:
    """Frames per fill pipeline call: the server's ``fill_batch`` setting; 0 (auto) batches only on a CUDA device
    with memory to spare (4 frames with 16 GiB free, 2 with 8 GiB), never on the CPU, where a batch of B costs
    B frames' time and only delays the first frame's write."""
    setting = int(getattr(engine.config, "fill_batch", 0) or 0)
    if setting > 0:
        return setting
    if not str(engine.device).startswith("cuda"):
        return 1
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(engine.device))
    return 4 if free >= 16 * 2**30 else 2 if free >= 8 * 2**30 else 1


# Decoded plates a fill job may hold beyond the frame it generates: with at most four frames in flight (one read
# ahead, one generating, two being written), a 2K or 4K shot overlaps fully, while an 8K 16-channel one (2 GiB a
# plate) runs one frame at a time as before the pipeline (bench/memory.py's goal: peak <= 2.5x one plate).
PIPELINE_BYTES = 1 << 30


def frames_in_flight(plate_bytes: int) -> int:
    """How many frames of ``plate_bytes`` each a fill job holds at once: 1 (in line) to 4."""
    return max(1, min(4, PIPELINE_BYTES // max(int(plate_bytes), 1)))


class Prefetcher:
    """``prepare(item)`` for each item on one background thread, at most ``ahead`` items ahead of the caller:
    while the worker generates frame N, frame N+1 is read, checked, cropped, converted and resized.

    ``fits(prepared)``, asked for each item the caller takes, may lower (or raise) ``ahead`` from what that
    item weighs (0: read only when asked). An item's error is raised where the worker asks for that item, so
    frames before it are generated and written as if it were read in line. Leaving the block cancels what has
    not started and waits for what has (one frame at most)."""

    _END = object()

    def __init__(self, prepare: Callable, items: Iterable, ahead: int = 1, fits: Callable | None = None):
        self._prepare, self._items, self._ahead, self._fits = prepare, iter(items), max(0, ahead), fits
        self._pending: collections.deque = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bodydouble-read")

    def __enter__(self) -> "Prefetcher":
        self._top_up(least=1)
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _top_up(self, least: int = 0) -> None:
        while len(self._pending) < max(self._ahead, least):
            item = next(self._items, self._END)
            if item is self._END:
                return
            self._pending.append(self._pool.submit(self._prepare, item))

    def next_batch(self, most: int) -> list:
        """The next prepared items, up to ``most`` of one model size (``.size``); the next ones start at once."""
        self._top_up(least=1)
        group = [self._pending.popleft().result()]
        if self._fits is not None:
            self._ahead = max(0, self._fits(group[0]))
        self._top_up()
        while len(group) < most:
            self._top_up(least=1)
            # An item that failed to read ends the batch before it: the frames ahead of it are generated and
            # written, and its error is raised when the caller asks for it (as when read in line).
            if not self._pending or self._pending[0].exception() is not None \
                    or self._pending[0].result().size != group[0].size:
                break
            group.append(self._pending.popleft().result())
            self._top_up()
        return group


class TakeWriter:
    """Finishes and writes frames on one thread while the worker generates the next ones.

    ``put(frame, make)``: ``make()`` runs on the writer thread and returns ``(Frame, attributes, note)``; the
    frame is written atomically into the take. Frames enter take.json in order, once on disk, on the worker's
    thread (``after(frame, note)`` first). At most ``depth`` frames wait: the worker blocks beyond that, so
    memory holds a few frames whatever the shot's length. On an error every started write finishes (or
    fails) and what reached the disk is listed before the take is marked."""

    def __init__(self, take, returned: dict | None, depth: int = 2, after: Callable | None = None):
        self.take, self.returned, self.depth, self.after = take, returned, depth, after
        self._pending: collections.deque = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bodydouble-write")

    def put(self, frame: int, make: Callable) -> None:
        path = self.take.frame_path(frame)
        self._pending.append((frame, path, self._pool.submit(self._write, frame, path, make)))
        while len(self._pending) > self.depth:
            self._finish_one()

    def _write(self, frame: int, path: Path, make: Callable):
        pixels, attributes, note = make()
        frame_io.write_exr_atomic(path, pixels, attributes)
        wire = pixels.wire() if self.returned is not None else None
        del pixels
        # Its provenance sidecar now rather than all frames' at the end: a long shot's last frame is not
        # followed by a minute of signing. A frame written again (extend's overlaps) is signed again.
        return note, wire, self.take.seal_written(frame, path)

    def _finish_one(self) -> None:
        frame, path, future = self._pending.popleft()
        self._add(frame, path, *future.result())

    def _add(self, frame: int, path: Path, note, wire, sealed) -> None:
        if self.after is not None:
            self.after(frame, note)
        if sealed is not None:
            self.take.sealed[frame] = sealed
        self.take.add(frame, path)
        if wire is not None:
            self.returned[frame] = wire

    def __enter__(self) -> "TakeWriter":
        return self

    def flush(self) -> None:
        while self._pending:
            self._finish_one()

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                self.flush()
            else:   # what reached the disk before the error is listed in the (failed or cancelled) take
                for frame, path, future in self._pending:
                    if future.exception() is None:
                        self._add(frame, path, *future.result())
        finally:
            self._pool.shutdown(wait=True)
