"""The world's face recognition: a small CNN that names which held-out character a head shows, from any angle.

Trained only on renders (its own lighting/shot seeds, never a plate's), framed as fill frames a plate, with
everything outside the head's matte set to grey: it judges the head, not the shirt or background a fill
leaves untouched. Look-alikes share everything but the back marking, so from the front it can only name
the group; from the back it must read the marking.

    python -m bodydouble_server.miniworld.judge OUT_FOLDER [--tiny]

writes ``judge.safetensors`` (weights, never pickle) and ``judge.json`` (classes, settings, accuracy on
clean held-out renders by view).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..models import miniworld as family
from . import characters as chars
from . import world

WEIGHTS = "judge.safetensors"
INFO = "judge.json"
GREY = 0.5


@dataclass(frozen=True)
class JudgeSettings:
    seed: int = 20261203            # the world's seed: which characters exist
    characters: int = 12            # the held-out characters it knows (look-alike groups of 3)
    renders_per_character: int = 240
    test_renders_per_character: int = 40
    plate: int = 96
    back_share: float = 0.5          # renders drawn from the back half (180 +- 60): the view it must read
    steps: int = 2500
    batch: int = 32
    learning_rate: float = 2e-3
    threads: int = 1


TINY = JudgeSettings(characters=3, renders_per_character=6, test_renders_per_character=2, steps=3, batch=4)


def build_network(classes: int):
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 24), *block(24, 48), *block(48, 64), *block(64, 96),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(96, classes))


def head_only(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) display RGB with everything outside the head's mask grey: what the judge looks at."""
    return np.where(mask[..., None] > 0.5, rgb, GREY).astype(np.float32)


def _render_set(settings: JudgeSettings, purpose: str, per_character: int):
    from ..imaging.colour import ColourTransform

    colour = ColourTransform(world.PLATE_COLOURSPACE)
    framing = world.Framing(family.RESOLUTION, family.MULTIPLE)
    xs, ys, yaws = [], [], []
    for label, character in enumerate(chars.eval_characters(settings.seed, settings.characters)):
        rng = chars._rng(settings.seed, purpose, character.name)
        backs = int(round(per_character * settings.back_share))
        wanted = np.concatenate([180 + rng.uniform(-60, 60, backs), rng.uniform(0, 360, per_character - backs)])
        rgb, mask, yaw = world.sample_views(rng, character, per_character, settings.plate, settings.plate, framing,
                                            colour, wanted)
        xs.append(head_only(rgb.astype(np.float32), mask)), ys.append(np.full(len(yaw), label)), yaws.append(yaw)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(yaws)


class Judge:
    """Load a trained judge and name characters: ``predict(rgb, mask) -> class indices``."""

    def __init__(self, folder: Path):
        import torch
        from safetensors.torch import load_file

        folder = Path(folder)
        self.info = json.loads((folder / INFO).read_text())
        self.classes: list[str] = self.info["classes"]
        self.net = build_network(len(self.classes))
        self.net.load_state_dict(load_file(str(folder / WEIGHTS)))
        self.net.eval()
        self._torch = torch

    def logits(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(head_only(rgb, mask)).permute(0, 3, 1, 2)
        with torch.no_grad():
            return self.net(x * 2 - 1).numpy()

    def predict(self, rgb: np.ndarray, mask: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.logits(rgb, mask).argmax(axis=1)]


def _augment(x, generator):
    """Robustness to what a fill hands it: slight blur (a VAE's), noise, exposure."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    blur = torch.rand(n, generator=generator) < 0.5
    if blur.any():
        kernel = torch.tensor([0.25, 0.5, 0.25])
        k2 = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
        x = torch.where(blur[:, None, None, None], F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3), x)
    gain = 1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    return (x * gain + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def train(out: Path, settings: JudgeSettings, log=print) -> dict:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(settings.threads)
    started = time.time()
    x, y, _ = _render_set(settings, "judge-train", settings.renders_per_character)
    tx, ty, tyaw = _render_set(settings, "judge-test", settings.test_renders_per_character)
    log(f"judge: rendered {len(x)} training and {len(tx)} test heads ({time.time() - started:.0f} s)")
    classes = [c.name for c in chars.eval_characters(settings.seed, settings.characters)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = build_network(len(classes))
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=settings.steps)
    data, labels = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y).long()
    net.train()
    for step in range(settings.steps):
        g = torch.Generator().manual_seed(settings.seed * 7 + step)
        index = torch.randint(0, len(data), (settings.batch,), generator=g)
        batch = _augment(data[index], g) * 2 - 1
        loss = torch.nn.functional.cross_entropy(net(batch), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            log(f"judge: step {step + 1}/{settings.steps} loss {float(loss.detach()):.3f}")
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(tx).permute(0, 3, 1, 2) * 2 - 1).argmax(1).numpy()
    views = np.array([chars.view_of(float(v)) for v in tyaw])
    groups = np.array([i // chars.GROUP_SIZE for i in range(len(classes))])
    accuracy = {"all": float((predicted == ty).mean())}
    for view in ("back", "front"):
        sel = views == view
        if sel.any():
            accuracy[view] = float((predicted[sel] == ty[sel]).mean())
            accuracy[f"{view}_group"] = float((groups[predicted[sel]] == groups[ty[sel]]).mean())
    info = {"classes": classes, "settings": asdict(settings), "accuracy_clean_heldout": accuracy,
            "test_renders": int(len(tx)), "wall_s": round(time.time() - started, 1),
            "input": f"{family.RESOLUTION}x{family.RESOLUTION} display-referred crop framed as fill frames a plate, "
                     "outside the head's mask grey; scaled to [-1, 1]"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, write in ((WEIGHTS, lambda p: save_file({k: v.contiguous() for k, v in net.state_dict().items()}, p)),
                        (INFO, lambda p: Path(p).write_text(json.dumps(info, indent=1) + "\n"))):
        tmp = out / f".{name}.{os.getpid()}.tmp"
        write(str(tmp))
        os.replace(tmp, out / name)
    log(f"judge: accuracy on clean held-out renders {json.dumps(accuracy)}")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for judge.safetensors and judge.json")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)

    train(Path(args.out), TINY if args.tiny else JudgeSettings(), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
