"""The built-in domain-shift demo: source-only vs DiGA warm-up vs DiGA self-training, on a CPU.

    python examples/quickstart.py [--seeds 3] [--work-dir runs/demo] [--quick]

Same as ``python -m diga demo``. It trains a small smp U-Net on procedurally generated
"synthetic" street scenes, adapts it to a "real-looking" target with DiGA, and prints target
mIoU per variant (also in <work-dir>/results.md), with pictures (<work-dir>/seed0/demo.png) and
a plot of target mIoU over training steps (<work-dir>/miou.png).
"""

from __future__ import annotations

from diga.demo import main

if __name__ == "__main__":
    main()
