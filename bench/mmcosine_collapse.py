"""Why do the video features of the GroupNorm small CNN collapse under MMCosine on Digits-AV?

Trains one Digits-AV cell (concat fusion, the digits_av recipe: SGD momentum 0.9, lr 0.01, weight decay
1e-4, cosine over 20 epochs, batch 32, seed 109) for a few epochs per variant and prints, at a few
steps of the first epoch and after every epoch, on 270 validation pairs:

  cos_a, cos_v  mean pairwise cosine between the pooled audio / video features of different samples
                (1.0000: every sample's features point the same way)
  dead_v        fraction of the 64 video channels that are 0 for every validation sample
  spread_v      ||std over samples of z_v|| / ||mean over samples of z_v|| (0: identical features)
  wcos_v        mean pairwise cosine between the 10 class rows of the video block W_v of the fusion
  acc_v         accuracy of the video term alone (MMCosine: s * cos(z_v, W_v); joint: W_v z_v)
  acc           fused validation accuracy

    python bench/mmcosine_collapse.py                              # every variant, 3 epochs, 1 thread
    python bench/mmcosine_collapse.py --variants gn_mmcosine,bn_mmcosine --epochs 6
"""
from __future__ import annotations

import argparse
import copy

import torch

from mmbal.presets import get_preset
from mmbal.train import build_trainer
from mmbal.data import DATASETS

# name -> (encoder options, method of the digits_av preset, optim overrides); "centred" (a diagnostic, not a
# method): the batch mean of dL/dz_v is removed before it enters the encoder, as BatchNorm's backward pass does
VARIANTS = {
    "gn_mmcosine_centred_grad": ({}, "mmcosine", {}),
    "gn_mmcosine": ({}, "mmcosine", {}),
    "gn_mmcosine_lr1e-3": ({}, "mmcosine", {"lr": 1e-3}),
    "gn_mmcosine_lr1e-4": ({}, "mmcosine", {"lr": 1e-4}),
    "gn_mmcosine_no_wd": ({}, "mmcosine", {"weight_decay": 0.0}),
    "gn_joint": ({}, "joint", {}),
    "bn_mmcosine": ({"norm": "batch"}, "mmcosine", {}),
    "bn_joint": ({"norm": "batch"}, "joint", {}),
}
PROBE_STEPS = (0, 5, 10, 20, 39)      # steps of the first epoch (40 steps of batch 32) that are measured


def _pairwise_cos(x: torch.Tensor) -> float:
    """Mean cosine between different rows of x (N, D)."""
    xn = torch.nn.functional.normalize(x, dim=1)
    return (((xn @ xn.T).sum() - len(x)) / (len(x) * (len(x) - 1))).item()


@torch.no_grad()
def stats(trainer, val) -> dict[str, float]:
    """Collapse statistics on the validation pairs (see the module docstring)."""
    model, balancer = trainer.model, trainer.balancer
    was_training = model.training
    model.eval()
    out = balancer.forward(model, val)
    z, labels = out["features"], val["label"]
    weight = model.fusion.parts["video"].weight                                      # (C, D)
    if hasattr(balancer, "scaling"):                                                 # MMCosine: s * cos(z_v, W_v)
        video_logits = balancer.scaling * torch.nn.functional.normalize(z["video"], dim=1) @ \
            torch.nn.functional.normalize(weight, dim=1).T
    else:
        video_logits = z["video"] @ weight.T                                         # the video block of the fusion
    model.train(was_training)
    zv = z["video"]
    return {"cos_a": _pairwise_cos(z["audio"]), "cos_v": _pairwise_cos(zv),
            "dead_v": (zv.amax(0) <= 0).float().mean().item(),
            "spread_v": (zv.std(0).norm() / zv.mean(0).norm().clamp_min(1e-12)).item(),
            "wcos_v": _pairwise_cos(weight), "acc_v": (video_logits.argmax(1) == labels).float().mean().item(),
            "acc": (out["logits"]["mm"].argmax(1) == labels).float().mean().item()}


def first_gradient(trainer, batch) -> str:
    """On one training batch at initialisation (train mode, a copy of the model): the per-sample gradient of the
    loss w.r.t. the video features g_i = N dL/dz_v,i, its share common to all samples ||mean g||^2 / mean ||g||^2,
    and how far apart the classes' video logits are, averaged over the batch (std over classes)."""
    model = copy.deepcopy(trainer.model).train()
    out = trainer.balancer.forward(model, batch)
    loss = trainer.balancer.loss(out, batch["label"], trainer.objective(out["logits"], batch["label"]))["total"]
    g = torch.autograd.grad(loss, out["features"]["video"])[0] * len(batch["label"])        # (N, D)
    common = (g.mean(0).norm() ** 2 / (g.norm(dim=1) ** 2).mean()).item()
    weight = model.fusion.parts["video"].weight.detach()
    z = out["features"]["video"].detach()
    logits = (trainer.balancer.scaling * torch.nn.functional.normalize(z, dim=1) @
              torch.nn.functional.normalize(weight, dim=1).T) if hasattr(trainer.balancer, "scaling") else z @ weight.T
    return (f"first batch: |g_i| {g.norm(dim=1).mean().item():.4f}, common share {common:.3f}, "
            f"video logits' std over classes {logits.mean(0).std().item():.3f}")


def run(name: str, epochs: int, seed: int) -> None:
    encoder_options, method, optim = VARIANTS[name]
    cfg = get_preset("digits_av").run_config(method, "concat", seed, device="cpu")
    cfg.model.encoder_options.update(encoder_options)
    cfg.optim.__dict__.update(optim)
    splits = DATASETS.create(cfg.data.name, seed=cfg.seed, root=cfg.data.root, **cfg.data.options)
    trainer = build_trainer(cfg, splits)
    trainer.progress = False
    trainer.total_steps = cfg.optim.epochs * len(trainer.loaders["train"])        # the 20-epoch cosine schedule
    val = {k: torch.cat([b[k] for b in trainer.loaders["val"]]) for k in ("audio", "video", "label")}
    print(f"\n{name}: encoder {encoder_options or 'group norm'}, {method}, optim {optim or 'recipe'}")
    print(f"{'when':>12} " + " ".join(f"{k:>8}" for k in stats(trainer, val)))
    show = lambda when: print(f"{when:>12} " + " ".join(f"{v:8.4f}" for v in stats(trainer, val).values()))
    if name.endswith("centred_grad"):
        forward = trainer.balancer.forward

        def centred(model, inputs):
            out = forward(model, inputs)
            if out["features"]["video"].requires_grad:
                out["features"]["video"].register_hook(lambda g: g - g.mean(0, keepdim=True))   # (B, D)
            return out
        trainer.balancer.forward = centred
    print(first_gradient(trainer, next(iter(trainer.loaders["train"]))))
    show("init")
    step_fn, step = trainer._step, 0

    def probed(batch, i):
        result = step_fn(batch, i)
        if i in PROBE_STEPS:
            show(f"step {i + 1}")
        return result
    trainer._step = probed
    torch.manual_seed(cfg.seed)
    for epoch in range(epochs):
        trainer.model.train()
        trainer.splits.train.set_epoch(epoch)
        for batch in trainer.loaders["train"]:
            trainer._step(batch, step)
            step += 1
        show(f"epoch {epoch + 1}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=109)
    args = p.parse_args()
    torch.set_num_threads(1)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}")
    for name in args.variants.split(","):
        run(name, args.epochs, args.seed)


if __name__ == "__main__":
    main()
