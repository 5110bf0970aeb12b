"""Write the built-in domain shift to PNG folders, to try folder-based workflows on real files."""

from __future__ import annotations

import os
from pathlib import Path

from diga._checks import check_number

__all__ = ["write_shift_folders"]


def write_shift_folders(
    out: str | os.PathLike,
    *,
    source_items: int = 400,
    target_items: int = 200,
    val_items: int = 50,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
) -> Path:
    """Save :class:`~diga.data.SyntheticShift` as ``source/{images,labels}``, ``target/images``
    (unlabelled), ``val/{images,labels}`` and ``classes.txt`` under ``out``.

    Images are RGB PNGs, labels uint8 PNGs holding class ids (255: ignore), all
    written atomically; a file already there is left as it is (never overwritten: a
    ``classes.txt`` of other classes is an error).

    Example:
        >>> import tempfile
        >>> root = write_shift_folders(tempfile.mkdtemp(), source_items=2, target_items=1, val_items=1)
        >>> sorted(p.name for p in (root / "source" / "images").iterdir())
        ['000000.png', '000001.png']
    """
    import io

    from PIL import Image

    from diga._io import atomic_write_bytes, atomic_write_text
    from diga.data.io import save_label
    from diga.data.synthetic import SyntheticShift

    for name, value in (("source_items", source_items), ("target_items", target_items),
                        ("val_items", val_items)):
        check_number(value, name, low=1, integer=True)
    root = Path(out)
    parts = (
        ("source", SyntheticShift("source", size=size, length=source_items, seed=seed), True),
        ("target", SyntheticShift("target", size=size, length=target_items, seed=seed), False),
        ("val", SyntheticShift("target", size=size, length=val_items, seed=seed + 10_000), True),
    )
    for folder, data, with_labels in parts:
        for i in range(len(data)):
            image_path = root / folder / "images" / f"{i:06d}.png"
            if not image_path.exists():
                item = data[i]
                image, label = item["image"], item["label"]
                array = (image.permute(1, 2, 0) * 255).round().byte().numpy()
                buffer = io.BytesIO()
                Image.fromarray(array).save(buffer, format="PNG")
                atomic_write_bytes(image_path, buffer.getvalue())
                label_path = root / folder / "labels" / f"{i:06d}.png"
                if with_labels and not label_path.exists():
                    save_label(label_path, label.byte())
    classes = root / "classes.txt"
    text = "\n".join(SyntheticShift.classes) + "\n"
    if not classes.exists():
        atomic_write_text(classes, text)
    elif classes.read_bytes() != text.encode():
        raise ValueError(f"`out` {str(root)!r} already holds a classes.txt of other classes; expected a new folder "
                         "or one written by write_shift_folders (nothing there is overwritten)")
    return root
