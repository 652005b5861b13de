"""Training step time: our Trainer vs a minimal reference loop written the way diffusers' DreamBooth LoRA
examples do it (examples/dreambooth/train_dreambooth_lora.py, with the inpainting input of
examples/research_projects/dreambooth_inpaint/train_dreambooth_inpaint_lora.py). Target: ratio <= 1.05.

Both train the same base model (the embedded test model unless --model), the same frames, batch and
resolution, with peft LoRA of the same rank on the UNet attention projections and AdamW. They run in
blocks, interleaved, in one process; a step's time is the interval between consecutive steps (our
checkpoint steps, which also score the held-out frames, are left out: the reference has none).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VIEWS = ("front", "three-quarter-left", "three-quarter-right", "profile-left", "profile-right", "back")


def write_frames(root: Path, size: int, per_view: int) -> Path:
    """Synthetic reference frames with mattes, tagged by view folder."""
    from bodydouble_server import samples

    for v, view in enumerate(VIEWS):
        (root / view / "masks").mkdir(parents=True, exist_ok=True)
        for k in range(per_view):
            px = samples.plate_pixels(size, size, v * 10 + k)
            samples.write_exr(root / view / f"f{v}{k}.exr", px, ("R", "G", "B", "A"))
            samples.write_exr(root / view / "masks" / f"f{v}{k}.exr", px[:, :, 3:], ("A",))
    return root


class Reference:
    """The DreamBooth-inpaint LoRA loop, minimal: no accelerate, no prior preservation, constant LR."""

    def __init__(self, pipe, model_path: str, frames, batch: int, rank: int, lr: float, seed: int):
        import torch
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig

        torch.manual_seed(seed)
        self.vae, self.text_encoder, self.tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", local_files_only=True)
        self.unet.requires_grad_(False)
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        self.params = list(filter(lambda p: p.requires_grad, self.unet.parameters()))
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer)
        self.resolution = frames[0].rgb.shape[0]
        images = [torch.from_numpy(f.rgb).permute(2, 0, 1) * 2 - 1 for f in frames]
        ids = self.tokenizer("<hero>", padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids[0]
        self.loader = torch.utils.data.DataLoader([{"image": im, "input_ids": ids} for im in images], batch_size=batch,
                                                  shuffle=True, collate_fn=self.collate_fn, num_workers=0)

    def collate_fn(self, examples):
        """As the inpaint example: a random box mask per image and the image with the box blanked."""
        import torch

        pixel_values = torch.stack([e["image"] for e in examples]).contiguous().float()
        n, _, h, w = pixel_values.shape
        masks = torch.zeros(n, 1, h, w)
        for m in masks:
            y, x = torch.randint(0, h // 2, (2,)).tolist()
            m[:, y:y + h // 2, x:x + w // 2] = 1.0
        return {"pixel_values": pixel_values, "masks": masks, "masked_images": pixel_values * (masks < 0.5),
                "input_ids": torch.stack([e["input_ids"] for e in examples])}

    def train(self, steps: int, on_step) -> None:
        import torch
        import torch.nn.functional as F

        self.unet.train()
        done = 0
        while done < steps:
            for batch in self.loader:
                latents = self.vae.encode(batch["pixel_values"]).latent_dist.sample()
                latents = latents * self.vae.config.scaling_factor
                masked_latents = self.vae.encode(batch["masked_images"]).latent_dist.sample()
                masked_latents = masked_latents * self.vae.config.scaling_factor
                mask = F.interpolate(batch["masks"], size=(self.resolution // 8, self.resolution // 8))
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
                noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
                latent_model_input = torch.cat([noisy_latents, mask, masked_latents], dim=1)
                encoder_hidden_states = self.text_encoder(batch["input_ids"])[0]
                model_pred = self.unet(latent_model_input, timesteps, encoder_hidden_states).sample
                loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad()
                on_step(loss.detach().item())
                done += 1
                if done >= steps:
                    return


def intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="base model diffusers folder (default: the embedded test model)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--block", type=int, default=12, help="steps per block")
    parser.add_argument("--repeats", type=int, default=5, help="blocks of each, interleaved")
    args = parser.parse_args()

    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.training import dataset
    from bodydouble_server.training.image import ImageTrainer
    from bodydouble_server.training.settings import TrainSettings

    root = Path(tempfile.mkdtemp(prefix="bd-bench-train-"))
    engine = Engine(ServerConfig(port=0, model=args.model, device="cpu", adapters=str(root / "adapters")))
    engine.load()
    pipe = engine.pipelines["fill"]
    data = dataset.load([write_frames(root / "frames", args.resolution, per_view=2)], args.resolution)
    settings = TrainSettings(character="Bench", resolution=args.resolution, rank=args.rank, batch=args.batch,
                             checkpoint_every=100_000, holdout_per_view=1, rights_holder="bench", licence="bench")
    ours = ImageTrainer(pipe, engine.identity, data, settings, root / "work", device=engine.device)
    ours.settings.steps = 0   # each block below trains `block` more steps
    reference = Reference(pipe, engine.identity.path, ours.train_frames, args.batch, args.rank, settings.learning_rate,
                          settings.seed)

    ours_times: list[float] = []
    reference_times: list[float] = []
    for _ in range(args.repeats + 1):   # the first round warms both up and is not counted
        stamps = [time.perf_counter()]
        ours.settings.steps += args.block
        ours.run(on_progress=lambda p: stamps.append(time.perf_counter()))
        ours_block = intervals(stamps)[:-1]   # the block's last step saves a checkpoint + held-out score
        stamps = [time.perf_counter()]
        reference.train(args.block, on_step=lambda loss: stamps.append(time.perf_counter()))
        reference_block = intervals(stamps)[:-1]
        if ours.step > args.block:
            ours_times += ours_block
            reference_times += reference_block
    mo, mr = statistics.median(ours_times), statistics.median(reference_times)
    print(f"training step, {Path(engine.identity.path).name if args.model else 'embedded test model'}, "
          f"{args.resolution}^2, batch {args.batch}, rank {args.rank}, {len(ours_times)} steps each, interleaved")
    print(f"  ours (ImageTrainer.run)       : {mo * 1000:8.1f} ms/step (median)")
    print(f"  reference (dreambooth-style)  : {mr * 1000:8.1f} ms/step (median)")
    print(f"  ratio ours / reference        : {mo / mr:.3f}   (target <= 1.05)")


if __name__ == "__main__":
    main()
