"""Pixels: EXR I/O (OpenImageIO), colour (OCIO), crop/resize/feather/composite. No torch here."""
