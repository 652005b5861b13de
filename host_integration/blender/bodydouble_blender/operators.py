"""Operators (``bpy.ops.bodydouble.*``): fill, regenerate/new seed, extend, cancel, re-attach, show take,
refresh, report."""
from __future__ import annotations

import os
import random

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from bodydouble import errors, host
from bodydouble.jobspec import MODEL_KINDS, FillRequest

from . import adapters, compositor, jobs, messages, nodes, preferences, strips

# Keys of a take node's parameters that describe the take, not the request.
_TAKE_KEYS = ("take", "take_dir", "pattern", "take_first", "take_last", "job")


def new_seed() -> int:
    return random.SystemRandom().randrange(0, 2**31 - 1)


def _load_adapters(op, context, operation: str | None = None) -> bool:
    """Fetch the server's adapters; for a dialog (``operation``), also pick one that serves the operation."""
    prefs = preferences.get(context)
    try:
        found = adapters.fetch(prefs.server_address, prefs.connect_timeout, preferences.curve_certs(prefs))
    except errors.BodyDoubleError as exc:
        level, message = jobs.describe(exc, prefs.server_address)
        op.report({level}, message)
        return False
    if not found:
        op.report({"ERROR"}, "BodyDouble: the server has no adapters. Train or publish one into its adapters folder.")
        return False
    if operation is None:
        return True
    usable = adapters.usable(operation)
    if not usable:
        kind = MODEL_KINDS[operation]
        op.report({"ERROR"}, f"BodyDouble: none of the server's {len(found)} adapter(s) is trained for its {kind} "
                             f"model, which runs {operation}. Train or publish a {kind} character adapter.")
        return False
    if op.adapter not in [a.name for a in usable]:
        op.adapter = adapters.first_ready(operation) or usable[0].name
    return True


def _engine_changed(op) -> None:
    """Another fill engine, other adapters (video ones for the video engine): pick one it offers."""
    engine = "video" if op.engine == "video" else ""
    if op.adapter not in [a.name for a in adapters.usable("fill", engine) if a.status == "ready"]:
        op.adapter = adapters.first_ready("fill", engine) or "NONE"
    _adapter_changed(op)


def _adapter_changed(op) -> None:
    """Another character on the video engine: its image adapter keys the shot, where it has one."""
    if op.engine == "video":
        op.key_adapter = adapters.key_for(op.adapter)


def _output_dir(prefs, plate_pattern: str) -> str:
    root = prefs.output_root
    if not root:
        return ""
    return os.path.join(os.path.abspath(bpy.path.abspath(root)), host.shot_from_path(plate_pattern) or "untitled")


def scene_view(scene) -> dict:
    """What the artist looks through, kept with the take: the scene's display device and view transform (the
    model sees the server's own view: hello's ``colour`` says which)."""
    return {"display": scene.display_settings.display_device, "view": scene.view_settings.view_transform}


def start_fill(op, context, params: host.Params, extras: dict, tree, source_name: str, wire: bool,
               note: str = "") -> set[str]:
    """Send a fill job (Fill, Regenerate) and return the operator's result; the take node it loads stores
    ``params`` and the Blender ``extras`` (what Regenerate runs again)."""
    try:
        request = params.request()
    except ValueError as exc:
        op.report({"ERROR"}, f"BodyDouble: {exc}")
        return {"CANCELLED"}
    stored = {**params.to_dict(), **extras}
    load = {"tree": list(compositor.tree_ref(tree, context.scene)), "source": source_name, "params": stored,
            "wire": wire}
    job = jobs.start(f"Fill {params.adapter} {params.first}-{params.last}", "fill", load, request,
                     context.scene.name, params)
    op.report({"INFO"}, f"BodyDouble: {job.title} (seed {params.seed}) started{note}")
    return {"FINISHED"}


class _GenerationProps:
    # Each operator declares its own ``adapter`` (its picker's items): fill after its engine, which decides them
    # (Blender applies an operator call's keywords in property order).
    prompt: StringProperty(name="Prompt", default="")
    negative_prompt: StringProperty(name="Negative prompt", default="")
    seed: IntProperty(name="Seed", default=0, min=0)
    new_seed: BoolProperty(name="New seed", default=False, description="Pick a fresh random seed when it runs")
    steps: IntProperty(name="Steps", default=20, min=1, max=500)


class BODYDOUBLE_OT_fill(_GenerationProps, bpy.types.Operator):
    """Fill what the plate never showed, inside the mask, with a character adapter (runs in the background)"""

    bl_idname = "bodydouble.fill"
    bl_label = "Fill Unseen Angle…"
    bl_options = {"REGISTER"}

    engine: EnumProperty(name="Engine", items=adapters.engine_items, update=lambda op, _context: _engine_changed(op),
                         description="Frame by frame on the image model, or the whole shot on the video model "
                                     "(with video adapters)")
    adapter: EnumProperty(name="Adapter", items=adapters.fill_items, update=lambda op, _context: _adapter_changed(op),
                          description="Character adapter (character · base model), as the server lists them")
    plate_node: StringProperty(name="Plate node", description="Image node with the plate (default: the active one)")
    mask_source: EnumProperty(name="Mask", items=[
        ("ALPHA", "Plate alpha", "The plate image's alpha channel is the mask"),
        ("NODE", "Second Image node", "Another selected Image node holds the mask"),
    ], default="ALPHA")
    mask_node: StringProperty(name="Mask node")
    strength: FloatProperty(name="Strength", default=1.0, min=0.01, max=1.0)
    coherence: FloatProperty(name="Coherence", default=0.0, min=0.0, max=1.0,
                             description="Frame by frame: carry the previous frame's fill along the plate's motion "
                                         "(0 each frame on its own, 1 the first frame's fill through the shot)")
    key_frame: StringProperty(name="Key frame", subtype="FILE_PATH",
                              description="Video engine: the range's first frame already filled (say an image-engine "
                                          "take's EXR, at the plate's size): the video model carries it through the "
                                          "shot. Empty: the key adapter's fill, or every frame from noise")
    key_adapter: EnumProperty(name="Key adapter", items=adapters.key_items,
                              description="Video engine, no key frame: the server first fills the range's first "
                                          "frame with this image adapter (as frame by frame would) and keys the "
                                          "shot with it; the character's own by default")
    feather: IntProperty(name="Feather", default=FillRequest.feather, min=0, max=256,
                         description="Soft edge inside the mask, in plate pixels: the plate still shows across a "
                                     "ramp twice as wide, so lower it on a small mask (outside it nothing changes)")
    use_node_range: BoolProperty(name="Node's frame range", default=True)
    frame_start: IntProperty(name="First frame", default=1)
    frame_end: IntProperty(name="Last frame", default=1)
    wire: BoolProperty(name="Wire into comp", default=True,
                       description="Move the plate node's outgoing links to the new take")

    @classmethod
    def poll(cls, context):
        tree = compositor.tree_from_context(context)
        if tree is None:
            cls.poll_message_set("Only in the compositor")
            return False
        return True

    def _nodes(self, context):
        tree = compositor.tree_from_context(context)
        chosen = compositor.selected_image_nodes(tree)
        plate = tree.nodes.get(self.plate_node) if self.plate_node else (chosen[0] if chosen else None)
        if not compositor.is_image_node(plate):
            raise ValueError("select an Image node with the plate (an image or an image sequence)")
        mask = None
        if self.mask_source == "NODE":
            if self.mask_node:
                mask = tree.nodes.get(self.mask_node)
            else:
                mask = next((n for n in chosen if n != plate), None)
            if not compositor.is_image_node(mask):
                raise ValueError("mask source is 'Second Image node': select a second Image node with the mask")
        return tree, plate, mask

    def invoke(self, context, event):
        prefs = preferences.get(context)
        try:
            tree, plate, mask = self._nodes(context)
        except ValueError as exc:
            self.report({"ERROR"}, f"BodyDouble: {exc}")
            return {"CANCELLED"}
        if not _load_adapters(self, context, "fill"):
            return {"CANCELLED"}
        self.plate_node = plate.name
        others = [n for n in compositor.selected_image_nodes(tree) if n != plate]
        if others and not self.mask_node:
            self.mask_source, self.mask_node = "NODE", others[0].name
        self.steps, self.strength = prefs.default_steps, prefs.default_strength
        self.wire = prefs.wire_results
        try:
            foot = compositor.footage(plate, context.scene)
            self.frame_start, self.frame_end = foot.first, foot.last
        except ValueError:
            pass
        # The whole shot on the video model for a range, where the server has one and a video adapter.
        self.engine = host.default_engine(adapters.server_info(), self.frame_start, self.frame_end, adapters.cached())
        _adapter_changed(self)
        return context.window_manager.invoke_props_dialog(self, width=460)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "engine")
        layout.prop(self, "adapter")
        layout.prop(self, "prompt")
        layout.prop(self, "negative_prompt")
        row = layout.row(align=True)
        row.prop(self, "seed")
        row.prop(self, "new_seed", toggle=True)
        layout.prop(self, "strength")
        if self.engine != "video":
            layout.prop(self, "coherence")
        else:
            layout.prop(self, "key_frame")
            layout.prop(self, "key_adapter")
        layout.prop(self, "feather")
        layout.prop(self, "steps")
        layout.prop(self, "use_node_range")
        col = layout.column(align=True)
        col.enabled = not self.use_node_range
        col.prop(self, "frame_start")
        col.prop(self, "frame_end")
        layout.prop(self, "mask_source")
        if self.mask_source == "NODE":
            layout.prop(self, "mask_node")
        layout.prop(self, "wire")

    def execute(self, context):
        prefs = preferences.get(context)
        try:
            tree, plate, mask = self._nodes(context)
            foot = compositor.footage(plate, context.scene)
            mask_pattern = compositor.footage(mask, context.scene).pattern if mask is not None else ""
        except ValueError as exc:
            self.report({"ERROR"}, f"BodyDouble: {exc}")
            return {"CANCELLED"}
        first, last = (foot.first, foot.last) if self.use_node_range else (self.frame_start, self.frame_end)
        if last < first:
            self.report({"ERROR"}, f"BodyDouble: frame range {first}-{last} is empty")
            return {"CANCELLED"}
        props = self.properties
        steps = self.steps if props.is_property_set("steps") else prefs.default_steps
        strength = self.strength if props.is_property_set("strength") else prefs.default_strength
        wire = self.wire if props.is_property_set("wire") else prefs.wire_results
        if self.adapter == "NONE" or not self.adapter:
            self.report({"ERROR"}, "BodyDouble: no adapter chosen (is the server running? refresh the list)")
            return {"CANCELLED"}
        seed = new_seed() if self.new_seed else self.seed
        self.seed = seed
        params = host.Params(
            operation="fill", adapter=self.adapter, prompt=self.prompt, negative_prompt=self.negative_prompt,
            seed=seed, steps=steps, strength=strength, first=first, last=last, plate=foot.pattern, mask=mask_pattern,
            output_dir=_output_dir(prefs, foot.pattern), colorspace=foot.colorspace,
            # Not chosen (a script's EXEC): the server picks the engine from the adapter.
            engine=self.engine if props.is_property_set("engine") else "", coherence=self.coherence,
            feather=self.feather, key_frame=bpy.path.abspath(self.key_frame) if self.key_frame else "",
            key_adapter="" if self.key_adapter == "NONE" else self.key_adapter)
        extras = dict(mask_source=self.mask_source, is_sequence=foot.is_sequence, source_node=plate.name,
                      scene_start=foot.scene_start + (first - foot.first), image_colorspace=foot.colorspace,
                      **scene_view(context.scene))
        return start_fill(self, context, params, extras, tree, plate.name, wire,
                          note="; keep working, it loads when done")


class BODYDOUBLE_OT_regenerate(bpy.types.Operator):
    """Run a take node's job again as a new take (same seed, or a new one); the old take stays"""

    bl_idname = "bodydouble.regenerate"
    bl_label = "Regenerate"
    bl_options = {"REGISTER"}

    node: StringProperty(name="Take node", description="A BodyDouble take node (default: the active node)")
    new_seed: BoolProperty(name="New seed", default=False)

    @classmethod
    def poll(cls, context):
        tree = compositor.tree_from_context(context)
        return tree is not None and nodes.params_of(tree.nodes.active) is not None

    def execute(self, context):
        tree = compositor.tree_from_context(context)
        node = tree.nodes.get(self.node) if self.node else tree.nodes.active
        stored = nodes.params_of(node)
        if stored is None:
            self.report({"ERROR"}, "BodyDouble: the node is not a BodyDouble take")
            return {"CANCELLED"}
        if "image_colorspace" not in stored:       # a take node from before: 'colorspace' was Blender's name
            stored["image_colorspace"] = stored.pop("colorspace", "")
        params = host.Params.from_dict(stored)
        if self.new_seed:
            params.seed = new_seed()
        extras = {k: v for k, v in stored.items() if k not in params.to_dict() and k not in _TAKE_KEYS}
        extras["regenerated_from"] = node.name
        wire = preferences.get(context).wire_results
        return start_fill(self, context, params, extras, tree, node.name, wire)


class BODYDOUBLE_OT_carry_take(bpy.types.Operator):
    """Fill a fill take's whole range again on the video model, the take's first frame as the key frame: the look
    approved on one frame carried through the shot (runs in the background)"""

    bl_idname = "bodydouble.carry_take"
    bl_label = "Carry Through Shot…"
    bl_options = {"REGISTER"}

    node: StringProperty(name="Take node", description="A BodyDouble fill take node (default: the active node)")
    adapter: EnumProperty(name="Video adapter", items=adapters.video_fill_items,
                          description="The character's video adapter (character · base model)")
    prompt: StringProperty(name="Prompt", description="Default: the take's own")

    @classmethod
    def poll(cls, context):
        tree = compositor.tree_from_context(context)
        stored = nodes.params_of(tree.nodes.active) if tree is not None else None
        return stored is not None and stored.get("operation") == "fill"

    def _take(self, context):
        tree = compositor.tree_from_context(context)
        node = tree.nodes.get(self.node) if self.node else tree.nodes.active
        return tree, node, nodes.params_of(node)

    def invoke(self, context, event):
        if not _load_adapters(self, context):
            return {"CANCELLED"}
        self.adapter = adapters.first_ready("fill", "video") or "NONE"
        self.prompt = (self._take(context)[2] or {}).get("prompt", "")
        return context.window_manager.invoke_props_dialog(self, width=420)

    def execute(self, context):
        tree, node, stored = self._take(context)
        if stored is None or stored.get("operation") != "fill":
            self.report({"ERROR"}, "BodyDouble: the node is not a BodyDouble fill take")
            return {"CANCELLED"}
        params = host.Params.from_dict(stored)
        record = host.TakeRecord(take=stored["take"], adapter=params.adapter, seed=params.seed, operation="fill",
                                 pattern=stored["pattern"], first=stored["take_first"], last=stored["take_last"])
        try:
            params.key_frame = record.key_frame(params.first)
        except ValueError as exc:
            self.report({"ERROR"}, f"BodyDouble: {exc}")
            return {"CANCELLED"}
        params.engine, params.coherence = "video", 0.0
        params.adapter = self.adapter
        params.prompt = self.prompt or params.prompt
        if params.adapter in ("", "NONE"):
            self.report({"ERROR"}, "BodyDouble: no video adapter chosen (is the server running? refresh the list)")
            return {"CANCELLED"}
        extras = {k: v for k, v in stored.items() if k not in params.to_dict() and k not in _TAKE_KEYS}
        extras["carried_from"] = node.name
        wire = preferences.get(context).wire_results
        return start_fill(self, context, params, extras, tree, stored.get("source_node", node.name), wire)


class BODYDOUBLE_OT_extend(_GenerationProps, bpy.types.Operator):
    """Generate frames after an image strip, continuing its frame numbers (runs in the background)"""

    bl_idname = "bodydouble.extend"
    bl_label = "Extend Shot…"
    bl_options = {"REGISTER"}

    adapter: EnumProperty(name="Adapter", items=adapters.extend_items,
                          description="Video character adapter (character · base model): extend runs on the "
                                      "server's video model")
    strip: StringProperty(name="Strip", description="Image strip to extend (default: the active strip)")
    count: IntProperty(name="Frames", default=24, min=1, max=1000, description="How many new frames")

    @classmethod
    def poll(cls, context):
        scene = strips.sequencer_scene(context)
        return scene is not None and scene.sequence_editor is not None

    def invoke(self, context, event):
        if strips.image_strip(strips.sequencer_scene(context), self.strip) is None:
            self.report({"ERROR"}, "BodyDouble: select an image strip to extend")
            return {"CANCELLED"}
        if not _load_adapters(self, context, "extend"):
            return {"CANCELLED"}
        self.steps = preferences.get(context).default_steps
        return context.window_manager.invoke_props_dialog(self, width=420)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        for name in ("count", "adapter", "prompt", "negative_prompt"):
            layout.prop(self, name)
        row = layout.row(align=True)
        row.prop(self, "seed")
        row.prop(self, "new_seed", toggle=True)
        layout.prop(self, "steps")

    def execute(self, context):
        prefs = preferences.get(context)
        scene = strips.sequencer_scene(context)
        strip = strips.image_strip(scene, self.strip)
        if strip is None:
            self.report({"ERROR"}, "BodyDouble: select an image strip to extend")
            return {"CANCELLED"}
        if self.adapter == "NONE" or not self.adapter:
            self.report({"ERROR"}, "BodyDouble: no adapter chosen (is the server running? refresh the list)")
            return {"CANCELLED"}
        frames = strips.frame_inputs(strip)
        steps = self.steps if self.properties.is_property_set("steps") else prefs.default_steps
        params = host.Params(operation="extend", adapter=self.adapter, prompt=self.prompt,
                             negative_prompt=self.negative_prompt, seed=new_seed() if self.new_seed else self.seed,
                             steps=steps, count=self.count, fps=scene.render.fps / scene.render.fps_base,
                             first=frames[0].frame if frames else 1, last=frames[-1].frame if frames else 1,
                             colorspace=strip.colorspace_settings.name)
        try:
            request = params.request(frames=frames)
        except ValueError as exc:
            self.report({"ERROR"}, f"BodyDouble: {exc}")
            return {"CANCELLED"}
        stored = {**params.to_dict(), "source_strip": strip.name, **scene_view(scene)}
        title = f"Extend {strip.name} +{self.count}"
        load = {"scene": scene.name, "strip": strip.name, "params": stored}
        jobs.start(title, "extend", load, request, scene.name, params)
        self.report({"INFO"}, f"BodyDouble: {title} started")
        return {"FINISHED"}


class BODYDOUBLE_OT_cancel(bpy.types.Operator):
    """Cancel a running BodyDouble job, or all of them (nothing of a cancelled job is loaded)"""

    bl_idname = "bodydouble.cancel"
    bl_label = "Cancel BodyDouble Job"

    job: StringProperty(name="Job", description="Job key (the jobs panel's); empty: all")

    @classmethod
    def poll(cls, context):
        return bool(jobs.running())

    def execute(self, context):
        count = jobs.cancel(self.job or None)
        if not count:
            self.report({"WARNING"}, "BodyDouble: that job is not running any more")
            return {"CANCELLED"}
        self.report({"INFO"}, f"BodyDouble: cancelling {count} job(s)")
        return {"FINISHED"}


class BODYDOUBLE_OT_reattach(bpy.types.Operator):
    """Follow this file's jobs again (after the server was unreachable): load the takes of those that finished"""

    bl_idname = "bodydouble.reattach"
    bl_label = "Re-attach Jobs"

    def execute(self, context):
        if not jobs.unfollowed():
            self.report({"INFO"}, "BodyDouble: every job of this file is followed")
            return {"CANCELLED"}
        jobs.reattach()
        return {"FINISHED"}


class BODYDOUBLE_OT_show_take(bpy.types.Operator):
    """Select this take's node (compositor) or strip (sequencer) and make it active"""

    bl_idname = "bodydouble.show_take"
    bl_label = "Show Take"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Node or strip")

    def execute(self, context):
        tree = compositor.tree_from_context(context)
        if tree is not None and self.name in tree.nodes:
            for node in tree.nodes:
                node.select = node.name == self.name
            tree.nodes.active = tree.nodes[self.name]
            return {"FINISHED"}
        scene = strips.sequencer_scene(context)
        sed = scene.sequence_editor if scene is not None else None
        strip = strips.all_strips(sed).get(self.name) if sed is not None else None
        if strip is None:
            self.report({"WARNING"}, f"BodyDouble: '{self.name}' is not here any more")
            return {"CANCELLED"}
        for other in strips.all_strips(sed):
            other.select = other == strip
        sed.active_strip = strip
        return {"FINISHED"}


class BODYDOUBLE_OT_refresh_adapters(bpy.types.Operator):
    """Ask the server for its adapters again"""

    bl_idname = "bodydouble.refresh_adapters"
    bl_label = "Refresh Adapters"

    def execute(self, context):
        if not _load_adapters(self, context):
            return {"CANCELLED"}
        self.report({"INFO"}, f"BodyDouble: {len(adapters.cached())} adapter(s): "
                              + ", ".join(a.name for a in adapters.cached()))
        view = scene_view(context.scene)
        note = host.colour_note(adapters.server_info(), host.HostColour(
            config=os.environ.get("OCIO") or "Blender's own", display=view["display"], view=view["view"]))
        if note:
            self.report({"INFO"}, f"BodyDouble: {note}")
        return {"FINISHED"}


class BODYDOUBLE_OT_report(bpy.types.Operator):
    """Show a BodyDouble message in the status bar and the Info editor"""

    bl_idname = "bodydouble.report"
    bl_label = "BodyDouble Report"
    bl_options = {"INTERNAL"}

    level: StringProperty(default="INFO")
    message: StringProperty(default="")

    # Reports made in ``modal`` belong to the window manager (status bar, Info editor); those of an operator
    # called from Python stay with the call. A timer event makes ``modal`` run at once, not at the next mouse move.
    def invoke(self, context, event):
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.01, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        context.window_manager.event_timer_remove(self._timer)
        self.report({self.level if self.level in messages.LEVELS else "INFO"}, self.message)
        return {"FINISHED"}

    def execute(self, context):
        self.report({self.level if self.level in messages.LEVELS else "INFO"}, self.message)
        return {"FINISHED"}


classes = (BODYDOUBLE_OT_fill, BODYDOUBLE_OT_regenerate, BODYDOUBLE_OT_carry_take, BODYDOUBLE_OT_extend, BODYDOUBLE_OT_cancel,
           BODYDOUBLE_OT_reattach, BODYDOUBLE_OT_show_take, BODYDOUBLE_OT_refresh_adapters, BODYDOUBLE_OT_report)
