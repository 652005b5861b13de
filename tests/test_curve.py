"""Opt-in CURVE for remote use: encrypted connections, and only authorised clients when configured."""
import time
from pathlib import Path

import zmq
import zmq.auth

from bodydouble import errors
from bodydouble.client import Client
from bodydouble_server.cli import start_in_thread
from bodydouble_server.config import ServerConfig


def test_curve_encrypts_and_authorises(tmp_path, caplog):
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
                except errors.ServerNotRunning as exc:
                    # The refused CURVE client is told why it may be, not only "is the server running?"
                    assert ("CURVE key" in str(exc)) == (client is stranger), exc
            # ... and the server's log says it refused one (pyzmq logs it at debug level only).
            assert any("DENIED" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
        finally:
            for client in (stranger, plain):
                t0 = time.monotonic()
                client.close()
                # Its hello could never be sent (no handshake): close must not wait on a blocked I/O thread.
                assert time.monotonic() - t0 < 2 and not client._conn._thread.is_alive()
    finally:
        server.stop()
        thread.join(10)


def test_cli_and_environment_take_certificate_files(tmp_path, monkeypatch, capsys):
    from bodydouble import cli, curve

    keys, allowed = tmp_path / "keys", tmp_path / "clients"
    keys.mkdir()
    allowed.mkdir()
    server_public_file, server_secret = zmq.auth.create_certificates(keys, "server")
    artist_public_file, artist_secret = zmq.auth.create_certificates(keys, "artist")
    (allowed / "artist.key").write_bytes(Path(artist_public_file).read_bytes())
    for var in (curve.SERVER_CERT_ENV, curve.CLIENT_CERT_ENV):
        monkeypatch.delenv(var, raising=False)
    server, thread = start_in_thread(ServerConfig(port=0, roots=[str(tmp_path)], curve_certificate=str(server_secret),
                                                  curve_authorized_clients=str(allowed)))
    address = server.bound_address
    try:
        flags = ["--server", address, "--curve-server-cert", str(server_public_file)]
        assert cli.main(["adapters", "--json", *flags, "--curve-client-cert", str(artist_secret)]) == 0
        assert capsys.readouterr().out.strip() == "[]"
        # The wrong half of the artist's certificate, a missing file, a client cert alone: said before connecting.
        assert cli.main(["adapters", *flags, "--curve-client-cert", str(artist_public_file)]) == 1
        assert "is a public certificate; the client needs its secret one" in capsys.readouterr().err
        assert cli.main(["adapters", "--server", address, "--curve-server-cert", str(tmp_path / "nope.key")]) == 1
        assert "cannot read the server certificate" in capsys.readouterr().err
        assert cli.main(["adapters", "--server", address, "--curve-client-cert", str(artist_secret)]) == 1
        assert "needs the server's public certificate too" in capsys.readouterr().err
        # Hosts construct Client(address) only: the environment gives them the same keys.
        monkeypatch.setenv(curve.SERVER_CERT_ENV, str(server_public_file))
        monkeypatch.setenv(curve.CLIENT_CERT_ENV, str(artist_secret))
        with Client(address, timeout=30) as artist:
            assert artist.connect()["server"] == "bodydouble"
    finally:
        server.stop()
        thread.join(10)
