"""Training off the interactive server: a train job runs in its own process (scale/offload.py) beside the
worker, so a fill submitted while an adapter trains finishes while it trains; the adapter is then served
without a rescan."""
from __future__ import annotations

from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames

from .support import server_thread
from .test_train_job import SIZE, studio, train_request  # noqa: F401  (the module's fixture)


def test_a_fill_finishes_while_an_adapter_trains(studio):  # noqa: F811
    from bodydouble_server.config import ServerConfig

    config = ServerConfig(port=0, roots=[str(studio["root"])], adapters=str(studio["adapters"]),
                          output_root=str(studio["root"] / "takes"), resolution=SIZE, device="cpu")
    fill = FillRequest(frames=sequence_frames(studio["plate"], 1001, 1001, studio["mask"]), seed=3, steps=2)
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60) as client:
        training = client.submit(train_request(studio, name="hero_offload", steps=60, checkpoint_every=1000))
        for progress in training.events(timeout=300):
            if progress.raw.get("phase") == "train":
                break                       # the training process is in its loop
        result = client.submit(fill).wait(timeout=120)
        assert not training.done, "the fill finished while the adapter was still training"
        assert result.frames
        trained = training.wait(timeout=600)
        assert trained.adapter == "hero_offload" and trained.info["adapter_status"] == "ready"
        listed = {a.name: a.status for a in client.list_adapters()}       # no rescan asked
        assert listed["hero_offload"] == "ready"
        with_adapter = client.submit(FillRequest(frames=fill.frames, adapters=[AdapterRef("hero_offload")],
                                                 seed=3, steps=2)).wait(timeout=120)
        assert with_adapter.frames
