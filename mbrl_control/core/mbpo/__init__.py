"""MBPO (Janner et al. 2019) in the pure core: SAC trained on short model rollouts branched from
real states, exported as a small torch policy (and critic) for the controller.

``policy`` (the run-time side: ``Policy``, ``ValueFunction``, their safetensors format) imports
only torch and safetensors; ``config`` (``MBPOConfig``) nothing heavy. Training (``trainer``:
``train_mbpo``) and the model environment (``env``: ``ModelEnv``) need
stable-baselines3 and gymnasium; they are imported from here on first use, so a controller that
only runs a policy, and a learner with MBPO off, never load them.
"""

from __future__ import annotations

import importlib
from typing import Any

from mbrl_control.core.mbpo.config import MBPOConfig
from mbrl_control.core.mbpo.policy import (
    Policy,
    PolicyFormatError,
    PolicySpec,
    ValueFunction,
    ValueSpec,
    load_policy,
    load_value,
    observe,
    policy_from_bytes,
    policy_spec,
    policy_to_bytes,
    save_policy,
    save_value,
    value_from_bytes,
    value_to_bytes,
)

_LAZY = {
    "MBPOResult": "trainer",
    "MixedReplayBuffer": "trainer",
    "closed_loop": "trainer",
    "train_mbpo": "trainer",
    "ModelEnv": "env",
    "ModelMDP": "env",
    "ModelRollouts": "env",
    "TransitionBatch": "env",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MBPOConfig",
    "Policy",
    "PolicyFormatError",
    "PolicySpec",
    "ValueFunction",
    "ValueSpec",
    "load_policy",
    "load_value",
    "policy_spec",
    "observe",
    "policy_from_bytes",
    "policy_to_bytes",
    "save_policy",
    "save_value",
    "value_from_bytes",
    "value_to_bytes",
    *_LAZY,
]
