"""DistributedDataParallel on CPU (gloo): two processes stay in lockstep and equal one big-batch process."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from hvit.data import ShapesDataset, build_transforms
from hvit.train import HViTTrainer, read_checkpoint
from hvit.train.distributed import DistInfo
from hvit.train.trainer import _EpochSampler

from helpers import PRE

STEPS_DATA = 32  # images per epoch: 4 steps of 8 (one process) or of 2 x 4 (two processes)


def make_trainer(batch_size: int, out_dir: str) -> HViTTrainer:
    import hvit.registry as registry

    torch.manual_seed(0)  # the same initial weights in every process
    model = registry.create_model("hvit_nano", num_classes=6, img_size=16)
    model.preprocessing = PRE
    data = ShapesDataset(STEPS_DATA, 16, seed=0, transform=build_transforms(PRE, train=True))
    cfg = {
        "epochs": 2,
        "batch_size": batch_size,
        "lr": 3e-3,
        "warmup_epochs": 0,
        "checkpoint_path": os.path.join(out_dir, "ddp.safetensors"),
    }
    return HViTTrainer(model, None, None, "cpu", cfg, train_data=data)


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    from hvit.train.distributed import cleanup_distributed, init_distributed

    torch.set_num_threads(1)
    info, device = init_distributed("cpu")
    assert (info.rank, info.world_size) == (rank, world_size)
    trainer = make_trainer(4, out_dir)
    trainer.fit()
    state = {k: v.contiguous() for k, v in trainer.module.state_dict().items()}
    save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"), metadata={"steps": str(trainer.step)})
    cleanup_distributed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sampler_shards_are_disjoint_and_cover_the_epoch():
    data = list(range(10))
    shards = []
    for rank in range(2):
        sampler = _EpochSampler(data, DistInfo(rank=rank, world_size=2), seed=0)
        sampler.set_epoch(3)
        shards.append([i for _, i in sampler])
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == data


@pytest.mark.slow
def test_two_gloo_processes_stay_identical_and_match_one_big_batch(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # bit-identical replicas

    # One process with the two processes' batches combined takes the same steps (up to float rounding).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = make_trainer(8, str(tmp_path / "single"))
        initial = {k: v.clone() for k, v in single.module.state_dict().items()}
        single.fit()
    finally:
        torch.set_num_threads(threads)
    assert single.step == 8
    for k, v in single.module.state_dict().items():
        assert torch.allclose(rank0[k], v, atol=2e-5), k
    assert any(not torch.equal(initial[k], rank0[k]) for k in rank0)  # and training did move the weights

    # Rank 0 alone wrote the checkpoint, with every process's RNG state for exact resumption.
    assert sorted(p.name for p in tmp_path.iterdir() if "ddp" in p.name) == ["ddp.safetensors"]
    ckpt = read_checkpoint(tmp_path / "ddp.safetensors")
    assert ckpt.trainer["world_size"] == 2 and ckpt.trainer["step"] == 8 and len(ckpt.rng) == 2
    assert not torch.equal(ckpt.rng[0]["torch"], ckpt.rng[1]["torch"])  # one dropout stream per process
