"""The model: observation encoders, token embeddings, causal transformer, KV cache, size presets.

Entry points: ``ModelConfig`` / ``preset`` (config.py), ``ICRLModel`` (model.py, batch format in
its docstring), ``action_loss`` (loss.py), ``Decoder`` / ``tile`` / ``rewind`` (cached decoding for
rollouts), ``model_info`` (parameters and FLOPs), ``example_batch`` (random inputs). Submodules
import jax; this package's ``__init__`` re-exports lazily so ``import icrl.model.config`` stays
light.

Design choices:
- one model per domain: ``ModelConfig.domain`` picks the tty or the IMPALA encoder (the study
  trains MiniHack and Procgen models separately); presets land within ±15% of the study's counts
  in both domains (``icrl model info PRESET --domain ...``);
- positions: RoPE by default, learned as an option (measurement in ``icrl.model.positions``);
- attention: cuDNN flash attention on GPU in bfloat16, else XLA ops in blocks of queries
  (``icrl.model.attention.causal_attention``);
- parameters carry logical axis names (``icrl.model.axes``) for the training issue's rule table.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "icrl.model.config",
    "PRESETS": "icrl.model.config",
    "preset": "icrl.model.config",
    "ICRLModel": "icrl.model.model",
    "MASKED_LOGIT": "icrl.model.model",
    "mask_logits": "icrl.model.model",
    "action_loss": "icrl.model.loss",
    "action_accuracy": "icrl.model.loss",
    "KVCache": "icrl.model.cache",
    "tile": "icrl.model.cache",
    "rewind": "icrl.model.cache",
    "Decoder": "icrl.model.decoding",
    "model_info": "icrl.model.info",
    "example_batch": "icrl.model.example",
    "param_counts": "icrl.model.info",
    "flops_per_token": "icrl.model.info",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'icrl.model' has no attribute {name!r}")
