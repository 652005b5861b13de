"""Add-on preferences: where the server is, how long to wait for it, and job defaults."""
from __future__ import annotations

import os

import bpy
from bpy.props import FloatProperty, IntProperty, StringProperty, BoolProperty

ADDON_ID = __package__ or "bodydouble_blender"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"


class BODYDOUBLE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    server_address: StringProperty(
        name="Server address", default=DEFAULT_ADDRESS,
        description="ZeroMQ address of the BodyDouble server (start it with `bodydouble serve`)",
    )
    connect_timeout: FloatProperty(
        name="Connect timeout", default=5.0, min=0.5, max=120.0, subtype="TIME_ABSOLUTE", unit="TIME_ABSOLUTE",
        description="Seconds to wait for the server to answer before reporting it is not running",
    )
    output_root: StringProperty(
        name="Default output root", default="", subtype="DIR_PATH",
        description="Takes go to <root>/<shot>/bodydouble/...; empty: the server's own output root. "
                    "Must lie under a folder the server may write (its --root)",
    )
    curve_server_cert: StringProperty(
        name="Server certificate", default="", subtype="FILE_PATH",
        description="A remote server's public CURVE certificate (server.key): encrypts the connection. "
                    "Empty: $BODYDOUBLE_CURVE_SERVER, else plain TCP (a server on this machine)",
    )
    curve_client_cert: StringProperty(
        name="Your certificate", default="", subtype="FILE_PATH",
        description="Your secret CURVE certificate (name.key_secret), for a server that admits listed clients only",
    )
    default_steps: IntProperty(name="Default steps", default=20, min=1, max=500)
    default_strength: FloatProperty(name="Default strength", default=1.0, min=0.01, max=1.0)
    wire_results: BoolProperty(
        name="Wire results into the comp", default=True,
        description="Move the source node's outgoing links to the new take node (the source stays, unlinked)",
    )

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "server_address")
        col.prop(self, "connect_timeout")
        col.prop(self, "output_root")
        box = col.box()
        box.label(text="Remote server (encrypted)")
        box.prop(self, "curve_server_cert")
        box.prop(self, "curve_client_cert")
        row = col.row()
        row.prop(self, "default_steps")
        row.prop(self, "default_strength")
        col.prop(self, "wire_results")
        col.operator("bodydouble.refresh_adapters", icon="FILE_REFRESH")


class _Defaults:
    """The preferences' defaults, when the add-on was registered without an add-ons entry (scripts)."""

    server_address = DEFAULT_ADDRESS
    connect_timeout = 5.0
    output_root = ""
    curve_server_cert = ""
    curve_client_cert = ""
    default_steps = 20
    default_strength = 1.0
    wire_results = True


def get(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    return _Defaults


def curve_certs(prefs) -> tuple[str, str]:
    """The CURVE certificate files the preferences name, as absolute paths ('' where none)."""
    return tuple(os.path.abspath(bpy.path.abspath(p)) if p else "" for p in (prefs.curve_server_cert,
                                                                             prefs.curve_client_cert))


classes = (BODYDOUBLE_AP_preferences,)
