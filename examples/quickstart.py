"""Quick start: DiGA's components on random tensors (no model, no data, a few seconds on CPU).

Run: ``python examples/quickstart.py``.
"""

from __future__ import annotations

import torch

from diga import (
    ClassCentroids,
    CrossDomainMix,
    DynamicPseudoLabelSelector,
    EMATeacher,
    FourierTranslator,
    StrongPhotometric,
    SymmetricKDLoss,
)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(2, 2, 3, 64, 64, generator=g)
    labels = torch.randint(0, 19, (2, 64, 64), generator=g)

    translated = FourierTranslator(beta=0.01)(src, tgt)
    augmented = StrongPhotometric(beta=0.4)(src, generator=g)
    mixed, _, mask = CrossDomainMix(num_classes=19)(augmented, translated, labels, generator=g)
    print(f"cross-domain mix: {mask.float().mean():.2f} of pixels pasted from the augmented view")

    student = torch.nn.Conv2d(3, 19, 3, padding=1)
    teacher = EMATeacher(student)
    views = torch.cat([src, mixed])
    kd = SymmetricKDLoss()(student(views), teacher(views), labels)
    kd.backward()
    teacher.update(student)
    print(f"symmetric KD loss: {kd.item():.3f}")

    bank = ClassCentroids.from_tensor(torch.randn(19, 256, generator=g))
    selected, stats = DynamicPseudoLabelSelector(bank)(
        labels, torch.randn(2, 256, 8, 8, generator=g), return_stats=True
    )
    print(f"dynamic selection kept {stats.kept.item():.2%} of the pseudo-labels")


if __name__ == "__main__":
    main()
