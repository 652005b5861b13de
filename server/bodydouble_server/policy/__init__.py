"""Guardrails a studio's legal team signs off (docs/guardrails.md): consent records checked before any work
(consent.py), an append-only hash-chained audit log (audit.py), C2PA provenance of every take (provenance.py,
certs.py), and the server's use of them in one object (rules.py)."""
from .rules import Policy

__all__ = ["Policy"]
