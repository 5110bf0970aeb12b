"""Paired transforms: the paper's resize semantics (checked against PIL), alignment of image and
every label, seeded determinism, statistics of the random draws, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diga.data.transforms import (
    PairedCompose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    item_generator,
    resize_label,
)
from tests.data.replicas import RED_STEP, image_for, one_thread, random_blocks


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def coordinate_sample(h: int = 12, w: int = 20):
    """Image whose channels 1, 2 hold row and column, label = row * w + col: any crop is traceable."""
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    image = torch.stack([torch.full((h, w), 0.5), rows / 255, cols / 255]).float()
    return image, (rows * w + cols).long()


def block_sample(seed: int = 0, size=(48, 64)):
    """Image encoding a blocky label in its red channel (as the dataset replicas)."""
    raw = random_blocks(size, tuple(range(30)), block=8, generator=torch.Generator().manual_seed(seed))
    image = torch.from_numpy(image_for(raw)).permute(2, 0, 1).float() / 255
    return image, raw


def assert_aligned(image: torch.Tensor, label: torch.Tensor, *, ignore_index: int = 255, radius: int = 2):
    """Where the label is constant over a (2r+1)^2 window, the image's red channel encodes it."""
    valid = label != ignore_index
    lab = torch.where(valid, label, torch.full_like(label, -1)).float()[None, None]
    k = 2 * radius + 1
    hi = F.max_pool2d(lab, k, 1, radius)[0, 0]
    lo = -F.max_pool2d(-lab, k, 1, radius)[0, 0]
    interior = (hi == lo) & valid
    interior[:radius] = interior[-radius:] = False
    interior[:, :radius] = interior[:, -radius:] = False
    assert interior.sum() > 0, "no interior pixels left to check"
    decoded = (image[0] * 255 / RED_STEP).round().long()
    assert torch.equal(decoded[interior], label[interior])


class TestItemGenerator:
    def test_same_triple_same_stream(self):
        a = torch.rand(4, generator=item_generator(3, 10, epoch=2))
        b = torch.rand(4, generator=item_generator(3, 10, epoch=2))
        assert torch.equal(a, b)

    def test_neighbours_differ(self):
        draws = {
            tuple(torch.rand(2, generator=item_generator(s, i, epoch=e)).tolist())
            for s in range(3) for i in range(3) for e in range(3)
        }
        assert len(draws) == 27

    def test_negative_and_large_seeds(self):
        torch.rand(1, generator=item_generator(-1, 2**40, epoch=7))

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`seed`"):
            item_generator(1.5, 0)
        with pytest.raises(ValueError, match="`index`"):
            item_generator(0, "3")


class TestResize:
    def test_nearest_matches_pil(self):
        # The paper resizes labels with PIL NEAREST; ours must pick the same source pixels.
        g = torch.Generator().manual_seed(0)
        label = torch.randint(0, 256, (23, 37), generator=g)
        for size in [(16, 25), (23, 37), (40, 50), (7, 81), (1, 1)]:
            ours = resize_label(label, size)
            pil = Image.fromarray(label.to(torch.uint8).numpy()).resize(size[::-1], Image.NEAREST)
            assert ours.tolist() == np.asarray(pil).tolist(), size

    def test_bilinear_close_to_pil(self):
        image, _ = block_sample()
        out, = Resize((34, 45))(image)
        array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        pil = np.asarray(Image.fromarray(array).resize((45, 34), Image.BILINEAR))
        diff = (out.permute(1, 2, 0) * 255 - torch.tensor(pil).float()).abs()
        assert diff.max() <= 2.0  # PIL rounds to uint8 per pass

    def test_shapes_dtypes_and_square_int(self):
        image, label = block_sample()
        out = Resize(16)(image.double(), label, label.to(torch.int32))
        assert [tuple(t.shape) for t in out] == [(3, 16, 16), (16, 16), (16, 16)]
        assert out[0].dtype == torch.float64 and out[1].dtype == torch.int64 and out[2].dtype == torch.int32

    def test_same_size_is_identity(self):
        image, label = block_sample()
        out = Resize(tuple(image.shape[-2:]))(image, label)
        assert out[0] is image and out[1] is label

    def test_keeps_alignment(self):
        image, label = block_sample()
        assert_aligned(*Resize((40, 50))(image, label))

    def test_bad_size(self):
        for size in [0, (3,), (4, -1), (2.5, 3), "big"]:
            with pytest.raises(ValueError, match="`size`"):
                Resize(size)


class TestRandomCrop:
    def test_crop_is_a_window_of_the_input(self):
        image, label = coordinate_sample()
        g = torch.Generator().manual_seed(0)
        offsets = set()
        for _ in range(200):
            out_image, out_label = RandomCrop((8, 17))(image, label, generator=g)
            top, left = int(out_label[0, 0]) // 20, int(out_label[0, 0]) % 20
            offsets.add((top, left))
            assert torch.equal(out_label, label[top : top + 8, left : left + 17])
            assert torch.equal(out_image, image[:, top : top + 8, left : left + 17])
        assert offsets == {(t, l) for t in range(5) for l in range(4)}  # every window reachable

    def test_pads_with_zeros_and_ignore(self):
        image, label = coordinate_sample(6, 10)
        out_image, out_label, out_pseudo = RandomCrop((9, 12), ignore_index=250)(image, label, label + 1)
        assert out_image.shape == (3, 9, 12)
        assert torch.equal(out_label[:6, :10], label) and (out_label[6:] == 250).all()
        assert (out_label[:, 10:] == 250).all() and (out_pseudo[:, 10:] == 250).all()
        assert (out_image[:, 6:] == 0).all() and (out_image[:, :, 10:] == 0).all()

    def test_pads_one_axis_crops_the_other(self):
        image, label = coordinate_sample(6, 30)
        g = torch.Generator().manual_seed(1)
        lefts = {int(RandomCrop((8, 10))(image, label, generator=g)[1][0, 0]) for _ in range(60)}
        assert len(lefts) > 5

    def test_image_only(self):
        out = RandomCrop(4)(torch.rand(3, 10, 10), generator=torch.Generator().manual_seed(0))
        assert len(out) == 1 and out[0].shape == (3, 4, 4)


class TestRandomScaleCrop:
    def test_factors_uniform_independent_in_range(self):
        # Crop as large as the input: the rescaled sample is padded at the bottom/right, so the
        # non-ignore extent of the label is exactly the rescaled size int(f * size).
        h, w = 50, 100
        image, label = torch.zeros(3, h, w), torch.zeros(h, w, dtype=torch.long)
        t = RandomScaleCrop((h, w))
        fh, fw = [], []
        for i in range(300):
            _, out = t(image, label, generator=item_generator(0, i))
            valid = out != 255
            fh.append(int(valid[:, 0].sum()) / h)
            fw.append(int(valid[0].sum()) / w)
        fh, fw = torch.tensor(fh), torch.tensor(fw)
        assert fh.min() >= 0.7 and fh.max() <= 1.0 and fw.min() >= 0.7 and fw.max() <= 1.0
        assert abs(fh.mean() - 0.85) < 0.02 and abs(fw.mean() - 0.85) < 0.02  # uniform: mean 0.85
        assert abs(float(torch.corrcoef(torch.stack([fh, fw]))[0, 1])) < 0.2  # independent axes
        assert fh.max() > 0.97 and fh.min() < 0.73

    def test_scale_rounds_down_as_released_code(self):
        # scale=(0.5, 0.5): int(0.5 * 33) = 16 rows, int(0.5 * 21) = 10 columns.
        t = RandomScaleCrop((40, 40), scale=(0.5, 0.5))
        _, out = t(torch.rand(3, 33, 21), torch.zeros(33, 21, dtype=torch.long))
        assert int((out[:, 0] != 255).sum()) == 16 and int((out[0] != 255).sum()) == 10

    def test_all_labels_aligned_with_image(self):
        t = PairedCompose([RandomScaleCrop((24, 40)), RandomHorizontalFlip()])
        for seed in range(20):
            image, label = block_sample(seed)
            out_image, out_label, out_pseudo = t(image, label, label + 100, generator=item_generator(seed, 0))
            assert out_image.shape == (3, 24, 40) and out_label.shape == out_pseudo.shape == (24, 40)
            assert_aligned(out_image, out_label)
            assert torch.equal(out_pseudo, out_label + 100)

    def test_seeded_determinism(self):
        image, label = block_sample()
        t = RandomScaleCrop(16)
        a = t(image, label, generator=torch.Generator().manual_seed(5))
        b = t(image, label, generator=torch.Generator().manual_seed(5))
        c = t(image, label, generator=torch.Generator().manual_seed(6))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert not torch.equal(a[0], c[0])

    def test_global_generator_when_none(self):
        image, label = block_sample()
        out = RandomScaleCrop(16)(image, label)
        assert out[0].shape == (3, 16, 16)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`crop_size`"):
            RandomScaleCrop((0, 4))
        with pytest.raises(ValueError, match="`scale`"):
            RandomScaleCrop(4, scale=(0.9, 0.7))
        with pytest.raises(ValueError, match="scale"):
            RandomScaleCrop(4, scale=(0.0, 0.7))
        with pytest.raises(ValueError, match="`scale`"):
            RandomScaleCrop(4, scale=0.7)
        with pytest.raises(ValueError, match="`ignore_index`"):
            RandomScaleCrop(4, ignore_index=2.5)


class TestRandomHorizontalFlip:
    def test_always_and_never(self):
        image, label = coordinate_sample()
        flipped = RandomHorizontalFlip(p=1.0)(image, label, label)
        assert torch.equal(flipped[0], image.flip(-1)) and torch.equal(flipped[2], label.flip(-1))
        kept = RandomHorizontalFlip(p=0.0)(image, label)
        assert kept[0] is image and kept[1] is label

    def test_half_the_time(self):
        image, label = coordinate_sample()
        t = RandomHorizontalFlip()
        flips = sum(int(t(image, label, generator=item_generator(1, i))[1][0, 0] != 0) for i in range(400))
        assert 160 < flips < 240  # Binomial(400, 0.5): mean 200, sd 10

    def test_bad_p(self):
        with pytest.raises(ValueError, match="`p`"):
            RandomHorizontalFlip(p=1.5)


class TestBadSamples:
    @pytest.mark.parametrize(
        "transform", [Resize(8), RandomCrop(8), RandomScaleCrop(8), RandomHorizontalFlip()]
    )
    def test_rejected(self, transform):
        image, label = coordinate_sample()
        with pytest.raises(ValueError, match=r"`labels\[0\]`"):
            transform(image, label[:5])
        with pytest.raises(ValueError, match=r"`labels\[1\]`.*dtype"):
            transform(image, label, label.float())
        with pytest.raises(ValueError, match="`image`"):
            transform(image[0], label)
        with pytest.raises(ValueError, match="`image`"):
            transform((image * 255).to(torch.uint8), label)
        with pytest.raises(ValueError, match="`image`"):
            transform(image.numpy(), label)

    def test_compose_checks_callables(self):
        with pytest.raises(ValueError, match=r"`transforms\[1\]`"):
            PairedCompose([Resize(4), 3])

    def test_repr(self):
        text = repr(PairedCompose([RandomScaleCrop((512, 1024)), RandomHorizontalFlip()]))
        assert "RandomScaleCrop(crop_size=(512, 1024), scale=(0.7, 1.0)" in text and "p=0.5" in text
