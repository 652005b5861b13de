"""Consent scope per character, enforced by the server at submit time through real sockets.

Each rule is broken once and refused with ``not_permitted``, the rule and the record named, before anything
is written (no take folder); the audit log holds every decision. Runs on the test stand-in model (no sleep per
step) with the test-model exemption switched off, so the rules apply as they do on a real model.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, sequence_frames

from .support import server_thread

RECORDS = {
    # character, production, operations, shots, expires, extra
    "hero-showa": ("Hero", "Show A", ["fill", "extend"], ["sh010", "SHA_0*"], "2099-12-31",
                   'max_extend_frames = 4\nusers = ["alice", "bob"]\nvalid_from = 2020-01-01'),
    "sidekick-showa": ("Sidekick", "Show A", ["fill"], ["*"], "2099-12-31", ""),
    "old-timer": ("Old Timer", "Show Z", ["fill", "extend"], ["*"], "2020-06-30", ""),
    "retiree-showa": ("Retiree", "Show A", ["fill"], ["*"], "2099-12-31", ""),
    "changed-showa": ("Changed", "Show A", ["fill"], ["*"], "2099-12-31", ""),
}
ADAPTERS = {"hero": ("Hero", "image"), "hero_video": ("Hero", "video"), "sidekick_video": ("Sidekick", "video"),
            "old_timer": ("Old Timer", "image"), "stranger": ("Stranger", "image"), "retiree": ("Retiree", "image"),
            "changed": ("Changed", "image")}


def write_record(folder: Path, record_id: str, character: str, production: str, operations, shots, expires: str,
                 extra: str = "", document: Path | None = None) -> Path:
    """A consent record as legal would write it, with a real consent document and its sha256."""
    document = document or folder / "documents" / f"{record_id}.pdf"
    document.parent.mkdir(parents=True, exist_ok=True)
    if not document.exists():
        document.write_bytes(f"%PDF consent of {character} for {production}".encode())
    path = folder / f"{record_id}.toml"
    path.write_text(f'character = "{character}"\nproduction = "{production}"\noperations = {json.dumps(operations)}\n'
                    f'shots = {json.dumps(shots)}\nexpires = {expires}\n{extra}\n'
                    f'document = "{document}"\ndocument_sha256 = "{hashlib.sha256(document.read_bytes()).hexdigest()}"\n')
    return path


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.models import testing

    root = tmp_path_factory.mktemp("consent")
    plate, mask = samples.write_sequence(root / "shots" / "plates", 1001, 1002, 48, 32)
    consent = root / "consent"
    consent.mkdir()
    for record_id, (character, production, ops, shots, expires, extra) in RECORDS.items():
        write_record(consent, record_id, character, production, ops, shots, expires, extra)
    # The consent document changed after the record was signed off: the record no longer permits anything.
    (consent / "documents" / "changed-showa.pdf").write_bytes(b"%PDF a different agreement")
    config = ServerConfig(port=0, model="test:standin", video_model="test:standin", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=64,
                          consent_dir=str(consent), consent_exempt_test_models=False,
                          audit_log=str(root / "state" / "audit.log"))
    engine = Engine(config)
    engine.load()
    for seed, (name, (character, kind)) in enumerate(ADAPTERS.items()):
        identity = engine.video.identity if kind == "video" else engine.identity
        testing.test_adapter(root / "adapters" / name, identity, character, seed, kind=kind)
    previous = os.environ.get(testing.STEP_ENV)
    os.environ[testing.STEP_ENV] = "0"
    try:
        with server_thread(config) as srv:
            yield {"root": root, "plate": plate, "mask": mask, "server": srv, "config": config}
    finally:
        if previous is None:
            os.environ.pop(testing.STEP_ENV, None)
        else:
            os.environ[testing.STEP_ENV] = previous


def _fill(data, adapter: str, shot: str = "sh010") -> FillRequest:
    return FillRequest(frames=sequence_frames(data["plate"], 1001, 1002, data["mask"]),
                       adapters=[AdapterRef(adapter)], steps=1, shot=shot, prompt="<hero> from behind", seed=3)


def _extend(data, adapter: str, count: int, shot: str = "sh010") -> ExtendRequest:
    return ExtendRequest(frames=sequence_frames(data["plate"], 1001, 1002), count=count, adapters=[AdapterRef(adapter)],
                         steps=1, shot=shot)


def _refused(client: Client, request) -> errors.BodyDoubleError:
    with pytest.raises(errors.RequestError) as caught:
        client.submit(request).wait(timeout=60)
    assert caught.value.code == errors.NOT_PERMITTED, caught.value
    return caught.value


def test_each_rule_is_refused_with_its_rule_and_record_before_any_work(guarded):
    address = guarded["server"].bound_address
    takes = guarded["root"] / "takes"
    with Client(address, timeout=30, user="alice") as alice:
        cases = [
            (_extend(guarded, "sidekick_video", 2), "operation", "sidekick-showa", "extend is not an allowed operation"),
            (_fill(guarded, "hero", shot="sh999"), "shot", "hero-showa", "shot 'sh999'"),
            (_fill(guarded, "old_timer"), "expired", "old-timer", "consent expired on 2020-06-30"),
            (_extend(guarded, "hero_video", 5), "extend_length", "hero-showa", "at most 4 new frames"),
            (_fill(guarded, "stranger"), "missing_record", None, "has no consent record"),
            (_fill(guarded, "changed"), "record_invalid", "changed-showa", "no longer matches document_sha256"),
        ]
        for request, rule, record, text in cases:
            error = _refused(alice, request)
            assert error.details["rule"] == rule and error.details["record"] == record, (rule, error.details)
            assert text in error.message and (record is None or record in error.message), error.message
            assert error.details["adapter"] == request.adapters[0].name
        assert not (takes / "sh999").exists() and not any(takes.glob("**/take.json")), "a refusal writes nothing"

        # Within scope the same adapters work: fill on an allowed shot, extend up to the cap.
        fill = alice.submit(_fill(guarded, "hero", shot="SHA_010_a")).wait(timeout=60)
        extend = alice.submit(_extend(guarded, "hero_video", 4)).wait(timeout=60)
        assert len(fill.frames) == 2 and len(extend.frames) == 4

        # A video-engine fill's key adapters fill its first frame: consent is checked for them too.
        keyed = FillRequest(frames=sequence_frames(guarded["plate"], 1001, 1002, guarded["mask"]), steps=1,
                            shot="sh010", adapters=[AdapterRef("hero_video")], key_adapters=[AdapterRef("stranger")])
        error = _refused(alice, keyed)
        assert error.details["rule"] == "missing_record" and error.details["adapter"] == "stranger", error.details

    with Client(address, timeout=30, user="mallory") as mallory:
        error = _refused(mallory, _fill(guarded, "hero"))
        assert error.details["rule"] == "user" and "'mallory' (self-asserted user name)" in error.message


def test_audit_log_holds_every_decision(guarded):
    from bodydouble_server.policy import audit

    log = Path(guarded["config"].audit_log)
    with Client(guarded["server"].bound_address, timeout=30, user="bob") as bob:
        _refused(bob, _fill(guarded, "hero", shot="nope"))
        result = bob.submit(_fill(guarded, "hero")).wait(timeout=60)
    lines = [line.record for line in audit.read_lines(log)]
    refused = [r for r in lines if r["event"] == "submit" and r.get("shot") == "nope"][-1]
    assert refused["decision"] == "refused" and refused["rule"] == "shot" and refused["record"] == "hero-showa"
    assert refused["user"] == "bob" and refused["user_verified"] is False and refused["job"] is None
    submit = next(r for r in lines if r["event"] == "submit" and r.get("job") == result.job)
    assert submit["decision"] == "accepted" and submit["adapters"][0]["consent"]["record"] == "hero-showa"
    assert submit["adapters"][0]["sha256"] and submit["prompt"] == "<hero> from behind" and submit["seed"] == 3
    assert submit["frames"] == "1001-1002" and submit["shot"] == "sh010" and submit["operation"] == "fill"
    outcome = next(r for r in lines if r["event"] == "outcome" and r.get("job") == result.job)
    assert outcome["seq"] > submit["seq"] and outcome["outcome"] == "complete"
    assert outcome["take_dir"] == result.take_dir
    assert outcome["frames_sha256"] == {str(f): hashlib.sha256(Path(p).read_bytes()).hexdigest()
                                        for f, p in result.frames.items()}
    assert audit.verify(log).ok


def test_listing_and_hello_show_each_adapters_scope(guarded):
    with Client(guarded["server"].bound_address, timeout=30) as client:
        info = client.connect()
        adapters = {a.name: a for a in client.list_adapters()}
        listing = {name: a.raw["policy"] for name, a in adapters.items()}
    # What every host's picker reads: not usable -> greyed out with the policy's reason.
    assert (adapters["stranger"].status, adapters["stranger"].reason) == (
        "not_permitted", "no consent record for character 'Stranger'")
    assert adapters["hero"].status == "ready" and adapters["old_timer"].status == "not_permitted"
    hero = listing["hero"]
    assert hero["usable"] and hero["records"][0]["record"] == "hero-showa"
    assert hero["records"][0]["operations"] == ["fill", "extend"] and hero["records"][0]["max_extend_frames"] == 4
    assert listing["stranger"] == {**listing["stranger"], "usable": False,
                                   "reason": "no consent record for character 'Stranger'"}
    assert not listing["old_timer"]["usable"] and listing["old_timer"]["reason"] == "consent expired"
    assert not listing["changed"]["usable"] and "document_sha256" in listing["changed"]["reason"]
    policy = info["policy"]
    assert policy["adapters_without_consent"] == "refuse" and policy["consent_exempt_test_models"] is False
    assert policy["users"] == "self-asserted"           # no CURVE client list: names are the clients' word
    assert policy["adapters"]["stranger"]["usable"] is False and policy["adapters"]["hero"]["usable"] is True


def test_retired_adapter_is_refused_listed_and_audited(guarded, capsys):
    from bodydouble.cli import main
    from bodydouble_server.policy import audit

    config = guarded["config"]
    with Client(guarded["server"].bound_address, timeout=30, user="alice") as client:
        before = client.submit(_fill(guarded, "retiree")).wait(timeout=60)
        assert main(["adapters", "retire", "retiree", "--reason", "performer withdrew consent 2026-12-01",
                     "--audit-log", config.audit_log, "--adapters", config.adapters]) == 0
        error = _refused(client, _fill(guarded, "retiree"))
        listing = {a.name: a.raw["policy"] for a in client.list_adapters()}
    assert error.details["rule"] == "retired" and "performer withdrew consent" in error.message
    assert not listing["retiree"]["usable"] and listing["retiree"]["reason"].startswith("retired: performer withdrew")
    line = [r.record for r in audit.read_lines(Path(config.audit_log)) if r.record["event"] == "retire"][-1]
    assert line["adapter"] == "retiree" and line["character"] == "Retiree" and line["sha256"]
    # Its earlier take stays traceable: the take folder and its frames' hashes are in the log.
    outcome = [r.record for r in audit.read_lines(Path(config.audit_log))
               if r.record.get("job") == before.job and r.record["event"] == "outcome"][0]
    assert outcome["take_dir"] == before.take_dir and Path(before.take_dir, "take.json").is_file()
    assert main(["adapters", "retire", "retiree", "--reason", "again", "--audit-log", config.audit_log,
                 "--adapters", config.adapters]) == 1
    assert "already retired" in capsys.readouterr().err


def test_curve_key_is_the_verified_user(guarded, tmp_path):
    """With CURVE and an authorised-clients folder, the user is the client's certificate (verified), whatever
    name the client asserts."""
    import zmq.auth

    from bodydouble.curve import keys_for
    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.policy import audit

    certs, clients = tmp_path / "certs", tmp_path / "clients"
    certs.mkdir()
    clients.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(str(certs), "server")
    for name in ("alice", "mallory"):
        zmq.auth.create_certificates(str(certs), name)
        os.replace(certs / f"{name}.key", clients / f"{name}.key")
    base = guarded["config"]
    srv, thread = start_in_thread(ServerConfig(**{**base.__dict__, "port": 0, "curve_certificate": server_secret,
                                                  "curve_authorized_clients": str(clients)}))
    try:
        as_alice = keys_for(server_public, str(certs / "alice.key_secret"))
        as_mallory = keys_for(server_public, str(certs / "mallory.key_secret"))
        with Client(srv.bound_address, timeout=30, user="mallory", curve=as_alice) as alice:
            alice.wait_ready()
            result = alice.submit(_fill(guarded, "hero")).wait(timeout=60)
        with Client(srv.bound_address, timeout=30, user="alice", curve=as_mallory) as mallory:
            error = _refused(mallory, _fill(guarded, "hero"))
    finally:
        srv.stop()
        thread.join(10)
    assert error.details["rule"] == "user" and "'mallory' (verified client key)" in error.message
    submit = [r.record for r in audit.read_lines(Path(base.audit_log)) if r.record.get("job") == result.job][0]
    assert submit["user"] == "alice" and submit["user_verified"] is True and submit["user_key"]


def test_training_needs_consent_for_the_character(tmp_path):
    """Train is checked against the records of the character it trains (refused at submit, nothing read)."""
    from bodydouble.jobspec import TrainRequest
    from bodydouble_server.config import ServerConfig

    consent = tmp_path / "consent"
    consent.mkdir()
    write_record(consent, "hero-showa", "Hero", "Show A", ["fill"], ["*"], "2099-12-31")
    frames = tmp_path / "frames"
    frames.mkdir()
    config = ServerConfig(port=0, video_model="none", roots=[str(tmp_path)], adapters=str(tmp_path / "adapters"),
                          consent_dir=str(consent), consent_exempt_test_models=False,
                          audit_log=str(tmp_path / "audit.log"))
    with server_thread(config) as srv, Client(srv.bound_address, timeout=30, user="td") as client:
        assert "train" in client.connect()["operations"]
        for character, rule in (("Hero", "operation"), ("Nobody", "missing_record")):
            request = TrainRequest(frames=[str(frames)], character=character, steps=1, rights_holder="Studio",
                                   licence="consent on file")
            error = _refused(client, request)
            assert error.details["rule"] == rule and error.details["adapter"] == character.lower()
    assert not (tmp_path / "adapters").exists()


def test_a_changed_consent_document_is_noticed_at_once(tmp_path):
    from bodydouble_server.policy.consent import ConsentBook

    write_record(tmp_path, "hero", "Hero", "Show A", ["fill"], ["*"], "2099-12-31")
    book = ConsentBook(tmp_path)
    assert [r.error for r in book.for_character("hero")] == [""]
    document = tmp_path / "documents" / "hero.pdf"
    document.write_bytes(b"%PDF amended without a new sign-off")
    (error,) = [r.error for r in book.for_character("Hero")]
    assert "no longer matches document_sha256" in error
    write_record(tmp_path, "hero", "Hero", "Show B", ["fill"], ["*"], "2099-12-31", document=document)
    assert [(r.production, r.error) for r in book.for_character("Hero")] == [("Show B", "")]


def test_groups_are_the_users_os_groups_and_keys_can_be_listed(tmp_path):
    import datetime as dt
    import getpass

    from bodydouble_server.policy.consent import Requester, load_record, os_groups

    me = getpass.getuser()
    groups = os_groups(me)
    if not groups:
        pytest.skip("no OS group database for this user here")
    path = write_record(tmp_path, "crew", "Hero", "Show A", ["train"], ["*"], "2099-12-31",
                        f'groups = ["{groups[0]}"]\nusers = ["key:abc123"]')
    record = load_record(path)

    def why(requester):
        return record.refusal(operation="train", shot=None, paths=[], extend_frames=0, requester=requester,
                              today=dt.date(2026, 12, 3))

    assert why(Requester(me)) is None
    assert why(Requester("no-such-user-bodydouble"))[0] == "user"
    assert why(Requester("x", verified=True, key="abc123")) is None


def test_a_video_engine_fill_is_judged_by_the_video_model(tmp_path):
    """A fill on the video engine runs on the video model: the test-model exemption is the video model's. With a
    real image model and a TEST video model, an adapter with no consent record is refused on the image engine and
    admitted on the video engine."""
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.policy.rules import Policy

    consent = tmp_path / "consent"
    consent.mkdir()
    (tmp_path / "licensed-model").mkdir()
    config = ServerConfig(port=0, model=str(tmp_path / "licensed-model"), video_model="test:passthrough",
                          roots=[str(tmp_path)], adapters=str(tmp_path / "adapters"), consent_dir=str(consent),
                          audit_log=str(tmp_path / "audit.log"))
    policy = Policy(config)
    requester = Policy.requester("alice", None)
    frames = sequence_frames(str(tmp_path / "p.####.exr"), 1001, 1002, str(tmp_path / "m.####.exr"))

    def fill(engine):
        return FillRequest(frames=frames, adapters=[AdapterRef("stranger")], engine=engine, shot="sh010")

    with pytest.raises(errors.BodyDoubleError) as refused:
        policy.admit_as("fill", fill("image"), "r1", requester)
    assert refused.value.code == errors.NOT_PERMITTED and refused.value.details["rule"] == "missing_record"
    assert policy.admit_as("fill", fill("video"), "r2", requester).operation == "fill"
