# BodyDouble for Nuke: GUI menus (Nuke runs menu.py only with a GUI, after init.py).
import nuke

try:
    import bodydouble_nuke

    bodydouble_nuke.install_menus()
except ImportError as _exc:  # the thin client is missing from Nuke's Python: say so where users look
    _reason = str(_exc)

    def _not_installed(reason: str = _reason) -> None:
        nuke.message("BodyDouble is not installed correctly:\n%s\n\nInstall the `bodydouble` client (pyzmq, numpy) "
                     "into Nuke's Python, or set BODYDOUBLE_PYTHONPATH; see docs/nuke.md." % reason)

    for _menu in ("Nuke", "Node Graph"):
        nuke.menu(_menu).addCommand("BodyDouble/Not installed: why?", _not_installed)
