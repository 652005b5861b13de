"""Every call BodyDouble makes into Hiero / Nuke Studio's timeline (``hiero``), in one place.

No public stubs of the Hiero API exist, so nothing here is type-checked against Hiero and none
of it has run inside Nuke Studio. Each call is listed in :data:`DOCUMENTED` with the signature
Foundry documents in its Hiero Python API reference (HieroPythonDevGuide, "hiero.core
reference", "hiero.ui reference" and "Events", Nuke 13-16; the same text is the docstrings of
Nuke Studio's own interpreter). tests/test_hiero_fake.py checks that the fake ``hiero`` used by
the tests has exactly these signatures and that this module calls nothing else; docs/nuke.md
lists what still needs a check in a real Nuke Studio.

Timeline facts this relies on (from the same reference):

- ``TrackItem.sourceIn()/sourceOut()`` count from the **clip's** first frame (0), not the media's (a clip may
  start after its media: ``Clip(media, first, last)``); Foundry's own examples take the source timecode as
  ``sourceIn() + clip.timecodeStart()``. So the file frame is ``MediaFileInfo.startFrame()`` plus the clip's
  offset into its media (``Clip.timecodeStart() - MediaSource.timecodeStart()``, which cancels any timecode the
  scans carry) plus ``sourceIn()``; they are floats after retimes.
- ``MediaFileInfo.filename()`` of an image sequence reads ``/path/name.####.exr (1001-1048)``.
- ``VideoTrack.addTrackItem(clip, position)`` works only once the track is in a sequence.
- A clip's colour transform can be set only after it is in a bin (``BinItem.activeItem()``), and only to one of
  ``Clip.getAvailableOcioColourTransforms()``: the project's OCIO colour spaces, its roles shown as
  ``role (colour space)`` (e.g. ``scene_linear (ACES - ACEScg)``) and the file type's ``default (…)``.
- The project's colour management: ``Project.ocioConfigName()`` (``nuke-default``, a built-in config; '' for a
  custom one, whose file is ``ocioConfigPath()``) and its defaults by role, ``lutSettingWorkingSpace()``,
  ``lutSettingFloat()``, ``lutSettingLog()``, ``lutSetting8Bit()``, ``lutSetting16Bit()`` (the .hrox stores a
  role as ``role_scene_linear``), which Foundry's own Nuke-script export copies into the root's
  ``workingSpaceLUT``, ``floatLut``, ``logLut``, ``int8Lut``, ``int16Lut``.

Threading: everything here runs on the main (UI) thread except :func:`run_in_main_thread`,
which a worker thread calls to queue the finish step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import hiero.core

TrackItem = Any      # hiero.core.TrackItem (no stubs: opaque handles)
Menu = Any           # the QMenu Hiero passes in the context-menu event

CONTEXT_MENU = "kShowContextMenu/kTimeline"
PROJECT_LOADED = "kAfterProjectLoad"
JOB_TAG = "BodyDouble job"      # on a shot whose extension is being made: the job to re-attach to

# call -> the parameters Foundry documents (``self`` left out). Qt calls on the event's QMenu are
# listed apart: they are PySide's, not Hiero's.
DOCUMENTED: dict[str, str] = {
    "core.events.registerInterest": "(eventType, callback)",
    "core.events.unregisterInterest": "(eventType, callback)",
    "core.executeInMainThread": "(call, *args, **kwargs)",
    "ui.TimelineEditor.selection": "()",
    "core.TrackItem.mediaType": "()",
    "core.TrackItem.name": "()",
    "core.TrackItem.setName": "(name)",
    "core.TrackItem.source": "()",
    "core.TrackItem.sourceIn": "()",
    "core.TrackItem.sourceOut": "()",
    "core.TrackItem.timelineIn": "()",
    "core.TrackItem.timelineOut": "()",
    "core.TrackItem.handleInLength": "()",
    "core.TrackItem.handleOutLength": "()",
    "core.TrackItem.sourceMediaColourTransform": "()",
    "core.TrackItem.parent": "()",
    "core.TrackItem.addTag": "(tag)",
    "core.TrackItem.tags": "()",
    "core.TrackItem.removeTag": "(tag)",
    "core.Clip": "(mediaSource, first, last)",
    "core.Clip.mediaSource": "()",
    "core.Clip.timecodeStart": "()",
    "core.Clip.framerate": "()",
    "core.Clip.setName": "(name)",
    "core.Clip.addTag": "(tag)",
    "core.Clip.setSourceMediaColourTransform": "(colourTransform)",
    "core.TimeBase.toFloat": "()",
    "core.MediaSource.fileinfos": "()",
    "core.MediaSource.timecodeStart": "()",
    "core.MediaFileInfo.filename": "()",
    "core.MediaFileInfo.startFrame": "()",
    "core.MediaFileInfo.endFrame": "()",
    "core.VideoTrack": "(name)",
    "core.VideoTrack.name": "()",
    "core.VideoTrack.parent": "()",
    "core.VideoTrack.addTrackItem": "(clip, position)",
    "core.Sequence.name": "()",
    "core.Sequence.project": "()",
    "core.Sequence.addTrack": "(track)",
    "core.Project.clipsBin": "()",
    "core.Project.ocioConfigName": "()",
    "core.Project.ocioConfigPath": "()",
    "core.Project.lutSettingWorkingSpace": "()",
    "core.Project.lutSettingFloat": "()",
    "core.Project.lutSettingLog": "()",
    "core.Project.lutSetting8Bit": "()",
    "core.Project.lutSetting16Bit": "()",
    "core.Project.beginUndo": "(name)",
    "core.Project.endUndo": "()",
    "core.Bin": "(name)",
    "core.Bin.name": "()",
    "core.Bin.bins": "()",
    "core.Bin.addItem": "(item)",
    "core.BinItem": "(item)",
    "core.BinItem.activeItem": "()",
    "core.Tag": "(name)",
    "core.Tag.setNote": "(note)",
    "core.Tag.metadata": "()",
    "core.Tag.name": "()",
    "core.projects": "()",
    "core.Project.sequences": "()",
    "core.Sequence.videoTracks": "()",
    "core.VideoTrack.items": "()",
    "core.DataCollection.dict": "()",
    "core.DataCollection.setValue": "(key, value)",
}
QT_CALLS: dict[str, str] = {          # PySide2/6 QMenu/QAction, as Hiero's event.menu hands them over
    "QMenu.addMenu": "(title)",
    "QMenu.addAction": "(text)",
    "QAction.setEnabled": "(enabled)",
    "QAction.triggered.connect": "(slot)",
}


# -- the timeline's right-click menu ---------------------------------------------------------
def on_timeline_menu(build: Callable[[Menu, list[TrackItem]], None]) -> Callable[[Any], None]:
    """Call ``build(event.menu, selected video track items)`` whenever the timeline's context menu
    opens. Returns the registered handler (to unregister it)."""

    def handler(event: Any) -> None:
        sender = event.sender
        selected = list(sender.selection()) if hasattr(sender, "selection") else []
        items = [i for i in selected if isinstance(i, hiero.core.TrackItem)
                 and i.mediaType() == hiero.core.TrackItem.MediaType.kVideo]
        build(event.menu, items)

    hiero.core.events.registerInterest(CONTEXT_MENU, handler)
    return handler


def forget_timeline_menu(handler: Callable[[Any], None]) -> None:
    hiero.core.events.unregisterInterest(CONTEXT_MENU, handler)


def add_submenu(menu: Menu, title: str) -> Menu:
    return menu.addMenu(title)


def add_action(menu: Menu, text: str, command: Callable[[], object], enabled: bool = True) -> Any:
    action = menu.addAction(text)
    action.setEnabled(enabled)
    action.triggered.connect(lambda *_checked: command())   # Qt passes `checked`
    return action


# -- reading a shot --------------------------------------------------------------------------
@dataclass
class ItemMedia:
    """What the timeline says about a track item and its media, as Hiero reports it."""

    name: str
    filename: str            # MediaFileInfo.filename(): '/p/name.####.exr (1001-1048)' for a sequence
    media_first: int         # MediaFileInfo.startFrame()
    media_last: int          # MediaFileInfo.endFrame()
    clip_first: int          # the file frame of the clip's first frame (sourceIn 0)
    source_in: float         # from the clip's first frame
    source_out: float
    timeline_in: int
    timeline_out: int
    handle_in: int
    handle_out: int
    fps: float
    colour_transform: str    # sourceMediaColourTransform(): Hiero's name, read through ``project_colour``
    track: str
    sequence: str
    project_colour: "ProjectColour"


@dataclass
class ProjectColour:
    """The project's colour management, as Hiero reports it (Project > Edit Settings > Color Management)."""

    config_name: str         # ocioConfigName(): 'nuke-default', a built-in config, '' for a custom one
    config_path: str         # ocioConfigPath()
    working: str             # lutSettingWorkingSpace()
    float_lut: str           # lutSettingFloat(): the default for float files (EXR)
    log_lut: str             # lutSettingLog(): for log files (DPX, Cineon)
    int8_lut: str            # lutSetting8Bit()
    int16_lut: str           # lutSetting16Bit()


def project_colour(project: Any) -> ProjectColour:
    return ProjectColour(
        config_name=str(project.ocioConfigName()), config_path=str(project.ocioConfigPath()),
        working=str(project.lutSettingWorkingSpace()), float_lut=str(project.lutSettingFloat()),
        log_lut=str(project.lutSettingLog()), int8_lut=str(project.lutSetting8Bit()),
        int16_lut=str(project.lutSetting16Bit()))


def read_item(item: TrackItem) -> ItemMedia:
    clip = item.source()
    media = clip.mediaSource()
    info = media.fileinfos()[0]
    track = item.parent()
    sequence = track.parent()
    return ItemMedia(
        name=str(item.name()), filename=str(info.filename()),
        media_first=int(info.startFrame()), media_last=int(info.endFrame()),
        clip_first=int(info.startFrame()) + int(clip.timecodeStart()) - int(media.timecodeStart()),
        source_in=float(item.sourceIn()), source_out=float(item.sourceOut()),
        timeline_in=int(item.timelineIn()), timeline_out=int(item.timelineOut()),
        handle_in=int(item.handleInLength()), handle_out=int(item.handleOutLength()),
        fps=float(clip.framerate().toFloat()), colour_transform=str(item.sourceMediaColourTransform()),
        track=str(track.name()), sequence=str(sequence.name()), project_colour=project_colour(sequence.project()),
    )


# -- bringing a take in ----------------------------------------------------------------------
@dataclass
class Placement:
    """A take to place after ``source``: its files, names, tag and colour transform."""

    pattern: str             # '####' file pattern of the take
    first: int
    last: int
    name: str                # clip and track item name
    track: str               # the new track's name
    bin: str                 # the project bin that keeps every take
    tag: str                 # tag name (the label)
    note: str
    metadata: dict[str, str]
    colour_transform: str = ""   # '' leaves Hiero's default


def place_after(source: TrackItem, take: Placement) -> TrackItem:
    """Import the take as a clip into the project's ``take.bin`` bin (created once, earlier takes
    stay) and put it on a new video track, starting the frame after ``source`` ends. Nothing
    on ``source``'s track moves. One undo group: Edit > Undo takes the whole placement back."""
    sequence = source.parent().parent()
    project = sequence.project()
    project.beginUndo(f"BodyDouble: {take.name}")
    try:
        root = project.clipsBin()
        bin_ = next((b for b in root.bins() if b.name() == take.bin), None)
        if bin_ is None:
            bin_ = hiero.core.Bin(take.bin)
            root.addItem(bin_)
        bin_item = hiero.core.BinItem(hiero.core.Clip(take.pattern, take.first, take.last))
        bin_.addItem(bin_item)
        clip = bin_item.activeItem()      # colour transforms stick only to a clip that is in a bin
        clip.setName(take.name)
        if take.colour_transform:
            clip.setSourceMediaColourTransform(take.colour_transform)
        track = hiero.core.VideoTrack(take.track)
        sequence.addTrack(track)          # addTrackItem needs the track in a sequence first
        placed = track.addTrackItem(clip, int(source.timelineOut()) + 1)
        placed.setName(take.name)
        for target in (placed, clip):     # one Tag object per owner
            target.addTag(_tag(take))
        return placed
    finally:
        project.endUndo()


def _tag(take: Placement) -> Any:
    tag = hiero.core.Tag(take.tag)
    tag.setNote(take.note)
    data = tag.metadata()
    for key, value in take.metadata.items():
        data.setValue(f"tag.{key}", value)   # Hiero shows 'tag.' keys in the tag's panel
    return tag


# -- the job a shot waits for, kept in the project ---------------------------------------------
def keep_job(item: TrackItem, values: dict[str, str]) -> None:
    """Tag ``item`` with the job its extension waits for (saved with the project); replaces an older one."""
    forget_job(item)
    tag = hiero.core.Tag(JOB_TAG)
    tag.setNote("BodyDouble is making this shot's extension; it re-attaches when the project opens.")
    data = tag.metadata()
    for key, value in values.items():
        data.setValue(f"tag.{key}", value)
    item.addTag(tag)


def kept_job(item: TrackItem) -> dict[str, str] | None:
    for tag in item.tags():
        if tag.name() == JOB_TAG:
            return {k[len("tag."):]: v for k, v in tag.metadata().dict().items() if k.startswith("tag.")}
    return None


def forget_job(item: TrackItem) -> None:
    for tag in list(item.tags()):
        if tag.name() == JOB_TAG:
            item.removeTag(tag)


def items_with_jobs() -> list[TrackItem]:
    """Every track item of the open projects that waits for a job."""
    return [item for project in hiero.core.projects() for sequence in project.sequences()
            for track in sequence.videoTracks() for item in track.items() if kept_job(item) is not None]


def on_project_load(call: Callable[[], None]) -> Callable[[Any], None]:
    """``call()`` after each project opens; returns the registered handler."""

    def handler(event: Any) -> None:
        call()

    hiero.core.events.registerInterest(PROJECT_LOADED, handler)
    return handler


def forget_project_load(handler: Callable[[Any], None]) -> None:
    hiero.core.events.unregisterInterest(PROJECT_LOADED, handler)


# -- threads ---------------------------------------------------------------------------------
def run_in_main_thread(call: Callable[..., None], *args: Any) -> None:
    """From a worker thread: queue ``call(*args)`` for the UI thread and return at once.

    Hiero takes the positional arguments as one tuple (its documented calling convention)."""
    hiero.core.executeInMainThread(call, args)
