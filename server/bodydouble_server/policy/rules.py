"""The server's policy in one object: consent checked at submit, every request audited, every take sealed.

Built once per server from its config. The socket loop calls :meth:`Policy.admit` before a request is
accepted (nothing runs, nothing is written but the audit line, when it refuses); the worker calls
:meth:`Policy.seal_take` before a take is marked complete and :meth:`Policy.audit_outcome` before the final
reply. Adapter listings and hello show :meth:`Policy.adapter_scope`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import json
import logging
import re
from pathlib import Path

from bodydouble import atomic, errors
from bodydouble.jobspec import MODEL_KINDS

from .audit import AuditLog
from .certs import SigningFiles, local_signing_files
from .consent import ConsentBook, ConsentRecord, Requester

log = logging.getLogger("bodydouble.policy")

RETIRED_FILE = "retired.json"


def not_permitted(message: str, rule: str, record: str | None = None, **details) -> errors.RequestError:
    return errors.RequestError(message, code=errors.NOT_PERMITTED,
                               details={"rule": rule, "record": record, **details})


class Policy:
    def __init__(self, config):
        self.config = config
        self.consent = ConsentBook(Path(config.consent_dir).expanduser())
        self.adapters_dir = Path(config.adapters).expanduser()
        self.audit = AuditLog(config.audit_log, rotate_bytes=int(config.audit_rotate_mb * (1 << 20)))
        self._sealer = None
        self._signing: SigningFiles | None = None
        self._names: dict[str, str] | None = None
        self._admitted: dict[str, Admission] = {}     # job id -> its admission, until the job ends

    # -- who -----------------------------------------------------------------------------------
    @staticmethod
    def requester(asserted: str | None, curve_user_id: str | None, client_names: dict[str, str] | None = None
                  ) -> Requester:
        """A CURVE-authenticated key wins (named after its certificate file when listed), else the asserted name."""
        if curve_user_id:
            return Requester(name=(client_names or {}).get(curve_user_id, curve_user_id), verified=True,
                             key=curve_user_id)
        return Requester(name=asserted or "unknown", verified=False)

    # -- scope ---------------------------------------------------------------------------------
    def retirement(self, name: str) -> dict | None:
        try:
            return json.loads((self.adapters_dir / name / RETIRED_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:      # unreadable marker: still retired, and say so
            return {"reason": f"retirement record unreadable: {exc}"}

    def adapter_scope(self, entry: dict, test_model: bool) -> dict:
        """What an adapter listing shows: the consent records that cover it and whether it can be used at all."""
        name, character = entry.get("name", ""), entry.get("character", "")
        retired = self.retirement(name)
        records = self.consent.for_adapter(name, character)
        scope = {"records": [r.scope() for r in records], "retired": retired, "usable": True, "reason": ""}
        if retired is not None:
            scope.update(usable=False, reason=f"retired: {retired.get('reason', '')}")
        elif not records and not self._unconsented_ok(test_model):
            scope.update(usable=False, reason=f"no consent record for character {character!r}")
        elif records and all(r.error for r in records):
            scope.update(usable=False, reason=f"consent record invalid: {records[0].error}")
        elif records and all(r.expires and r.expires < dt.date.today() for r in records if not r.error):
            scope.update(usable=False, reason="consent expired")
        elif not records:
            scope["reason"] = "no consent record (allowed: " + ("test model)" if test_model else "server policy)")
        return scope

    def with_scope(self, entry: dict) -> dict:
        """A listing entry with its ``policy``: consent records, retirement, whether it can be used and why not."""
        kind = entry.get("model_kind", "image")
        return {**entry, "policy": self.adapter_scope(entry, _is_test_model(self.config, kind))}

    def describe(self, listing: list[dict]) -> dict:
        """For hello: the rules in force and each adapter's usability."""
        return {"consent_dir": str(self.consent.folder), "adapters_without_consent": self.config.adapters_without_consent,
                "consent_exempt_test_models": self.config.consent_exempt_test_models, "audit": True,
                "provenance": "c2pa",
                "users": "verified" if self.config.curve_authorized_clients else "self-asserted",
                "adapters": {e["name"]: {k: e["policy"][k] for k in ("usable", "reason")} for e in listing
                             if "policy" in e}}

    def _unconsented_ok(self, test_model: bool) -> bool:
        return self.config.adapters_without_consent == "allow" or (test_model and self.config.consent_exempt_test_models)

    # -- submit --------------------------------------------------------------------------------
    def check(self, operation: str, request, adapters: list[dict], requester: Requester, test_model: bool,
              today: dt.date | None = None) -> list[dict]:
        """Raise ``not_permitted`` naming the rule and record, else return each adapter with the consent used.

        ``adapters``: the listing entries of the adapters the request names (train: the adapter it makes).
        """
        today = today or dt.date.today()
        shot, paths, extend_frames = _scope_of(operation, request)
        used = []
        for entry in adapters:
            name, character = entry["name"], entry.get("character", "")
            retired = self.retirement(name) if operation != "train" else None
            if retired is not None:
                raise not_permitted(f"adapter {name!r} was retired on {retired.get('time', '?')} by "
                                    f"{retired.get('by', '?')}: {retired.get('reason', '')}", "retired",
                                    adapter=name)
            records = (self.consent.for_adapter(name, character) if operation != "train"
                       else self.consent.for_character(character))
            if not records:
                if self._unconsented_ok(test_model):
                    used.append({**_adapter_fields(entry), "consent": None})
                    continue
                raise not_permitted(
                    f"adapter {name!r} (character {character!r}) has no consent record in {self.consent.folder}; "
                    "this server refuses adapters without one (adapters_without_consent = \"refuse\")",
                    "missing_record", adapter=name, character=character)
            refusals = []
            for record in records:
                why = record.refusal(operation=operation, shot=shot, paths=paths, extend_frames=extend_frames,
                                     requester=requester, today=today)
                if why is None:
                    used.append({**_adapter_fields(entry), "consent": {"record": record.id, "sha256": record.sha256,
                                                                       "production": record.production}})
                    break
                refusals.append((record, *why))
            else:
                raise _refusal(name, character, refusals)
        return used

    def admit(self, operation: str, request, request_id: str, asserted_user: str | None, curve_user_id: str | None,
              engine) -> "Admission":
        """The submit-time decision: ``not_permitted`` (audited, then raised) or an :class:`Admission`."""
        requester = self.requester(asserted_user, curve_user_id, self._client_names())
        return self.admit_as(operation, request, request_id, requester, engine)

    def admit_as(self, operation: str, request, request_id: str, requester: Requester, engine=None,
                 test_model: bool | None = None, job_id: str | None = None) -> "Admission":
        """:meth:`admit` for a known requester: also what runs without a server (a farm bundle at submit and
        again when its first task starts, ``bodydouble train`` in its own process). ``engine``: the server's
        (adapter hashes from what it loaded), else the manifests on disk; ``test_model``: the model trained or
        used is a TEST model (default: the config's model of the request's kind)."""
        kind = _model_kind(operation, request, engine)
        if operation == "train":
            adapters = [{"name": request.name or _slug(request.character), "character": request.character,
                         "model_kind": request.model_kind}]
        else:
            adapters = [self._adapter_entry(engine, ref.name) for ref in request.adapters]
        keys = [self._adapter_entry(engine, ref.name) for ref in getattr(request, "key_adapters", [])]
        if test_model is None:
            test_model = _is_test_model(self.config, kind)
        try:
            used = self.check(operation, request, adapters, requester, test_model)
            # A fill's key adapters make its first frame (the video engine's key) on the image model: the
            # character's likeness too, judged as that model's adapters are.
            used += self.check(operation, request, keys, requester, _is_test_model(self.config, "image"))
        except errors.BodyDoubleError as exc:
            log.info("refused %s from %s: %s", operation, requester.name, exc.message)
            self.audit_submit(job=None, request_id=request_id, operation=operation, request=request,
                              adapters=[_adapter_fields(a) for a in adapters + keys], requester=requester, error=exc)
            raise
        return Admission(self, operation, request, request_id, requester, used, job_id)

    def admit_offline(self, operation: str, request, job_id: str, test_model: bool | None = None) -> "Admission":
        """A job that runs without a server (a farm bundle, ``bodydouble train`` here): the same consent check
        and audit lines, for the operating-system user (self-asserted, as on loopback), fsynced at once."""
        requester = Requester(name=getpass.getuser(), verified=False)
        try:
            admission = self.admit_as(operation, request, job_id, requester, None, test_model)
            admission.record(_OfflineJob(job_id))
        finally:
            self.audit.sync()
        return admission

    def _adapter_entry(self, engine, name: str) -> dict:
        """The listing entry the engine has (with the weights' sha256), else the manifest as the folder has it."""
        adapter = None if engine is None else next(
            (slot.adapters.adapters[name] for slot in engine.available() if name in slot.adapters.adapters), None)
        if adapter is not None:
            return adapter.describe()
        try:
            manifest = json.loads((self.adapters_dir / name / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {}
        return {"name": name, "character": manifest.get("character", "") if isinstance(manifest, dict) else "",
                "sha256": ""}

    def _client_names(self) -> dict[str, str]:
        """CURVE public key (z85) -> the name of its certificate file in the authorised-clients folder."""
        folder = self.config.curve_authorized_clients
        if not folder:
            return {}
        if self._names is None:
            import zmq.auth

            names = {}
            for path in sorted(Path(folder).glob("*.key")):
                try:
                    public, _ = zmq.auth.load_certificate(str(path))
                except (OSError, ValueError):
                    continue
                names[public.decode("ascii")] = path.stem
            self._names = names
        return self._names

    # -- audit ---------------------------------------------------------------------------------
    def audit_submit(self, *, job: str | None, request_id: str, operation: str, request, adapters: list[dict],
                     requester: Requester, error: errors.BodyDoubleError | None = None) -> dict:
        """The request's line (``error``: it was refused). Written at once but fsynced by ``audit.sync()``,
        which the socket loop calls before it sends the replies of its batch: one fsync per batch of submits."""
        shot, paths, extend_frames = _scope_of(operation, request)
        fields = {"job": job, "request": request_id, "operation": operation, **requester.to_dict(),
                  "adapters": adapters, "shot": shot, **_request_fields(operation, request)}
        if error is not None:
            fields.update(decision="refused", code=error.code, message=error.message,
                          rule=(error.details or {}).get("rule"), record=(error.details or {}).get("record"))
        else:
            fields["decision"] = "accepted"
        return self.audit.append("submit", sync=False, **fields)

    def audit_outcome(self, *, job: str, request_id: str, operation: str, state: str, take_dir: str | None,
                      frames_sha256: dict | None, error: str | None = None, adapter_dir: str | None = None) -> dict:
        extra = {"adapter_dir": adapter_dir} if adapter_dir else {}
        return self.audit.append("outcome", job=job, request=request_id, operation=operation, outcome=state,
                                 take_dir=take_dir, frames_sha256=frames_sha256 or {}, error=error, **extra)

    # -- retire --------------------------------------------------------------------------------
    def retire(self, name: str, reason: str, by: str | None = None) -> dict:
        """Withdraw an adapter: refused from now on, listed as retired, audited; its takes stay traceable."""
        folder = self.adapters_dir / name
        if not folder.is_dir():
            raise errors.RequestError(f"no adapter folder {folder}", code=errors.UNKNOWN_ADAPTER)
        if not reason.strip():
            raise errors.RequestError("retiring needs a reason", code=errors.INVALID_REQUEST)
        previous = self.retirement(name)
        if previous is not None:
            raise errors.RequestError(f"adapter {name!r} is already retired ({previous.get('reason', '')})",
                                      code=errors.INVALID_REQUEST)
        manifest = {}
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            pass
        from ..models.identity import file_sha256

        weights = folder / "pytorch_lora_weights.safetensors"
        record = {"adapter": name, "character": manifest.get("character", ""), "reason": reason.strip(),
                  "by": by or getpass.getuser(), "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "sha256": file_sha256(weights) if weights.is_file() else ""}
        line = self.audit.append("retire", **record)
        atomic.write_json(folder / RETIRED_FILE, {**record, "audit_seq": line["seq"]})
        return {**record, "audit_seq": line["seq"]}

    # -- provenance ----------------------------------------------------------------------------
    def signing_files(self) -> SigningFiles:
        if self._signing is None:
            cfg = self.config
            if cfg.signing_cert or cfg.signing_key:
                if not (cfg.signing_cert and cfg.signing_key):
                    raise errors.BodyDoubleError("signing_cert and signing_key go together")
                anchors = Path(cfg.trust_anchors).expanduser() if cfg.trust_anchors else None
                self._signing = SigningFiles(Path(cfg.signing_cert).expanduser(), Path(cfg.signing_key).expanduser(),
                                             anchors)
            else:
                self._signing = local_signing_files(self._local_signing_folder())
        return self._signing

    def trust_anchors(self) -> Path | None:
        """What verification trusts: the configured anchors, else the local signing CA if one was made."""
        if self.config.trust_anchors:
            return Path(self.config.trust_anchors).expanduser()
        if self.config.signing_cert:
            return None
        local = self._local_signing_folder() / "ca.pem"
        return local if local.is_file() else None

    def _local_signing_folder(self) -> Path:
        return Path(self.config.audit_log).expanduser().parent / "provenance"

    def sealer(self):
        if self._sealer is None:
            from .provenance import Sealer

            self._sealer = Sealer(self.signing_files())
        return self._sealer

    def seal_take(self, take) -> dict:
        """Sign the take's frames (sidecars; those ``seal_frame`` signed already are kept) and its review proxy;
        returns the record take.json keeps."""
        return self.sealer().seal_take(take.dir, take.stem, take.frames, self._seal_info(take), sealed=take.sealed)

    def seal_frame(self, take, frame: int, path) -> str:
        """One frame's sidecar as soon as it is written (returns the sha256 it was signed for)."""
        return self.sealer().seal_frame(path, frame, self._seal_info(take))

    def _seal_info(self, take) -> dict:
        """The take's info for its manifests: the adapters carry the consent record each was admitted under."""
        admission = self._admitted.get(take.info.get("job", ""))
        info = take.info
        if admission is not None:
            consent = {a["name"]: a.get("consent") for a in admission.adapters}
            info = {**info, "adapters": [{**a, "consent": consent.get(a.get("name"))} for a in info.get("adapters", [])],
                    "user": admission.requester.name}
        return info


class Admission:
    """A request that passed the policy: its submit line once it has a job id, its outcome line at the end."""

    def __init__(self, policy: Policy, operation: str, request, request_id: str, requester: Requester,
                 adapters: list[dict], job_id: str | None = None):
        self.policy, self.operation, self.request_id = policy, operation, request_id
        self.request, self.requester, self.adapters = request, requester, adapters
        self.job_id = job_id            # known up front for a job without a server, else set by record()

    def record(self, job) -> None:
        """``on_admit``: the submit line, fsynced before ``accepted`` goes out (by the socket loop's batch sync;
        without a server, call ``policy.audit.sync()``)."""
        self.policy.audit_submit(job=job.id, request_id=self.request_id, operation=self.operation,
                                 request=self.request, adapters=self.adapters, requester=self.requester)
        self.request = None          # the line has what the audit needs; pixels stay with the job only
        self.job_id = job.id
        self.policy._admitted[job.id] = self

    def finished(self, job, msg, state: str) -> None:
        """``on_finish``: the outcome line (take folder, each written frame's sha256) before the final reply."""
        self.policy._admitted.pop(job.id, None)
        self.ended(state, job.take_dir, error=msg.body.get("message") if msg.type == "error" else None,
                   adapter_dir=msg.body.get("adapter_dir") if msg.type == "result" else None)  # train: its adapter

    def ended(self, state: str, take_dir: str | None = None, error: str | None = None,
              adapter_dir: str | None = None) -> None:
        """The outcome line of the recorded job, served or run without a server; fsynced."""
        frames, take_dir = _written_frames(take_dir)
        self.policy.audit_outcome(job=self.job_id, request_id=self.request_id, operation=self.operation, state=state,
                                  take_dir=take_dir, frames_sha256=frames, error=error, adapter_dir=adapter_dir)
        self.policy.audit.sync()


@dataclasses.dataclass(frozen=True)
class _OfflineJob:
    id: str


def _written_frames(take_dir: str | None) -> tuple[dict, str | None]:
    """Each frame the take holds and its sha256: from the provenance record, else hashed now (a partial take)."""
    if not take_dir:
        return {}, None
    try:
        take = json.loads((Path(take_dir) / "take.json").read_text())
    except (OSError, ValueError):
        return {}, take_dir
    recorded = (take.get("provenance") or {}).get("frames_sha256") or {}
    frames = {}
    for frame, path in (take.get("frames") or {}).items():
        if frame in recorded:
            frames[frame] = recorded[frame]
        else:
            try:
                frames[frame] = _sha256(Path(path))
            except OSError as exc:
                frames[frame] = f"unreadable: {exc.strerror or exc}"
    return frames, take_dir


def _refusal(name: str, character: str, refusals: list[tuple[ConsentRecord, str, str]]) -> errors.RequestError:
    record, rule, why = refusals[0]
    if len(refusals) == 1:
        return not_permitted(f"not permitted by consent record {record.id!r} ({record.character}, "
                             f"{record.production}) for adapter {name!r}: {rule}: {why}", rule, record.id,
                             adapter=name, record_sha256=record.sha256)
    each = "; ".join(f"{r.id!r} ({r.production}): {rule_}: {why_}" for r, rule_, why_ in refusals)
    return not_permitted(f"no consent record for {character!r} permits this use of adapter {name!r}: {each}",
                         rule, record.id, adapter=name, records=[r.id for r, *_ in refusals],
                         rules=[rule_ for _, rule_, _ in refusals])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(text: str) -> str:
    """The adapter name training gives a character (training/settings.py)."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", text.strip()).strip("_").lower()


def _model_kind(operation: str, request, engine) -> str:
    """The kind of model a request runs on: a fill on the video engine (asked for, or picked by the server for
    a shot of video adapters) is judged by the video model, not the image one."""
    if operation == "train":
        return request.model_kind
    if operation == "fill":
        if engine is None:
            return "video" if getattr(request, "asks_for_video", False) else "image"
        from ..operations.sequence import engine_for

        return engine_for(request, engine)
    return MODEL_KINDS.get(operation, "image")


def _is_test_model(config, kind: str) -> bool:
    """Whether the server's model of ``kind`` is one of the TEST models (embedded default or ``test:*``)."""
    spec = config.video_model if kind == "video" else config.model
    return spec is None or str(spec).startswith("test:")


def _adapter_fields(entry: dict) -> dict:
    return {k: entry.get(k, "") for k in ("name", "character", "sha256", "version", "model_kind")}


def _scope_of(operation: str, request) -> tuple[str | None, list[str], int]:
    """(shot, plate and output paths, frames an extend adds) of a request."""
    if operation == "train":
        return None, [], 0
    from ..operations.common import shot_name

    frames = getattr(request, "frames", []) or []
    paths = [f.plate.path for f in frames if getattr(f.plate, "path", None)]
    if getattr(request, "output_dir", None):
        paths.append(request.output_dir)
    shot = shot_name(request.shot, request.output_dir, frames[0].plate) if frames else request.shot
    return shot, paths, int(getattr(request, "count", 0) or 0) if operation == "extend" else 0


def _request_fields(operation: str, request) -> dict:
    if request is None:
        return {}
    if operation == "train":
        return {"character": request.character, "adapter": request.name, "frames": list(request.frames),
                "seed": request.seed, "steps": request.steps, "model_kind": request.model_kind}
    frames = [f.frame for f in request.frames]
    out = {"frames": _ranges(frames), "prompt": request.prompt, "negative_prompt": request.negative_prompt,
           "seed": request.seed, "steps": request.steps,
           "plates": [f.plate.path or "buffer" for f in request.frames[:1]] + (
               [request.frames[-1].plate.path or "buffer"] if len(request.frames) > 1 else []),
           "output_dir": request.output_dir}
    if operation == "extend":
        out["count"] = request.count
    return out


def _ranges(frames: list[int]) -> str:
    """1001-1010,1015 (a frame list as people write it)."""
    out, start, prev = [], None, None
    for f in sorted(frames):
        if start is None:
            start = prev = f
        elif f == prev + 1:
            prev = f
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = f
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(out)
