"""Checkpoints and resume: the atomic writes and safe loading of :mod:`diga._io`, and the RNG state."""

from __future__ import annotations

import torch

from diga._io import (
    SAFE_TYPES,
    WriteError,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    strict_json,
)

__all__ = [
    "SAFE_TYPES",
    "WriteError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "get_rng_state",
    "load_checkpoint",
    "set_rng_state",
    "strict_json",
]


def get_rng_state() -> dict:
    """The global torch RNG states (CPU, and CUDA when available), for resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
