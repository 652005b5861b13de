"""C2PA provenance of takes through the real server: EXR sidecars bound to each frame's bytes, an embedded
manifest in the review proxy, read back and validated with c2pa-python's Reader against a test certificate
chain made with ``cryptography``; a frame changed after the take fails ``bodydouble provenance verify``."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from bodydouble.client import Client
from bodydouble.cli import main
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, sequence_frames

from .support import server_thread

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    """A fill take and an extend take from a server that signs with a studio test chain."""
    import os

    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.models import testing
    from bodydouble_server.policy import certs

    root = tmp_path_factory.mktemp("provenance")
    chain = certs.make_chain(root / "pki", organisation="Studio Test PKI")
    plate, mask = samples.write_sequence(root / "plates", 1001, 1002, 64, 48)
    config = ServerConfig(port=0, model="test:standin", video_model="test:standin", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=64,
                          audit_log=str(root / "state" / "audit.log"), signing_cert=str(chain.chain),
                          signing_key=str(chain.key), trust_anchors=str(chain.anchors))
    engine = Engine(config)
    engine.load()
    testing.test_adapter(root / "adapters" / "hero", engine.identity, "Hero", 1)
    testing.test_adapter(root / "adapters" / "hero_video", engine.video.identity, "Hero", 2, kind="video")
    previous = os.environ.get(testing.STEP_ENV)
    os.environ[testing.STEP_ENV] = "0"
    try:
        with server_thread(config) as srv, Client(srv.bound_address, timeout=60) as client:
            listing = {a.name: a.sha256 for a in client.list_adapters()}
            fill = client.submit(FillRequest(frames=sequence_frames(plate, 1001, 1002, mask), steps=1, shot="sh010",
                                             adapters=[AdapterRef("hero")], prompt="<hero>", seed=4)).wait(timeout=60)
            extend = client.submit(ExtendRequest(frames=sequence_frames(plate, 1001, 1002), count=3, steps=1,
                                                 shot="sh010", adapters=[AdapterRef("hero_video")])).wait(timeout=60)
    finally:
        if previous is None:
            os.environ.pop(testing.STEP_ENV, None)
        else:
            os.environ[testing.STEP_ENV] = previous
    return {"chain": chain, "fill": fill, "extend": extend, "adapters": listing, "image": engine.identity,
            "video": engine.video.identity}


def _reader(path: Path, anchors: Path, sidecar: bytes | None = None):
    import c2pa

    context = c2pa.Context(c2pa.Settings.from_dict({"verify": {"verify_trust": True},
                                                    "trust": {"trust_anchors": anchors.read_text()}}))
    mime = "image/x-exr" if path.suffix == ".exr" else "image/png"
    return c2pa.Reader(mime, io.BytesIO(path.read_bytes()), manifest_data=sidecar, context=context)


def _generation(manifest: dict) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == "com.bodydouble.generation")


def _source_type(manifest: dict) -> str:
    actions = next(a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    return actions[0]["digitalSourceType"]


@pytest.mark.parametrize("operation, adapter, source_type", [
    ("fill", "hero", "compositeWithTrainedAlgorithmicMedia"),
    ("extend", "hero_video", "trainedAlgorithmicMedia"),
])
def test_every_frame_has_a_trusted_sidecar_bound_to_its_bytes(takes, operation, adapter, source_type):
    result, anchors = takes[operation], takes["chain"].anchors
    identity = takes["image" if operation == "fill" else "video"]
    take = json.loads(Path(result.take_dir, "take.json").read_text())
    assert take["status"] == "complete" and take["provenance"]["c2pa"] is True
    for frame, path in result.frames.items():
        path = Path(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert take["provenance"]["frames_sha256"][str(frame)] == digest
        sidecar = path.with_suffix(".c2pa")
        with _reader(path, anchors, sidecar.read_bytes()) as reader:
            assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
            manifest = reader.get_active_manifest()
        assert manifest["signature_info"]["issuer"] == "Studio Test PKI"
        assert _source_type(manifest) == IPTC + source_type
        generation = _generation(manifest)
        assert generation["frame"] == frame and generation["sha256"] == digest
        assert generation["operation"] == operation and generation["job"] == result.job
        ingredients = {i["instance_id"] for i in manifest["ingredients"]}
        assert ingredients == {f"sha256:{takes['adapters'][adapter]}", f"sha256:{identity.sha256}"}
        assert generation["base_model"]["test_model"] is True


def test_review_proxy_carries_an_embedded_manifest(takes):
    result, anchors = takes["fill"], takes["chain"].anchors
    take = json.loads(Path(result.take_dir, "take.json").read_text())
    proxy = Path(result.take_dir) / take["provenance"]["proxy"]
    assert proxy.name.endswith(".proxy.png") and proxy.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with _reader(proxy, anchors) as reader:
        assert reader.get_validation_state() == "Trusted" and reader.is_embedded()
        manifest = reader.get_active_manifest()
    assert _source_type(manifest) == IPTC + "compositeWithTrainedAlgorithmicMedia"
    assert _generation(manifest)["frames_sha256"] == take["provenance"]["frames_sha256"]


def test_provenance_verify_catches_a_frame_modified_after_the_take(takes, tmp_path, capsys):
    import shutil

    from bodydouble_server.policy import certs

    take_dir = tmp_path / "take"
    shutil.copytree(takes["extend"].take_dir, take_dir)
    anchors = str(takes["chain"].anchors)
    assert main(["provenance", "verify", str(take_dir), "--trust-anchors", anchors]) == 0
    assert "verified: 4/4 files" in capsys.readouterr().err          # 3 frames and the proxy

    # Signed by a certificate this studio does not trust: valid signatures, not trusted.
    stranger = certs.make_chain(tmp_path / "other-pki", organisation="Someone Else")
    assert main(["provenance", "verify", str(take_dir), "--trust-anchors", str(stranger.anchors)]) == 1
    capsys.readouterr()

    frame = sorted(take_dir.glob("*.exr"))[1]
    data = bytearray(frame.read_bytes())
    data[-100] ^= 0x01                                                # one bit of one frame
    frame.write_bytes(bytes(data))
    assert main(["provenance", "verify", str(take_dir), "--trust-anchors", anchors]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {frame.name}: Invalid" in out and "assertion.dataHash.mismatch" in out
    assert "differs from the take's record" in out
    assert sum(line.startswith("OK") for line in out.splitlines()) == 3   # the other frames and the proxy still pass

    frame.with_suffix(".c2pa").unlink()
    assert main(["provenance", "verify", str(take_dir), "--trust-anchors", anchors, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and "sidecar manifest missing" in json.dumps(report)


def test_a_take_is_never_complete_without_provenance(tmp_path, monkeypatch):
    """A signing certificate C2PA refuses (no digitalSignature usage): the take fails, clearly, and never says
    complete."""
    from bodydouble import errors
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import testing
    from bodydouble_server.policy import certs

    monkeypatch.setenv(testing.STEP_ENV, "0")
    bad = certs.make_chain(tmp_path / "pki", signer_usage_ok=False)
    plate, mask = samples.write_sequence(tmp_path / "plates", 1001, 1001, 32, 24)
    config = ServerConfig(port=0, model="test:standin", video_model="none", roots=[str(tmp_path)],
                          adapters=str(tmp_path / "adapters"), output_root=str(tmp_path / "takes"), resolution=64,
                          audit_log=str(tmp_path / "state" / "audit.log"), signing_cert=str(bad.chain),
                          signing_key=str(bad.key))
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60) as client:
        with pytest.raises(errors.RequestError) as caught:
            client.submit(FillRequest(frames=sequence_frames(plate, 1001, 1001, mask), steps=1, shot="sh")).wait(60)
    assert caught.value.code == errors.JOB_FAILED and "provenance could not be written" in caught.value.message
    take = json.loads(next((tmp_path / "takes").glob("**/take.json")).read_text())
    assert take["status"] == "failed" and "provenance" in take["error"]
