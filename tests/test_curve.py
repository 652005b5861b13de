"""Opt-in CURVE for remote use: encrypted connections, and only authorised clients when configured."""
import time

import zmq
import zmq.auth

from bodydouble import errors
from bodydouble.client import Client
from bodydouble_server.cli import start_in_thread
from bodydouble_server.config import ServerConfig


def test_curve_encrypts_and_authorises(tmp_path):
    keys, allowed = tmp_path / "keys", tmp_path / "clients"
    keys.mkdir()
    allowed.mkdir()
    _, server_secret = zmq.auth.create_certificates(keys, "server")
    _, artist_secret = zmq.auth.create_certificates(keys, "artist")
    (allowed / "artist.key").write_bytes((keys / "artist.key").read_bytes())  # the server sees public halves only
    server_public, _ = zmq.auth.load_certificate(server_secret)
    pub, sec = zmq.auth.load_certificate(artist_secret)

    server, thread = start_in_thread(ServerConfig(port=0, roots=[str(tmp_path)], curve_certificate=str(server_secret),
                                                  curve_authorized_clients=str(allowed)))
    try:
        with Client(server.bound_address, timeout=30, curve={"server_key": server_public, "public_key": pub,
                                                                 "secret_key": sec}) as artist:
            assert artist.connect()["server"] == "bodydouble"
        stranger = Client(server.bound_address, timeout=1.5, curve={"server_key": server_public})
        plain = Client(server.bound_address, timeout=1.5)
        try:
            for client in (stranger, plain):
                try:
                    client.connect()
                    raise AssertionError("an unauthorised client got an answer")
                except errors.ServerNotRunning:
                    pass
        finally:
            for client in (stranger, plain):
                t0 = time.monotonic()
                client.close()
                # Its hello could never be sent (no handshake): close must not wait on a blocked I/O thread.
                assert time.monotonic() - t0 < 2 and not client._conn._thread.is_alive()
    finally:
        server.stop()
        thread.join(10)
