"""Ray Data transforms: code datasets bigger than one machine (``pip install 'hpac[ray]'``).

:class:`HpacEncoder` and :class:`HpacDecoder` are stateful ``map_batches`` classes: Ray starts
them as actors, each loads the models once, then codes batch after batch. The same code runs
on a laptop (``ray.init()``) and on a cluster (``ray.init(address="auto")`` on a node of it);
only where the data lives changes (read and write shared storage, e.g. s3:// or NFS)::

    ds = ray.data.read_binary_files("s3://bucket/scans/", include_paths=True)
    ds = ds.map(lambda r: {"path": r["path"], "image": hpac.io.readers.read_image(r["bytes"]).pixels})
    encode_dataset(ds, effort=2, concurrency=(2, 64)).write_parquet("s3://bucket/scans-hpac/")

(``read_image`` keeps every depth hpac codes; ``ray.data.read_images`` goes through Pillow.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import api

if TYPE_CHECKING:
    import ray.data


def _load(model: str | list[str] | None) -> list:
    """The models an actor keeps: weights files given, else the catalog defaults (cached per process)."""
    from ..zoo.catalog import DEFAULTS, load_catalog_model

    if model:
        return api.as_models(model)
    for name in sorted(set(DEFAULTS.values())):
        load_catalog_model(name)  # warms the per-process cache: the codec picks among them by plane
    return []


class HpacEncoder:
    """Batch {column: images, ...} -> {"hpac": .hpac bytes, "bpsp": float64, other columns kept}.

    Images are (H, W) or (H, W, C<=4) uint8 / uint16 / int16 arrays, any size per row.
    """

    def __init__(self, column: str = "image", effort: int | None = 0, threads: int = 1,
                 model: str | list[str] | None = None) -> None:
        self.column, self.effort, self.threads = column, effort, threads
        self.models = _load(model)  # once per actor, not per batch
        self.extra = self.models if model else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch[self.column]
        blobs = [api.encode(np.asarray(img), model=self.extra, effort=self.effort, threads=self.threads)
                 for img in images]
        out = {k: v for k, v in batch.items() if k != self.column}
        out["hpac"] = np.array(blobs, dtype=object)
        out["bpsp"] = np.array([8 * len(b) / np.asarray(img).size for b, img in zip(blobs, images)])
        return out


class HpacDecoder:
    """Batch {"hpac": .hpac bytes, ...} -> {column: images ((H, W) or (H, W, C)), other columns kept}."""

    def __init__(self, column: str = "image", threads: int = 1, model: str | list[str] | None = None,
                 max_pixels: int | None = None) -> None:
        self.column, self.threads, self.max_pixels = column, threads, max_pixels
        self.models = _load(model)
        self.extra = self.models if model else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = [api.decode(bytes(b), model=self.extra, threads=self.threads, max_pixels=self.max_pixels)
                  for b in batch["hpac"]]
        out = {k: v for k, v in batch.items() if k not in ("hpac", "bpsp")}
        out[self.column] = _column(images)
        return out


def _column(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One ndarray when the shapes agree, else a list (Ray stores it as a ragged tensor column)."""
    return np.stack(images) if len({(a.shape, a.dtype) for a in images}) == 1 else images


def encode_dataset(ds: ray.data.Dataset, *, column: str = "image", effort: int | None = 0,
                   concurrency: int | tuple[int, int] = 1, batch_size: int = 8, num_cpus: float = 1,
                   model: str | list[str] | None = None) -> ray.data.Dataset:
    """``ds`` with ``column`` replaced by "hpac" (bytes) and "bpsp"; ``concurrency`` actors
    (an int, or (min, max) to autoscale), each using ``num_cpus`` cores. Files decode on every
    node, whatever its CPU."""
    return ds.map_batches(HpacEncoder, fn_constructor_kwargs={"column": column, "effort": effort, "model": model,
                                                              "threads": max(1, int(num_cpus))},
                          batch_format="numpy", batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus)


def decode_dataset(ds: ray.data.Dataset, *, column: str = "image", concurrency: int | tuple[int, int] = 1,
                   batch_size: int = 8, num_cpus: float = 1, model: str | list[str] | None = None) -> ray.data.Dataset:
    """The inverse of :func:`encode_dataset`: "hpac" (and "bpsp") replaced by ``column``."""
    return ds.map_batches(HpacDecoder, fn_constructor_kwargs={"column": column, "model": model,
                                                              "threads": max(1, int(num_cpus))},
                          batch_format="numpy", batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus)
