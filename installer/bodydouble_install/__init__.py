"""BodyDouble installer (run it as ``python3 installer/install.py``)."""
