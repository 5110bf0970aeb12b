"""Image and label I/O: every mode the datasets meet, 16-bit PNGs, errors naming the file, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import diga.data.io as io_module
from diga.data.classes import CITYSCAPES_PALETTE
from diga.data.io import IMAGE_SUFFIXES, load_image, load_label, save_label
from tests.data.replicas import write_png16


def random_uint(seed: int, shape: tuple[int, ...], high: int) -> np.ndarray:
    """Seeded uint16 noise in ``[0, high)`` (a torch generator, the house's one source of randomness)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=g).numpy().astype(np.uint16)


@pytest.fixture
def rgb(tmp_path):
    array = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    Image.fromarray(array).save(tmp_path / "rgb.png")
    return tmp_path / "rgb.png", array


class TestLoadImage:
    def test_rgb_png(self, rgb):
        path, array = rgb
        image = load_image(path)
        assert image.shape == (3, 4, 6) and image.dtype == torch.float32
        assert torch.equal(image, torch.from_numpy(array).permute(2, 0, 1).float() / 255)

    def test_str_path_and_jpeg(self, tmp_path):
        Image.new("RGB", (5, 3), (255, 0, 0)).save(tmp_path / "a.jpg")
        image = load_image(str(tmp_path / "a.jpg"))
        assert image.shape == (3, 3, 5) and 0 <= image.min() and image.max() <= 1
        assert image[0].mean() > 0.9 and image[1:].mean() < 0.1

    @pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
    def test_other_modes_become_rgb(self, tmp_path, mode):
        Image.new("RGB", (5, 3), (10, 20, 30)).convert(mode).save(tmp_path / "x.png")
        image = load_image(tmp_path / "x.png")
        assert image.shape == (3, 3, 5) and image.dtype == torch.float32
        if mode == "L" or mode == "LA":
            assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])

    def test_16bit_png_keeps_precision(self, tmp_path):
        array = np.array([[0, 257, 65535]], dtype=np.uint16)
        write_png16(tmp_path / "g16.png", array)
        image = load_image(tmp_path / "g16.png")
        assert image.shape == (3, 1, 3)
        assert torch.allclose(image[0, 0], torch.tensor([0, 257, 65535]) / 65535)
        write_png16(tmp_path / "c16.png", np.stack([array, array // 2, array // 4], -1))
        image = load_image(tmp_path / "c16.png")
        assert torch.allclose(image[1, 0], torch.tensor([0, 128, 32767]) / 65535)

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.png"):
            load_image(tmp_path / "nope.png")

    def test_corrupt_file(self, tmp_path):
        (tmp_path / "bad.png").write_bytes(b"definitely not an image")
        with pytest.raises(ValueError, match="bad.png"):
            load_image(tmp_path / "bad.png")

    def test_truncated_png(self, rgb, tmp_path):
        path, _ = rgb
        Image.fromarray(random_uint(0, (64, 64, 3), 256).astype(np.uint8)).save(path)
        data = path.read_bytes()
        (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="cut.png"):
            load_image(tmp_path / "cut.png")

    def test_directory_is_not_an_image(self, tmp_path):
        with pytest.raises(ValueError, match="not a regular file"):
            load_image(tmp_path)

    def test_suffixes(self):
        assert {".png", ".jpg", ".jpeg"} <= set(IMAGE_SUFFIXES)
        assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


class TestLoadLabel:
    def test_8bit_gray(self, tmp_path):
        array = np.array([[0, 7, 33], [255, 26, 1]], dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / "l.png")
        label = load_label(tmp_path / "l.png")
        assert label.dtype == torch.int64 and label.tolist() == array.tolist()

    def test_palette_reads_indices(self, tmp_path):
        image = Image.fromarray(np.array([[0, 13], [18, 255]], dtype=np.uint8))
        image.putpalette([v for rgb in CITYSCAPES_PALETTE for v in rgb])
        image.save(tmp_path / "p.png")
        assert Image.open(tmp_path / "p.png").mode == "P"
        assert load_label(tmp_path / "p.png").tolist() == [[0, 13], [18, 255]]

    def test_16bit_gray(self, tmp_path):
        write_png16(tmp_path / "g.png", np.array([[1, 300, 65535]], dtype=np.uint16))
        assert load_label(tmp_path / "g.png").tolist() == [[1, 300, 65535]]

    def test_torchvision_reads_16bit_as_uint16(self, tmp_path):
        # The fact load_label relies on: decode_png(UNCHANGED) keeps all 16 bits and every channel.
        array = random_uint(0, (3, 4, 3), 65536)
        write_png16(tmp_path / "c.png", array)
        raw = io_module._decode_png16_torchvision(tmp_path / "c.png")
        assert raw.dtype == torch.uint16 and raw.shape == (3, 3, 4)
        assert np.array_equal(raw.permute(1, 2, 0).numpy(), array)

    @pytest.mark.parametrize("use_torchvision", [True, False], ids=["torchvision", "pil"])
    def test_16bit_multichannel_needs_channel(self, tmp_path, monkeypatch, use_torchvision):
        monkeypatch.setattr(io_module, "_USE_TORCHVISION", use_torchvision)
        array = np.stack(
            [np.array([[3, 259]]), np.array([[1000, 65535]]), np.zeros((1, 2), dtype=np.int64)], -1
        ).astype(np.uint16)
        write_png16(tmp_path / "s.png", array)
        assert load_label(tmp_path / "s.png", channel=0).tolist() == [[3, 259]]  # not cut to 8 bits
        assert load_label(tmp_path / "s.png", channel=1).tolist() == [[1000, 65535]]
        with pytest.raises(ValueError, match="channel"):
            load_label(tmp_path / "s.png")
        with pytest.raises(ValueError, match=r"`channel` must be in \[0, 3\)"):
            load_label(tmp_path / "s.png", channel=3)

    def test_16bit_rgba_pil_fallback(self, tmp_path, monkeypatch):
        monkeypatch.setattr(io_module, "_USE_TORCHVISION", False)
        array = random_uint(1, (2, 5, 4), 65536)
        write_png16(tmp_path / "a.png", array)
        for c in range(4):
            assert load_label(tmp_path / "a.png", channel=c).numpy().tolist() == array[..., c].tolist()

    def test_8bit_rgb_channel(self, tmp_path):
        array = np.zeros((2, 2, 3), dtype=np.uint8)
        array[..., 2] = 9
        Image.fromarray(array).save(tmp_path / "rgb.png")
        assert load_label(tmp_path / "rgb.png", channel=2).tolist() == [[9, 9], [9, 9]]
        with pytest.raises(ValueError, match="3 channels"):
            load_label(tmp_path / "rgb.png")

    def test_bad_channel_argument(self, tmp_path):
        Image.new("L", (2, 2)).save(tmp_path / "l.png")
        with pytest.raises(ValueError, match="`channel`"):
            load_label(tmp_path / "l.png", channel=-1)

    def test_missing_and_corrupt(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="gone.png"):
            load_label(tmp_path / "gone.png")
        (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        with pytest.raises(ValueError, match="junk.png"):
            load_label(tmp_path / "junk.png")

    def test_corrupt_16bit(self, tmp_path):
        write_png16(tmp_path / "s.png", np.ones((8, 8, 3), dtype=np.uint16))
        data = (tmp_path / "s.png").read_bytes()
        (tmp_path / "cut.png").write_bytes(data[:-30])
        with pytest.raises(ValueError, match="cut.png"):
            load_label(tmp_path / "cut.png", channel=0)


class TestSaveLabel:
    def test_roundtrip_gray(self, tmp_path):
        label = torch.tensor([[0, 1, 18], [255, 7, 3]])
        save_label(tmp_path / "a.png", label)
        with Image.open(tmp_path / "a.png") as image:
            assert image.mode == "L"
        assert torch.equal(load_label(tmp_path / "a.png"), label)

    def test_palette(self, tmp_path):
        label = torch.tensor([[0, 13], [18, 255]], dtype=torch.uint8)
        save_label(tmp_path / "p.png", label, palette=CITYSCAPES_PALETTE)
        with Image.open(tmp_path / "p.png") as image:
            assert image.mode == "P"
            assert image.convert("RGB").getpixel((1, 0)) == CITYSCAPES_PALETTE[13]
            assert image.convert("RGB").getpixel((1, 1)) == (0, 0, 0)  # no entry for 255: black
        assert load_label(tmp_path / "p.png").tolist() == [[0, 13], [18, 255]]

    def test_numpy_and_nested_dirs(self, tmp_path):
        target = tmp_path / "pseudo" / "aachen" / "x.png"
        save_label(target, np.array([[1, 2]], dtype=np.int32))
        assert load_label(target).tolist() == [[1, 2]]

    def test_atomic_no_leftovers(self, tmp_path):
        save_label(tmp_path / "a.png", torch.zeros(2, 2, dtype=torch.long))
        save_label(tmp_path / "a.png", torch.ones(2, 2, dtype=torch.long))  # overwrite
        assert os.listdir(tmp_path) == ["a.png"]
        assert load_label(tmp_path / "a.png").tolist() == [[1, 1], [1, 1]]

    def test_failed_write_keeps_old_file(self, tmp_path, monkeypatch):
        save_label(tmp_path / "a.png", torch.full((2, 2), 5))

        def broken_save(self, fp, *args, **kwargs):
            fp.write(b"half a png")
            raise OSError("disk full")

        monkeypatch.setattr(Image.Image, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            save_label(tmp_path / "a.png", torch.full((2, 2), 9))
        monkeypatch.undo()
        assert os.listdir(tmp_path) == ["a.png"]
        assert load_label(tmp_path / "a.png").tolist() == [[5, 5], [5, 5]]

    @pytest.mark.parametrize(
        ("label", "match"),
        [
            (torch.zeros(2, 2), "integer"),
            (torch.zeros(1, 2, 2, dtype=torch.long), r"\(H, W\)"),
            (torch.tensor([[0, 256]]), r"\[0, 255\].*\[0, 256\]"),
            (torch.tensor([[-1, 3]]), r"\[-1, 3\]"),
            (torch.zeros(0, 3, dtype=torch.long), "empty"),
            ([[1, 2]], "torch.Tensor"),
        ],
    )
    def test_bad_label(self, tmp_path, label, match):
        with pytest.raises(ValueError, match=match):
            save_label(tmp_path / "a.png", label)
        assert not any(tmp_path.iterdir())

    def test_bad_palette(self, tmp_path):
        with pytest.raises(ValueError, match="palette"):
            save_label(tmp_path / "a.png", torch.zeros(2, 2, dtype=torch.long), palette=[(0, 0)])
        with pytest.raises(ValueError, match="palette"):
            save_label(tmp_path / "a.png", torch.zeros(2, 2, dtype=torch.long), palette=[(0, 0, 300)])


def test_save_label_on_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import diga._io as private_io
    from diga._io import WriteError
    from tests.engine.test_checkpoint import full_disk_after

    save_label(tmp_path / "a.png", torch.zeros(4, 4, dtype=torch.long))
    monkeypatch.setattr(private_io, "_open_temp", full_disk_after(10))
    with pytest.raises(WriteError, match=r"cannot write .*a.png: No space left on device \(the previous file"):
        save_label(tmp_path / "a.png", torch.ones(64, 64, dtype=torch.long))
    assert load_label(tmp_path / "a.png").tolist() == [[0] * 4] * 4
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
