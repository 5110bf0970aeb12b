"""Count the host syncs of one warm-up and one self-training step on CUDA.

    python benchmarks/sync_audit.py            # needs a CUDA device

Runs each step once to warm up, then once under ``torch.cuda.set_sync_debug_mode("warn")``
and prints every synchronising call with the line of diga that made it. The Adapter's
contract: only its input checks read values back (one read each), nothing mid-step.
Syncs with no diga frame on the stack (torch internals, e.g. in the autograd engine's
backward) are listed as ``?`` and not counted against the contract.

Measured 2026-11-29 on an NVIDIA H200 (torch 2.11): warm-up 3 + one ``?``, self-training 4,
EMA update 0.
"""

from __future__ import annotations

import sys
import traceback
import warnings

import torch

from diga import Adapter, FourierTranslator, create_model


def _diga_site() -> str:
    frames = [f for f in traceback.extract_stack() if "/diga/" in f.filename.replace("\\", "/")]
    return f"{frames[-1].filename.split('/diga/')[-1]}:{frames[-1].lineno} {frames[-1].name}" if frames else "?"


def audit(step, label: str) -> list[str]:
    sites: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        sites.append(_diga_site())

    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    print(f"{label}: {len(sites)} host sync(s)")
    for site in sites:
        print(f"    {site}")
    return sites


def main() -> int:
    if not torch.cuda.is_available():
        print("sync_audit needs a CUDA device")
        return 2
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("deeplabv3plus", num_classes=19, encoder_name="resnet18")
    adapter = Adapter(model, 19, translator=FourierTranslator(beta=0.01)).to(device).train()
    g = torch.Generator().manual_seed(0)
    src, tgt = (t.to(device) for t in torch.rand(2, 2, 3, 256, 448, generator=g))
    lbl = torch.randint(0, 19, (2, 256, 448), generator=g)
    lbl[:, :16] = 255
    lbl, pseudo = lbl.to(device), lbl.roll(7, -1).to(device)
    adapter.init_centroids([tgt])

    def warm():
        adapter.warmup_step(src, lbl, tgt, generator=g).loss.backward()

    def st():
        adapter.self_training_step(src, lbl, tgt, pseudo, generator=g).loss.backward()

    def ema():
        adapter.update_teacher()

    for fn in (warm, st, ema):
        fn()
    torch.cuda.synchronize()
    counts = [sum(site != "?" for site in audit(fn, name))
              for fn, name in ((warm, "warm-up step"), (st, "self-training step"), (ema, "teacher EMA update"))]
    print(f"made by diga: {counts}; expected: warm-up 3 (source images, labels, target images), "
          "self-training 4 (+ pseudo-labels), EMA 0")
    return 0 if counts == [3, 4, 0] else 1


if __name__ == "__main__":
    sys.exit(main())
