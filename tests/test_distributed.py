"""A backbone with frozen stages under DistributedDataParallel (two CPU processes, gloo), no find_unused_parameters."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import resnet18_spec
from torch.nn.parallel import DistributedDataParallel

import featx

WORLD_SIZE = 2


def _train_one_rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        backbone = featx.build(resnet18_spec(frozen_stages=2, norm="train", fpn={"out_channels": 16}))
        initial = {name: p.detach().clone() for name, p in backbone.named_parameters()}
        model = DistributedDataParallel(backbone)
        optimizer = torch.optim.SGD(backbone.param_groups(0.1), lr=0.1)
        generator = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
        model.train()
        for _ in range(3):
            outputs = model(torch.randn(2, 3, 64, 64, generator=generator))
            loss = sum(output.square().mean() for output in outputs.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save(
            {"initial": initial, "final": {k: v.detach() for k, v in backbone.named_parameters()}},
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_keeps_ranks_in_sync_and_frozen_stages_fixed(tmp_path):
    mp.spawn(_train_one_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), f"{name} differs across ranks"
    frozen = [name for name in ranks[0]["final"] if name.startswith(("stages.c2.", "stages.c3."))]
    trainable = [name for name in ranks[0]["final"] if name not in frozen]
    assert frozen and trainable
    assert all(torch.equal(ranks[0]["initial"][n], ranks[0]["final"][n]) for n in frozen)
    assert all(not torch.equal(ranks[0]["initial"][n], ranks[0]["final"][n]) for n in trainable)
