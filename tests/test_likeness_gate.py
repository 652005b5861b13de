"""The quality gate: through the real train job and fill (ZeroMQ, EXR plates, the committed miniature-world base
model and judge), an adapter must put *its* character's back of the head into a plate that never showed it.

Two held-out look-alikes (they differ only in the back marking), each trained on front/side views plus two
back views; four back-facing frames each of a held-out shot whose plate shows a stand-in. The full table is
bench/likeness.py's (docs/likeness.md).

The adapter's pixels are a gate: its fill must come within the issue's margin of the truth above the base model's
(6 dB; measured here 9.0). So is identity as far as the world's base model carries it: the own adapter named
from the back more often than its look-alike's (here 0.50 against 0.00 of 8 frames). The issue's goal is not
yet (6 characters, three fill seeds: 0.67 against the upper bound's 0.95 and the ceiling's 0.89;
docs/likeness.md, "What the world found"; here the ceiling 0.75): that test is a strict xfail, so it fails the
suite the day it starts passing and the bar must be raised to stay a gate.
"""
import pytest

from bodydouble_server.miniworld import experiment

# One fill seed (the bench's table takes three): the margins below were measured at seed 7, and each seed more
# costs the suite about a minute under -n 2.
GATE = experiment.ExperimentSettings(characters=2, side_shots=2, test_frames=4, train_steps=100,
                                     rows=("a", "b", "c"), fill_seeds=1)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = experiment.run(GATE, tmp_path_factory.mktemp("likeness"))
    print("\n" + experiment.format_table(results))
    return results


def test_fill_puts_a_head_where_the_stand_in_was(results):
    rows = results["rows"]
    assert results["model"]["test_model"] is True and results["model"]["family"] == "miniworld"
    # A fill that ignored the mask would leave the stand-in (the "plate" row); one that painted the mask flat
    # scores like the grey fill. A character's adapter beats both by 2 dB (measured here, 100 training steps: +8.9
    # to +9.4 dB). The base model alone draws a generic head, as far from the truth as the stand-in's (measured:
    # 10.46 against 10.30 dB): no margin to hold it to.
    for row in ("b", "c"):
        assert rows[row]["psnr_db"] >= rows["plate"]["psnr_db"] + 2.0
        assert rows[row]["psnr_db"] >= rows["grey"]["psnr_db"] + 2.0


def test_the_trained_adapter_draws_its_character_far_closer_than_the_base_model(results):
    """Issue #20's margin: the own adapter's fill of the unseen side at least 6 dB closer to the truth (masked
    PSNR) than the base model's. A fill that ignored the adapter, or a train job that learned nothing, scores
    as the base model (measured: 19.44 against 10.46 dB)."""
    rows = results["rows"]
    assert rows["b"]["psnr_db"] >= rows["a"]["psnr_db"] + 6.0


def test_fills_own_path_gives_the_truth_back(results):
    """The ceiling row: the truth handed to the server as the plate and filled at the schedule's last step, no
    adapter, comes back through fill's crop, colour, resize, the model's VAE and the composite within the VAE's
    own loss (measured 30.2 dB inside the mask; the first committed model's /4 VAE 27.2). A crop or composite a
    pixel off, or a colour step not undone, loses far more; no fill scores above it."""
    rows = results["rows"]
    assert rows["ceiling"]["psnr_db"] >= 24.0
    assert all(rows["ceiling"]["psnr_db"] > rows[row]["psnr_db"] + 3.0 for row in ("a", "b", "c"))


def test_own_adapter_is_named_from_the_back_more_often_than_its_look_alikes(results):
    """Identity from the unseen side, as far as the world's base model carries it today: the judge names the
    character in the own adapter's fills of its back more often than in the look-alike's adapter's (which
    differs only in what its two back views showed) and the base model's, by a quarter of the frames. A train
    job that learned nothing of the back views, or a fill that ignored the adapter, scores like (c) or (a); the
    first committed base model (latents /4) scored (b) and (c) alike here (0.50 and 0.50 of 4 frames); the
    committed one 0.50 and 0.00 of 8."""
    rows = results["rows"]
    assert rows["b"]["identity"] >= rows["c"]["identity"] + 0.25
    assert rows["b"]["identity"] >= rows["a"]["identity"] + 0.25


@pytest.mark.xfail(strict=True, reason="measured gap: the adapters do not carry the back of the head as far as "
                                       "fill's path allows yet (docs/likeness.md, 'What the world found')")
def test_own_adapter_keeps_the_likeness_on_the_unseen_side(results):
    rows = results["rows"]
    # Identity from the back of the head as often as fill's own path keeps it (the ceiling row: the truth itself,
    # once through fill's path), and this character, not a generic head and not its look-alike.
    assert rows["b"]["identity"] >= rows["ceiling"]["identity"] - 0.1
    assert rows["b"]["identity"] >= rows["a"]["identity"] + 0.5
    assert rows["b"]["identity"] >= rows["c"]["identity"] + 0.5
    # Pixels: the own adapter closer to the truth than its look-alike's adapter.
    assert rows["b"]["psnr_db"] >= rows["c"]["psnr_db"] + 1.0
