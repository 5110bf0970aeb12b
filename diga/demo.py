"""The built-in domain-shift demo: source-only vs DiGA warm-up vs DiGA self-training, on a CPU.

``python -m diga demo`` and ``examples/quickstart.py`` run :func:`run_demo`.
"""

from __future__ import annotations

import argparse
import datetime
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from diga._ops import class_argmax
from diga.adapter import Adapter
from diga.data.cache import CachedDataset
from diga.data.pseudo import PseudoLabelled
from diga.data.synthetic import SHIFT_KINDS, SyntheticShift
from diga.engine.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint
from diga.engine.distributed import DistInfo, resolve_device
from diga.engine.log import JsonlLogger
from diga.engine.pipeline import device_name, versions
from diga.engine.plots import colorize, image_grid, line_plot, save_png
from diga.engine.stages import OptimConfig, evaluate, generate_pseudo_labels, stage_checkpoint, train_stage
from diga.metrics import pseudo_label_counts
from diga.models import create_model
from diga.selectors import ConfidenceThresholdSelector
from diga.translation import FourierTranslator

__all__ = ["EXPECTATIONS", "DemoConfig", "LoopConfig", "ShiftExperiment", "adapter_loop", "check_expectations", "main",
           "run_demo"]


@dataclass
class DemoConfig:
    """Settings of the demo (the built-in appearance shift at 48 x 64, a small U-Net from scratch).

    The teacher uses the library's defaults (its averaging window grows with the run,
    docs/findings.md); the centroids move with 1e-3 (the paper's 1e-4 is for 80k steps).
    Items are drawn once (:class:`~diga.data.CachedDataset`). Timings and scores are in
    README.md and docs/benchmarks.md.
    """

    work_dir: str = "runs/demo"
    seeds: tuple[int, ...] = (0,)
    size: tuple[int, int] = (48, 64)
    source_items: int = 2000
    target_items: int = 1000
    val_items: int = 200
    batch_size: int = 8
    source_steps: int = 400
    st_steps: int = 300
    eval_every: int = 100
    lr: float = 1e-3
    fourier_beta: float = 0.02
    teacher_momentum: float = 0.999
    centroid_momentum: float = 1e-3
    threshold: float = 0.9
    scales: tuple[float, ...] = (1.0, 0.5)
    device: str = "auto"
    show_progress: bool = True
    encoder_name: str = "resnet18"
    decoder_channels: tuple[int, ...] = (64, 32, 16, 16)
    variants: tuple[str, ...] = field(default=("source_only", "warmup", "self_training", "threshold"))

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The same code path in seconds (tests, smoke runs): tiny data, a few steps."""
        base = cls(size=(32, 48), source_items=16, target_items=8, val_items=4, batch_size=2,
                   source_steps=3, st_steps=3, eval_every=3, decoder_channels=(16, 8, 8, 8))
        return replace(base, **overrides)


VARIANT_LABELS = {
    "source_only": "source-only",
    "warmup": "DiGA warm-up",
    "self_training": "DiGA self-training (dynamic selection)",
    "threshold": "self-training, confidence threshold",
}


class ShiftExperiment:
    """Training runs of one seed on the built-in shift: the demo's and the quality benchmark's.

    Args:
        cfg: sizes, steps, optimiser and momenta.
        seed: seeds data, model initialisation, data order and augmentation.
        dist: where to run.
    """

    def __init__(self, cfg: DemoConfig, seed: int, dist: DistInfo, shift: str = "appearance") -> None:
        self.cfg, self.seed, self.dist, self.shift = cfg, seed, dist, shift
        self.work = Path(cfg.work_dir) / (f"seed{seed}" if shift == "appearance" else f"{shift}/seed{seed}")
        # Every item is read several times; drawing it takes longer than a small model's step on it.
        def data(domain: str, length: int, data_seed: int) -> CachedDataset:
            return CachedDataset(SyntheticShift(domain, shift=shift, size=cfg.size, length=length, seed=data_seed))

        self.source = data("source", cfg.source_items, seed)
        self.target = data("target", cfg.target_items, seed)
        self.val = data("target", cfg.val_items, 10_000 + seed)
        self.num_classes = self.source.num_classes
        self.optim = OptimConfig(optimizer="adamw", lr=cfg.lr, head_lr_mult=1.0, weight_decay=1e-4, power=0.9)
        self._pretrained: dict[str, torch.Tensor] | None = None

    def _model(self) -> torch.nn.Module:
        cfg = self.cfg
        torch.manual_seed(self.seed)
        return create_model("unet", num_classes=self.num_classes, encoder_name=cfg.encoder_name,
                            encoder_depth=len(cfg.decoder_channels), decoder_channels=list(cfg.decoder_channels))

    def pretrained_encoder(self) -> dict[str, torch.Tensor]:
        """Encoder weights "pretrained elsewhere", the stand-in for ImageNet weights (none can be downloaded).

        The same U-Net, trained for ``source_steps`` steps with labels on the *other* kinds' targets
        (``cfg.target_items`` each, data seeds this experiment never uses), never on this shift's
        target or source; only its encoder is kept, as an ImageNet-pretrained encoder is. Made once
        per experiment (its checkpoints are the ``pretrain`` stage in the work folder).
        """
        if self._pretrained is None:
            cfg = self.cfg
            pool = torch.utils.data.ConcatDataset([
                CachedDataset(SyntheticShift("target", shift=kind, size=cfg.size, length=cfg.target_items,
                                             seed=20_000 + 100 * i + self.seed))
                for i, kind in enumerate(k for k in SHIFT_KINDS if k != self.shift)])
            adapter = Adapter(self._model(), self.num_classes).to(self.dist.device)
            self.train(adapter, "source_only", "pretrain", cfg.source_steps, source=pool)
            encoder = adapter.student.model.encoder
            self._pretrained = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        return self._pretrained

    def adapter(self, *, pretrained: bool = False, **kwargs: Any) -> Adapter:
        """A fresh adapter around a freshly initialised model (the same init for every variant).

        ``pretrained=True`` loads :meth:`pretrained_encoder` into it (decoder and head stay fresh).
        """
        cfg = self.cfg
        encoder = self.pretrained_encoder() if pretrained else None
        model = self._model()
        if encoder is not None:
            model.encoder.load_state_dict(encoder)
        if kwargs.get("setting", "uda") == "uda":  # DG and SSL have no translation
            kwargs.setdefault("translator", FourierTranslator(beta=cfg.fourier_beta))
        kwargs.setdefault("teacher_momentum", cfg.teacher_momentum)
        kwargs.setdefault("centroid_momentum", cfg.centroid_momentum)
        return Adapter(model, self.num_classes, **kwargs).to(self.dist.device)

    def evaluate(self, adapter: Adapter, val=None) -> dict[str, Any]:
        """Target mIoU on this shift's validation items (or on ``val``)."""
        return evaluate(adapter, self.val if val is None else val, num_classes=self.num_classes,
                        scales=self.cfg.scales, dist=self.dist, batch_size=16)

    def val_of(self, shift: str) -> CachedDataset:
        """The validation items of another kind of target, drawn as this experiment's own (same seed)."""
        if shift == self.shift:
            return self.val
        return CachedDataset(SyntheticShift("target", shift=shift, size=self.cfg.size, length=self.cfg.val_items,
                                            seed=10_000 + self.seed))

    def train(self, adapter: Adapter, stage: str, name: str, steps: int, target=None,
              offset: int = 0, source=None) -> dict[str, Any]:
        """Train one stage; returns final target ``miou``/``iou``, the mIoU ``history`` and the log's
        averages of the self-training statistics. ``source`` replaces the labelled set (the oracle
        trains on the labelled target)."""
        cfg = self.cfg
        res = train_stage(
            adapter, stage=stage, name=name, steps=steps, source=self.source if source is None else source,
            target=target,
            batch_size=cfg.batch_size, optim=self.optim, work_dir=self.work, seed=self.seed, dist=self.dist,
            eval_fn=self.evaluate, eval_every=cfg.eval_every,
            log_every=max(1, cfg.eval_every // 4) if cfg.eval_every else 10,
            checkpoint_every=250, show_progress=cfg.show_progress,
            palette=self.source.palette,
        )
        final = self.evaluate(adapter)
        out = {"miou": final["miou"], "iou": final["iou"],
               "history": [(offset + r["step"], r["miou"]) for r in res["history"]]}
        records = [r for r in JsonlLogger.read(self.work / "log.jsonl") if r.get("stage") == name]
        for key in ("kept", "precision_before", "precision_after", "collapse"):
            values = [r[key] for r in records if r.get(key) is not None]  # a NaN is logged as null
            if values:
                out[key] = sum(values) / len(values)
        return out

    def oracle(self) -> dict[str, Any]:
        """The same model and budget trained on the labelled target (the target training set's labels)."""
        return self.train(self.adapter(), "source_only", "oracle", self.cfg.source_steps, source=self.target)

    def state(self, name: str) -> dict:
        """The adapter state a stage ended with."""
        return load_checkpoint(stage_checkpoint(self.work, name, "final"))["adapter"]

    def pseudo_labels(self, adapter: Adapter, name: str = "pseudo", data=None) -> CachedDataset:
        """Offline pseudo-labels of the target training set (or of ``data``; multi-scale), as a dataset."""
        directory = self.work / name
        data = self.target if data is None else data
        generate_pseudo_labels(adapter, data, directory, scales=self.cfg.scales, dist=self.dist,
                               show_progress=self.cfg.show_progress)
        return CachedDataset(PseudoLabelled(data, directory))

    def self_training(self, name: str, warm_state: dict, pseudo: CachedDataset | None, *, source=None,
                      target=None, centroid_data=None, **adapter_kwargs: Any) -> tuple[Adapter, dict[str, Any]]:
        """Self-training from a warm-up state: centroids from the target (the teacher restarts at the
        first step). ``pseudo=None`` is online mode: the target's labels are read for monitoring only.
        ``source`` / ``target`` / ``centroid_data`` replace the labelled set, the unlabelled set and the
        centroid pass's images (the semi-supervised setting: labelled and unlabelled target items)."""
        adapter = self.adapter(**adapter_kwargs)
        adapter.load_state_dict(warm_state)
        centroid_data = self.target if centroid_data is None else centroid_data
        adapter.init_centroids(torch.utils.data.DataLoader(centroid_data, batch_size=32))
        target = self.target if target is None else target
        result = self.train(adapter, "self_training", name, self.cfg.st_steps,
                            target=target if pseudo is None else pseudo, offset=self.cfg.source_steps, source=source)
        return adapter, result


def _one_seed(cfg: DemoConfig, seed: int, dist: DistInfo) -> dict[str, Any]:
    exp = ShiftExperiment(cfg, seed, dist)
    out: dict[str, Any] = {"history": {}, "miou": {}, "iou": {}}

    def keep(name: str, result: dict[str, Any]) -> None:
        out["miou"][name], out["iou"][name], out["history"][name] = result["miou"], result["iou"], result["history"]

    if "source_only" in cfg.variants:
        keep("source_only", exp.train(exp.adapter(), "source_only", "source_only", cfg.source_steps))
    warm = exp.adapter()
    keep("warmup", exp.train(warm, "warmup", "warmup", cfg.source_steps, target=exp.target))
    pseudo = exp.pseudo_labels(warm)
    out["pseudo_label_precision"] = _precision(pseudo, warm.ignore_index)
    for name, kwargs in (("self_training", {}),
                         ("threshold", {"selector": ConfidenceThresholdSelector(threshold=cfg.threshold)})):
        if name not in cfg.variants:
            continue
        st, result = exp.self_training(name, exp.state("warmup"), pseudo, **kwargs)
        keep(name, result)
        if name == "self_training":
            _pictures(st, exp.source, pseudo, exp.work / "demo.png", dist)
            out["kept_fraction"] = result.get("kept")
            out["selected_precision"] = result.get("precision_after")
    return out


def _precision(data: CachedDataset, ignore_index: int) -> float:
    """Dataset-wide pseudo-label precision: the counts summed over the items, then one ratio."""
    correct = total = 0
    for i in range(len(data)):
        item = data[i]
        c, n = pseudo_label_counts(item["pseudo_label"], item["label"], ignore_index=ignore_index)
        correct += int(c)
        total += int(n)
    return correct / max(total, 1)


@torch.no_grad()
def _pictures(adapter: Adapter, source, pseudo_labelled, path: Path, dist: DistInfo) -> None:
    """Source, translated, mixed, target, pseudo-label before/after selection, prediction, truth."""
    n = 4
    src_items = [source[i] for i in range(n)]
    src = torch.stack([it["image"] for it in src_items]).to(dist.device)
    src_lbl = torch.stack([it["label"] for it in src_items]).to(dist.device)
    items = [pseudo_labelled[i] for i in range(n)]
    tgt = torch.stack([it["image"] for it in items]).to(dist.device)
    pseudo = torch.stack([it["pseudo_label"] for it in items]).to(dist.device)
    truth = torch.stack([it["label"] for it in items])
    g = torch.Generator().manual_seed(0)
    adapter.eval()
    warm = adapter.warmup_step(src, src_lbl, tgt, generator=g)
    # The selection the stage trained with: the teacher's features by default, the frozen labeller's for
    # select_with="labeller".
    reader = adapter.labeller if adapter.select_with == "labeller" else adapter.teacher
    logits, feats = reader(tgt)
    selected = adapter.selector(pseudo, features=feats, logits=logits)
    pred = class_argmax(adapter.predict(tgt))
    pal = source.palette
    rows = {
        "source": src, "translated": warm.images["translated"], "mixed": warm.images["mixed"],
        "target": tgt, "pseudo-label": colorize(pseudo, pal), "selected": colorize(selected, pal),
        "prediction": colorize(pred, pal), "ground truth": colorize(truth, pal),
    }
    save_png(image_grid({k: v.cpu() for k, v in rows.items()}, labels=True, scale=3), path)  # rows named, readable


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def format_table(summary: dict[str, Any]) -> str:
    """The markdown table of target mIoU per variant (mean +- std over seeds)."""
    lines = ["| variant | target mIoU (%) |", "| --- | --- |"]
    for name, label in VARIANT_LABELS.items():
        if name in summary["miou"]:
            m, s = summary["miou"][name]
            std = f" +- {100 * s:.1f}" if summary["num_seeds"] > 1 else ""
            lines.append(f"| {label} | {100 * m:.1f}{std} |")
    return "\n".join(lines)


# What the demo is expected to show: (name, better variant, worse variant).
EXPECTATIONS = (
    ("warm-up beats source-only", "warmup", "source_only"),
    ("self-training beats warm-up", "self_training", "warmup"),
    ("dynamic selection beats the confidence threshold", "self_training", "threshold"),
)


def check_expectations(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of :data:`EXPECTATIONS` whose two variants ran: the mean mIoUs and whether it held.

    Example:
        >>> check_expectations({"miou": {"warmup": (0.4, 0.0), "source_only": (0.3, 0.0)}})[0]["held"]
        True
    """
    out = []
    for claim, better, worse in EXPECTATIONS:
        if better in summary["miou"] and worse in summary["miou"]:
            a, b = summary["miou"][better][0], summary["miou"][worse][0]
            out.append({"claim": claim, "better": better, "worse": worse, "held": a > b,
                        "means": (a, b)})
    return out


def format_expectations(checks: list[dict[str, Any]]) -> str:
    """One line per checked expectation, e.g. ``- warm-up beats source-only: yes (36.3 vs 26.7)``."""
    return "\n".join(f"- {c['claim']}: {'yes' if c['held'] else 'NO'} "
                     f"({100 * c['means'][0]:.1f} vs {100 * c['means'][1]:.1f})" for c in checks)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Train every variant for every seed; write results, table, pictures and the mIoU plot.

    Writes to ``cfg.work_dir``: ``results.json`` (config, versions, device, per
    seed and averaged mIoU), ``results.md`` (the table), ``miou.png`` (target
    mIoU over steps, seed ``cfg.seeds[0]``) and ``seed<k>/demo.png`` (source,
    translated, mixed, target, pseudo-label before/after selection,
    prediction, ground truth).
    """
    device = resolve_device(cfg.device)
    dist = DistInfo(0, 1, 0, device)
    started = datetime.datetime.now()
    per_seed = {seed: _one_seed(cfg, seed, dist) for seed in cfg.seeds}
    summary: dict[str, Any] = {
        "num_seeds": len(cfg.seeds),
        "miou": {k: _mean_std([r["miou"][k] for r in per_seed.values()])
                 for k in VARIANT_LABELS if all(k in r["miou"] for r in per_seed.values())},
    }
    summary["expectations"] = check_expectations(summary)
    first = per_seed[cfg.seeds[0]]
    series = {VARIANT_LABELS[k]: ([p[0] for p in v], [p[1] for p in v]) for k, v in first["history"].items()}
    work = Path(cfg.work_dir)
    save_png(line_plot(series, title="target mIoU over training steps", xlabel="step", ylabel="mIoU"),
             work / "miou.png")
    table = format_table(summary)
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    header = (f"Built-in domain shift, {len(cfg.seeds)} seed(s), {started:%Y-%m-%d}, "
              f"{device_name(device)}, torch {torch.__version__}, {minutes:.1f} min\n\n")
    checks = format_expectations(summary["expectations"])
    footer = f"\nMean over seeds:\n{checks}\n" if checks else ""
    atomic_write_text(work / "results.md", header + table + "\n" + footer)
    results = {"config": asdict(cfg), "versions": versions(), "device": device_name(device),
               "date": started.isoformat(timespec="seconds"), "minutes": minutes,
               "summary": summary, "per_seed": per_seed}
    atomic_write_json(work / "results.json", results)
    return results


def add_demo_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--work-dir", default="runs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds to average (default: 1)")
    parser.add_argument("--quick", action="store_true", help="a few steps on tiny data (seconds)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_demo_args(argparse.ArgumentParser(description="DiGA on the built-in domain shift"))
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    make = DemoConfig.quick if args.quick else DemoConfig
    cfg = make(work_dir=args.work_dir, seeds=tuple(range(args.seeds)), device=args.device,
               show_progress=not args.no_progress)
    results = run_demo(cfg)
    print((Path(cfg.work_dir) / "results.md").read_text())
    print(f"pictures: {Path(cfg.work_dir) / f'seed{cfg.seeds[0]}' / 'demo.png'}; "
          f"mIoU over steps: {Path(cfg.work_dir) / 'miou.png'}")
    return results


@dataclass
class LoopConfig:
    """The :class:`~diga.Adapter` docstring's loop, as a new user writes it (issue 12's settings by default).

    ``SyntheticShift`` items of ``size`` (``items`` source with seed 0, ``items`` target with seed 1,
    ``val_items`` labelled target with seed 2), ``smp.Unet("resnet18", encoder_weights=None,
    decoder_channels=decoder_channels)`` seeded with ``seed``, ``Adapter(model, C,
    translator=FourierTranslator())`` with every other argument left at its default,
    ``AdamW(student.parameters(), lr)``, batch ``batch_size``; ``warmup_steps`` warm-up steps, one
    centroid pass over the target images, ``st_steps`` online self-training steps, on ``device``
    (``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device string; the model and every batch go there;
    the data, the augmentations and the masks are drawn from one CPU generator, so the draws do not
    depend on the device).
    """

    shift: str = "appearance"
    seed: int = 0
    size: tuple[int, int] = (64, 64)
    items: int = 256
    val_items: int = 64
    batch_size: int = 8
    warmup_steps: int = 300
    st_steps: int = 300
    lr: float = 1e-3
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    eval_every: int = 100
    device: str = "cpu"


def adapter_loop(cfg: LoopConfig) -> dict[str, Any]:
    """Run :class:`LoopConfig`'s loop; target mIoU of the student after warm-up and during self-training.

    Returns:
        ``{"warmup": mIoU, "self_training": final mIoU, "history": [(stage, step, mIoU)],
        "collapse": times the collapse watch fired, "kept": mean kept fraction}``.
    """
    import segmentation_models_pytorch as smp

    from diga.metrics import ConfusionMatrix

    try:
        device = resolve_device(cfg.device)
    except ValueError as err:
        raise ValueError(f"LoopConfig.device: {err}") from err

    def data(domain: str, length: int, seed: int) -> CachedDataset:
        return CachedDataset(SyntheticShift(domain, shift=cfg.shift, size=cfg.size, length=length, seed=seed))

    source, target, val = data("source", cfg.items, 0), data("target", cfg.items, 1), data("target", cfg.val_items, 2)
    num_classes = source.num_classes
    g = torch.Generator().manual_seed(cfg.seed + 100)

    def draw(dataset: CachedDataset) -> tuple[torch.Tensor, torch.Tensor]:
        items = [dataset[i] for i in torch.randint(0, len(dataset), (cfg.batch_size,), generator=g).tolist()]
        return (torch.stack([it["image"] for it in items]).to(device),
                torch.stack([it["label"] for it in items]).to(device))

    def miou(adapter: Adapter) -> float:
        cm = ConfusionMatrix(num_classes)
        for batch in torch.utils.data.DataLoader(val, batch_size=32):
            cm.update(class_argmax(adapter.predict(batch["image"].to(device), scales=(1.0,))),
                      batch["label"].to(device))
        return float(cm.compute()["miou"])

    torch.manual_seed(cfg.seed)
    model = smp.Unet("resnet18", encoder_weights=None, classes=num_classes,
                     decoder_channels=tuple(cfg.decoder_channels), encoder_depth=len(cfg.decoder_channels))
    adapter = Adapter(model.to(device), num_classes, translator=FourierTranslator())
    opt = torch.optim.AdamW(adapter.student.parameters(), cfg.lr)
    history: list[tuple[str, int, float]] = []
    adapter.train()
    for step in range(1, cfg.warmup_steps + 1):
        (src, lbl), (tgt, _) = draw(source), draw(target)
        adapter.warmup_step(src, lbl, tgt, generator=g).loss.backward()
        opt.step()
        opt.zero_grad()
        adapter.update_teacher()
        if step % cfg.eval_every == 0 or step == cfg.warmup_steps:
            history.append(("warmup", step, miou(adapter)))
    warm = history[-1][2]
    adapter.init_centroids(torch.utils.data.DataLoader(target, batch_size=32))
    collapses, kept = 0, []
    for step in range(1, cfg.st_steps + 1):
        (src, lbl), (tgt, tgt_lbl) = draw(source), draw(target)
        out = adapter.self_training_step(src, lbl, tgt, target_labels=tgt_lbl, generator=g)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        adapter.update_teacher()
        collapses += int(float(out.parts["collapse"]) > 0)
        kept.append(float(out.parts["kept"]))
        if step % cfg.eval_every == 0 or step == cfg.st_steps:
            history.append(("self_training", step, miou(adapter)))
    return {"warmup": warm, "self_training": history[-1][2], "history": history, "collapse": collapses,
            "kept": sum(kept) / max(len(kept), 1)}
