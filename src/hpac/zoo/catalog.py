"""The model catalog: ONE row per shipped model; everything else is derived from it.

A row fixes the architecture (dim, blocks, mixtures K, ...), the patch size P the encoder
uses (files record their P, and the decoder follows the file) and the weights file inside
``hpac/zoo/data``. The file's weights id (sha256 of the tensors) is written into every
.hpac file, so retraining a model changes its id and old files are refused with a message
naming the model they need instead of decoding garbage.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelMismatchError, require_torch
from ..nn.architecture import ModelConfig
from ..nn.integer import check_grid, IntNet, quant_spec, QuantSpec
from ..nn.integer import export as quant_export
from ..nn.integer import load as quant_load

if TYPE_CHECKING:  # the float network (torch) is built only to fit adapters and to train
    from ..nn.model import HPACNet


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    config: ModelConfig
    file: str  # inside hpac/zoo/data/
    description: str
    training: str  # data, steps and validation bpsp of the shipped weights
    adapted_patch: int | None = None  # P of planes coded with SARP-FT adapters (None: config.patch)


# How each shipped model's weights were made (data, steps, validation bpsp): the catalog's provenance
TRAINING = {
    "hpac-natural": ("hpac train on ../shared/data/train + datasets/fetch_training.py output: 7000 "
        "steps x 16 crops 64x64 on 2 CPU cores, then on one H200 GPU (docs/training.md) "
        "11100 steps x 64 crops (session 5), then on 238 train / 34 val files (session 6): "
        "6854 steps x 16 crops 128x128, lr 1.5e-4, --amp, 8.4 min shared by 4 runs, and "
        "8532 more at lr 7e-5, 3.2 min alone (validation 2.078 bpsp on 276 held-out 128x128 "
        "crops), then (session 7) 6361 steps x 64 crops 64x64 at lr 1e-4, 7.7 min shared by "
        "4 runs, and 12596 more at lr 7e-5, 4.0 min alone, all --amp (validation 2.045 bpsp "
        "on the same 276 crops), then (session 9, one H100, float32, --compile) 5859 steps "
        "x 64 crops 64x64 at lr 1e-4, 7.7 min shared by 3 runs, and 8433 more at lr 7e-5, "
        "3.9 min alone; validation 2.011 bpsp on the same 276 crops; then (session 16, one "
        "H200, float32, --compile, 299 train / 34 val files) 18502 steps x 64 crops 64x64 at "
        "lr 5e-5, 7.8 min, and 9379 more at lr 2e-5, 3.9 min; model NLL on the 34 held-out "
        "files (whole images, P = 128) 2.1945 -> 2.1737 bpsp; then (0.2.0, session 24) integer grids "
        "calibrated by scripts/quantize_models.py and hpac train --qat on them: 276 steps x 16 "
        "crops 64x64 on ../shared/data/train, lr 1e-5, 13 min on one CPU core; integer-network "
        "NLL on the 5 held-out files 2.0176 -> 2.0126 bpsp (scripts/qat_eval.py)"),
    "hpac-gray": ("hpac train --gray --amp (luma) on the same data (229 train / 25 val files) from "
        "scratch: 9919 steps x 64 crops 64x64, lr 1e-3, 8.2 min on one H200 GPU shared by 4 "
        "runs (docs/training.md); validation 3.260 bpsp (the CPU-trained predecessor: 3.545); then "
        "(0.2.0, session 24) hpac train --gray --qat on its calibrated integer grids: 366 steps "
        "x 16 crops 64x64 on ../shared/data/train, lr 1e-5, 12 min on one CPU core; integer-"
        "network NLL on the 5 held-out files 2.5344 -> 2.5317 bpsp (scripts/qat_eval.py)"),
    "hpac-gray16": ("hpac train --gray --init hpac-gray (02147a41) on datasets/fetch_medical.py output "
        "(91 CT/MR/X-ray images, 9-16 bit; 82 train / 9 val): 3697 steps x 16 crops 64x64, "
        "lr 3e-4, 40 min on 2 CPU cores (validation 5.778 bpsp), then (session 7, gray "
        "planes over 8 bits offset to start at 0) 5434 steps x 16 crops 64x64, lr 1.5e-4, "
        "55 min on 2 CPU cores, float32; validation 5.654 bpsp on crops, 5.512 on the 9 "
        "whole validation images (before: 5.534); then (0.2.0, session 24) integer grids calibrated "
        "by scripts/quantize_models.py, shipped post-training: hpac train --qat measured -0.00% on 10 "
        "held-out medical images and +0.44% on dev medical, where the grids alone were already "
        "-0.31% against the float32 files (docs/integer.md)"),
}

CATALOG: dict[str, CatalogEntry] = {e.name: e for e in (
    # P = 256 once adapted: held-out tiles 0.53% smaller at effort 2 than at P = 128, for
    # about a fifth more of effort 2's time; effort 0 keeps P = 128 for its speed
    # (docs/sarp-ft.md, session 14)
    CatalogEntry("hpac-natural", ModelConfig(channels=3, dim=64, blocks=3, kernel=7, mlp_ratio=2, mixtures=5, patch=128),
                 "hpac-natural.safetensors", "RGB planes (natural photos; default for 3-channel images)",
                 TRAINING["hpac-natural"], adapted_patch=256),
    # held-out gray tiles 0.30% smaller at effort 2 than at P = 128 (docs/sarp-ft.md, session 14)
    CatalogEntry("hpac-gray", ModelConfig(channels=1, dim=48, blocks=3, kernel=7, mlp_ratio=2, mixtures=5, patch=128),
                 "hpac-gray.safetensors", "single-channel planes (gray images, alpha, extra channels)",
                 TRAINING["hpac-gray"], adapted_patch=256),
    # P = 256 (not 128): held-out head CT 1.0% smaller at effort 0 and 1.5% at effort 2, for
    # about 1.4x the coding time of P = 128 (docs/sarp-ft.md, session 12)
    CatalogEntry("hpac-gray16", ModelConfig(channels=1, dim=48, blocks=3, kernel=7, mlp_ratio=2, mixtures=5, patch=256),
                 "hpac-gray16.safetensors", "single-channel planes with 9-16 significant bits (CT, MR, X-ray)",
                 TRAINING["hpac-gray16"]),
)}

# (plane channels, high bit depth) -> the catalog model that codes such planes by default
DEFAULTS = {(3, False): "hpac-natural", (3, True): "hpac-natural", (1, False): "hpac-gray", (1, True): "hpac-gray16"}


def default_model_name(channels: int, bits: int) -> str:
    """The catalog model for planes of ``channels`` (1 or 3) with ``bits`` significant bits."""
    return DEFAULTS[(channels, bits > 8)]


@dataclass(frozen=True, eq=False)
class CodecModel:
    """A network ready for coding, with the identity written into files.

    ``state``: the float weights (float32 arrays named as :class:`hpac.nn.model.HPACNet`'s
    state_dict); coding runs their integer form (:meth:`integer`, numpy), so effort 0 never
    imports torch, nor does decoding. The float network (:attr:`net`) is built on first use: the
    SARP-FT fit (effort >= 1), training."""

    name: str
    config: ModelConfig
    state: dict[str, np.ndarray] = field(repr=False)
    weights_id: str
    info: dict
    adapted_patch: int | None = None  # P the encoder codes with once adapters are merged (None: config.patch)
    grid: dict | None = field(default=None, repr=False)  # the integer network's grids (hpac.nn.integer.grids)
    spec: QuantSpec | None = None

    @cached_property
    def net(self) -> HPACNet:
        """The float network of these weights (torch)."""
        require_torch("the float network")
        from ..nn.model import HPACNet

        return HPACNet.from_state(self.config, self.state)

    def integer(self, bits: int) -> IntNet:
        """The integer network that codes ``bits``-bit planes (formats 8 and 9); built once per
        model and bit depth."""
        if self.grid is None:
            raise ModelMismatchError(f"model {self.name} has no integer grids: weights written before hpac 0.2.0 "
                                     f"(save them again with `hpac train --resume`, which calibrates them)")
        if bits not in self._integer:
            self._integer[bits] = quant_load(quant_export(self.state, self.grid, self.spec), self.config, self.spec,
                                             bits)
        return self._integer[bits]

    @cached_property
    def _integer(self) -> dict[int, IntNet]:
        return {}

    def with_patch(self, patch: int) -> "CodecModel":
        """This model coding P x P patches (same weights and id; files record their P)."""
        if patch == self.config.patch:
            return self
        return replace(self, config=replace(self.config, patch=patch))

    def with_state(self, state: dict[str, np.ndarray]) -> "CodecModel":
        """This model (name, id: the file's identity) with the float weights ``state``:
        adapters merged (:func:`hpac.adapters.lora.merge`)."""
        return replace(self, state=state)

    def adapted(self, state: dict[str, np.ndarray]) -> "CodecModel":
        """This model with ``state`` (its weights with adapters merged) coding at the adapted P.

        Adapted models gain more from the context that bigger patches keep, and effort >= 1
        already spends several times effort 0's time, so a catalog row may code adapted planes
        with bigger patches than effort 0 uses (files record their P)."""
        return self.with_state(state).with_patch(self.adapted_patch or self.config.patch)


def get_entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelMismatchError(f"unknown model {name!r} (known: {', '.join(CATALOG)})") from None


def weights_path(entry: CatalogEntry) -> Path:
    return Path(str(resources.files("hpac.zoo") / "data" / entry.file))


@lru_cache(maxsize=8)
def load_catalog_model(name: str) -> CodecModel:
    """Load a shipped model by catalog name (cached)."""
    from .weights import load_weights

    entry = get_entry(name)
    path = weights_path(entry)
    if not path.exists():
        raise ModelMismatchError(f"weights of {name} are not installed ({path})")
    cfg, state, info = load_weights(path)
    if replace(cfg, patch=entry.config.patch) != entry.config:
        raise ModelMismatchError(f"{path} does not match the catalog architecture of {name}")
    return CodecModel(name, entry.config, state, info["weights_id"], info, entry.adapted_patch, *_grid_of(info, cfg))


def load_model_file(path: str | Path, name: str | None = None) -> CodecModel:
    """Load a model from a weights file (training output); named after the file by default."""
    from .weights import load_weights

    cfg, state, info = load_weights(path)
    return CodecModel(name or Path(path).stem, cfg, state, info["weights_id"], info, None, *_grid_of(info, cfg))


def _grid_of(info: dict, cfg: ModelConfig) -> tuple[dict | None, QuantSpec | None]:
    """(grid, spec) a weights file's info holds (hpac.zoo.weights.load_weights), taken out of it
    and checked (a file from elsewhere must not steer the integer network out of its bounds)."""
    grid = info.pop("grid", None)
    fields = info.pop("quant_spec", None)
    if grid is None:
        return None, None
    if not isinstance(fields, dict):
        raise ModelMismatchError("the weights file's integer grids come without their settings (quant_spec)")
    spec = quant_spec(fields)
    check_grid(grid, cfg, spec)
    return grid, spec


def resolve_model(name: str, weights_id: str, extra: list[CodecModel] | None = None) -> CodecModel:
    """The model a file names: a caller-supplied one with that id, else the catalog's."""
    for m in extra or []:
        if m.weights_id == weights_id:
            return m
    try:
        model = load_catalog_model(name)
    except ModelMismatchError:
        raise ModelMismatchError(f"file needs model {name} (weights {weights_id}), which is not installed "
                                 "(pass its weights as model=)", option="model") from None
    if model.weights_id != weights_id:
        raise ModelMismatchError(
            f"file needs model {name} with weights {weights_id}; installed {name} has weights {model.weights_id} "
            f"(decode with the hpac release that wrote it, or pass those weights as model=)", option="model"
        )
    return model
