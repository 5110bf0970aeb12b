"""Layer-wise learning-rate decay (param_groups / OptimConfig.layer_decay) and the linear lr warm-up.

References are plain loops over named parameters: which layer a name belongs to, read from the name
the way BEiT / VFM-UDA number a ViT (stem 0, block i at i + 1), and the lr it must get.
"""

from __future__ import annotations

import re

import pytest
import torch

from diga.engine.loop import WARMUP_START, poly_schedule, warmup_factor
from diga.engine.optim import OptimConfig, make_optimizer, rise_schedule
from diga.models import create_model, param_groups, with_features

DEPTH = 3


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("timm", num_classes=3, encoder_name="vit_small_patch14_dinov2", depth=DEPTH,
                        img_size=56, decoder_dim=16)


def lr_of(groups) -> dict[int, float]:
    """Parameter id -> its group's lr; each parameter in exactly one group."""
    out: dict[int, float] = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "a parameter is in two groups"
            out[id(p)] = g["lr"]
    return out


def expected_lr(name: str, lr: float, head_mult: float, decay: float, blocks: int) -> float:
    """The paper-style rule spelled out per parameter name."""
    if not name.startswith("encoder."):
        return lr * head_mult
    block = re.match(r"encoder\.model\.blocks\.(\d+)\.", name)
    layer = int(block.group(1)) + 1 if block else 0  # everything outside the blocks here is the stem
    return lr * decay ** (blocks - layer)


class TestLayerDecay:
    @pytest.mark.parametrize("decay", [0.5, 0.9, 1.0])
    def test_each_parameter_against_a_loop(self, vit, decay):
        groups = param_groups(with_features(vit), 2e-4, head_lr_mult=10.0, layer_decay=decay)
        got = lr_of(groups)
        named = list(vit.named_parameters())
        assert len(got) == len(named)
        for name, p in named:
            assert got[id(p)] == pytest.approx(expected_lr(name, 2e-4, 10.0, decay, DEPTH), rel=1e-12), name
        assert len(groups) == DEPTH + 2  # stem, blocks, head
        torch.optim.AdamW(groups, lr=2e-4)  # a valid optimiser spec

    def test_stem_names_are_the_ones_we_think(self, vit):
        stem = [n for n, _ in vit.encoder.named_parameters() if ".blocks." not in n]
        assert sorted(stem) == ["model.cls_token", "model.patch_embed.proj.bias", "model.patch_embed.proj.weight",
                                "model.pos_embed"]

    def test_pruned_blocks_and_frozen_parameters(self):
        torch.manual_seed(0)
        model = create_model("timm", num_classes=2, encoder_name="vit_small_patch14_dinov2", depth=4, img_size=28,
                             out_indices=(0, 2), decoder_dim=8)
        kept = len(model.encoder.model.blocks)
        assert kept == 3  # timm drops the blocks after the last one decoded
        model.encoder.model.cls_token.requires_grad_(False)
        groups = param_groups(model, 1.0, head_lr_mult=3.0, layer_decay=0.5)
        got = lr_of(groups)
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert got[id(p)] == pytest.approx(expected_lr(name, 1.0, 3.0, 0.5, kept)), name
            else:
                assert id(p) not in got
        assert all(g["params"] for g in groups)

    def test_decay_one_is_the_plain_split(self, vit):
        plain_enc, plain_head = param_groups(vit, 0.1)
        layered = param_groups(vit, 0.1, layer_decay=1.0)
        assert {g["lr"] for g in layered[:-1]} == {0.1} and layered[-1]["lr"] == plain_head["lr"]
        assert {id(p) for g in layered[:-1] for p in g["params"]} == {id(p) for p in plain_enc["params"]}
        assert [id(p) for p in layered[-1]["params"]] == [id(p) for p in plain_head["params"]]

    def test_cnn_without_decay_is_unchanged(self):
        torch.manual_seed(0)
        for model in (create_model("timm", num_classes=2, encoder_name="resnet18", decoder_dim=8),
                      create_model("fpn", num_classes=2, encoder_name="resnet18")):
            enc, head = param_groups(model, 0.01, layer_decay=None)
            assert [id(p) for p in enc["params"]] == [id(p) for p in model.encoder.parameters()]
            rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
            assert [id(p) for p in head["params"]] == [id(p) for p in rest]
            assert (enc["lr"], head["lr"]) == (0.01, pytest.approx(0.1))
            with pytest.raises(ValueError, match="`layer_decay` needs an encoder with layers"):
                param_groups(model, 0.01, layer_decay=0.9)

    @pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, float("nan"), True, "0.9"])
    def test_bad_values(self, vit, bad):
        with pytest.raises(ValueError, match="layer_decay"):
            param_groups(vit, 0.1, layer_decay=bad)
        with pytest.raises(ValueError, match="layer_decay"):
            OptimConfig(layer_decay=bad)


class TestOptimizer:
    def test_make_optimizer_uses_layer_decay(self, vit):
        cfg = OptimConfig(optimizer="adamw", lr=1e-3, head_lr_mult=10.0, weight_decay=0.01, layer_decay=0.8)
        opt, _ = make_optimizer(with_features(vit), cfg, 100)
        got = lr_of([{"params": g["params"], "lr": g["initial_lr"]} for g in opt.param_groups])
        for name, p in vit.named_parameters():
            assert got[id(p)] == pytest.approx(expected_lr(name, 1e-3, 10.0, 0.8, DEPTH)), name
        assert {g["weight_decay"] for g in opt.param_groups} == {0.01}  # every group decays, as before
        assert isinstance(opt, torch.optim.AdamW)

    def test_cnn_default_config_is_the_paper_split(self):
        model = create_model("fpn", num_classes=2, encoder_name="resnet18")
        opt, sched = make_optimizer(model, OptimConfig(), 10)
        assert [g["lr"] for g in opt.param_groups] == [2.5e-4, pytest.approx(2.5e-3)]
        assert len(opt.param_groups[0]["params"]) == len(list(model.encoder.parameters()))

    @pytest.mark.parametrize("schedule", ["poly", "rise"])
    @pytest.mark.parametrize("warmup", [0, 3])
    def test_schedule_against_a_loop(self, schedule, warmup):
        total, power, base = 10, 0.9, 2.0
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=base)
        make = poly_schedule if schedule == "poly" else rise_schedule
        sched = make(opt, total, power, warmup_steps=warmup) if schedule == "poly" else \
            make(opt, total, warmup_steps=warmup)
        seen = []
        for _ in range(total):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        expected = []
        for k in range(total):
            decay = (1 - k / total) ** power if schedule == "poly" else k / total
            ramp = WARMUP_START + (1 - WARMUP_START) * k / warmup if k < warmup else 1.0
            expected.append(base * decay * ramp)
        assert seen == pytest.approx(expected, rel=1e-12)

    def test_warmup_resumes(self):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=1.0)
        sched = poly_schedule(opt, 20, 1.0, warmup_steps=5)
        for _ in range(3):
            opt.step()
            sched.step()
        state = sched.state_dict()
        opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched2 = poly_schedule(opt2, 20, 1.0, warmup_steps=5)
        sched2.load_state_dict(state)
        opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
        for _ in range(4):
            opt.step()
            sched.step()
            opt2.step()
            sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
        assert sched.get_last_lr()[0] == pytest.approx((1 - 7 / 20) * 1.0)

    def test_bad_warmup(self):
        for bad in (-1, 1.5, True):
            with pytest.raises(ValueError, match="warmup_steps"):
                OptimConfig(warmup_steps=bad)
            with pytest.raises(ValueError, match="warmup_steps"):
                poly_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 4, 1.0,
                              warmup_steps=bad)
        assert warmup_factor(0, 0) == 1.0 and warmup_factor(0, 10) == WARMUP_START
