"""Online model learning, pure core (no ROS): logged transitions, a crash-safe replay buffer, the
ensemble trainer, model (de)serialisation and the learned-reward task."""

from mbrl_control.core.learning.model_io import (
    ModelFormatError,
    ModelInfo,
    build_from_bytes,
    decode,
    encode,
    latest_checkpoint,
    load_into,
    save_checkpoint,
)
from mbrl_control.core.learning.replay_buffer import ReplayBuffer, ReplayBufferError
from mbrl_control.core.learning.reward_task import LearnedRewardTask
from mbrl_control.core.learning.sample_layout import Sample, SampleLayout, SampleReader
from mbrl_control.core.learning.trainer import (
    BackgroundTrainer,
    HeldOutScores,
    TrainerConfig,
    TrainOutcome,
    TrainResult,
    evaluate,
    train_ensemble,
)
from mbrl_control.core.learning.transitions import TransitionAssembler, Transitions, residual_transitions

__all__ = [
    "BackgroundTrainer",
    "HeldOutScores",
    "LearnedRewardTask",
    "ModelFormatError",
    "ModelInfo",
    "ReplayBuffer",
    "ReplayBufferError",
    "Sample",
    "SampleLayout",
    "SampleReader",
    "TrainOutcome",
    "TrainResult",
    "TrainerConfig",
    "TransitionAssembler",
    "Transitions",
    "residual_transitions",
    "build_from_bytes",
    "decode",
    "encode",
    "evaluate",
    "latest_checkpoint",
    "load_into",
    "save_checkpoint",
    "train_ensemble",
]
