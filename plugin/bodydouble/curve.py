"""CURVE keys for a client from certificate files (``zmq.auth.create_certificates``), for a remote server.

The server's *public* certificate says whom we talk to; our own *secret* certificate says who we are (a
server with ``--curve-clients`` admits only listed public halves). Without one, the client makes a
throw-away key pair: encrypted, but only accepted by a server that admits any client. Hosts and the
command line read the same two environment variables, so a studio sets them once per artist.
"""
from __future__ import annotations

import os

from . import errors

SERVER_CERT_ENV = "BODYDOUBLE_CURVE_SERVER"   # the server's public certificate file (server.key)
CLIENT_CERT_ENV = "BODYDOUBLE_CURVE_CLIENT"   # this user's secret certificate file (artist.key_secret)
CONFIG_ERROR = "client_config"


def keys_from_files(server_cert: str, client_cert: str | None = None) -> dict:
    """``Client(curve=...)`` keys; a clear error for a missing file or the wrong half of a certificate."""
    import zmq.auth

    server_public, _ = _load(zmq.auth, server_cert, "server certificate")
    keys = {"server_key": server_public}
    if client_cert:
        public, secret = _load(zmq.auth, client_cert, "client certificate")
        if secret is None:
            raise errors.BodyDoubleError(f"{client_cert} is a public certificate; the client needs its secret one "
                                         "(the .key_secret file)", code=CONFIG_ERROR)
        keys.update(public_key=public, secret_key=secret)
    return keys


def keys_for(server_cert: str = "", client_cert: str = "") -> dict | None:
    """Keys from the files a host's settings (or the command line) name; with none named, the environment's."""
    if client_cert and not server_cert:
        raise errors.BodyDoubleError("a client certificate needs the server's public certificate too",
                                     code=CONFIG_ERROR)
    return keys_from_files(server_cert, client_cert or None) if server_cert else keys_from_env()


def keys_from_env() -> dict | None:
    """Keys named by the environment, or None (plain TCP) when it names no server certificate."""
    server = os.environ.get(SERVER_CERT_ENV, "").strip()
    if not server:
        return None
    return keys_from_files(server, os.environ.get(CLIENT_CERT_ENV, "").strip() or None)


def _load(auth, path: str, what: str):
    try:
        return auth.load_certificate(os.path.expanduser(path))
    except (OSError, ValueError) as exc:
        raise errors.BodyDoubleError(f"cannot read the {what} {path}: {exc}", code=CONFIG_ERROR) from None
