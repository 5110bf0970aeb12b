"""SyntheticShift: item contract, determinism, and the designed source -> target differences."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from diga.data import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from diga.data.synthetic import CONTROL_SHIFT_KINDS, SHIFT_KINDS, SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SyntheticShift

DOMAINS = ("source", "target")
N_STATS = 50  # items per domain behind the statistical tests
IGNORE = 255
C = len(SYNTHETIC_CLASSES)
CLS = {name: i for i, name in enumerate(SYNTHETIC_CLASSES)}


def _pair(item: dict) -> tuple[torch.Tensor, torch.Tensor]:
    assert set(item) == {"image", "label", "name"}  # the item contract of every diga dataset
    return item["image"], item["label"]


def _stack(domain: str, n: int = N_STATS, seed: int = 0, size=(64, 96)):
    data = SyntheticShift(domain, size=size, length=n, seed=seed)
    images, labels = zip(*(_pair(data[i]) for i in range(n)), strict=True)
    return torch.stack(images), torch.stack(labels)


@pytest.fixture(scope="module")
def items() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``N_STATS`` items per domain: images ``(N, 3, 64, 96)``, labels ``(N, 64, 96)``."""
    return {domain: _stack(domain) for domain in DOMAINS}


def _fractions(labels: torch.Tensor) -> torch.Tensor:
    """Share of all pixels per class ``(C,)`` (ignore pixels count in the denominator)."""
    return torch.bincount(labels.flatten(), minlength=IGNORE + 1)[:C].double() / labels.numel()


def _saturation(images: torch.Tensor) -> torch.Tensor:
    high = images.amax(dim=1)
    return (high - images.amin(dim=1)) / high.clamp(min=1e-6)


class TestSyntheticShift:
    # -- contract ------------------------------------------------------------------------------

    @pytest.mark.parametrize("domain", DOMAINS)
    @pytest.mark.parametrize("size", [(64, 96), (40, 56), (17, 130)])
    def test_item_shapes_dtypes_ranges(self, domain, size):
        data = SyntheticShift(domain, size=size, length=3, seed=1)
        for i in range(len(data)):
            image, label = _pair(data[i])
            assert image.shape == (3, *size) and image.dtype == torch.float32
            assert label.shape == size and label.dtype == torch.int64
            assert image.min() >= 0 and image.max() <= 1 and torch.isfinite(image).all()
            valid = (label >= 0) & (label < C)
            assert (valid | (label == IGNORE)).all()

    def test_large_item(self):
        image, label = _pair(SyntheticShift("target", size=(256, 512), length=1)[0])
        assert image.shape == (3, 256, 512) and label.shape == (256, 512)
        assert len(torch.unique(label)) >= 5

    def test_class_tables(self):
        assert SyntheticShift.classes == SYNTHETIC_CLASSES
        assert SyntheticShift.palette == SYNTHETIC_PALETTE
        assert SyntheticShift.num_classes == C == len(SYNTHETIC_PALETTE)
        assert 7 <= C <= 8 and SyntheticShift.ignore_index == IGNORE
        order = [CITYSCAPES_CLASSES.index(name) for name in SYNTHETIC_CLASSES]
        assert order == sorted(order)  # a subset, in Cityscapes order
        for name, colour in zip(SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, strict=True):
            assert CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)] == colour

    def test_len_and_repr(self):
        data = SyntheticShift("source", length=7, seed=3)
        assert len(data) == 7
        assert "source" in repr(data) and "seed=3" in repr(data)

    # -- determinism -----------------------------------------------------------------------------

    @pytest.mark.parametrize("domain", DOMAINS)
    def test_same_arguments_same_items(self, domain):
        a = SyntheticShift(domain, length=10, seed=5)
        b = SyntheticShift(domain, length=10, seed=5)
        for i in (0, 3, 9):
            image_a, label_a = _pair(a[i])
            image_b, label_b = _pair(b[i])
            assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
        assert torch.equal(a[3]["image"], a[3]["image"])  # repeated access, no hidden state

    def test_item_does_not_depend_on_length_or_global_seed(self):
        torch.manual_seed(123)
        first = SyntheticShift("target", length=4, seed=2)[3]
        torch.manual_seed(456)
        torch.rand(10)
        second = SyntheticShift("target", length=100, seed=2)[3]
        assert torch.equal(first["image"], second["image"]) and torch.equal(first["label"], second["label"])

    def test_different_seeds_indices_and_domains_differ(self):
        def labels(domain, seed, index):
            return SyntheticShift(domain, length=8, seed=seed)[index]["label"]

        assert not torch.equal(labels("source", 0, 0), labels("source", 1, 0))
        assert not torch.equal(labels("source", 0, 0), labels("source", 0, 1))
        assert not torch.equal(labels("source", 0, 0), labels("target", 0, 0))
        images = [SyntheticShift("target", length=1, seed=s)[0]["image"] for s in (0, 1)]
        assert not torch.equal(*images)

    # -- the designed domain shift, measured over N_STATS items per domain -----------------------

    @pytest.mark.parametrize("domain", DOMAINS)
    def test_every_class_appears(self, items, domain):
        _, labels = items[domain]
        present = torch.bincount(labels.flatten(), minlength=IGNORE + 1)[:C] > 0
        missing = [name for name, here in zip(SYNTHETIC_CLASSES, present.tolist(), strict=True) if not here]
        assert not missing, f"{domain}: missing {missing}"
        # The big classes are in (nearly) every scene.
        for name in ("road", "sidewalk", "building", "sky"):
            per_item = (labels == CLS[name]).flatten(1).any(1)
            assert per_item.float().mean() >= 0.95, name

    def test_class_frequencies_differ_as_designed(self, items):
        src, tgt = _fractions(items["source"][1]), _fractions(items["target"][1])
        assert tgt[CLS["car"]] > 1.4 * src[CLS["car"]]  # more cars in the target
        assert tgt[CLS["person"]] < 0.75 * src[CLS["person"]]  # fewer persons
        assert tgt[CLS["pole"]] < 0.6 * src[CLS["pole"]]  # fewer poles
        assert tgt[CLS["sky"]] > src[CLS["sky"]] + 0.04  # lower buildings, more sky
        assert tgt[CLS["building"]] < src[CLS["building"]] - 0.04
        for name in ("person", "pole", "car"):  # small classes are small in both
            assert 0.002 < src[CLS[name]] < 0.1 and 0.002 < tgt[CLS[name]] < 0.1, name

    def test_colours_differ(self, items):
        (src_x, src_y), (tgt_x, tgt_y) = items["source"], items["target"]
        src_sat, tgt_sat = _saturation(src_x), _saturation(tgt_x)
        # Saturated "game engine" source vs desaturated real-like target.
        assert src_sat.mean() > tgt_sat.mean() + 0.08
        # Class colour cues do not carry over: source cars are saturated, target cars muted.
        car = CLS["car"]
        assert src_sat[src_y == car].mean() > 0.6 and tgt_sat[tgt_y == car].mean() < 0.45
        # Target poles are dark, source poles light.
        pole = CLS["pole"]
        assert src_x.permute(1, 0, 2, 3)[:, src_y == pole].mean() > tgt_x.permute(1, 0, 2, 3)[
            :, tgt_y == pole
        ].mean() + 0.15
        # Per-image lighting: the target's mean brightness varies more across images.
        assert tgt_x.mean(dim=(1, 2, 3)).std() > src_x.mean(dim=(1, 2, 3)).std()

    def test_target_has_texture_and_noise(self, items):
        """Inside one surface, target pixels vary more (grain, marks, clouds, noise) than source ones."""
        road, sky = CLS["road"], CLS["sky"]

        def road_std(images, labels):
            stds = [image[:, label == road].std(dim=1).mean() for image, label in zip(images, labels, strict=True)]
            return torch.stack(stds).mean()

        def sky_step(images, labels):  # mean horizontal step between neighbouring sky pixels
            inside = (labels[:, :, 1:] == sky) & (labels[:, :, :-1] == sky)
            return (images[..., 1:] - images[..., :-1]).abs().mean(dim=1)[inside].mean()

        assert road_std(*items["target"]) > 1.5 * road_std(*items["source"])
        assert sky_step(*items["target"]) > sky_step(*items["source"])

    @pytest.mark.parametrize("domain", DOMAINS)
    def test_ignore_present_but_rare(self, items, domain):
        _, labels = items[domain]
        ignored = (labels == IGNORE).double().mean()
        assert 0 < ignored < 0.05
        with_ignore = (labels == IGNORE).flatten(1).any(1).double().mean()
        assert 0.1 < with_ignore < 0.9  # some images have it, some do not

    # -- bad input ---------------------------------------------------------------------------------

    @pytest.mark.parametrize("index", [-1, -8, 8, 100])
    def test_index_out_of_range(self, index):
        data = SyntheticShift("source", length=8)
        with pytest.raises(IndexError, match="index"):
            data[index]

    def test_index_types(self):
        data = SyntheticShift("source", length=8)
        assert torch.equal(data[torch.tensor(2)]["label"], data[2]["label"])
        with pytest.raises(TypeError, match="index"):
            data[1.5]

    @pytest.mark.parametrize("domain", ["real", "Source", "", None, 0])
    def test_bad_domain(self, domain):
        with pytest.raises(ValueError, match="domain"):
            SyntheticShift(domain)

    @pytest.mark.parametrize("size", [(8, 96), (64, 15), (64,), (64, 96, 3), 64, (64.0, 96), (True, 96)])
    def test_bad_size(self, size):
        with pytest.raises(ValueError, match="size"):
            SyntheticShift("source", size=size)

    @pytest.mark.parametrize("length", [0, -1, 2.5, "8", True])
    def test_bad_length(self, length):
        with pytest.raises(ValueError, match="length"):
            SyntheticShift("source", length=length)

    @pytest.mark.parametrize("seed", [-1, 0.5, None])
    def test_bad_seed(self, seed):
        with pytest.raises(ValueError, match="seed"):
            SyntheticShift("source", seed=seed)

    def test_settings_are_keyword_only(self):
        with pytest.raises(TypeError):
            SyntheticShift("source", (64, 96))

    # -- with a DataLoader -------------------------------------------------------------------------

    def test_dataloader_batches(self):
        data = SyntheticShift("target", size=(32, 48), length=10, seed=4)
        batches = list(DataLoader(data, batch_size=4, num_workers=0))
        assert [b["image"].shape[0] for b in batches] == [4, 4, 2]
        images, labels = batches[0]["image"], batches[0]["label"]
        assert images.shape == (4, 3, 32, 48) and images.dtype == torch.float32
        assert labels.shape == (4, 32, 48) and labels.dtype == torch.int64
        assert torch.equal(labels[1], data[1]["label"])
        assert batches[0]["name"] == ["000000", "000001", "000002", "000003"]


# -- the other kinds of shift ------------------------------------------------------------------------

OTHER_SHIFTS = ("sensor", "layout", "weather")


def _stack_shift(shift: str, n: int = 24, seed: int = 0, size=(48, 64)):
    data = SyntheticShift("target", shift=shift, size=size, length=n, seed=seed)
    images, labels = zip(*(_pair(data[i]) for i in range(n)), strict=True)
    return torch.stack(images), torch.stack(labels)


@pytest.fixture(scope="module")
def shifted() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """24 target items of every shift kind and 24 source items, 48 x 64."""
    out = {kind: _stack_shift(kind) for kind in SHIFT_KINDS + CONTROL_SHIFT_KINDS}
    out["source"] = _stack("source", 24, size=(48, 64))
    return out


class TestShiftKinds:
    def test_kinds(self):
        assert SHIFT_KINDS == ("appearance", "sensor", "layout", "weather")

    def test_appearance_is_the_default_target(self):
        default = SyntheticShift("target", length=3, seed=4)
        named = SyntheticShift("target", shift="appearance", length=3, seed=4)
        for i in range(3):
            assert torch.equal(default[i]["image"], named[i]["image"])
            assert torch.equal(default[i]["label"], named[i]["label"])

    @pytest.mark.parametrize("shift", SHIFT_KINDS)
    def test_source_is_one_for_every_shift(self, shift):
        a, b = SyntheticShift("source", length=2, seed=1), SyntheticShift("source", shift=shift, length=2, seed=1)
        assert torch.equal(a[1]["image"], b[1]["image"]) and torch.equal(a[1]["label"], b[1]["label"])

    @pytest.mark.parametrize("shift", OTHER_SHIFTS + CONTROL_SHIFT_KINDS)
    def test_contract_and_determinism(self, shift, shifted):
        images, labels = shifted[shift]
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
        assert ((labels < C) | (labels == IGNORE)).all()
        again = SyntheticShift("target", shift=shift, size=(48, 64), length=24, seed=0)[5]
        assert torch.equal(again["image"], images[5]) and torch.equal(again["label"], labels[5])
        present = torch.bincount(labels.flatten(), minlength=IGNORE + 1)[:C] > 0
        assert present.all(), f"{shift}: a class never appears"

    @pytest.mark.parametrize("shift", SHIFT_KINDS)
    def test_targets_of_two_kinds_differ(self, shift, shifted):
        others = [k for k in SHIFT_KINDS if k != shift]
        for other in others:
            assert not torch.equal(shifted[shift][0], shifted[other][0])

    def test_sensor_and_weather_keep_the_source_world(self, shifted):
        """Same layout statistics as the source: only the camera or the weather changed."""
        src = _fractions(shifted["source"][1])
        for kind in ("sensor", "weather"):
            tgt = _fractions(_stack_shift(kind, n=24, seed=0)[1])
            big = src > 0.05
            assert ((tgt[big] - src[big]).abs() < 0.06).all(), kind

    def test_sensor_mixes_colours_and_lowers_resolution(self, shifted):
        (src_x, _), (tgt_x, _) = shifted["source"], shifted["sensor"]
        # Lifted shadows and mixed channels: less saturated, brighter dark pixels.
        assert _saturation(src_x).mean() > _saturation(tgt_x).mean() + 0.1
        assert tgt_x.amin(dim=1).mean() > src_x.amin(dim=1).mean() + 0.1
        # Lower resolution: horizontal steps of the clean signal shrink (noise aside, measured on the mean
        # over channels of a 2x2-pooled image, which averages most of the noise away).
        def edges(x):
            pooled = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 2)
            return (pooled[..., 1:] - pooled[..., :-1]).abs().quantile(0.99)

        assert edges(tgt_x) < edges(src_x)

    def test_layout_is_crowded(self, shifted):
        src, tgt = _fractions(shifted["source"][1]), _fractions(shifted["layout"][1])
        assert tgt[CLS["car"]] > 2.5 * src[CLS["car"]]
        assert tgt[CLS["person"]] > 1.5 * src[CLS["person"]]
        assert tgt[CLS["pole"]] < 0.5 * src[CLS["pole"]]
        assert tgt[CLS["sky"]] < src[CLS["sky"]] - 0.05  # a higher horizon and taller buildings

    def test_weather_is_fog_or_dusk(self, shifted):
        (src_x, _), (tgt_x, _) = shifted["source"], shifted["weather"]
        brightness = tgt_x.mean(dim=(1, 2, 3))
        dark, light = brightness < 0.25, brightness > 0.45
        assert dark.any() and light.any() and (dark | light).all()
        # Fog lowers contrast: per-image std of the foggy ones below the source's.
        assert tgt_x[light].std(dim=(1, 2, 3)).mean() < src_x.std(dim=(1, 2, 3)).mean()

    def test_controls_are_outside_the_suite(self):
        import diga.data

        assert CONTROL_SHIFT_KINDS == ("null", "layout_weather")
        assert not set(CONTROL_SHIFT_KINDS) & set(SHIFT_KINDS)
        assert diga.data.CONTROL_SHIFT_KINDS is CONTROL_SHIFT_KINDS

    def test_null_is_the_source_drawn_again(self, shifted):
        """Other scenes, the source's statistics: nothing to adapt."""
        (src_x, src_y), (tgt_x, tgt_y) = shifted["source"], shifted["null"]
        assert not torch.equal(src_x, tgt_x) and not torch.equal(src_y, tgt_y)
        src, tgt = _fractions(src_y), _fractions(tgt_y)
        big = src > 0.05
        assert ((tgt[big] - src[big]).abs() < 0.06).all()
        assert (src_x.mean(dim=(0, 2, 3)) - tgt_x.mean(dim=(0, 2, 3))).abs().max() < 0.03
        assert (_saturation(src_x).mean() - _saturation(tgt_x).mean()).abs() < 0.03
        # ... where every kind of the suite moves at least one of them further.
        for kind in SHIFT_KINDS:
            x, y = shifted[kind]
            moved = (_fractions(y)[big] - src[big]).abs().max() > 0.06 or (
                (src_x.mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3))).abs().max() > 0.03
                or (_saturation(src_x).mean() - _saturation(x).mean()).abs() > 0.03
            )
            assert moved, kind

    def test_layout_weather_is_crowded_in_fog_or_dusk(self, shifted):
        src = _fractions(shifted["source"][1])
        images, labels = shifted["layout_weather"]
        tgt = _fractions(labels)
        assert tgt[CLS["car"]] > 2.5 * src[CLS["car"]] and tgt[CLS["pole"]] < 0.5 * src[CLS["pole"]]
        brightness = images.mean(dim=(1, 2, 3))
        dark, light = brightness < 0.25, brightness > 0.45
        assert dark.any() and light.any() and (dark | light).all()

    @pytest.mark.parametrize("shift", ["", "night", "Sensor", None, "Null"])
    def test_bad_shift(self, shift):
        with pytest.raises(ValueError, match="shift"):
            SyntheticShift("target", shift=shift)
