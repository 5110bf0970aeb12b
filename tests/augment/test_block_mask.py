"""Block masks (MIC): block structure, the hidden share, seeds, bad input."""

from __future__ import annotations

import pytest
import torch

from diga.augment import block_mask, mask_images


class TestBlockMask:
    def test_constant_on_each_block(self):
        m = block_mask((3, 32, 48), block_size=8, ratio=0.5, generator=torch.Generator().manual_seed(0))
        blocks = m.view(3, 4, 8, 6, 8)
        assert (blocks == blocks[:, :, :1, :, :1]).all()

    def test_hidden_share_is_the_ratio(self):
        m = block_mask((64, 64, 64), block_size=4, ratio=0.7, generator=torch.Generator().manual_seed(1))
        assert abs(float((~m).float().mean()) - 0.7) < 0.01  # 16384 independent blocks
        assert block_mask((2, 8, 8), block_size=4, ratio=0.0).all()

    def test_seeded(self):
        a = block_mask((2, 16, 16), block_size=4, generator=torch.Generator().manual_seed(3))
        b = block_mask((2, 16, 16), block_size=4, generator=torch.Generator().manual_seed(3))
        c = block_mask((2, 16, 16), block_size=4, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_blocks_larger_than_the_image(self):
        m = block_mask((5, 12, 20), block_size=64, ratio=0.5, generator=torch.Generator().manual_seed(0))
        assert m.shape == (5, 12, 20) and all(bool(x.all()) or not bool(x.any()) for x in m)  # one block each

    def test_mask_images_zeroes_hidden_blocks(self, device):
        x = torch.rand(2, 3, 8, 8).to(device)
        m = block_mask((2, 8, 8), block_size=2, generator=torch.Generator().manual_seed(0), device=device)
        out = mask_images(x, m)
        assert torch.equal(out, torch.where(m[:, None], x, torch.zeros_like(x))) and out.device == x.device

    @pytest.mark.parametrize("kwargs,match", [({"shape": (2, 8)}, "shape"), ({"shape": (2, 0, 8)}, "shape"),
                                              ({"block_size": 0}, "block_size"), ({"ratio": 1.0}, "ratio"),
                                              ({"ratio": -0.1}, "ratio")])
    def test_bad_arguments(self, kwargs, match):
        args = {"shape": (2, 8, 8), **kwargs}
        with pytest.raises(ValueError, match=match):
            block_mask(args.pop("shape"), **args)

    def test_bad_mask(self):
        with pytest.raises(ValueError, match="mask"):
            mask_images(torch.rand(2, 3, 8, 8), torch.ones(2, 8, 8))
        with pytest.raises(ValueError, match="mask"):
            mask_images(torch.rand(2, 3, 8, 8), torch.ones(2, 4, 8, dtype=torch.bool))
