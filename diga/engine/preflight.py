"""What every command checks before it runs anything, each in one place the commands share.

- :class:`Number` (``integer`` / ``real``): argparse ``type=`` for numeric flags, range and
  finiteness checked at parse time (a config file's values go through the same check).
- :func:`device_flag`: argparse ``type=`` for ``--device``: resolved and checked against this
  machine before any file is read.
- :func:`check_outputs` / :func:`check_unique_outputs`: every path a command writes against
  every path it reads, and output names that would collide, before anything runs.
- :func:`run_settings_diff` / :func:`check_same_run`: ``--resume`` continues the same run only.
- :func:`scan_labels`: a pre-scan of a dataset's files (image and label headers, label values),
  threaded, with a progress bar, before training starts.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diga.engine.log import progress

__all__ = [
    "INPUT_FLAGS",
    "LabelScan",
    "Number",
    "OutputClash",
    "check_outputs",
    "check_same_run",
    "check_unique_outputs",
    "device_flag",
    "input_paths",
    "integer",
    "real",
    "run_settings_diff",
    "scan_labels",
]


# ------------------------------------------------------------------------------ numeric flags
class Number:
    """An argparse ``type=`` that parses a number and checks it is finite and in range.

    Args:
        kind: ``int`` or ``float``.
        low, high: bounds (None: unbounded); ``low_open`` / ``high_open`` exclude them.

    The same object checks a ``--config`` file's values (ints and floats as well as strings).

    Example:
        >>> rounds = integer(low=0)
        >>> rounds("2")
        2
        >>> rounds("-2")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected an integer >= 0, got '-2'
        >>> real(low=0, low_open=True)("inf")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a finite number > 0, got 'inf'
    """

    def __init__(self, kind: type = int, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
        if kind not in (int, float):
            raise ValueError(f"`kind` must be int or float, got {kind!r}")
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = "integer" if kind is int else "number"  # argparse names the type with it

    @property
    def expected(self) -> str:
        """What a valid value is, in words: ``"an integer >= 1"``, ``"a finite number in (0, 8]"``."""
        what = "an integer" if self.kind is int else "a finite number"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"{what} in {'(' if self.low_open else '['}{lo:g}, {hi:g}{')' if self.high_open else ']'}"
        if lo is not None:
            return f"{what} {'>' if self.low_open else '>='} {lo:g}"
        if hi is not None:
            return f"{what} {'<' if self.high_open else '<='} {hi:g}"
        return what

    def __call__(self, value: Any) -> int | float:
        def bad() -> argparse.ArgumentTypeError:
            return argparse.ArgumentTypeError(f"expected {self.expected}, got {value!r}")

        if isinstance(value, bool):
            raise bad()
        if isinstance(value, str):
            try:
                number = self.kind(value.strip())
            except ValueError:
                raise bad() from None
        elif isinstance(value, int) or (isinstance(value, float) and self.kind is float):
            number = self.kind(value)
        else:
            raise bad()
        if not math.isfinite(number):
            raise bad()
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            raise bad()
        if self.high is not None and (number >= self.high if self.high_open else number > self.high):
            raise bad()
        return number

    def __repr__(self) -> str:
        return f"Number({self.expected})"


def integer(*, low: int | None = None, high: int | None = None) -> Number:
    """An integer flag in ``[low, high]``."""
    return Number(int, low=low, high=high)


def real(*, low: float | None = None, high: float | None = None, low_open: bool = False,
         high_open: bool = False) -> Number:
    """A finite real flag in the interval given."""
    return Number(float, low=low, high=high, low_open=low_open, high_open=high_open)


# ------------------------------------------------------------------------------------- device
def device_flag(value: str) -> str:
    """An argparse ``type=`` for ``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked now.

    Raises:
        argparse.ArgumentTypeError: a device this machine does not have (a CUDA index past the
            GPUs there are, CUDA or MPS without either) or not a compute device (``meta``, ...).

    Example:
        >>> device_flag("cpu")
        'cpu'
        >>> device_flag("meta")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'meta'
    """
    text = str(value).strip().lower()
    if text in ("auto", "cpu"):
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{value!r} was asked for, but this machine has no usable CUDA "
                                             "device; expected 'cpu' or 'auto' here")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{value!r} was asked for, but this machine has {count} CUDA "
                                             f"device(s): expected cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{value!r} was asked for, but MPS is not available on this machine; "
                                         "expected 'cpu' or 'auto' here")
    if device.type == "cpu" and device.index not in (None, 0):
        raise argparse.ArgumentTypeError(f"expected 'cpu' (one CPU device), got {value!r}")
    return text


# ------------------------------------------------------------------------- outputs vs inputs
#: The namespace attributes (``dest``) of the trainers' flags that name files or folders they read
#: (the same in ``diga adapt``, ``diga translate`` and the example trainers). A trainer flag that
#: names an input adds its dest here; :func:`input_paths` reads them all. Commands with inputs of
#: their own (``diga predict``'s model and images) pass those to :func:`check_outputs` themselves.
INPUT_FLAGS: tuple[str, ...] = (
    "config", "classes", "translator", "perceptual_weights",
    "source_images", "source_labels", "target_images", "target_val_images", "target_val_labels",
    "source_label_map", "target_label_map", "source_root", "target_root", "source_list", "target_list",
    "cityscapes_root", "bdd_root", "mapillary_root", "root", "labelled_list", "val_images", "val_labels",
    "val_label_map",
)
_NOT_PATHS = {"translator": ("fourier", "none")}  # values of a path flag that name no file


class OutputClash(ValueError):
    """A command would write onto, into or around what it reads (or two outputs share a name)."""


def input_paths(args: argparse.Namespace, dests: Sequence[str] = INPUT_FLAGS) -> dict[str, list[Path]]:
    """``{"--flag": [paths]}`` of every flag of ``dests`` set on ``args`` (``--classes`` only when it
    names an existing file, ``--translator`` only when it is a path)."""
    out: dict[str, list[Path]] = {}
    for dest in dests:
        value = getattr(args, dest, None)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        paths = [Path(v) for v in values if str(v) not in _NOT_PATHS.get(dest, ())]
        if dest == "classes":
            paths = [p for p in paths if p.is_file()]
        if paths:
            out["--" + dest.replace("_", "-")] = paths
    return out


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_outputs(writes: Mapping[str, Path | str | Sequence[Path | str]],
                  reads: Mapping[str, Path | str | Sequence[Path | str]]) -> None:
    """Refuse a command whose outputs would touch its inputs, before anything runs.

    An output (a file or a folder the command fills) may not be an input, lie inside an input
    folder, or hold an input (a work dir around the source images would fill them with image
    grids; ``--out`` onto the images would overwrite them). Paths are compared after resolving
    symbolic links.

    Args:
        writes: ``{"--flag": path or paths}`` the command writes.
        reads: ``{"--flag": path or paths}`` it reads (``"model"`` / ``"images"`` for positional ones).

    Raises:
        OutputClash: (a ValueError) naming both flags and paths, and what to do.

    Example:
        >>> check_outputs({"--out": "preds"}, {"images": ["photos"]})
        >>> check_outputs({"--out": "photos"}, {"images": ["photos"]})
        Traceback (most recent call last):
        ...
        diga.engine.preflight.OutputClash: --out photos is images photos: the command would write over what it reads...
    """
    def listed(value) -> list[Path]:
        return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]

    for out_flag, outs in writes.items():
        for out in listed(outs):
            out_real = _real(out)
            for in_flag, ins in reads.items():
                for src in listed(ins):
                    src_real = _real(src)
                    if out_real == src_real:
                        how = "is"
                    elif _inside(out_real, src_real):
                        how = "is inside"
                    elif _inside(src_real, out_real):
                        how = "holds"
                    else:
                        continue
                    raise OutputClash(
                        f"{out_flag} {out} {how} {in_flag} {src}: the command would write "
                        f"{'over' if how == 'is' else 'among' if how == 'is inside' else 'around'} what it "
                        "reads; expected an output outside every input"
                    )


def check_unique_outputs(pairs: Iterable[tuple[Path, Path]], flag: str = "--out") -> None:
    """Refuse two inputs that would be written to one output name (``a.png`` and ``a.jpg`` -> ``a.png``).

    Args:
        pairs: ``(input, output)`` paths.

    Raises:
        OutputClash: naming both inputs and the output they share.

    Example:
        >>> check_unique_outputs([(Path("a.png"), Path("o/a.png")), (Path("a.jpg"), Path("o/a.png"))])
        Traceback (most recent call last):
        ...
        diga.engine.preflight.OutputClash: a.png and a.jpg would both be written to --out o/a.png; expected one...
    """
    seen: dict[Path, Path] = {}
    for src, out in pairs:
        key = _real(out)
        if key in seen:
            raise OutputClash(f"{seen[key]} and {src} would both be written to {flag} {out}; expected one output "
                              "per input: rename one, or give them in separate runs")
        seen[key] = src


# ------------------------------------------------------------------------------- same run
def run_settings_diff(recorded: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first setting that differs: ``(name, recorded value, new value)``, or None.

    Values are compared as JSON would store them (tuples as lists). Only settings both sides
    name are compared: one that a newer diga added, or an older one dropped, was never set
    differently.

    Example:
        >>> run_settings_diff({"--rounds": 2, "--crop-size": [64, 96]}, {"--rounds": 2, "--crop-size": (64, 96)})
        >>> run_settings_diff({"--rounds": 2}, {"--rounds": 1, "--new-flag": 3})
        ('--rounds', 2, 1)
    """
    import json

    from diga._io import strict_json

    old = json.loads(strict_json(dict(recorded)))
    new = json.loads(strict_json(dict(settings)))
    for key in new:
        if key in old and old[key] != new[key]:
            return key, old[key], new[key]
    return None


def check_same_run(recorded: Mapping[str, Any] | None, settings: Mapping[str, Any], *, work_dir: Path) -> None:
    """``--resume`` continues the run of the work dir only: refuse a setting that differs from the record.

    Args:
        recorded: the settings the work dir's run recorded (None: nothing recorded, no check).
        settings: this command's settings.

    Raises:
        ValueError: one line naming the setting and both values.
    """
    if recorded is None:
        return
    diff = run_settings_diff(recorded, settings)
    if diff is not None:
        name, old, new = diff
        raise ValueError(
            f"--resume: {name} is {_show(new)} but the run in {work_dir} was started with {_show(old)}; "
            f"expected the same setting (resume the run as it was started, or start a new one in another "
            f"--work-dir)"
        )


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


# ------------------------------------------------------------------------------ label scan
@dataclass(frozen=True)
class LabelScan:
    """What a pre-scan found: how many items, and the sizes seen."""

    items: int
    labelled: int
    smaller: int  # images smaller than ``crop`` along an axis (their crops are padded)
    min_size: tuple[int, int]


def _header(path: Path, what: str) -> tuple[tuple[int, int], str, int]:
    """``((H, W), mode, bands)`` read from the file's header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            return (h, w), img.mode, len(img.getbands())
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read {what} {str(path)!r}: corrupt or not an image ({err})") from err


def scan_labels(dataset: Any, *, flag: str, label_flag: str | None = None, crop: Sequence[int] | None = None,
                show_progress: bool = True, workers: int | None = None) -> LabelScan:
    """Check every file of a dataset now, before training draws it: image headers, label headers and values.

    For each item: the image's header must read (size), and for labelled items the label's
    header too (a single-channel map of the image's size, for datasets that require it), and
    every value must be a class id or the ignore index (the dataset's own ``_read_label`` /
    ``_map_label``, which also apply its label map). Headers cost a file open each; values a
    decode each, in a thread pool (PNG decoding releases the GIL; torch's own threads are
    set to one meanwhile, then restored), with a progress bar: 70 to 90 GTA5-sized
    (1914 x 1052) labels a second measured on a shared 2-core CPU, so GTA5's 25,000 in
    about 5 minutes there, less with more cores. Datasets without a file list
    (``samples``) are skipped.

    Args:
        dataset: a :class:`~diga.data.SegmentationDataset` (or a wrapper with ``.dataset``).
        flag: the flag that named the images (for messages), e.g. ``"--source-images"``.
        label_flag: the flag that named the labels.
        crop: the training crop ``(h, w)``: images smaller along an axis are counted.

    Returns:
        A :class:`LabelScan`.

    Raises:
        ValueError: the first unreadable file, a label that is not a single-channel map, of
            another size than its image, or with a value outside the classes; the message names
            the flag and the file.
    """
    data = getattr(dataset, "dataset", dataset) if not hasattr(dataset, "samples") else dataset
    samples = getattr(data, "samples", None)
    if samples is None:
        return LabelScan(0, 0, 0, (0, 0))
    use_labels = getattr(data, "_use_labels", True)
    strict_size = getattr(data, "_label_size_mismatch", "error") == "error"
    one_channel = getattr(data, "label_channel", 0) is None  # a folder with no channel to pick
    label_flag = label_flag or flag

    def check(sample) -> tuple[int, int]:
        size, _, _ = _header(sample.image, f"{flag} image file")
        if not use_labels or sample.label is None:
            return size
        lsize, mode, bands = _header(sample.label, f"{label_flag} label file")
        if one_channel and bands > 1:
            raise ValueError(
                f"{label_flag}: label file {str(sample.label)!r} is a {mode} image ({bands} channels); expected "
                "single-channel PNGs holding class ids (0 to C-1, 255 = ignore): convert colour-coded labels "
                "to ids first"
            )
        if strict_size and lsize != size:
            raise ValueError(
                f"{label_flag}: label file {str(sample.label)!r} is {lsize[1]} x {lsize[0]} (W x H) but its image "
                f"{str(sample.image)!r} is {size[1]} x {size[0]}; expected the same size"
            )
        try:
            data._map_label(data._read_label(sample.label), sample.label)
        except ValueError as err:
            raise ValueError(f"{label_flag}: {err}") from None
        return size

    workers = workers or min(8, os.cpu_count() or 1)
    sizes = []
    bar = progress(total=len(samples), desc=f"checking {label_flag if use_labels else flag}",
                   enabled=show_progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one file per thread: intra-op threads on top would only contend (4x slower here)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for size in pool.map(check, samples):
                sizes.append(size)
                bar.update(1)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    smaller = 0 if crop is None else sum(h < crop[0] or w < crop[1] for h, w in sizes)
    labelled = sum(1 for s in samples if s.label is not None) if use_labels else 0
    least = (min(h for h, _ in sizes), min(w for _, w in sizes)) if sizes else (0, 0)
    return LabelScan(len(samples), labelled, smaller, least)
