"""The shared training loop: kill-and-resume equals an uninterrupted run; pseudo-labels; evaluation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from diga import FourierTranslator, create_model
from diga.adapter import Adapter
from diga.data.io import load_label
from diga.data.pseudo import PseudoLabelled
from diga.engine import OptimConfig, evaluate, generate_pseudo_labels, train_stage
from diga.engine.stages import stage_checkpoint

C = 3


class Toy(Dataset):
    """Tiny labelled images: class = quadrant; target is darker."""

    def __init__(self, n=8, dark=False):
        self.n, self.dark = n, dark

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        lbl = torch.zeros(16, 24, dtype=torch.long)
        lbl[8:] = 1
        lbl[:, 12:] = 2
        img = torch.rand(3, 16, 24, generator=g) * 0.2 + lbl.float()[None] / 3
        if self.dark:
            img = img * 0.5
        return {"image": img.clamp(0, 1), "label": lbl}


def make_adapter(seed=0):
    # DeepLabV2's head has Dropout2d: resume must restore the global RNG exactly, at the right time.
    torch.manual_seed(seed)
    net = create_model("deeplabv2", num_classes=C, encoder_name="resnet18")
    return Adapter(net, num_classes=C, translator=FourierTranslator(beta=0.1))


OPT = OptimConfig(optimizer="sgd", lr=0.01)


def run(work_dir, stage="warmup", stop_after=None, steps=6, **kw):
    ad = make_adapter()
    res = train_stage(
        ad, stage=stage, steps=steps, source=Toy(), target=Toy(dark=True), batch_size=2, optim=OPT,
        work_dir=work_dir, seed=3, checkpoint_every=2, stop_after=stop_after, show_progress=False, **kw
    )
    return ad, res


@pytest.mark.parametrize("stage", ["source_only", "warmup"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, stage):
    full, _ = run(tmp_path / "full", stage=stage)
    _, res = run(tmp_path / "killed", stage=stage, stop_after=3)  # killed after 3 steps (ckpt at 2)
    assert res.get("stopped") and not stage_checkpoint(tmp_path / "killed", stage, "final").exists()
    resumed, _ = run(tmp_path / "killed", stage=stage)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), k
    assert stage_checkpoint(tmp_path / "killed", stage, "final").exists()


def test_pseudo_labels_self_training_and_eval(tmp_path):
    ad, _ = run(tmp_path, stage="warmup", steps=4)
    target = Toy(n=6, dark=True)
    written = generate_pseudo_labels(ad, target, tmp_path / "pseudo", scales=(1.0, 0.5), show_progress=False)
    assert written == 6 and load_label(tmp_path / "pseudo" / "000005.png").shape == (16, 24)
    assert generate_pseudo_labels(ad, target, tmp_path / "pseudo", show_progress=False) == 0  # resumable
    ad.init_centroids(torch.stack([target[i]["image"] for i in range(6)]).split(2))
    evals = []
    res = train_stage(
        ad, stage="self_training", steps=4, source=Toy(), target=PseudoLabelled(target, tmp_path / "pseudo"),
        batch_size=2, optim=OPT, work_dir=tmp_path, seed=0, show_progress=False,
        eval_fn=lambda a: evals.append(1) or evaluate(a, Toy(n=4, dark=True), num_classes=C), eval_every=2,
        image_every=2, palette=[(255, 0, 0), (0, 255, 0), (0, 0, 255)],
    )
    assert len(res["history"]) == 2 and res["best"] is not None
    assert stage_checkpoint(tmp_path, "self_training", "best").exists()
    assert any((tmp_path / "images").iterdir())
    result = evaluate(ad, Toy(n=4, dark=True), num_classes=C)
    assert 0 <= result["miou"] <= 1 and len(result["iou"]) == C


def test_bad_stage(tmp_path):
    with pytest.raises(ValueError, match="stage"):
        train_stage(make_adapter(), stage="nope", steps=1, source=Toy(), batch_size=1, optim=OPT,
                    work_dir=tmp_path)
    with pytest.raises(ValueError, match="optimizer"):
        OptimConfig(optimizer="lbfgs")


def test_batch_composition_and_named_rounds(tmp_path):
    ad = make_adapter()
    seen = []
    orig = ad.warmup_step

    def spy(src, lbl, tgt, generator=None):
        seen.append((src.shape[0], tgt.shape[0]))
        return orig(src, lbl, tgt, generator=generator)

    ad.warmup_step = spy
    train_stage(ad, stage="warmup", name="warmup_round2", steps=2, source=[(Toy(), 1), (Toy(n=6), 2)],
                target=[(Toy(dark=True), 3)], optim=OPT, work_dir=tmp_path, show_progress=False)
    assert seen == [(3, 3), (3, 3)]
    assert stage_checkpoint(tmp_path, "warmup_round2", "final").exists()
    with pytest.raises(ValueError, match="batch_size"):
        train_stage(make_adapter(), stage="warmup", steps=1, source=Toy(), optim=OPT, work_dir=tmp_path)
    with pytest.raises(ValueError, match="source"):
        train_stage(make_adapter(), stage="warmup", steps=1, source=[(Toy(), 0)], optim=OPT,
                    work_dir=tmp_path)
