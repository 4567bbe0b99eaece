"""Model weights on disk: safetensors with the architecture in the metadata.

The *weights id* is the first 16 hex digits of the sha256 over every tensor (name, shape,
bytes; sorted by name), so metadata edits never change it and any weight change does.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import ModelMismatchError
from ..nn.model import HPACNet, ModelConfig


def tensors_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


GRID_PREFIX = "grid."  # tensors of the integer network's grids (hpac.nn.integer.grids)


def save_weights(net: HPACNet, path: str | Path, info: dict | None = None,
                 grid: dict[str, torch.Tensor] | None = None, spec: dict | None = None) -> str:
    """Write ``net`` (and the grids of its integer form, with their QuantSpec as a dict) to
    ``path`` atomically; returns the weights id (over every tensor, grids included)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    state.update({GRID_PREFIX + k: v.contiguous() for k, v in (grid or {}).items()})
    meta = {"config": json.dumps(net.cfg.to_dict()), "info": json.dumps(info or {}),
            "weights_id": tensors_hash(state)}
    if grid:
        meta["quant_spec"] = json.dumps(spec or {})
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return meta["weights_id"]


def load_weights(path: str | Path) -> tuple[HPACNet, dict]:
    """Load a network and its training info; verifies the stored weights id. The info holds
    the integer grids under "grid" and their spec under "quant_spec" where the file has them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelMismatchError(f"cannot load weights {path}: {exc}") from None
    if "config" not in meta:
        raise ModelMismatchError(f"{path} has no hpac model config in its metadata")
    cfg = ModelConfig(**json.loads(meta["config"]))
    net = HPACNet(cfg)
    grid = {k[len(GRID_PREFIX):]: v for k, v in state.items() if k.startswith(GRID_PREFIX)}
    try:
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith(GRID_PREFIX)})
    except RuntimeError as exc:
        raise ModelMismatchError(f"{path}: weights do not fit the architecture in its metadata ({exc})") from None
    net.eval()
    wid = tensors_hash(state)
    if meta.get("weights_id") not in (None, wid):
        raise ModelMismatchError(f"{path}: weights do not match their recorded id")
    info = json.loads(meta.get("info", "{}"))
    info["weights_id"] = wid
    if grid:
        info["grid"], info["quant_spec"] = grid, json.loads(meta.get("quant_spec", "{}"))
    return net, info
