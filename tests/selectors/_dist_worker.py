"""Worker for the 2-process gloo tests (spawned by torch.multiprocessing)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from diga import ClassCentroids, ConfusionMatrix


def centroid_worker(rank: int, world: int, init_file: str, data: dict, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        feats, labels, logits = data["features"], data["labels"], data["logits"]
        half = feats.shape[0] // world
        part = slice(rank * half, (rank + 1) * half)
        bank = ClassCentroids(data["num_classes"], feats.shape[1], momentum=0.3, min_pixels=1)
        bank.accumulate(feats[part], labels[part])
        bank.finalize()
        after_init = bank.centroids.clone()
        bank.update(feats[part], labels[part], logits[part])
        cm = ConfusionMatrix(data["num_classes"])
        cm.update(logits[part].argmax(1), labels[part][:, ::2, ::2])
        result = {"init": after_init, "update": bank.centroids.clone(), "miou": cm.compute()["miou"]}
        torch.save(result, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()
