"""C2PA provenance for takes (c2pa-python, offline: no timestamp authority, no network).

EXR has no C2PA embedding, so every frame gets a *sidecar* manifest, ``<frame>.c2pa`` beside it, bound to
the frame's bytes by a data hash: change one byte of the EXR and the manifest no longer validates. The take's
review proxy, ``<take stem>.proxy.png`` (its first frame through the take's display view, at most
``PROXY_SIDE`` pixels on the long side), carries its manifest *embedded*. Each manifest says what made it:
the digital source type (fill: ``compositeWithTrainedAlgorithmicMedia``, extend: ``trainedAlgorithmicMedia``),
the adapter(s) and base model with their sha256 as ingredients, and the generation settings as a
``com.bodydouble.generation`` assertion. ``verify_take`` checks every frame of a take against its manifest.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bodydouble import __version__, atomic

from .certs import SigningFiles

EXR_MIME, PNG_MIME = "image/x-exr", "image/png"
SIDECAR_SUFFIX = ".c2pa"
PROXY_SUFFIX = ".proxy.png"
PROXY_SIDE = 1024
ASSERTION = "com.bodydouble.generation"
_SOURCE_TYPES = {"fill": "COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA", "extend": "TRAINED_ALGORITHMIC_MEDIA"}


def sidecar_path(frame: str | Path) -> Path:
    return Path(frame).with_suffix(SIDECAR_SUFFIX)


def _alg_for(key_pem: bytes):
    import c2pa
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: c2pa.C2paSigningAlg.ES256, 384: c2pa.C2paSigningAlg.ES384,
                521: c2pa.C2paSigningAlg.ES512}[key.curve.key_size]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    raise ValueError(f"unsupported signing key type {type(key).__name__}")


def _context(settings: dict):
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict(settings))


class ProvenanceError(Exception):
    pass


class Sealer:
    """Signs takes with one certificate; built once per server (reads the certificate and key)."""

    def __init__(self, files: SigningFiles):
        import c2pa

        self.files = files
        try:
            chain, key = files.chain.read_bytes(), files.key.read_bytes()
            self._info = c2pa.C2paSignerInfo(alg=_alg_for(key), sign_cert=chain, private_key=key, ta_url=None)
            c2pa.Signer.from_info(self._info).close()       # a bad certificate or key fails here, at start
        except (OSError, ValueError, c2pa.C2paError) as exc:
            raise ProvenanceError(f"cannot sign with {files.chain} / {files.key}: {exc}") from None
        # The ingredient thumbnail would put a ~90 KB image into every 3 KB manifest.
        self._builder_context = _context({"builder": {"thumbnail": {"enabled": False}}})
        # Take folder -> (frame path, its sha256, proxy PNG) of the first frame sealed as it was written: the
        # proxy's pixels are ready before the last frame, so completing a take only signs (frame pipeline, #16).
        self._proxies: collections.OrderedDict[str, tuple[str, str, bytes]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def seal_frame(self, path, frame: int, info: dict, proxy: bool = True) -> str:
        """One frame's sidecar, bound to its bytes as they are now; returns their sha256. ``proxy``: also make
        the review proxy's pixels now if this is the first frame of its take sealed so."""
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        manifest = self._manifest(Path(path).name, EXR_MIME, info, {"frame": frame, "sha256": digest})
        atomic.write_bytes(sidecar_path(path), self._sign(manifest, info.get("operation", ""), EXR_MIME, data, embed=False))
        folder = str(Path(path).parent)
        with self._lock:
            first = proxy and folder not in self._proxies
            if first:
                self._proxies[folder] = (str(path), digest, b"")       # claimed: later frames skip
                while len(self._proxies) > 64:                           # takes that never completed
                    self._proxies.popitem(last=False)
        if first:
            png = _proxy_png(str(path), (info.get("request") or {}).get("colorspace", "ACEScg"))
            with self._lock:
                self._proxies[folder] = (str(path), digest, png)
        return digest

    def seal_take(self, take_dir: Path, stem: str, frames: dict[int, str], info: dict,
                  sealed: dict[int, str] | None = None) -> dict:
        """Sidecars for every frame not in ``sealed`` (frame -> sha256 of a sidecar already signed) and the proxy
        with its embedded manifest; returns what take.json keeps."""
        operation = info.get("operation", "")
        hashes = {frame: (sealed or {}).get(frame) or self.seal_frame(path, frame, info)
                  for frame, path in sorted(frames.items())}
        proxy = None
        with self._lock:
            early = self._proxies.pop(str(Path(take_dir)), None)
        if frames:
            first = min(frames)
            if early is not None and early[2] and early[:2] == (str(frames[first]), hashes[first]):
                png = early[2]
            else:
                png = _proxy_png(frames[first], (info.get("request") or {}).get("colorspace", "ACEScg"))
            proxy = Path(take_dir) / f"{stem}{PROXY_SUFFIX}"
            manifest = self._manifest(proxy.name, PNG_MIME, info, {
                "proxy_of_frame": first, "frames_sha256": {str(f): h for f, h in sorted(hashes.items())}})
            atomic.write_bytes(proxy, self._sign(manifest, operation, PNG_MIME, png, embed=True))
        return {"c2pa": True, "signer": self.files.chain.name, "frames_sha256": {str(f): h for f, h in hashes.items()},
                "proxy": proxy.name if proxy else None, "sidecar_suffix": SIDECAR_SUFFIX}

    def _manifest(self, title: str, mime: str, info: dict, extra: dict) -> dict:
        base = info.get("base_model") or {}
        ingredients = [{"title": f"{base.get('name', '?')} (base model)", "format": "application/octet-stream",
                        "relationship": "inputTo", "instance_id": f"sha256:{base.get('sha256', '')}"}]
        for adapter in info.get("adapters") or []:
            ingredients.append({"title": f"{adapter.get('name')} (LoRA adapter: {adapter.get('character', '')})",
                                "format": "application/octet-stream", "relationship": "inputTo",
                                "instance_id": f"sha256:{adapter.get('sha256', '')}"})
        generation = {
            "operation": info.get("operation"), "job": info.get("job"), "tool_version": __version__,
            "base_model": {k: base.get(k) for k in ("name", "sha256", "family", "test_model")},
            "adapters": [{k: a.get(k) for k in ("name", "sha256", "character", "version", "consent")}
                         for a in info.get("adapters") or []],
            "request": info.get("request") or {}, **extra,
        }
        return {"claim_generator_info": [{"name": "BodyDouble", "version": __version__}], "title": title,
                "format": mime, "ingredients": ingredients,
                "assertions": [{"label": ASSERTION, "data": json.loads(json.dumps(generation, default=str))}]}

    def _sign(self, manifest: dict, operation: str, mime: str, data: bytes, embed: bool) -> bytes:
        import c2pa

        source_type = getattr(c2pa.C2paDigitalSourceType, _SOURCE_TYPES.get(operation, "TRAINED_ALGORITHMIC_MEDIA"))
        with c2pa.Builder(manifest, self._builder_context) as builder, c2pa.Signer.from_info(self._info) as signer:
            builder.set_intent(c2pa.C2paBuilderIntent.CREATE, source_type)
            if not embed:
                builder.set_no_embed()
            out = io.BytesIO()
            manifest_bytes = builder.sign(signer, mime, io.BytesIO(data), out)
        return manifest_bytes if not embed else out.getvalue()


def _proxy_png(frame_path: str, colorspace: str) -> bytes:
    """The frame as a display-referred 8-bit PNG (the same view the model saw), long side <= PROXY_SIDE."""
    import numpy as np
    import OpenImageIO as oiio
    from PIL import Image

    # Only the colour channels, shrunk by OpenImageIO (GIL released) before anything is float in Python:
    # decoding every channel of an 8K 16-channel take to float here cost 5x the plate and stalled heartbeats.
    # An area average (box): a review proxy needs no lanczos, whose 2-D footprint cost 3-7 s for a 2K take at
    # the end of every job (#16).
    source = oiio.ImageBuf(str(frame_path))
    spec = source.spec()
    channels = 3 if spec.nchannels >= 3 else 1
    scale = min(1.0, PROXY_SIDE / max(spec.height, spec.width))
    if scale < 1.0:
        small = (max(1, round(spec.width * scale)), max(1, round(spec.height * scale)))
        shrunk = oiio.ImageBufAlgo.resize(source, filtername="box",
                                          roi=oiio.ROI(0, small[0], 0, small[1], 0, 1, 0, spec.nchannels))
        if shrunk.has_error:
            raise RuntimeError(f"proxy of {frame_path}: {shrunk.geterror()}")
        pixels = shrunk.get_pixels(oiio.FLOAT)[:, :, :channels]
    else:
        pixels = source.get_pixels(oiio.FLOAT, oiio.ROI(spec.x, spec.x + spec.width, spec.y, spec.y + spec.height,
                                                        0, 1, 0, channels))
    rgb = pixels[:, :, :3] if channels == 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
    try:
        transform = _colour(colorspace)
        # The view baked into a LUT (imaging/colour.py, within 0.02 of OCIO: a fraction of a PNG code on average).
        display = rgb if transform.raw else baked_view(transform).view(
            np.ascontiguousarray(rgb, np.float32).reshape(-1, 3)).reshape(rgb.shape)
    except Exception:          # a colour space this OCIO config lacks: the raw values, clipped
        display = rgb
    out = io.BytesIO()
    Image.fromarray((np.clip(display, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=8)
def _colour(colorspace: str):
    """Building an OCIO processor costs ~20 ms: once per colour space, not per take."""
    from ..imaging.colour import ColourTransform

    return ColourTransform(colorspace)


def baked_view(transform):
    from ..imaging.colour import baked_view as baked

    return baked(transform)


# -- verification -------------------------------------------------------------------------
@dataclass
class FileCheck:
    path: str
    ok: bool
    state: str              # Trusted | Valid | Invalid | missing | error
    problems: list[str] = field(default_factory=list)


@dataclass
class TakeCheck:
    take_dir: str
    files: list[FileCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)     # take-level (frames without a record, no take.json)

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.ok for f in self.files)

    def to_dict(self) -> dict:
        return {"take_dir": self.take_dir, "ok": self.ok, "problems": self.problems,
                "files": [f.__dict__ for f in self.files]}


def verify_take(take_dir: str | Path, anchors: Path | None = None) -> TakeCheck:
    """Every frame of the take against its sidecar, the proxy against its embedded manifest.

    With ``anchors`` (PEM) a frame must be *Trusted* (signed by a certificate under them); without, *Valid*.
    The recorded frame hashes (take.json) must match the files and the manifests' own assertions."""
    import c2pa

    take_dir = Path(take_dir)
    check = TakeCheck(take_dir=str(take_dir))
    try:
        take = json.loads((take_dir / "take.json").read_text())
    except (OSError, ValueError) as exc:
        check.problems.append(f"no readable take.json: {exc}")
        return check
    settings: dict = {"verify": {"verify_trust": anchors is not None}}
    if anchors is not None:
        settings["trust"] = {"trust_anchors": Path(anchors).read_text()}
    context = _context(settings)
    wanted = "Trusted" if anchors is not None else "Valid"
    recorded = ((take.get("provenance") or {}).get("frames_sha256")) or {}
    frames = {int(k): v for k, v in (take.get("frames") or {}).items()}
    if take.get("status") == "complete" and not take.get("provenance"):
        check.problems.append("the take is complete but carries no provenance record (take.json 'provenance')")
    on_disk = {p.name for p in take_dir.glob("*.exr")}
    strays = sorted(on_disk - {Path(p).name for p in frames.values()})
    if strays:
        check.problems.append(f"EXR files the take does not list: {', '.join(strays)}")
    for frame, path in sorted(frames.items()):
        path = take_dir / Path(path).name
        item = FileCheck(path=str(path), ok=False, state="missing")
        check.files.append(item)
        sidecar = sidecar_path(path)
        if not path.is_file() or not sidecar.is_file():
            item.problems.append(f"{'frame' if not path.is_file() else 'sidecar manifest'} missing")
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if str(frame) in recorded and recorded[str(frame)] != digest:
            item.problems.append(f"sha256 {digest[:12]}... differs from the take's record {recorded[str(frame)][:12]}...")
        _read(item, c2pa, context, EXR_MIME, data, sidecar.read_bytes(), wanted, digest)
    proxy = (take.get("provenance") or {}).get("proxy")
    if proxy:
        item = FileCheck(path=str(take_dir / proxy), ok=False, state="missing")
        check.files.append(item)
        if (take_dir / proxy).is_file():
            _read(item, c2pa, context, PNG_MIME, (take_dir / proxy).read_bytes(), None, wanted, None)
        else:
            item.problems.append("review proxy missing")
    return check


def _read(item: FileCheck, c2pa, context, mime: str, data: bytes, sidecar: bytes | None, wanted: str,
          digest: str | None) -> None:
    try:
        with c2pa.Reader(mime, io.BytesIO(data), manifest_data=sidecar, context=context) as reader:
            item.state = reader.get_validation_state() or "Invalid"
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest() or {}
    except c2pa.C2paError as exc:
        item.state = "error"
        item.problems.append(f"manifest unreadable: {exc}")
        return
    failures = (results.get("activeManifest") or {}).get("failure") or []
    item.problems += [f"{f.get('code')}: {f.get('explanation', '')}" for f in failures]
    if item.state != wanted and item.state != "Trusted":
        item.problems.append(f"validation state {item.state}, {wanted} needed")
    if digest is not None:
        generation = next((a.get("data") for a in manifest.get("assertions", []) if a.get("label") == ASSERTION), {})
        if generation.get("sha256") != digest:
            item.problems.append("the manifest's recorded frame sha256 does not match the frame")
    item.ok = not item.problems
