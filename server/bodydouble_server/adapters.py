"""Character adapters: one folder each, resident in the pipeline, switched per request.

Folder layout (``<adapters_dir>/<name>/``)::

    pytorch_lora_weights.safetensors   diffusers-format LoRA (loadable by plain load_lora_weights)
    manifest.json                      character, trigger, base model {name, sha256, family}, rights...
    previews/                          optional

The adapter's name is its folder's name. An adapter whose manifest names another base model
is listed (so the TD sees why) but never loaded, and requests for it are refused clearly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from bodydouble import errors
from bodydouble.jobspec import AdapterRef

from .models.identity import ModelIdentity, file_sha256

log = logging.getLogger("bodydouble.adapters")

WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
MANIFEST_FILE = "manifest.json"
REQUIRED = ("character", "trigger", "base_model", "rights_holder", "licence")


@dataclass
class Adapter:
    name: str
    folder: Path
    manifest: dict = field(default_factory=dict)
    sha256: str = ""
    status: str = "ready"          # ready | incompatible | invalid
    reason: str = ""

    @property
    def key(self) -> str:
        """The adapter's name inside peft (module keys allow no dots or dashes)."""
        digest = hashlib.sha1(self.name.encode()).hexdigest()[:6]
        return f"bd_{re.sub(r'[^0-9A-Za-z_]', '_', self.name)}_{digest}"

    def describe(self) -> dict:
        base = self.manifest.get("base_model") or {}
        return {
            "name": self.name,
            "character": self.manifest.get("character", self.name),
            "trigger": self.manifest.get("trigger", ""),
            "base_model": base.get("name", "") if isinstance(base, dict) else str(base),
            "family": base.get("family", "") if isinstance(base, dict) else "",
            "model_kind": self.manifest.get("model_kind", "image"),
            "rights_holder": self.manifest.get("rights_holder", ""),
            "licence": self.manifest.get("licence", ""),
            "version": self.manifest.get("version", ""),
            "sha256": self.sha256,
            "status": self.status,
            "reason": self.reason,
        }


def inspect_adapter(folder: Path, identity: ModelIdentity, family_kind: str = "image") -> Adapter:
    adapter = Adapter(name=folder.name, folder=folder)
    manifest_path, weights = folder / MANIFEST_FILE, folder / WEIGHTS_FILE
    try:
        adapter.manifest = json.loads(manifest_path.read_text())
        if not isinstance(adapter.manifest, dict):
            raise ValueError("manifest is not a JSON object")
    except (OSError, ValueError) as exc:
        adapter.status, adapter.reason = "invalid", f"{MANIFEST_FILE} unreadable: {exc}"
        return adapter
    missing = [k for k in REQUIRED if not adapter.manifest.get(k)]
    base = adapter.manifest.get("base_model")
    if not missing and not (isinstance(base, dict) and base.get("sha256")):
        missing.append("base_model.sha256")
    if missing:
        adapter.status, adapter.reason = "invalid", f"{MANIFEST_FILE} lacks {', '.join(missing)}"
        return adapter
    if not weights.is_file():
        adapter.status, adapter.reason = "invalid", f"no {WEIGHTS_FILE} in {folder}"
        return adapter
    adapter.sha256 = file_sha256(weights)
    kind = adapter.manifest.get("model_kind", "image")
    if kind != family_kind:
        adapter.status = "incompatible"
        trained = base.get("family") or base.get("name") or "?"
        use = "extend (shot extension)" if family_kind == "video" else "fill"
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        adapter.reason = (f"trained for {article} {kind} model ({trained}), but {use} runs on this server's "
                          f"{family_kind} model {identity.name} ({identity.family}); "
                          "use an adapter trained for that model")
    elif base["sha256"] != identity.sha256:
        adapter.status = "incompatible"
        adapter.reason = (
            f"trained on base model {base.get('name', '?')} (sha256 {base['sha256'][:12]}...), "
            f"but this server runs {identity.name} (sha256 {identity.sha256[:12]}...)"
        )
    return adapter


class AdapterLibrary:
    """The adapters folder, mirrored into one pipeline's resident LoRA set."""

    def __init__(self, folder: Path, identity: ModelIdentity, family_kind: str = "image"):
        self.folder = Path(folder)
        self.identity = identity
        self.family_kind = family_kind
        self.adapters: dict[str, Adapter] = {}
        self._loaded: dict[str, str] = {}     # name -> sha256 resident in the pipeline
        self._active: tuple | None = None     # what the pipeline runs now: skip redundant switches

    def listing(self) -> list[dict]:
        return [a.describe() for a in sorted(self.adapters.values(), key=lambda a: a.name)]

    def sync(self, pipe) -> None:
        """Rescan the folder; load new or changed adapters, unload removed ones (``pipe`` None: inspect only)."""
        found: dict[str, Adapter] = {}
        if self.folder.is_dir():
            for sub in sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found[sub.name] = inspect_adapter(sub, self.identity, self.family_kind)
        self._active = None
        for name, sha in list(self._loaded.items()):
            current = found.get(name)
            if current is None or current.status != "ready" or current.sha256 != sha:
                pipe.delete_adapters(Adapter(name=name, folder=self.folder / name).key)
                del self._loaded[name]
        for name, adapter in found.items():
            if adapter.status == "ready" and name not in self._loaded and pipe is not None:
                try:
                    pipe.load_lora_weights(str(adapter.folder), weight_name=WEIGHTS_FILE, adapter_name=adapter.key)
                    self._loaded[name] = adapter.sha256
                except Exception as exc:  # a broken file must not take the server down
                    log.exception("adapter %s failed to load", name)
                    adapter.status, adapter.reason = "invalid", f"weights failed to load: {exc}"
        self.adapters = found

    def resolve(self, refs: list[AdapterRef]) -> list[tuple[Adapter, float]]:
        chosen = []
        for ref in refs:
            adapter = self.adapters.get(ref.name)
            if adapter is None:
                known = ", ".join(sorted(a for a, v in self.adapters.items() if v.status == "ready")) or "none"
                raise errors.UnknownAdapter(f"no adapter named {ref.name!r} on this server (ready: {known})")
            if adapter.status == "incompatible":
                raise errors.AdapterIncompatible(f"adapter {ref.name!r} cannot run here: {adapter.reason}")
            if adapter.status != "ready":
                raise errors.RequestError(f"adapter {ref.name!r} is broken: {adapter.reason}", code=errors.UNKNOWN_ADAPTER)
            chosen.append((adapter, ref.weight))
        return chosen

    def activate(self, pipe, chosen: list[tuple[Adapter, float]]) -> None:
        """Make exactly ``chosen`` active (with weights) on the resident pipeline; none = the base model."""
        if not self._loaded:
            return
        wanted = tuple((a.key, w) for a, w in chosen)
        if wanted == self._active:
            return
        if not chosen:
            pipe.disable_lora()
        else:
            if not self._active:  # LoRA layers were disabled (or never set): enable once, not per switch
                pipe.enable_lora()
            pipe.set_adapters([a.key for a, _ in chosen], adapter_weights=[w for _, w in chosen])
        self._active = wanted
