"""Run under ``torchrun --nproc_per_node=2``: DDP self-training; rank 0 saves what every rank holds."""

from __future__ import annotations

import sys
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from diga.adapter import Adapter  # noqa: E402
from diga.engine import OptimConfig, cleanup_distributed, setup_distributed, train_stage  # noqa: E402
from diga.engine.distributed import wrap_ddp  # noqa: E402
from tests.engine.test_stages import Toy  # noqa: E402


def main(out_dir: str) -> None:
    info = setup_distributed("cpu")
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3, decoder_channels=(8, 8, 8))
    adapter = Adapter(net, num_classes=3)
    adapter.distribute(lambda m: wrap_ddp(m, info))
    assert isinstance(adapter.train_student, DistributedDataParallel)
    target = Toy(n=8, dark=True)
    shard = [target[i]["image"] for i in range(info.rank, 8, info.world_size)]
    adapter.init_centroids([torch.stack(shard)])
    train_stage(
        adapter, stage="self_training", steps=3, source=Toy(), target=target, batch_size=2,
        optim=OptimConfig(lr=0.01), work_dir=out_dir, seed=0, dist=info, show_progress=False,
        checkpoint_every=2,
    )
    state = {
        "centroids": adapter.centroids.centroids.clone(),
        "teacher": torch.cat([p.flatten() for p in adapter.teacher.parameters()]),
        "student": torch.cat([p.flatten() for p in adapter.student.parameters()]),
    }
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    if info.is_main:
        torch.save(gathered, Path(out_dir) / "ranks.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
