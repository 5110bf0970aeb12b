"""Atomic files and checkpoint loading: a killed run leaves either the old file or the new one.

Private: the layer every component may import (components never import ``diga.engine``).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SAFE_TYPES",
    "WriteError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint",
    "strict_json",
]


def _file_mode() -> int:
    """What ``open()`` would give a new file: ``0o666`` less the process umask (``mkstemp`` gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic(path: str | os.PathLike, write) -> Path:
    """Write through ``write(file)`` to a temp file beside ``path``, then rename it over ``path``.

    Raises:
        OSError: the write failed (a full disk, no permission); the message names ``path``
            and says the file as it was (if any) is intact. The temp file is removed.
    """
    path = Path(path)
    tmp = None
    f = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with _open_temp(fd) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        # A writer that swallows the OSError of a full disk (torch.save's zip writer raises
        # "RuntimeError: ... unexpected pos" instead) still ends as that OSError.
        cause = err if isinstance(err, OSError) else getattr(f, "error", None)
        if isinstance(cause, OSError) and not isinstance(cause, WriteError):
            kept = "the previous file is intact" if path.is_file() else "nothing was written"
            raise WriteError(cause.errno, f"cannot write {path}: {cause.strerror or cause} ({kept})") from err
        raise
    return path


class _TempFile(io.FileIO):
    """The temp file of :func:`_atomic`; it remembers the first OSError a write raised, for callers
    (torch.save) that replace it with an error of their own."""

    error: OSError | None = None

    def write(self, data) -> int:  # type: ignore[override]
        try:
            return super().write(data)
        except OSError as err:
            self.error = self.error or err
            raise


def _open_temp(fd: int) -> _TempFile:
    """The temp file behind ``fd`` (one place, so tests can make its writes fail as a full disk does)."""
    return _TempFile(fd, "wb")


class WriteError(OSError):
    """A file could not be written (full disk, no permission); the file as it was is kept."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``."""
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (:func:`strict_json`), indented, written atomically.

    Example:
        >>> import tempfile, json, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = atomic_write_json(p, {"miou": torch.tensor(0.5), "iou": [float("nan"), 1.0]})
        >>> json.loads(p.read_text())
        {'miou': 0.5, 'iou': [None, 1.0]}
    """
    return atomic_write_text(path, strict_json(obj, indent=2) + "\n")


def strict_json(obj: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` that any JSON reader accepts: NaN and infinities (an undefined IoU, a
    diverged loss) become ``null`` instead of the non-standard ``NaN`` / ``Infinity``; tensors,
    numpy values, paths, devices and dtypes become plain values.

    Example:
        >>> strict_json({"iou": torch.tensor([0.5, float("nan")]), "loss": float("inf")})
        '{"iou": [0.5, null], "loss": null}'
    """
    return json.dumps(_plain(obj), indent=indent, allow_nan=False)


def _plain(obj: Any) -> Any:
    """``obj`` as plain JSON values, non-finite floats as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _plain(obj.tolist())
    if hasattr(obj, "item"):
        return _plain(obj.item())
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, then rename: never a half-written checkpoint."""
    return _atomic(path, lambda f: torch.save(obj, f))


# Types beyond tensors and plain containers that diga's own checkpoints hold (files of
# earlier versions stored ``torch.__version__``, a str subclass, in their config).
SAFE_TYPES: tuple[type, ...] = (torch.torch_version.TorchVersion,)


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by :func:`atomic_save` as plain data: nothing in the file runs.

    ``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists,
    tuples and dicts (and :data:`SAFE_TYPES`) only; a file that asks to build
    any other object (a pickle that would call a function) is refused.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated, not a torch checkpoint, or holds
            objects other than plain data (the message names the file and the object).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): expected a file written by torch.save")
    try:
        with torch.serialization.safe_globals(list(SAFE_TYPES)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"GLOBAL ([\w.]+)", str(err))
        if match is None:
            raise ValueError(f"cannot read checkpoint {path}: {_first_line(err)}") from err
        raise ValueError(
            f"refused to load checkpoint {path}: it asks to run {match.group(1)} when unpickled, and diga "
            "loads checkpoints as plain data only (tensors, numbers, strings, lists, dicts)"
        ) from err
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot read checkpoint {path}: truncated or not a torch checkpoint "
                         f"({_first_line(err)})") from err


def _first_line(err: BaseException, limit: int = 100) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    text = f"{type(err).__name__}: {text}" if isinstance(err, KeyError) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
