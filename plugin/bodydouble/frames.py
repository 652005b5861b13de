"""Frame sequences, in one place: file patterns, frame numbers in file names, frame ranges.

Parsing is fileseq's (a well-kept VFX library, also behind OpenCue's and many studios' tools): it reads every
padding syntax hosts write (Nuke ``####`` and ``%04d``, Houdini ``$F4``, Maya ``@@@@``, ``<UDIM>``), finds the
frame number in a file name whatever separates it (``plate.1001.exr``, ``plate_1001.exr``, ``plate1001.exr``;
not ``plate.mp4``), and parses frame ranges. Only the folder-free file name is parsed, so a ``#`` or digits in a
folder never count.

One rule of ours on top: how a frame number is *written* (:func:`format_frame`): a negative frame is its sign,
then the padded number (``plate.-0002.exr`` for ``plate.####.exr``), and a '-' is a sign only right after
'.' or '_' (or at the start): ``sh010-0005.exr`` is frame 5 of ``sh010-####.exr``.
"""
from __future__ import annotations

import os
from typing import Optional

import fileseq

_PAD = fileseq.PAD_STYLE_HASH1          # one '#' per digit, as Nuke and Hiero write patterns
_SIGN_AFTER = ("", ".", "_")            # what may come before a '-' that is a frame's sign


def format_frame(frame: int, padding: int) -> str:
    """The one way a frame number is written into a file name: a negative frame is its sign, then the padded
    number (``-0002`` for padding 4), as take folders write them and :func:`split_frame` reads them back."""
    return f"{'-' if frame < 0 else ''}{abs(frame):0{padding}d}"


def _pattern(name: str) -> Optional[fileseq.FileSequence]:
    """A file name with a padding token (``plate.####.exr``, ``%04d``, ``$F4``, ``@@``) parsed; None without one."""
    # fileseq reads digits (and '-') right before a token as a frame range ('sh010-####' as '010-', 'v2%04d' as
    # frame 2). A pattern holds no frame number: the name before the token, as written, is its basename.
    for text in (name, name.replace("-", "_")):
        try:
            seq = fileseq.FileSequence(text, pad_style=_PAD, allow_subframes=False)
        except fileseq.ParseException:
            continue
        token, end = seq.padding(), len(name) - len(seq.extension())
        if not token or name[end - len(token):end] != token:
            return None                  # no token written ('plate.1001.exr' names a frame, not a pattern)
        seq.setBasename(name[:end - len(token)])
        return seq
    return None


def expand_pattern(pattern: str, frame: int) -> str:
    """``plate.####.exr`` / ``plate.%04d.exr`` / ``plate.$F4.exr`` -> the path of one frame (a path without a
    padding token is returned as it is)."""
    folder, name = os.path.split(pattern)
    seq = _pattern(name)
    if seq is None:
        return pattern
    return os.path.join(folder, f"{seq.basename()}{format_frame(frame, seq.zfill())}{seq.extension()}")


def _parts(name: str) -> tuple[str, Optional[int], int, str]:
    """(name before the frame, frame or None, digits, extension) of a file name."""
    [seq] = fileseq.FileSequence.yield_sequences_in_list([name], pad_style=_PAD)
    if not seq.frameSet():
        return name, None, 0, ""
    frame, digits, base = seq.start(), seq.zfill(), seq.basename()
    if frame < 0:
        digits -= 1                                   # fileseq counts the sign in the width
        if base[-1:] not in _SIGN_AFTER:              # 'sh010-0005': a separator, not a sign
            base, frame = base + "-", -frame
    return base, frame, digits, seq.extension()


def split_frame(path: str) -> tuple[str, Optional[int]]:
    """``/a/plate.1001.exr`` -> (``/a/plate.####.exr``, 1001); a name without a frame number -> (path, None)."""
    folder, name = os.path.split(path)
    base, frame, digits, ext = _parts(name)
    if frame is None:
        return path, None
    return os.path.join(folder, f"{base}{'#' * digits}{ext}"), frame


def hash_pattern(path: str) -> str:
    """Any padding syntax, or one frame's file, as a ``####`` pattern (``%04d`` -> ``####``); a file without a
    frame number stays as it is."""
    folder, name = os.path.split(path)
    seq = _pattern(name)
    if seq is not None:
        return os.path.join(folder, f"{seq.basename()}{'#' * seq.zfill()}{seq.extension()}")
    return split_frame(path)[0]


def stem(path: str) -> str:
    """The sequence's name: the file name before its frame token (or number) and extensions, separators
    trimmed. ``/shows/x/sh010_plate.####.exr`` -> ``sh010_plate``; '' when nothing is left."""
    name = os.path.basename(path)
    seq = _pattern(name)
    base = seq.basename() if seq is not None else _parts(name)[0]
    return base.split(".")[0].rstrip("._-")


def parse_range(text: str) -> tuple[int, int]:
    """``1001-1010``, ``1001``, ``-5--1``, ``-3-2``: (first, last), as ranges are printed. ValueError if it is
    not one ascending run of frames."""
    try:
        frames = fileseq.FrameSet(text.replace(" ", ""))
    except (fileseq.ParseException, fileseq.MaxSizeException, ValueError):
        frames = None
    if frames is None or not len(frames) or not frames.isConsecutive():
        raise ValueError(f"frame range {text!r} is not FIRST-LAST or FRAME (e.g. 1001-1010, -5--1)")
    if frames.start() > frames.end():
        raise ValueError(f"frame range {text!r} ends before it starts")
    return frames.start(), frames.end()
