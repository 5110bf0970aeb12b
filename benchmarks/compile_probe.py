"""Would ``torch.compile`` make DiGA's own work in a step cheaper? Eager against compiled, per component.

    python benchmarks/compile_probe.py            # the paper's shapes on CUDA (cuda_check.sh runs it)
    python benchmarks/compile_probe.py --quick    # small shapes, on the CPU too (compiling takes minutes there)

Times the strong augmentation (every step drawn), the class-mix mask + mix and the symmetric KD
(forward + backward), eager and under ``torch.compile``, in interleaved rounds (``_harness.measure``),
after the compiled versions are warmed up (the compile time is printed, not timed); value checks off,
as inside an Adapter step. Reported, not asserted: the numbers decide whether a compiled path is
worth an option on by default on a device. Measured 2026-12-05 on a loaded 2-core CPU (``--quick``):
compiled augmentation and mix slower (0.88x, 0.68x: graph breaks at the host-side draws), KD 1.75x
faster; never worth a default there with its compile time in every process.
"""

from __future__ import annotations

import sys
import time

import torch
from _harness import BenchConfig, count_ops, measure, paired_ratio

from diga import CrossDomainMix, strong_photometric, symmetric_kd_loss, value_checks


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not quick:
        print("compile_probe: no CUDA device; pass --quick for small CPU shapes")
        return 2
    b, h, w = (3, 128, 224) if quick else (3, 512, 896)
    g = torch.Generator().manual_seed(0)
    images, other = (t.to(device) for t in torch.rand(2, b, 3, h, w, generator=g))
    labels = torch.randint(0, 19, (b, h // 32, w // 32), generator=g)
    labels = labels.repeat_interleave(32, 1).repeat_interleave(32, 2).to(device)
    student = (2 * torch.randn(2 * b, 19, h, w, generator=g)).to(device).requires_grad_()
    teacher = (2 * torch.randn(2 * b, 19, h, w, generator=g)).to(device)
    every = dict(jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, sharpness_p=1.0)
    mix = CrossDomainMix(num_classes=19)
    gen = torch.Generator().manual_seed(1)

    def kd(fn):
        def run():
            student.grad = None
            fn(student, teacher).backward()
        return run

    parts = {
        "strong augmentation": (lambda f: (lambda: f(images, generator=gen, **every)), strong_photometric),
        "class-mix mask + mix": (lambda f: (lambda: f(images, other, labels, generator=gen)), mix),
        "symmetric KD, fwd + bwd": (kd, symmetric_kd_loss),
    }
    cfg = BenchConfig.for_mode("quick" if quick else "full", device)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"images {(b, 3, h, w)}")
    with value_checks(False):
        _probe(parts, cfg, device)
    return 0


def _probe(parts, cfg: BenchConfig, device: torch.device) -> None:
    for name, (wrap, fn) in parts.items():
        eager, compiled = wrap(fn), wrap(torch.compile(fn))
        start = time.perf_counter()
        for _ in range(3):  # compile, then settle (recompiles for the random draws' control flow)
            compiled()
        compile_s = time.perf_counter() - start
        t = measure({"eager": eager, "compiled": compiled}, cfg)
        ratio = paired_ratio(t["eager"], t["compiled"])
        print(f"{name:26s} eager {t['eager'].median_ms:8.3f} ms ({count_ops(eager, device)} ops)  "
              f"compiled {t['compiled'].median_ms:8.3f} ms  eager/compiled {ratio:.2f}x  "
              f"(compile + warm-up {compile_s:.1f} s)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
