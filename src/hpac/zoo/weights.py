"""Model weights on disk: safetensors with the architecture in the metadata.

The *weights id* is the first 16 hex digits of the sha256 over every tensor (name, shape,
bytes; sorted by name), so metadata edits never change it and any weight change does.
Files are read as numpy arrays: coding needs no torch (:class:`hpac.zoo.catalog.CodecModel`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..errors import ModelMismatchError
from ..nn.architecture import ModelConfig

if TYPE_CHECKING:
    from ..nn.model import HPACNet


def tensors_hash(state: Mapping[str, np.ndarray]) -> str:
    """The weights id of numpy arrays (module docstring); every tensor is hashed as float32."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = np.ascontiguousarray(state[name], np.float32)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.tobytes())
    return h.hexdigest()[:16]


GRID_PREFIX = "grid."  # tensors of the integer network's grids (hpac.nn.integer.grids)


def save_weights(net: HPACNet, path: str | Path, info: dict | None = None,
                 grid: Mapping[str, np.ndarray] | None = None, spec: dict | None = None) -> str:
    """Write ``net`` (and the grids of its integer form, with their QuantSpec as a dict) to
    ``path`` atomically; returns the weights id (over every tensor, grids included)."""
    from safetensors.numpy import save_file

    from ..nn.quantize import float_state

    state = float_state(net)
    state.update({GRID_PREFIX + k: np.ascontiguousarray(v) for k, v in (grid or {}).items()})
    meta = {"config": json.dumps(net.cfg.to_dict()), "info": json.dumps(info or {}),
            "weights_id": tensors_hash(state)}
    if grid:
        meta["quant_spec"] = json.dumps(spec or {})
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return meta["weights_id"]


def load_weights(path: str | Path) -> tuple[ModelConfig, dict[str, np.ndarray], dict]:
    """A weights file's architecture, float32 weights (named as the float network's
    state_dict) and training info; verifies the stored weights id and that the weights fit
    the architecture. The info holds the integer grids under "grid" and their spec under
    "quant_spec" where the file has them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelMismatchError(f"cannot load weights {path}: {exc}") from None
    if "config" not in meta:
        raise ModelMismatchError(f"{path} has no hpac model config in its metadata")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
        expected = cfg.weight_shapes()
    except (TypeError, ValueError) as exc:
        raise ModelMismatchError(f"{path}: unreadable model config in its metadata ({exc})") from None
    grid = {k[len(GRID_PREFIX):]: v for k, v in state.items() if k.startswith(GRID_PREFIX)}
    weights = {k: v for k, v in state.items() if not k.startswith(GRID_PREFIX)}
    wrong = sorted(set(weights) ^ set(expected)) or [k for k in expected if weights[k].shape != expected[k]]
    if wrong:
        raise ModelMismatchError(f"{path}: weights do not fit the architecture in its metadata "
                                 f"({', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''})")
    weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    if not all(np.isfinite(v).all() for v in weights.values()):  # NaN would reach the integer grids
        raise ModelMismatchError(f"{path}: weights hold NaN or infinite values")
    wid = tensors_hash(state)
    if meta.get("weights_id") not in (None, wid):
        raise ModelMismatchError(f"{path}: weights do not match their recorded id")
    info = json.loads(meta.get("info", "{}"))
    info["weights_id"] = wid
    if grid:
        info["grid"], info["quant_spec"] = grid, json.loads(meta.get("quant_spec", "{}"))
    return cfg, weights, info


def load_net(path: str | Path) -> tuple[HPACNet, dict]:
    """A weights file as the float network (torch: training, measuring) and its info
    (:func:`load_weights`)."""
    from ..nn.model import HPACNet

    cfg, weights, info = load_weights(path)
    return HPACNet.from_state(cfg, weights), info
