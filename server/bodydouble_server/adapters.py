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
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from bodydouble import errors
from bodydouble.jobspec import AdapterRef

from .models.identity import ModelIdentity, file_sha256

log = logging.getLogger("bodydouble.adapters")

WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
MANIFEST_FILE = "manifest.json"
REQUIRED = ("character", "trigger", "base_model", "rights_holder", "licence")
MANIFEST_LIMIT = 256 * 1024          # bytes: a manifest is a page of text, never a data file
MODEL_KINDS = ("image", "video")
# Every string a listing entry carries is capped (characters), and a listing holds at most MAX_LISTED adapters:
# with the field names an entry stays under ~2.5 KB, so a listing always fits the 1 MiB reply limit.
FIELD_CAPS = {"name": 128, "character": 128, "trigger": 128, "base_model": 128, "family": 64, "model_kind": 16,
              "trained_for": 16, "rights_holder": 256, "licence": 512, "version": 64, "sha256": 64, "status": 16,
              "reason": 512}
MAX_LISTED = 384


def _capped(value, cap: int) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= cap else text[:cap - 1] + "\u2026"


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
        digest = hashlib.sha1(self.name.encode("utf-8", "surrogateescape")).hexdigest()[:6]
        return f"bd_{re.sub(r'[^0-9A-Za-z_]', '_', self.name)}_{digest}"

    def invalid(self, reason: str) -> "Adapter":
        self.status, self.reason = "invalid", reason
        return self

    def _training_settings(self) -> dict:
        training = self.manifest.get("training")
        settings = training.get("settings") if isinstance(training, dict) else None
        return settings if isinstance(settings, dict) else {}

    @property
    def clip_frames(self) -> int:
        """The length of the clips a video adapter was trained on: 1 for stills (and image adapters)."""
        frames = self._training_settings().get("clip_frames")
        return frames if isinstance(frames, int) and frames > 1 else 1

    def trained_for(self) -> str:
        """The one job a video adapter from footage clips was trained for: ``fill`` (the video engine; clip_fill 1),
        ``extend`` (clip_fill 0), else "" (stills or a mix: both). The two objectives pull apart (docs/training.md),
        so a picker says which."""
        if self.clip_frames == 1:
            return ""
        share = self._training_settings().get("clip_fill", 0.0)
        return {0: "extend", 1: "fill"}.get(share, "") if isinstance(share, (int, float)) else ""

    def describe(self) -> dict:
        base = self.manifest.get("base_model") or {}
        entry = {
            "name": self.name,
            "character": self.manifest.get("character", self.name),
            "trigger": self.manifest.get("trigger", ""),
            "base_model": base.get("name", "") if isinstance(base, dict) else str(base),
            "family": base.get("family", "") if isinstance(base, dict) else "",
            "model_kind": self.manifest.get("model_kind", "image"),
            "trained_for": self.trained_for(),
            "rights_holder": self.manifest.get("rights_holder", ""),
            "licence": self.manifest.get("licence", ""),
            "version": self.manifest.get("version", ""),
            "sha256": self.sha256,
            "status": self.status,
            "reason": self.reason,
        }
        return {k: _capped(v, FIELD_CAPS[k]) for k, v in entry.items()}


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError, RuntimeError):   # RuntimeError: a symlink loop
        return False


def _regular(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (links followed), or None: FIFOs, devices and folders never are."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if stat.S_ISREG(mode) else "not a regular file"


def _read_manifest(path: Path) -> dict:
    problem = _regular(path)
    if problem:
        raise ValueError(problem)
    with open(path, "rb") as handle:
        data = handle.read(MANIFEST_LIMIT + 1)
    if len(data) > MANIFEST_LIMIT:
        raise ValueError(f"larger than {MANIFEST_LIMIT // 1024} KiB")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"is a JSON {type(manifest).__name__}, not an object")
    return manifest


def _manifest_problems(manifest: dict) -> list[str]:
    """Field types the server relies on; missing fields are reported apart."""
    problems = [f"'{k}' is not a string" for k in REQUIRED if k != "base_model" and k in manifest
                and not isinstance(manifest[k], str)]
    base = manifest.get("base_model")
    if base is not None and not (isinstance(base, dict) and all(isinstance(base.get(k, ""), str)
                                                                for k in ("name", "sha256", "family"))):
        problems.append("'base_model' is not an object of strings (name, sha256, family)")
    if manifest.get("model_kind", "image") not in MODEL_KINDS:
        problems.append(f"'model_kind' is not one of {', '.join(MODEL_KINDS)}")
    if not isinstance(manifest.get("version", ""), (str, int)) or isinstance(manifest.get("version"), bool):
        problems.append("'version' is not a string or an integer")
    return problems


def inspect_adapter(folder: Path, identity: ModelIdentity, family_kind: str = "image",
                    root: Path | None = None) -> Adapter:
    """Judge one adapter folder on its own: whatever is wrong with it makes it ``invalid`` with a reason, never
    an error for the whole listing. ``root``: the adapters folder (resolved); files must resolve inside it."""
    adapter = Adapter(name=folder.name, folder=folder)
    manifest_path, weights = folder / MANIFEST_FILE, folder / WEIGHTS_FILE
    if root is not None:
        for path in (folder, manifest_path, weights):
            if os.path.lexists(path) and not _inside(path, root):
                return adapter.invalid(f"{path.name} resolves outside the adapters folder {root}")
    try:
        adapter.manifest = _read_manifest(manifest_path)
    except (OSError, ValueError) as exc:
        return adapter.invalid(f"{MANIFEST_FILE} unreadable: {exc}")
    problems = _manifest_problems(adapter.manifest)
    if problems:
        # List only the fields of the right type.
        adapter.manifest = {k: v for k, v in adapter.manifest.items() if isinstance(v, str) and k in FIELD_CAPS}
        return adapter.invalid(f"{MANIFEST_FILE}: {'; '.join(problems)}")
    missing = [k for k in REQUIRED if not adapter.manifest.get(k)]
    base = adapter.manifest.get("base_model")
    if not missing and not (isinstance(base, dict) and base.get("sha256")):
        missing.append("base_model.sha256")
    if missing:
        return adapter.invalid(f"{MANIFEST_FILE} lacks {', '.join(missing)}")
    problem = _regular(weights)
    if problem:
        return adapter.invalid(f"{WEIGHTS_FILE} in {folder}: {problem}")
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


def weight_tensors(path: Path) -> int:
    """LoRA matrices in a weights file (alphas are scalars that configure, not weights)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return sum(1 for key in handle.keys() if not key.endswith(".alpha"))


def loaded_tensors(pipe, key: str) -> int:
    """LoRA matrices of adapter ``key`` that landed in the pipeline's modules (peft keeps one ``lora_A`` and one
    ``lora_B`` entry per adapted layer). Walks modules, not parameters: the cost does not grow with the number
    of adapters already resident."""
    import torch

    count = 0
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            for table in (getattr(module, "lora_A", None), getattr(module, "lora_B", None)):
                if isinstance(table, (torch.nn.ModuleDict, torch.nn.ParameterDict)) and key in table:
                    entry = table[key]
                    count += len(entry) if isinstance(entry, torch.nn.ParameterList) else 1
    return count


class AdapterLibrary:
    """The adapters folder, mirrored into one pipeline's resident LoRA set."""

    def __init__(self, folder: Path, identity: ModelIdentity, family_kind: str = "image"):
        self.folder = Path(folder)
        self.identity = identity
        self.family_kind = family_kind
        self.adapters: dict[str, Adapter] = {}
        self._loaded: dict[str, str] = {}     # name -> sha256 resident in the pipeline
        self._active: tuple | None = None     # what the pipeline runs now: skip redundant switches
        # None: every ready adapter is resident (a server). A set of names: only those (a pool replica keeps
        # the adapters it is asked for resident; see scale/worker.py); ``sync`` loads and unloads to match.
        self.resident: set[str] | None = None

    def listing(self) -> list[dict]:
        adapters = sorted(self.adapters.values(), key=lambda a: a.name)
        if len(adapters) > MAX_LISTED:
            log.warning("%d adapters in %s: listing the first %d by name", len(adapters), self.folder, MAX_LISTED)
        return [a.describe() for a in adapters[:MAX_LISTED]]

    def sync(self, pipe) -> None:
        """Rescan the folder; load new or changed adapters, unload removed ones (``pipe`` None: inspect only)."""
        found: dict[str, Adapter] = {}
        if self.folder.is_dir():
            root = self.folder.resolve()
            for sub in sorted(p for p in self.folder.iterdir() if not p.name.startswith(".") and p.is_dir()):
                found[sub.name] = inspect_adapter(sub, self.identity, self.family_kind, root)
        self._active = None
        for name, sha in list(self._loaded.items()):
            current = found.get(name)
            if current is None or current.status != "ready" or current.sha256 != sha or not self._wanted(name):
                pipe.delete_adapters(Adapter(name=name, folder=self.folder / name).key)
                del self._loaded[name]
        for name, adapter in found.items():
            if adapter.status == "ready" and name not in self._loaded and pipe is not None and self._wanted(name):
                try:
                    pipe.load_lora_weights(str(adapter.folder), weight_name=WEIGHTS_FILE, adapter_name=adapter.key)
                    self._loaded[name] = adapter.sha256
                except Exception as exc:  # a broken file must not take the server down
                    log.exception("adapter %s failed to load", name)
                    adapter.invalid(f"weights failed to load: {exc}")
                    continue
                # diffusers drops weights that match no layer with a warning: half an adapter is not the adapter.
                expected, landed = weight_tensors(adapter.folder / WEIGHTS_FILE), loaded_tensors(pipe, adapter.key)
                if landed < expected:
                    pipe.delete_adapters(adapter.key)
                    del self._loaded[name]
                    adapter.invalid(f"{expected - landed} of {expected} weight tensors in {WEIGHTS_FILE} match no "
                                    f"layer of {self.identity.name}: trained for another model layout?")
        self.adapters = found

    def _wanted(self, name: str) -> bool:
        return self.resident is None or name in self.resident

    @property
    def loaded(self) -> list[str]:
        """The adapters resident in the pipeline now."""
        return sorted(self._loaded)

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
