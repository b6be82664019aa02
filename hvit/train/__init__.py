"""Training: the trainer, its config, the LR schedule, checkpoints, callbacks and the command line.

``python -m hvit.train --model hvit_nano --dataset shapes`` trains from the command line (see
`hvit.train.cli`); the same command under ``torchrun --nproc_per_node=N`` trains on N processes.
"""

from hvit.train.callbacks import Callback, History, ProgressBar
from hvit.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from hvit.train.config import TrainConfig
from hvit.train.schedule import warmup_cosine
from hvit.train.trainer import HViTTrainer, NonFiniteLossError, build_optimizer, param_groups_weight_decay

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "HViTTrainer",
    "History",
    "NonFiniteLossError",
    "ProgressBar",
    "TrainConfig",
    "build_optimizer",
    "load_checkpoint",
    "param_groups_weight_decay",
    "read_checkpoint",
    "save_checkpoint",
    "warmup_cosine",
]
