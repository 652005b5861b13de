"""``hiero.core``: projects, bins, clips, media, sequences, tracks, track items, tags.

Rules of the real thing that the fake enforces, because breaking them breaks a real session:
every call that edits the project runs on the main thread only; ``VideoTrack.addTrackItem``
needs the track in a sequence; a ``Tag`` belongs to one owner; ``executeInMainThread`` takes
its positional arguments as one item or one tuple, then a dict (Foundry's docstring) and queues
the call on the same main-thread queue as the fake ``nuke`` (one Qt application); a clip's colour
transform is one of ``getAvailableOcioColourTransforms()`` of its project's OCIO config (a real
config file or OCIO's built-in one, read with OpenImageIO): its colour spaces, each role as
``role (colour space)``, and the file type's ``default (colour space)``; anything else is refused.

Project colour management (Project > Edit Settings > Color Management): Nuke's built-in ACES cg config
by default, as the fake ``nuke``'s root (OCIO's own ``ocio://`` config), or, with ``_colour_management``,
``nuke-default`` (its colour spaces: the real OCIO config beside the fake ``nuke``), another built-in
config or a custom config file. The LUT
settings hold colour-space names, or roles in the .hrox's ``role_<name>`` form.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Optional

import nuke as _nuke

from . import events  # noqa: F401  (hiero.core.events)


def _main(what: str) -> None:
    _nuke._require_main(f"hiero: {what}")


# -- threads -------------------------------------------------------------------------------------
def executeInMainThread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    if len(args) > 2 or (len(args) == 2 and not isinstance(args[1], dict)):
        raise TypeError("executeInMainThread(call, argOrTuple, kwargsDict): the second parameter must be a dict")
    if _nuke._on_main_thread():
        raise RuntimeError("executeInMainThread from the main thread deadlocks the fake (call it directly)")
    positional = args[0] if args else ()
    positional = positional if isinstance(positional, tuple) else (positional,)
    _nuke._main_queue.put((call, positional, args[1] if len(args) == 2 else {}, None))


# -- metadata, time ------------------------------------------------------------------------------
class DataCollection:
    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    def setValue(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"DataCollection.setValue takes a string value, got {type(value).__name__}")
        self._data[key] = value

    def value(self, key: str) -> str:
        return self._data[key]

    def hasKey(self, key: str) -> bool:
        return key in self._data

    def dict(self) -> dict[str, str]:
        return dict(self._data)


class TimeBase:
    def __init__(self, rate: float = 24.0) -> None:
        self._rate = float(rate)

    def toFloat(self) -> float:
        return self._rate


class Tag:
    def __init__(self, name: str, icon: str = "icons:Tag.png") -> None:
        _main("Tag()")
        self._name, self._icon, self._note = name, icon, ""
        self._metadata = DataCollection()
        self._owner: Any = None

    def name(self) -> str:
        return self._name

    def note(self) -> str:
        return self._note

    def setNote(self, note: str) -> None:
        self._note = note

    def metadata(self) -> DataCollection:
        return self._metadata


class _Tagged:
    def _init_tags(self) -> None:
        self._tags: list[Tag] = []

    def addTag(self, tag: Tag) -> Tag:
        _main("addTag")
        if tag._owner is not None:
            raise RuntimeError("this Tag is already on another item: make one Tag per item")
        tag._owner = self
        self._tags.append(tag)
        return tag

    def tags(self) -> tuple:
        return tuple(self._tags)

    def removeTag(self, tag: Tag) -> None:
        _main("removeTag")
        if tag not in self._tags:
            raise ValueError("this Tag is not on this item")
        self._tags.remove(tag)
        tag._owner = None


# -- media -----------------------------------------------------------------------------------------
class MediaFileInfo:
    def __init__(self, pattern: str, first: int, last: int) -> None:
        self._pattern, self._first, self._last = pattern, first, last

    def filename(self) -> str:
        """As documented for image sequences: '/somepath/imagesequence.######.dpx (1-40)'."""
        return f"{self._pattern} ({self._first}-{self._last})"

    def startFrame(self) -> int:
        return self._first

    def endFrame(self) -> int:
        return self._last


def _scan(path: str) -> tuple[str, int, int]:
    """A media path ('####', '%04d' or one frame's file name, optionally ' (a-b)') -> pattern, range
    found on disk, the way Hiero groups an image sequence when it imports one."""
    match = re.search(r"\s+\((-?\d+)-(\d+)\)$", path)
    path = path[: match.start()] if match else path
    path = re.sub(r"%0?(\d*)d", lambda m: "#" * int(m.group(1) or 1), path)
    if "#" not in path:
        folder, name = os.path.split(path)
        digits = re.search(r"(\d+)(?!.*\d)", name)
        if not digits:
            return path, 0, 0
        path = os.path.join(folder, name[: digits.start()] + "#" * len(digits.group(1)) + name[digits.end():])
    folder, name = os.path.split(path)
    hashes = re.search(r"#+", name)
    assert hashes is not None
    regex = re.compile(re.escape(name[: hashes.start()]) + r"(\d{%d,})" % len(hashes.group())
                       + re.escape(name[hashes.end():]) + "$")
    frames = sorted(int(m.group(1)) for f in (os.listdir(folder) if os.path.isdir(folder) else [])
                    if (m := regex.match(f)))
    if match and not frames:
        return path, int(match.group(1)), int(match.group(2))
    return (path, frames[0], frames[-1]) if frames else (path, 0, 0)


class MediaSource:
    def __init__(self, path: str) -> None:
        self._pattern, self._first, self._last = _scan(path)
        self._offline = not os.path.exists(_nuke._frame_path(self._pattern, self._first))
        self._timecode = self._first      # no timecode in the files: Hiero counts from the frame number

    def timecodeStart(self) -> int:
        """The media's start timecode, in frames (a scan's EXR timecode, else its first frame number)."""
        return self._timecode

    def fileinfos(self) -> tuple:
        return (MediaFileInfo(self._pattern, self._first, self._last),)

    def startTime(self) -> int:
        return self._first

    def duration(self) -> int:
        return self._last - self._first + 1

    def isOffline(self) -> bool:
        return self._offline

    def hasVideo(self) -> bool:
        return True


class _Named:
    def _init_name(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:
        _main("setName")
        if not isinstance(name, str) or not name:
            raise TypeError("setName takes a non-empty string")
        self._name = name


class Clip(_Named, _Tagged):
    """``Clip(mediaSource)`` or ``Clip(mediaSource, first, last)``; mediaSource may be a path."""

    def __init__(self, mediaSource: Any, first: Optional[int] = None, last: Optional[int] = None) -> None:
        _main("Clip()")
        self._media = mediaSource if isinstance(mediaSource, MediaSource) else MediaSource(str(mediaSource))
        self._first = self._media.startTime() if first is None else int(first)
        self._last = self._media._last if last is None else int(last)
        self._init_name(os.path.basename(self._media._pattern).split(".")[0])
        self._init_tags()
        self._framerate = TimeBase(24.0)
        self._colour = ""             # '': the file type's default in the project
        self._bin_item: Optional[BinItem] = None
        self._project: Optional[Project] = None

    def mediaSource(self) -> MediaSource:
        return self._media

    def timecodeStart(self) -> int:
        """The clip's start timecode, in frames: its media's, moved to the clip's first frame."""
        return self._media.timecodeStart() + self._first - self._media.startTime()

    def framerate(self) -> TimeBase:
        return self._framerate

    def duration(self) -> int:
        return self._last - self._first + 1

    def sourceMediaColourTransform(self) -> str:
        return self._colour or _default_transform(self._project, self._media._pattern)

    def getAvailableOcioColourTransforms(self) -> list:
        return _transforms(self._project, self._media._pattern)

    def setSourceMediaColourTransform(self, colourTransform: str) -> None:
        _main("setSourceMediaColourTransform")
        if self._bin_item is None:
            raise RuntimeError("a clip's colour transform can only be set once it is in a bin")
        if colourTransform not in self.getAvailableOcioColourTransforms():
            raise ValueError(f"{colourTransform!r} is not a colour transform of the project's OCIO config "
                             f"{_project_colour(self._project).config()}")
        self._colour = colourTransform


class BinItem(_Named):
    def __init__(self, item: Any) -> None:
        _main("BinItem()")
        self._item = item
        self._init_name(item.name())
        self._parent: Optional[Bin] = None
        if isinstance(item, Clip):
            item._bin_item = self

    def activeItem(self) -> Any:
        return self._item


class Bin(_Named):
    def __init__(self, name: str) -> None:
        _main("Bin()")
        self._init_name(name)
        self._items: list[Any] = []
        self._parent: Optional[Bin] = None
        self._project: Optional[Project] = None

    def addItem(self, item: Any) -> Any:
        _main("Bin.addItem")
        if not isinstance(item, (Bin, BinItem)):
            raise TypeError("Bin.addItem takes a Bin or a BinItem (wrap clips in BinItem)")
        item._parent = self
        self._items.append(item)
        _edited(self._project, f"Bin.addItem({self.name()})")
        if isinstance(item, Bin):
            item._project = self._project
        elif isinstance(item._item, (Sequence, Clip)):
            item._item._project = self._project     # an item's project() is the project its bin is in
        return item

    def items(self) -> tuple:
        return tuple(self._items)

    def bins(self) -> tuple:
        return tuple(i for i in self._items if isinstance(i, Bin))

    def clips(self) -> tuple:
        return tuple(i for i in self._items if isinstance(i, BinItem) and isinstance(i._item, Clip))


_projects: list["Project"] = []


def projects() -> tuple:
    """The open projects."""
    return tuple(_projects)


class Project(_Named):
    def __init__(self, name: str = "Untitled") -> None:
        _projects.append(self)
        self._init_name(name)
        self._clips_bin = Bin(name)
        self._clips_bin._project = self
        self._open_undo: list[str] = []
        self._edits: list[tuple[Optional[str], str]] = []   # (the undo group it fell in, what was edited)
        self._colour = _ProjectColour(_DEFAULT_CONFIG)

    def clipsBin(self) -> Bin:
        return self._clips_bin

    def ocioConfigName(self) -> str:
        """The config's name; '' for a custom config (Foundry's docstring)."""
        return self._colour.name

    def ocioConfigPath(self) -> str:
        return self._colour.path

    def lutSettingWorkingSpace(self) -> str:
        return self._colour.settings["working"]

    def lutSettingFloat(self) -> str:
        return self._colour.settings["float"]

    def lutSettingLog(self) -> str:
        return self._colour.settings["log"]

    def lutSetting8Bit(self) -> str:
        return self._colour.settings["8bit"]

    def lutSetting16Bit(self) -> str:
        return self._colour.settings["16bit"]

    def _colour_management(self, config: str, **settings: str) -> None:
        """Project Settings ▸ Color Management, as an artist sets it: 'nuke-default', one of Nuke's built-in OCIO
        configs ('fn-nuke_cg-config-…'), or a custom config's path; the LUT settings reset to the config's
        defaults (roles), then ``settings`` (working/float/log/8bit/16bit) override them."""
        self._colour = _ProjectColour(config)
        self._colour.settings.update(settings)

    def sequences(self) -> tuple:
        """Every sequence in the project's bins."""
        found, bins = [], [self._clips_bin]
        while bins:
            for entry in bins.pop().items():
                if isinstance(entry, Bin):
                    bins.append(entry)
                elif isinstance(entry.activeItem(), Sequence):
                    found.append(entry.activeItem())
        return tuple(found)

    def beginUndo(self, name: str) -> None:
        _main("Project.beginUndo")
        self._open_undo.append(name)

    def endUndo(self) -> None:
        _main("Project.endUndo")
        if not self._open_undo:
            raise RuntimeError("endUndo without beginUndo")
        self._open_undo.pop()


def _edited(project: Optional[Project], what: str) -> None:
    """Project edits, with the undo group open at the time (what one Edit > Undo would revert)."""
    if project is not None:
        project._edits.append((project._open_undo[0] if project._open_undo else None, what))


# -- colour management ------------------------------------------------------------------------------
_ROLE_SETTINGS = {"working": "scene_linear", "float": "scene_linear", "log": "compositing_log",
                  "8bit": "matte_paint", "16bit": "texture_paint"}
_LOG_FILES, _FLOAT_FILES = (".dpx", ".cin"), (".exr", ".hdr", ".sxr")
_DEFAULT_CONFIG = _nuke._BUILTIN_CONFIGS[0]


class _ProjectColour:
    """A project's colour management: the config (``name`` as Hiero reports it, ``path``) and LUT settings."""

    def __init__(self, config: str) -> None:
        if config == "nuke-default":
            self.name, self.path = config, _nuke._NUKE_DEFAULT_CONFIG
            self.settings = {"working": "linear", "float": "linear", "log": "Cineon", "8bit": "sRGB", "16bit": "sRGB"}
        else:
            builtin = config in _nuke._BUILTIN_CONFIGS
            self.name, self.path = (config, "") if builtin else ("", config)
            self.settings = {key: f"role_{role}" for key, role in _ROLE_SETTINGS.items()}
        self.config()                              # a config OCIO cannot read is refused now

    def config(self) -> str:
        """What OpenImageIO reads: the nuke-default file, ocio://<built-in>, or the custom file."""
        if self.name.startswith("fn-nuke_"):
            return "ocio://" + self.name[len("fn-nuke_"):]
        _nuke._colourspaces(self.path or self.name)   # raises for a config OCIO cannot read
        return self.path or self.name

    def role_space(self, role: str) -> str:
        import OpenImageIO as oiio

        return oiio.ColorConfig(self.config()).getColorSpaceNameByRole(role) or ""

    def shown(self, setting: str) -> str:
        """A LUT setting as a colour space: a role ('role_scene_linear') through the config."""
        value = self.settings[setting]
        return self.role_space(value[len("role_"):]) if value.startswith("role_") else value


def _project_colour(project: Optional["Project"]) -> _ProjectColour:
    return project._colour if project is not None else _ProjectColour(_DEFAULT_CONFIG)


def _default_transform(project: Optional["Project"], pattern: str) -> str:
    """The file type's default, as Hiero shows it: 'default (linear)' for an EXR in nuke-default."""
    ext = os.path.splitext(pattern)[1].lower()
    setting = "float" if ext in _FLOAT_FILES else "log" if ext in _LOG_FILES else "8bit"
    return f"default ({_project_colour(project).shown(setting)})"


def _transforms(project: Optional["Project"], pattern: str) -> list:
    """A clip's colour transforms: the config's colour spaces, its roles as 'role (colour space)', its default."""
    import OpenImageIO as oiio

    colour = _project_colour(project)
    config = oiio.ColorConfig(colour.config())
    roles = [f"{role} ({config.getColorSpaceNameByRole(role)})" for role in config.getRoles()]
    return [_default_transform(project, pattern), *config.getColorSpaceNames(), *roles]


# -- timeline --------------------------------------------------------------------------------------
class TrackItem(_Named, _Tagged):
    class MediaType:
        kVideo = "kVideo"
        kAudio = "kAudio"

    kVideo = MediaType.kVideo
    kAudio = MediaType.kAudio

    def __init__(self, name: str, mediaType: str) -> None:
        _main("TrackItem()")
        self._init_name(name)
        self._init_tags()
        self._type = mediaType
        self._source: Optional[Clip] = None
        self._track: Optional[VideoTrack] = None
        self._times = (0, 0, 0.0, 0.0)            # timelineIn, timelineOut, sourceIn, sourceOut
        self._colour: Optional[str] = None

    def mediaType(self) -> str:
        return self._type

    def source(self) -> Optional[Clip]:
        return self._source

    def setSource(self, clip: Clip) -> Clip:
        _main("setSource")
        self._source = clip
        if self._track is None:
            self.setTimes(0, clip.duration() - 1, 0, clip.duration() - 1)
        return clip

    def setTimes(self, timelineIn: int, timelineOut: int, sourceIn: float, sourceOut: float) -> None:
        _main("setTimes")   # as in Hiero, a source duration other than the timeline's is a retime
        self._times = (int(timelineIn), int(timelineOut), float(sourceIn), float(sourceOut))

    def timelineIn(self) -> int:
        return self._times[0]

    def timelineOut(self) -> int:
        return self._times[1]

    def sourceIn(self) -> float:
        """From the clip's first frame (0), not the media's: file frame = the clip's first frame + sourceIn."""
        return self._times[2]

    def sourceOut(self) -> float:
        return self._times[3]

    def handleInLength(self) -> int:
        """Media available before the cut."""
        return int(self._times[2])

    def handleOutLength(self) -> int:
        """Media available after the cut."""
        return (self._source.duration() - 1 - int(self._times[3])) if self._source else 0

    def sourceMediaColourTransform(self) -> str:
        return self._colour or (self._source.sourceMediaColourTransform() if self._source else "")

    def setSourceMediaColourTransform(self, colourTransform: str) -> None:
        if self._source is not None and colourTransform not in self._source.getAvailableOcioColourTransforms():
            raise ValueError(f"{colourTransform!r} is not a colour transform of the project's OCIO config")
        self._colour = colourTransform

    def parent(self) -> Optional["VideoTrack"]:
        return self._track


class VideoTrack(_Named, _Tagged):
    def __init__(self, name: str) -> None:
        _main("VideoTrack()")
        self._init_name(name)
        self._init_tags()
        self._items: list[TrackItem] = []
        self._sequence: Optional[Sequence] = None

    def parent(self) -> Optional["Sequence"]:
        return self._sequence

    def items(self) -> tuple:
        return tuple(self._items)

    def addTrackItem(self, clip: Any, position: Optional[int] = None) -> TrackItem:
        """A Clip at ``position`` (a new item), or a TrackItem as it is; overlapped items are removed."""
        _main("addTrackItem")
        if self._sequence is None:
            raise RuntimeError("addTrackItem can only be called once the track is in a Sequence")
        if isinstance(clip, Clip):
            if position is None:
                raise TypeError("addTrackItem(clip, position): position is required for a Clip")
            item = TrackItem(clip.name(), TrackItem.MediaType.kVideo)
            item.setSource(clip)
            # source times count from the clip's first frame, not from the media's first frame
            item.setTimes(position, position + clip.duration() - 1, 0, clip.duration() - 1)
        elif isinstance(clip, TrackItem):
            if position is not None:
                raise TypeError("addTrackItem(trackItem): no position for a TrackItem")
            item = clip
        else:
            raise TypeError("addTrackItem takes a Clip or a TrackItem")
        self._items = [i for i in self._items
                       if i.timelineOut() < item.timelineIn() or i.timelineIn() > item.timelineOut()]
        item._track = self
        self._items.append(item)
        self._items.sort(key=lambda i: i.timelineIn())
        _edited(self._sequence._project, f"VideoTrack.addTrackItem({self.name()})")
        return item


class Sequence(_Named, _Tagged):
    def __init__(self, name: str) -> None:
        _main("Sequence()")
        self._init_name(name)
        self._init_tags()
        self._tracks: list[VideoTrack] = []
        self._project: Optional[Project] = None
        self._framerate = TimeBase(24.0)

    def project(self) -> Optional[Project]:
        return self._project

    def framerate(self) -> TimeBase:
        return self._framerate

    def videoTracks(self) -> tuple:
        return tuple(self._tracks)

    def addTrack(self, track: VideoTrack) -> VideoTrack:
        _main("addTrack")
        if track._sequence is not None:
            raise RuntimeError("the track is already in a sequence")
        track._sequence = self
        self._tracks.append(track)
        _edited(self._project, f"Sequence.addTrack({track.name()})")
        return track


GUI = True
_plugin_paths: list[str] = []


def addPluginPath(path: str) -> None:
    """Hiero scans ``path``/Python/Startup (and StartupUI) after the standard plug-in paths."""
    if path not in _plugin_paths:
        _plugin_paths.append(path)


def pluginPath() -> list[str]:
    """``$HIERO_PLUGIN_PATH``'s folders and ``~/.nuke`` (read now, as at Hiero's start), then the added ones."""
    standard = [p for p in os.environ.get("HIERO_PLUGIN_PATH", "").split(os.pathsep) if p]
    standard.append(os.path.join(os.path.expanduser("~"), ".nuke"))
    return standard + [p for p in _plugin_paths if p not in standard]


def _reset() -> None:
    _plugin_paths.clear()
    _projects.clear()
    events._reset()
