"""An adapters folder that anyone can write to: one bad entry never takes the listing (or the server) down.

A real server on the embedded model (real diffusers LoRA loading) starts on a folder holding one good adapter
and copies of it broken one way each (tests/hostile.py): FIFO and /dev/zero manifests, a JSON array, a 2 MB
field, wrong field types, a folder linked from outside, weights half of which match no layer.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from bodydouble import errors, protocol
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, ImageRef

from . import hostile
from .support import make_adapters, server_thread


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from bodydouble_server.config import ServerConfig

    root = tmp_path_factory.mktemp("hostile-adapters")
    adapters = root / "adapters"
    make_adapters(adapters, {"hero": 7})
    cases = hostile.hostile_adapters(adapters, adapters / "hero")
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(adapters), output_root=str(root / "takes"),
                          resolution=64)
    # A long heartbeat: on a loaded CI box a busy server may miss 1 s beats; liveness is not what is tested here.
    with server_thread(config) as srv, Client(srv.bound_address, timeout=30, heartbeat_interval=3.0) as client:
        client.wait_ready()
        yield {"root": root, "adapters": adapters, "client": client, "cases": cases}


def test_each_bad_adapter_is_invalid_with_its_reason_and_the_good_one_is_ready(served):
    listed = {a.name: a for a in served["client"].list_adapters()}
    assert listed["hero"].status == "ready"
    for name, why in served["cases"].items():
        assert listed[name].status == "invalid", (name, listed[name])
        assert why in listed[name].reason, (name, listed[name].reason)
    # Nothing of the 2 MB field reaches the wire; every entry is small.
    assert max(len(json.dumps(a.raw)) for a in listed.values()) < 3000


def test_a_broken_adapter_is_refused_by_name_and_the_server_keeps_answering(served):
    plate = np.ones((32, 32, 4), np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    for name in ("half_unknown", "array_manifest", "escaped"):
        with pytest.raises(errors.RequestError) as caught:
            served["client"].submit(FillRequest(frames=[FrameInput(1, ImageRef(pixels=plate), ImageRef(pixels=mask))],
                                                adapters=[AdapterRef(name)], steps=1)).wait(timeout=60)
        assert caught.value.code == "unknown_adapter", name
    assert not list(served["root"].glob("**/take_*"))
    assert served["client"].heartbeat()["state"] == "ready"


def test_rescan_survives_new_hostile_entries_and_the_listing_fits_the_reply_limit(served):
    adapters = served["adapters"]
    hostile.fifo(adapters / "late_fifo_manifest.json")          # a FIFO where a folder should be
    (adapters / "a_late").mkdir()
    hostile.fifo(adapters / "a_late" / "manifest.json")
    # Many adapters with long fields (no weights: nothing to load, the listing is what is tested): the listing
    # stays under the client's header limit.
    good = json.loads((adapters / "hero" / "manifest.json").read_text())
    for index in range(450):
        folder = adapters / f"crowd_{index:03d}_{'n' * 100}"
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({**good, "character": "c" * 10_000, "licence": "l" * 60_000,
                                                          "rights_holder": "r" * 5_000, "version": "v" * 500}))
    listed = served["client"].rescan()
    names = {a.name: a for a in listed}
    assert names["a_late"].status == "invalid" and "not a regular file" in names["a_late"].reason
    assert len(listed) == 384       # at most MAX_LISTED, first by name (the rest are logged)
    body = json.dumps({"adapters": [a.raw for a in listed]})
    assert len(body.encode()) < protocol.Limits().max_header_bytes
    assert served["client"].heartbeat()["state"] == "ready"
