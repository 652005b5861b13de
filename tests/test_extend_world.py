"""Extend in the miniature world (#20 stage 7), CI-sized: one held-out character's plate turning towards the
back, extended past its last frame by the server's extend job on the world's baked video model (committed
weights), scored against the rendered truth. The full table (own and look-alike video adapters, identity per
chunk) is bench/extend_likeness.py's (docs/likeness.md, "Stage 7")."""
import pytest

from bodydouble_server.miniworld import extension


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = extension.run(extension.CI, tmp_path_factory.mktemp("extend-world"))
    print("\n" + extension.format_table(results))
    return results


def test_extend_continues_the_plate_on_the_world_video_model(results):
    """Frames numbered after the plate come back in two chunks, and they continue the plate: over the head's box
    within 6 dB of the last plate frame held (measured: 19.1 dB against 23.6, chunks 19.4 and 18.0 dB). This
    video model does not yet beat a held frame (docs/likeness.md, "Stage 7"); what breaks here is a path that
    loses the plate: wrong colour encoding, frames out of order, chunks not conditioned on their tail. The truth
    through the video VAE (the ceiling of any extension on this model) lies above what the model makes (measured
    21.4 dB)."""
    rows = results["rows"]
    assert results["video_model"]["family"] == "miniworld-video" and results["video_model"]["test_model"] is True
    assert rows["a"]["frames"] == rows["hold"]["frames"] == extension.CI.count
    assert len(rows["a"]["psnr_by_chunk"]) == 2, "8 frames after 3 known ones in a 9-frame window: two chunks"
    assert rows["a"]["psnr_db"] >= rows["hold"]["psnr_db"] - 6.0, rows
    assert min(rows["a"]["psnr_by_chunk"]) >= rows["hold"]["psnr_db"] - 7.0, rows
    assert rows["vae"]["frames"] == extension.CI.count and rows["vae"]["psnr_db"] >= rows["a"]["psnr_db"], rows
