"""Train the learned source -> target translator (DiGA's stage 0), resumably, as the paper does.

The paper's ``train_domain_translator.py``, step by step:

1. both generators run on a source and a target batch (signed pixels, ``[-1, 1]``):
   translations ``s2t = G_st(s)``, ``t2s = G_ts(t)``; self-reconstructions
   through the other direction's decoder ``dec_ts(enc_s(s))``, ``dec_st(enc_t(t))``;
   cycles ``G_ts(s2t)``, ``G_st(t2s)``;
2. discriminator step (LSGAN): the target critic sees target images as real
   and ``s2t`` (detached) as fake; the source critic, source vs ``t2s``;
3. generator step with the critics frozen (and already updated):
   ``0.5 * adversarial + 10 * cycle + 20 * semantic edge + 0.1 * perceptual
   + 0.001 * self-reconstruction``;
4. Adam (lr 1e-4, betas (0.5, 0.999), no weight decay) for all six networks,
   poly decay (power 0.9) over 50k steps; two images per domain per step.

Only the source -> target generator is kept (``translator_final.pt``), and
:meth:`diga.translation.LearnedTranslator.from_checkpoint` loads it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from diga._checks import check_images, check_number
from diga._random import derive_generator
from diga.data.batch import as_batch, to_device
from diga.engine.checkpoint import (
    atomic_write_json,
)
from diga.engine.distributed import DistInfo, resolve_device, wrap_ddp
from diga.engine.guards import DivergenceGuard
from diga.engine.log import scalars
from diga.engine.loop import ResumableLoop, backward_step, poly_schedule
from diga.engine.optim import autocast_context
from diga.engine.plots import image_grid, save_png
from diga.engine.sampling import infinite_loader
from diga.translation import (
    PAPER_LAYER_WEIGHTS,
    MultiScaleDiscriminator,
    TranslatorGenerator,
    lsgan_loss,
    perceptual_loss,
    reconstruction_loss,
    semantic_edge_loss,
    translator_checkpoint,
)

__all__ = ["TranslatorConfig", "train_translator"]

STAGE = "translator"
_PRESETS = ("paper", "tiny")


@dataclass
class TranslatorConfig:
    """Architecture, optimiser, loss weights and data recipe of the translator (defaults: the paper's).

    Architecture: generators of ``dim`` first-layer channels, ``n_downsample``
    stride-2 stages and ``n_res`` residual blocks in encoder and decoder;
    critics of ``disc_dim`` channels, ``disc_layers`` stride-2 layers,
    ``disc_scales`` scales. Optimiser: Adam(``lr``, ``betas``,
    ``weight_decay``) for generators and critics, poly decay with ``power``.
    Loss weights as in the module docstring; the perceptual term only runs when
    a network is passed to :func:`train_translator`. ``steps``, ``batch_size``
    (per domain and rank), ``crop_size`` and the scale ranges of the
    ``RandomScaleCrop`` are the recipe scripts build their data from.

    The paper's script declares ``weight_decay = 5e-4`` but never passes it to
    Adam, so it trains without: our default is 0. It feeds two images per
    domain each step, one resized to a low and one to the full resolution
    (GTA5 720x1280 and 1052x1914, Cityscapes 512x1024 and 1024x2048), each
    randomly cropped to 512x896 and flipped; ``source_scale`` /
    ``target_scale`` draw a scale in that span per image instead.

    Example:
        >>> TranslatorConfig.preset("tiny").dim
        8
        >>> TranslatorConfig().cycle_weight
        10.0
    """

    dim: int = 64
    n_downsample: int = 2
    n_res: int = 4
    pad_type: str = "reflect"
    disc_dim: int = 64
    disc_layers: int = 4
    disc_scales: int = 3
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    power: float = 0.9
    adversarial_weight: float = 0.5
    cycle_weight: float = 10.0
    edge_weight: float = 20.0
    perceptual_weight: float = 0.1
    self_weight: float = 0.001
    edge_kernel_size: int = 5
    edge_threshold: float = 0.1
    perceptual_layer_weights: tuple[float, ...] = PAPER_LAYER_WEIGHTS
    perceptual_max_width: int = 1024
    steps: int = 50_000
    batch_size: int = 2
    crop_size: tuple[int, int] = (512, 896)
    source_scale: tuple[float, float] = (0.68, 1.0)
    target_scale: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        for name in ("dim", "n_res", "disc_dim", "disc_layers", "disc_scales", "steps", "batch_size",
                     "edge_kernel_size", "perceptual_max_width"):
            check_number(getattr(self, name), name, low=1 if name != "n_res" else 0, integer=True)
        check_number(self.n_downsample, "n_downsample", low=0, integer=True)
        if self.pad_type not in ("reflect", "zero"):
            raise ValueError(f"`pad_type` must be 'reflect' or 'zero', got {self.pad_type!r}")
        check_number(self.lr, "lr", low=0, low_open=True)
        check_number(self.power, "power", low=0)
        check_number(self.weight_decay, "weight_decay", low=0)
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"`betas` must be a pair (beta1, beta2), got {self.betas!r}")
        for i, b in enumerate(self.betas):
            check_number(b, f"betas[{i}]", low=0, high=1, high_open=True)
        for name in ("adversarial_weight", "cycle_weight", "edge_weight", "perceptual_weight",
                     "self_weight", "edge_threshold"):
            check_number(getattr(self, name), name, low=0)
        if len(tuple(self.crop_size)) != 2:
            raise ValueError(f"`crop_size` must be a pair (height, width), got {self.crop_size!r}")
        self.betas = tuple(float(b) for b in self.betas)
        self.crop_size = tuple(int(c) for c in self.crop_size)
        self.source_scale = tuple(float(s) for s in self.source_scale)
        self.target_scale = tuple(float(s) for s in self.target_scale)
        self.perceptual_layer_weights = tuple(float(w) for w in self.perceptual_layer_weights)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TranslatorConfig:
        """``"paper"``: the released script's settings; ``"tiny"``: a seconds-long CPU smoke run
        (8-channel generators with one residual block, 2-layer 2-scale critics, 32x64 crops, 20 steps).

        Example:
            >>> TranslatorConfig.preset("paper", steps=10).steps
            10
        """
        if name == "paper":
            base: dict[str, Any] = {}
        elif name == "tiny":
            base = {"dim": 8, "n_res": 1, "disc_dim": 8, "disc_layers": 2, "disc_scales": 2, "steps": 20,
                    "batch_size": 2, "crop_size": (32, 64), "source_scale": (0.7, 1.0),
                    "target_scale": (0.7, 1.0)}
        else:
            raise ValueError(f"`name` must be one of {_PRESETS}, got {name!r}")
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ networks


class _GeneratorPair(nn.Module):
    """Both directions; one forward runs the paper's whole generator graph (one DDP call per step)."""

    def __init__(self, cfg: TranslatorConfig, generator: torch.Generator) -> None:
        super().__init__()
        kw = {"dim": cfg.dim, "n_downsample": cfg.n_downsample, "n_res": cfg.n_res, "pad_type": cfg.pad_type}
        self.source_to_target = TranslatorGenerator(**kw, generator=generator)
        self.target_to_source = TranslatorGenerator(**kw, generator=generator)

    def forward(self, source: Tensor, target: Tensor | None = None) -> tuple[Tensor, ...]:
        """Signed images -> ``(s2t, t2s, self_s, self_t, cycle_s, cycle_t)``."""
        target = source if target is None else target
        st, ts = self.source_to_target, self.target_to_source
        feat_s, feat_t = st.encode(source), ts.encode(target)
        s2t, t2s = st.decode(feat_s), ts.decode(feat_t)
        self_s, self_t = ts.decode(feat_s), st.decode(feat_t)
        cycle_s = ts.decode(ts.encode(s2t))
        cycle_t = st.decode(st.encode(t2s))
        return s2t, t2s, self_s, self_t, cycle_s, cycle_t


class _CriticPair(nn.Module):
    """The two LSGAN critics; forward returns their losses (one DDP call per step)."""

    def __init__(self, cfg: TranslatorConfig, generator: torch.Generator) -> None:
        super().__init__()
        kw = {"dim": cfg.disc_dim, "n_layers": cfg.disc_layers, "num_scales": cfg.disc_scales}
        self.target_critic = MultiScaleDiscriminator(**kw, generator=generator)  # the paper's dis_s2t
        self.source_critic = MultiScaleDiscriminator(**kw, generator=generator)  # the paper's dis_t2s

    def forward(
        self,
        real_target: Tensor,
        fake_target: Tensor | None = None,
        real_source: Tensor | None = None,
        fake_source: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        fake_target = real_target if fake_target is None else fake_target
        real_source = real_target if real_source is None else real_source
        fake_source = real_source if fake_source is None else fake_source
        tc, sc = self.target_critic, self.source_critic
        loss_t = lsgan_loss(tc(real_target), real=True) + lsgan_loss(tc(fake_target), real=False)
        loss_s = lsgan_loss(sc(real_source), real=True) + lsgan_loss(sc(fake_source), real=False)
        return loss_t, loss_s


def _check_batch(batch: dict[str, Any], name: str, multiple: int, need_label: bool) -> None:
    image = batch.get("image")
    if not isinstance(image, Tensor):
        raise ValueError(f"`{name}` items must hold an 'image' tensor (3, H, W), got keys {sorted(batch)}")
    check_images(image, f"{name} images")
    h, w = image.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"`{name}` images must have H and W divisible by 2 ** n_downsample = {multiple} "
            f"(crop them to such a size), got {h}x{w}"
        )
    if need_label and not isinstance(batch.get("label"), Tensor):
        raise ValueError(
            f"`{name}` items must carry a 'label' for the semantic-edge loss (or set edge_weight=0), "
            f"got keys {sorted(batch)}"
        )


def _grid(source: Tensor, translated: Tensor, target: Tensor, max_items: int = 4) -> Any:
    n = min(max_items, source.shape[0], target.shape[0])
    tgt = target[:n].float()
    if tgt.shape[-2:] != source.shape[-2:]:
        tgt = F.interpolate(tgt, size=source.shape[-2:], mode="bilinear", align_corners=False)
    return image_grid({"source": source[:n].float(), "translated": translated[:n].float(), "target": tgt}, labels=True)


# ------------------------------------------------------------------------------ training loop


def train_translator(
    source: Dataset,
    target: Dataset,
    *,
    work_dir: str | os.PathLike,
    config: TranslatorConfig | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    perceptual_net: nn.Module | None = None,
    seed: int = 0,
    dist: DistInfo | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = False,
    num_workers: int = 0,
    log_every: int = 10,
    checkpoint_every: int = 1000,
    image_every: int = 0,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool = True,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the source -> target translator for ``steps`` steps, resumably (see the module docstring).

    Data: ``source`` items are dicts (or tuples) with ``"image"`` (3, H, W) RGB
    in ``[0, 1]`` and ``"label"`` (H, W) (for the semantic-edge loss);
    ``target`` items need only ``"image"``. Crop both to one size divisible by
    ``2 ** n_downsample`` (the :mod:`diga.data` datasets with a
    ``RandomScaleCrop`` transform do). Batch ``k`` is a pure function of
    ``(seed, k, rank)`` (step-indexed sampling; augmentation derived from the
    item index) and a step draws no other random numbers, so a killed run
    resumed from ``<work_dir>/checkpoints/translator_last.pt`` ends with the
    same weights as an uninterrupted one (on CPU; CUDA kernels may differ in
    the last bits). Initial weights come from ``derive_generator(seed)``.

    Rank 0 writes the checkpoints (atomically), ``<work_dir>/log.jsonl``
    (stage ``"translator"``), ``<work_dir>/translator_config.json`` and, every
    ``image_every`` steps, ``<work_dir>/images/translator_<step>.png``
    (rows: source | translated | target). Under ``torchrun`` (``dist`` from
    :func:`~diga.engine.setup_distributed`) generators and critics are DDP
    modules and every rank trains on its own shard.

    Args:
        source: labelled source dataset.
        target: target dataset (labels, if any, are unused).
        work_dir: run folder.
        config: architecture, optimiser and loss weights (None: the paper's).
        steps: training steps (None: ``config.steps``).
        batch_size: images per domain, per rank and step (None: ``config.batch_size``).
        perceptual_net: frozen feature extractor returning one feature map per
            ``config.perceptual_layer_weights`` entry, fed RGB in ``[0, 1]``
            (e.g. :func:`~diga.translation.vgg19_features`). None (the
            default) turns the perceptual term off: we never download VGG weights.
        seed: seeds sampling and the initial weights.
        dist: this process's place (None: one process on ``device``).
        device: used when ``dist`` is None (``"auto"``: CUDA when available).
        amp: mixed precision (True, ``"bf16"`` or ``"fp16"``).
        num_workers: data-loader workers.
        log_every: log interval in steps (0: never).
        checkpoint_every: ``translator_last.pt`` interval in steps (0: only at the end).
        image_every: image-grid interval in steps (0: never).
        resume: continue from ``translator_last.pt`` when it exists.
        stop_after: stop (as if killed) after this many steps in this call: for tests of resume.
        show_progress: tqdm bar on rank 0.
        run_config: the script's resolved settings, stored in checkpoints and the config file.

    Returns:
        ``{"step": last step, "final": path of translator_final.pt}``, plus ``"stopped": True``
        when ``stop_after`` ended the call early (no final checkpoint then).

    Raises:
        ValueError: bad settings, items without images (or source labels), images whose
            size is not a multiple of ``2 ** n_downsample``, an unreadable checkpoint.
    """
    cfg = config if config is not None else TranslatorConfig()
    if not isinstance(cfg, TranslatorConfig):
        raise ValueError(f"`config` must be a TranslatorConfig, got {type(cfg).__name__}")
    steps = cfg.steps if steps is None else steps
    batch_size = cfg.batch_size if batch_size is None else batch_size
    check_number(steps, "steps", low=1, integer=True)
    check_number(batch_size, "batch_size", low=1, integer=True)
    for name, value in (("log_every", log_every), ("checkpoint_every", checkpoint_every),
                        ("image_every", image_every), ("num_workers", num_workers)):
        check_number(value, name, low=0, integer=True)
    if stop_after is not None:
        check_number(stop_after, "stop_after", low=0, integer=True)
    if perceptual_net is not None and not callable(perceptual_net):
        raise ValueError(f"`perceptual_net` must be a feature extractor module, got {perceptual_net!r}")
    dist = dist or DistInfo(0, 1, 0, resolve_device(device))
    dev = dist.device
    work_dir = Path(work_dir)

    init = derive_generator(seed)
    generators = _GeneratorPair(cfg, init).to(dev)
    critics = _CriticPair(cfg, init).to(dev)
    use_perceptual = perceptual_net is not None and cfg.perceptual_weight > 0
    if use_perceptual and isinstance(perceptual_net, nn.Module):
        perceptual_net = perceptual_net.to(dev).eval().requires_grad_(False)
    adam = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    opt_g = torch.optim.Adam(generators.parameters(), **adam)
    opt_d = torch.optim.Adam(critics.parameters(), **adam)
    sched_g, sched_d = poly_schedule(opt_g, steps, cfg.power), poly_schedule(opt_d, steps, cfg.power)
    autocast, scaler = autocast_context(dev, amp)
    summary = {"config": cfg.to_dict(), "steps": steps, "batch_size": batch_size, "seed": seed,
               "amp": amp, "world_size": dist.world_size, "perceptual": use_perceptual,
               "run_config": dict(run_config or {})}

    def state(step: int, rng: Any) -> dict[str, Any]:
        return {"stage": STAGE, "step": step,
                "generator_config": dict(generators.source_to_target.config),
                "models": {"generators": generators.state_dict(), "critics": critics.state_dict(),
                           "source_to_target": generators.source_to_target.state_dict()},
                "optimizers": {"generators": opt_g.state_dict(), "critics": opt_d.state_dict()},
                "schedulers": {"generators": sched_g.state_dict(), "critics": sched_d.state_dict()},
                "scaler": None if scaler is None else scaler.state_dict(), "rng": rng, **summary}

    loop = ResumableLoop(STAGE, steps=steps, work_dir=work_dir, dist=dist, state=state, resume=resume,
                         log_every=log_every, checkpoint_every=checkpoint_every, stop_after=stop_after,
                         show_progress=show_progress)
    start, ckpt = loop.start, loop.checkpoint
    if ckpt is not None:
        try:
            generators.load_state_dict(ckpt["models"]["generators"])
            critics.load_state_dict(ckpt["models"]["critics"])
            opt_g.load_state_dict(ckpt["optimizers"]["generators"])
            opt_d.load_state_dict(ckpt["optimizers"]["critics"])
            sched_g.load_state_dict(ckpt["schedulers"]["generators"])
            sched_d.load_state_dict(ckpt["schedulers"]["critics"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise ValueError(
                f"cannot resume from {str(loop.last_path)!r}: it does not match this run's translator "
                f"({err}); delete it or pass resume=False"
            ) from err
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        loop.restore_rng()

    # Every parameter is used every step: no dry run looks for unused ones.
    gen_train = wrap_ddp(generators, dist, find_unused=False)
    critic_train = wrap_ddp(critics, dist, find_unused=False)

    def loader(ds: Dataset, stream: int):
        return infinite_loader(
            ds, batch_size=batch_size, seed=seed * 31 + stream, start_step=start, rank=dist.rank,
            world_size=dist.world_size, num_workers=num_workers, pin_memory=dev.type == "cuda",
        )

    src_iter, tgt_iter = loader(source, 0), loader(target, 1)
    if dist.is_main:
        import diga

        atomic_write_json(work_dir / "translator_config.json",
                          {**summary, "versions": {"diga": diga.__version__, "torch": str(torch.__version__)}})
    logger = loop.open_logger()

    multiple = generators.source_to_target.multiple
    need_label = cfg.edge_weight > 0
    generators.train()
    critics.train()
    guard = DivergenceGuard(STAGE, scaler=scaler)
    last: dict[str, Any] = {}

    def train(step: int) -> None:
        src = to_device(as_batch(next(src_iter)), dev)
        tgt = to_device(as_batch(next(tgt_iter)), dev)
        _check_batch(src, "source", multiple, need_label)
        _check_batch(tgt, "target", multiple, False)
        xs, xt = src["image"] * 2 - 1, tgt["image"] * 2 - 1  # the networks' signed pixel space

        with autocast:
            s2t, t2s, self_s, self_t, cycle_s, cycle_t = gen_train(xs, xt)

        # Critic step (LSGAN) on detached translations.
        critics.requires_grad_(True)
        with autocast:
            loss_d_target, loss_d_source = critic_train(xt, s2t.detach(), xs, t2s.detach())
            loss_d = loss_d_target + loss_d_source
        backward_step(loss_d, opt_d, scaler, update_scaler=False)
        critics.requires_grad_(False)  # the generator step uses the updated, frozen critics

        with autocast:
            adversarial = (lsgan_loss(critics.target_critic(s2t), real=True)
                           + lsgan_loss(critics.source_critic(t2s), real=True))
            cycle = reconstruction_loss(cycle_s, xs) + reconstruction_loss(cycle_t, xt)
            self_rec = reconstruction_loss(self_s, xs) + reconstruction_loss(self_t, xt)
            loss_g = (cfg.adversarial_weight * adversarial + cfg.cycle_weight * cycle
                      + cfg.self_weight * self_rec)
            parts: dict[str, Tensor] = {"adversarial": adversarial, "cycle": cycle, "self": self_rec}
            if need_label:
                edge = semantic_edge_loss(s2t, xs, src["label"], kernel_size=cfg.edge_kernel_size,
                                          threshold=cfg.edge_threshold)
                loss_g = loss_g + cfg.edge_weight * edge
                parts["edge"] = edge
            if use_perceptual:
                kw = {"net": perceptual_net, "layer_weights": cfg.perceptual_layer_weights,
                      "max_width": cfg.perceptual_max_width}
                perceptual = (perceptual_loss((s2t + 1) / 2, src["image"], **kw)
                              + perceptual_loss((t2s + 1) / 2, tgt["image"], **kw))
                loss_g = loss_g + cfg.perceptual_weight * perceptual
                parts["perceptual"] = perceptual
        backward_step(loss_g, opt_g, scaler, update_scaler=False)
        if scaler is not None:
            scaler.update()
        guard.check(step + 1, loss_g.detach() + loss_d.detach())
        sched_g.step()
        sched_d.step()
        last.update(src=src["image"], tgt=tgt["image"], s2t=s2t, values={
            "loss_g": loss_g, "loss_d": loss_d, "loss_d_target": loss_d_target, "loss_d_source": loss_d_source,
            **parts})

    def report(done: int) -> None:
        if loop.should_log(done):
            values = scalars(last["values"])
            values["lr"] = opt_g.param_groups[0]["lr"]
            logger.log(done, values)
            loop.bar.set_postfix(g=f"{values['loss_g']:.3f}", d=f"{values['loss_d']:.3f}")
        if image_every and dist.is_main and (done % image_every == 0 or done == 1):
            grid = _grid(last["src"], ((last["s2t"].detach() + 1) / 2).clamp(0, 1), last["tgt"])
            save_png(grid, work_dir / "images" / f"{STAGE}_{done:06d}.png")

    stopped = loop.run(train, report)
    if stopped is not None:
        return {"step": stopped, "final": str(loop.final_path), "stopped": True}
    critics.requires_grad_(True)
    loop.finish(translator_checkpoint(generators.source_to_target, stage=STAGE, step=steps, **summary))
    return {"step": steps, "final": str(loop.final_path)}
