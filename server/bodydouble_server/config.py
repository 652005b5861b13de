"""Server settings: a TOML file, overridden by command-line flags.

    # bodydouble-server.toml
    port = 5555
    host = "127.0.0.1"                 # loopback only unless you mean it
    model = "/models/sd15-inpaint"     # diffusers folder or single-file checkpoint; unset = embedded test model
    family = "sd15"                    # needed only for single-file checkpoints
    model_config = "/models/sd15-inpaint-configs"  # diffusers config folder for single-file checkpoints
    video_model = "/models/wan2.1-vace-14b"        # extend's video model (diffusers folder, loaded on the first
                                                   # extend); unset = embedded test video model; "none" = no extend
    video_resolution = 832             # extend's generation long side; default: the video family's
    video_window = 81                  # frames per video pipeline call (conditioning included); lower = less memory
    adapters = "/studio/bodydouble/adapters"
    roots = ["/shows", "/scratch/bodydouble"]      # the only folders read from or written to
    output_root = "/scratch/bodydouble"            # where takes go when a request names no output_dir
    device = "auto"                    # auto | cpu | cuda | cuda:1
    dtype = "auto"                     # auto | float32 | float16 | bfloat16
    resolution = 512                   # generation long side; default: the model family's
    fill_batch = 0                     # frames per fill pipeline call; 0 = auto (a CUDA GPU with memory to spare: 2-4; CPU: 1)
    # Remote use (opt-in): CURVE encryption with this server certificate (zmq.auth.create_certificates), and
    # optionally only the clients whose public certificates are in this folder.
    curve_certificate = "/etc/bodydouble/server.key_secret"
    curve_authorized_clients = "/etc/bodydouble/clients"
    # Guardrails (docs/guardrails.md): consent records, the audit log, C2PA signing of takes.
    consent_dir = "/studio/legal/bodydouble-consent"   # one TOML record per character and production
    adapters_without_consent = "refuse"               # refuse | allow
    audit_log = "/var/lib/bodydouble/audit.log"       # default: <home>/state/audit.log
    signing_cert = "/etc/bodydouble/c2pa-chain.pem"   # default: a local chain made in <audit log folder>/provenance
    signing_key = "/etc/bodydouble/c2pa-key.pem"
    trust_anchors = "/etc/bodydouble/c2pa-ca.pem"     # what `provenance verify` trusts
    # Scale-out (docs/scale-out.md): hand fill, extend and train jobs to a Ray Serve GPU pool instead of this machine's GPU.
    pool = "ray://render-head:10001"   # ray://HOST:PORT (Ray Client), HOST:PORT (GCS), or auto
    pool_stall_timeout = 600           # seconds a pool job may go without progress (the pool's, any job's) before it
                                       # ends with model_unavailable and its take is marked interrupted
    [limits]
    max_frame_pixels = 67108864
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from bodydouble import errors, protocol

DTYPES = ("auto", "float32", "float16", "bfloat16")


def default_home() -> Path:
    return Path(os.environ.get("BODYDOUBLE_HOME") or Path.home() / "bodydouble")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5555
    model: str | None = None
    family: str | None = None
    model_config: str | None = None
    adapters: str = ""
    roots: list[str] = field(default_factory=list)
    output_root: str = ""
    device: str = "auto"
    dtype: str = "auto"
    resolution: int | None = None
    fill_batch: int = 0                     # frames per fill pipeline call; 0 = auto (operations/common.fill_batch)
    video_model: str | None = None
    video_resolution: int | None = None
    video_window: int | None = None
    curve_certificate: str | None = None
    curve_authorized_clients: str | None = None
    consent_dir: str = ""                   # default <home>/consent
    adapters_without_consent: str = "refuse"
    # Adapters of the embedded TEST models (random weights: no one's likeness) need no record; rules of a
    # record that covers them still apply.
    consent_exempt_test_models: bool = True
    audit_log: str = ""                     # default <home>/state/audit.log
    audit_rotate_mb: float = 64.0
    signing_cert: str | None = None
    signing_key: str | None = None
    trust_anchors: str | None = None
    pool: str | None = None                 # a Ray Serve GPU pool address (scale/pool.py); unset = this machine
    pool_stall_timeout: float = 600.0       # seconds without progress before a pool job is given up (scale/pool.py)
    limits: protocol.Limits = field(default_factory=protocol.Limits)

    def __post_init__(self) -> None:
        home = default_home()
        self.consent_dir = self.consent_dir or str(home / "consent")
        self.audit_log = self.audit_log or str(home / "state" / "audit.log")
        if self.adapters_without_consent not in ("refuse", "allow"):
            raise ValueError(f"adapters_without_consent must be 'refuse' or 'allow', got {self.adapters_without_consent!r}")
        self.adapters = self.adapters or str(home / "adapters")
        self.output_root = self.output_root or (self.roots[0] if self.roots else str(home / "takes"))
        if not self.roots:
            self.roots = [self.output_root]
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not 0 <= self.fill_batch <= 16:
            raise ValueError(f"fill_batch must be in 0..16 (0 = auto), got {self.fill_batch}")
        if not self.pool_stall_timeout > 0:
            raise ValueError(f"pool_stall_timeout must be a positive number of seconds, got {self.pool_stall_timeout}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "ServerConfig":
        data: dict = {}
        if path:
            try:
                data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise errors.BodyDoubleError(f"cannot read config {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise errors.BodyDoubleError(f"config {path}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        limits = data.pop("limits", {})
        try:
            data["limits"] = replace(protocol.Limits(), **limits)
        except TypeError as exc:
            raise errors.BodyDoubleError(f"config {path}: bad [limits]: {exc}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)
