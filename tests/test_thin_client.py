"""The thin client installs into a host's Python: importing it must never pull torch or OpenImageIO."""
import subprocess
import sys

import pytest

from bodydouble import errors
from bodydouble.client import Client

from .support import free_port


def test_importing_the_client_does_not_import_heavy_packages():
    code = ("import sys, bodydouble, bodydouble.client, bodydouble.cli, bodydouble.background, bodydouble.jobspec;"
            "heavy = [m for m in ('torch', 'diffusers', 'OpenImageIO', 'transformers', 'peft') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_server_not_running_is_a_clear_error_at_once():
    port = free_port()
    client = Client(f"tcp://127.0.0.1:{port}", timeout=5)
    try:
        with pytest.raises(errors.ServerNotRunning) as info:
            client.connect()
        assert f"bodydouble serve --port {port}" in str(info.value)
    finally:
        client.close()


def test_a_silent_peer_is_reported_not_waited_on_forever():
    """Something listens on the port but never answers (not a BodyDouble server)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = Client(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=1)
    try:
        with pytest.raises(errors.ServerNotRunning, match="did not answer|answered"):
            client.connect()
    finally:
        client.close()
        listener.close()
