"""Pre-training: random P x P crops, NLL in bits per subpixel, checkpoints, resume.

Every crop is one coding patch (zero context beyond its border), exactly as the codec sees
patches. The run is reproducible: crop positions and flips of step ``t`` come from a
generator seeded with ``(seed, t)``, so a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import HpacError
from ..io.readers import IMAGE_SUFFIXES
from ..nn import integer, quantize
from ..nn.integer import QuantSpec
from ..nn.mixture import nll_bits, normalise
from ..nn.architecture import ModelConfig, narrowed
from ..nn.model import HPACNet
from ..zoo.weights import save_weights



@dataclass
class TrainOptions:
    data: list[Path]
    out: Path
    cfg: ModelConfig
    steps: int = 20000
    batch: int = 16
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    val_every: int = 500
    ckpt_minutes: float = 5.0
    resume: bool = False
    init: Path | None = None  # start from these weights (fresh optimizer and schedule)
    stop_after: int | None = None  # leave (checkpointed) after this many steps of this invocation
    minutes: float | None = None  # fit this invocation in this wall time (re-plans ``steps``)
    amp: bool = False  # bfloat16 autocast for the network body while training (loss in float32)
    gray: bool = False  # train a 1-channel model on the luma of the images
    crop: int | None = None  # training / validation crop side (default: the coding patch P)
    level_shift: float = 0.0  # >8-bit data: share of crops moved to a random level / batches to a wider range
    compile: bool = False  # torch.compile the training loss (fuses the mixture's elementwise chain on a GPU)
    qat: bool = False  # quantisation-aware fine-tuning of ``init`` on its integer grids (hpac.nn.quantize.FakeQuant)
    progress: bool = True


def _load_images(dirs: list[Path], gray: bool) -> list[tuple[str, np.ndarray, int]]:
    """[(name, (H, W, C) symbols, coding bits)]: the symbols the codec would code for each
    image, after its value map (an offset or a table, as the codec chooses: hpac.entropy.valuemap).
    ``name`` is the path inside its folder without suffix (it decides the validation split)."""
    from ..io.image import Image, to_gray_luma
    from ..io.readers import read_image
    from ..entropy.valuemap import choose

    found = sorted((p.relative_to(d).with_suffix("").as_posix(), i, p)
                   for i, d in enumerate(dirs) for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise HpacError(f"no training images under {', '.join(map(str, dirs))}")
    out = []
    for name, _, f in found:
        img = read_image(f)
        arr = img.pixels
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if gray:
            arr = to_gray_luma(arr) if arr.shape[2] == 3 else arr[:, :, :1]
        elif arr.shape[2] != 3:
            continue
        sym = Image(arr, img.bits).symbols()
        vmap = choose(sym, img.bits, gray=sym.shape[-1] == 1)
        out.append((name, np.ascontiguousarray(vmap.forward(sym)), vmap.coding_bits))
    return out


def split_train_val(images: list, every: int = 10) -> tuple[list, list]:
    """Hold out about one image in ``every`` for validation, chosen by a hash of its name: the
    split does not depend on where the folders live, on the tile format (PNG here, .npy on a
    GPU machine) or on other files being added or removed."""
    hashes = [zlib.crc32(name.encode()) for name, _, _ in images]
    held = [h % every == 0 for h in hashes]
    if not any(held) and len(images) > 1:  # small sets: still validate on one image
        held[hashes.index(min(hashes))] = True
    return ([im for im, h in zip(images, held) if not h], [im for im, h in zip(images, held) if h])


def _val_crops(images: list, p: int, limit: int = 64) -> list[tuple[np.ndarray, int]]:
    crops = []
    for _, arr, bits in images:
        h, w, _ = arr.shape
        for r in range(0, h - p + 1, p):
            for c in range(0, w - p + 1, p):
                crops.append((arr[r : r + p, c : c + p], bits))
    step = max(1, len(crops) // limit)
    return crops[::step][:limit]


def _sample_batch(images: list, p: int, batch: int, gen: torch.Generator,
                  level_shift: float = 0.0) -> tuple[torch.Tensor, int]:
    """(B, p, p, C) int64 crops of one coding depth, and that depth.

    ``level_shift`` (high bit depth only): with this probability the batch is coded one bit
    wider, and each crop is moved to a uniformly random level of the range, so the model
    cannot rely on where a volume's tissue sits above its smallest value. Measured on held-out
    head CT it lost 1.6% at 0.5 (docs/training.md, session 7): those levels carry information,
    so it is off by default."""
    idx = torch.randint(len(images), (1,), generator=gen).item()  # one image depth per batch
    bits = images[idx][2]
    shift = level_shift > 0 and bits > 8
    coded = bits + 1 if shift and bits < 16 and torch.rand(1, generator=gen).item() < level_shift else bits
    pool = [im for im in images if im[2] == bits]
    crops = []
    for _ in range(batch):
        _, arr, _ = pool[torch.randint(len(pool), (1,), generator=gen).item()]
        h, w, _ = arr.shape
        r = torch.randint(max(1, h - p + 1), (1,), generator=gen).item()
        c = torch.randint(max(1, w - p + 1), (1,), generator=gen).item()
        crop = arr[r : r + p, c : c + p]
        if crop.shape[0] < p or crop.shape[1] < p:
            crop = np.pad(crop, ((0, p - crop.shape[0]), (0, p - crop.shape[1]), (0, 0)), mode="edge")
        if torch.randint(2, (1,), generator=gen).item():
            crop = crop[:, ::-1]
        if torch.randint(2, (1,), generator=gen).item():
            crop = crop[::-1]
        crop = crop.astype(np.int64)  # a copy: the shift below must not touch the image
        if shift and torch.rand(1, generator=gen).item() < level_shift:
            lo, hi = int(crop.min()), int(crop.max())
            crop += torch.randint((1 << coded) - (hi - lo), (1,), generator=gen).item() - lo
        crops.append(crop)
    return torch.from_numpy(np.stack(crops)), coded


Forward = Callable[[HPACNet, torch.Tensor, int], torch.Tensor]  # (net, x (B,C,P,P), bits) -> raw params


def float_forward(net: HPACNet, x: torch.Tensor, bits: int) -> torch.Tensor:
    return net(x)


def batch_bits(net: HPACNet, sym: torch.Tensor, bits: int, amp: bool = False,
               forward: Forward = float_forward) -> torch.Tensor:
    """Mean bits per subpixel of integer crops sym (B, P, P, C); ``amp`` runs the network
    body in bfloat16 for 8-bit crops (the mixture likelihood is always computed in float32);
    ``forward``: the float network, or its integer grids (:func:`qat_forward`).

    Crops of more than 8 bits always run in float32: bfloat16 resolves about 2^-8 of a value
    near 1, which is 16 levels of a 12-bit image, so a model trained that way cannot place
    its means within a level (measured: median mean error 4.4 levels on smooth CT, against
    1.4 for the float32-trained hpac-gray16; docs/training.md, session 7)."""
    cfg = net.cfg
    x = normalise(sym, bits).permute(0, 3, 1, 2)
    with torch.autocast(device_type=sym.device.type, dtype=torch.bfloat16, enabled=amp and bits <= 8):
        raw = forward(net, x, bits)
    return nll_bits(raw.float(), sym, bits, cfg.channels, cfg.mixtures).mean()


def qat_forward(grid: dict, spec: QuantSpec) -> Forward:
    """The forward pass of quantisation-aware training on fixed ``grid`` (hpac.nn.integer.grids)."""
    grid = {k: np.asarray(v) for k, v in grid.items()}
    return lambda net, x, bits: quantize.fake_quant_forward(net, x, grid, spec, bits)


def evaluate(net: HPACNet, crops: list, device: str, batch: int = 16, forward: Forward = float_forward) -> float:
    """Mean bpsp over validation crops (each crop weighs the same)."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            group = crops[i : i + batch]
            for bits in sorted({b for _, b in group}):
                arrs = [a for a, b in group if b == bits]
                sym = torch.from_numpy(np.stack(arrs).astype(np.int64)).to(device)
                total += batch_bits(net, sym, bits, forward=forward).item() * len(arrs)
    net.train()
    return total / max(1, len(crops))


def grow_from(net: HPACNet, init: HPACNet) -> None:
    """Load ``init``'s weights into ``net``: the same network, a deeper one, or a narrower one.

    The patch size P is not a weight (a model trained on one P codes any other). Blocks beyond
    ``init``'s start as the identity (zero output projections), so the grown network computes
    exactly what ``init`` did and training only adds to it. A narrower ``net`` (smaller dim or
    MLP) takes each layer's first channels (:func:`hpac.nn.architecture.narrowed`): a start
    that training must then repair, for a network that codes faster.
    """
    a, b = init.cfg, net.cfg
    misfit = HpacError(f"--init weights ({a}) do not fit the model being trained ({b}): only the patch "
                       "size, a larger block count and a smaller width may differ")
    if replace(a, patch=b.patch, blocks=b.blocks, dim=b.dim, mlp_ratio=b.mlp_ratio) != b or a.blocks > b.blocks:
        raise misfit
    state = init.state_dict()
    if (b.dim, b.mlp_ratio) != (a.dim, a.mlp_ratio):  # narrowed says what a smaller width is
        try:
            cut = narrowed({k: v.numpy() for k, v in state.items()}, a, replace(a, dim=b.dim, mlp_ratio=b.mlp_ratio))
        except ValueError:
            raise misfit from None
        state = {k: torch.from_numpy(v) for k, v in cut.items()}
    missing, _ = net.load_state_dict(state, strict=False)
    for i in range(a.blocks, b.blocks):
        with torch.no_grad():
            net.blocks[i].proj.weight.zero_()
            net.blocks[i].proj.bias.zero_()
            net.blocks[i].mlp_down.weight.zero_()
            net.blocks[i].mlp_down.bias.zero_()
    if any(not k.startswith(tuple(f"blocks.{i}." for i in range(a.blocks, b.blocks))) for k in missing):
        raise HpacError(f"--init weights do not fill the model: {missing}")


def _lr_at(step: int, total: int, base: float) -> float:
    warm = min(500, total // 20)
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 1e-2 * base + (base - 1e-2 * base) * 0.5 * (1 + math.cos(math.pi * t))


class _StepPlanner:
    """Re-plans the total step count so that a run ends by a wall-clock deadline.

    The learning-rate schedule is a function of (step, total); re-planning every
    ``every`` steps from the measured rate (validation time included) keeps the cosine
    decay ending at the deadline even when the GPU or CPU is shared.
    """

    def __init__(self, deadline: float, step: int, every: int = 100) -> None:
        self.deadline = deadline
        self.every = every
        self.mark = (step, time.time())

    def total(self, step: int, current: int) -> int:
        if step - self.mark[0] < self.every:
            return current
        now = time.time()
        per_step = (now - self.mark[1]) / (step - self.mark[0])
        self.mark = (step, now)
        reserve = 10.0 + 20 * per_step  # final validation and save
        return max(step + 1, step + int((self.deadline - now - reserve) / per_step))

    def expired(self) -> bool:
        return time.time() >= self.deadline


def calibrated_grid(net: HPACNet, crops: list, spec: QuantSpec = QuantSpec()) -> tuple[dict, QuantSpec]:
    """The integer grids of ``net`` (:func:`hpac.nn.integer.grids`), its activation ranges taken on
    validation ``crops`` [(arr (p, p, C), bits)], so that the saved weights code at once."""
    cpu = copy.deepcopy(net).to("cpu").float().eval()
    batches = [normalise(torch.from_numpy(a.astype(np.int64))[None], bits).permute(0, 3, 1, 2) for a, bits in crops]
    return integer.grids(quantize.calibrate(cpu, batches, spec), cpu.cfg, spec), spec


def train(opt: TrainOptions) -> dict:
    """Run (or resume) a training run; writes ``opt.out`` (safetensors) and ``opt.out.ckpt``."""
    deadline = time.time() + 60.0 * opt.minutes if opt.minutes else None  # loading counts too
    if opt.threads:
        torch.set_num_threads(opt.threads)
    if opt.device == "cuda" and not torch.cuda.is_available():
        raise HpacError("--device cuda requested but no CUDA device is available")
    if opt.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop shapes: pick the fastest kernels once
    torch.manual_seed(opt.seed)
    images = _load_images(opt.data, opt.gray)
    if opt.device == "cuda" and any(bits > 8 for _, _, bits in images):
        # TF32 keeps 10 mantissa bits: a 12-bit level is below its resolution (see batch_bits)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    train_imgs, val_imgs = split_train_val(images)
    crop = opt.crop or opt.cfg.patch
    val = _val_crops(val_imgs, crop)
    net = HPACNet(opt.cfg).to(opt.device)
    optim = torch.optim.Adam(net.parameters(), lr=opt.lr)
    ckpt_path = Path(str(opt.out) + ".ckpt")
    step, log = 0, []
    start_time = 0.0
    if opt.init and not (opt.resume and ckpt_path.exists()):
        from ..zoo.weights import load_net

        init_net, _ = load_net(opt.init)
        grow_from(net, init_net)
    fixed_grid = None  # --qat trains on, and saves, the grids of the --init weights
    forward: Forward = float_forward
    if opt.qat:
        if not opt.init:
            raise HpacError("--qat fine-tunes trained weights on their integer grids: give them with --init")
        from ..zoo.weights import load_net

        init_net, init_info = load_net(opt.init)
        if "grid" in init_info:
            fixed_grid = (init_info["grid"], QuantSpec(**init_info["quant_spec"]))
        else:
            fixed_grid = calibrated_grid(init_net.to(opt.device), val)
        forward = qat_forward(*fixed_grid)
    if opt.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=opt.device, weights_only=False)
        if ModelConfig(**state["cfg"]) != opt.cfg:
            raise HpacError(f"checkpoint {ckpt_path} was made with a different model config")
        net.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, log, start_time = state["step"], state["log"], state.get("seconds", 0.0)
    meta = {
        "train_files": len(train_imgs),
        "val_files": len(val_imgs),
        "val_crops": len(val),
        "data": [str(d) for d in opt.data],
        "seed": opt.seed,
        "batch": opt.batch,
        "lr": opt.lr,
        "device": opt.device,
        "amp": opt.amp,
        "crop": crop,
        "level_shift": opt.level_shift,
        "compile": opt.compile,
        "qat": opt.qat,
    }

    def save(val_bpsp: float | None) -> None:
        elapsed = start_time + time.time() - t0
        torch.save(
            {"cfg": opt.cfg.to_dict(), "model": net.state_dict(), "optim": optim.state_dict(),
             "step": step, "log": log, "seconds": elapsed},
            str(ckpt_path) + ".tmp",
        )
        os.replace(str(ckpt_path) + ".tmp", ckpt_path)
        info = dict(meta, steps=step, seconds=round(elapsed), val_bpsp=val_bpsp, gray=opt.gray)
        grid, spec = fixed_grid or calibrated_grid(net, val)
        save_weights(net, opt.out, info, grid, dataclasses.asdict(spec))

    t0 = time.time()
    last_ckpt = time.time()
    bar = None
    if opt.progress:
        from tqdm import tqdm

        bar = tqdm(total=opt.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    running = None
    skipped = 0
    val_bpsp = log[-1]["val_bpsp"] if log else None

    def validate(note: str) -> float:
        """Validation bpsp at this step: logged, and printed for background runs."""
        v = evaluate(net, val, opt.device, forward=forward)
        log.append({"step": step, "train_bpsp": running, "val_bpsp": v})
        if bar is None:
            print(f"step {step}/{total}: train {running or float('nan'):.4f} val {v:.4f} bpsp ({note})", flush=True)
        return v

    def loss_fn(sym: torch.Tensor, bits: int) -> torch.Tensor:
        return batch_bits(net, sym, bits, opt.amp, forward)

    if opt.compile:  # the net is closed over, not wrapped, so checkpoints keep the plain module's keys
        loss_fn = torch.compile(loss_fn)
    total = opt.steps
    planner = _StepPlanner(deadline, step) if deadline else None
    limit = None if opt.stop_after is None else step + opt.stop_after
    stop_at = total if limit is None else min(total, limit)
    cuda = opt.device == "cuda"

    def draw(t: int) -> tuple[torch.Tensor, int]:
        """The batch of step ``t`` (a function of (seed, t) only, whichever thread draws it)."""
        sym, bits = _sample_batch(train_imgs, crop, opt.batch, torch.Generator().manual_seed(opt.seed * 1_000_003 + t),
                                  opt.level_shift)
        return (sym.pin_memory() if cuda else sym), bits

    # the next batch is cut while the device runs this one: drawing 64 crops in Python takes
    # ~4 ms, a sizeable share of a compiled GPU step (15-28 ms); an error surfaces at .result()
    with ThreadPoolExecutor(max_workers=1) as drawer:  # on an error too, the thread ends with the loop
        upcoming = drawer.submit(draw, step)
        while step < stop_at and not (planner and planner.expired()):
            sym, bits = upcoming.result()
            upcoming = drawer.submit(draw, step + 1)
            for g in optim.param_groups:
                g["lr"] = _lr_at(step, total, opt.lr)
            loss = loss_fn(sym.to(opt.device, non_blocking=cuda), bits)
            optim.zero_grad(set_to_none=True)
            value = loss.item()
            if math.isfinite(value):  # a non-finite batch is skipped rather than poisoning Adam
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optim.step()
                running = value if running is None else 0.98 * running + 0.02 * value
            else:
                skipped += 1
            step += 1
            if planner:
                total = planner.total(step, total)
                stop_at = total if limit is None else min(total, limit)
                if bar is not None:
                    bar.total = total
            if step % opt.val_every == 0 or step == stop_at:
                val_bpsp = validate(f"{start_time + time.time() - t0:.0f} s, {skipped} non-finite batches skipped")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss="-" if running is None else f"{running:.3f}",
                                val=f"{val_bpsp:.3f}" if val_bpsp else "-")
            if time.time() - last_ckpt > 60 * opt.ckpt_minutes and step < stop_at:
                save(val_bpsp)
                last_ckpt = time.time()
    if not log or log[-1]["step"] != step:  # a deadline or --stop-after ended the run between validations
        val_bpsp = validate("final")
    save(val_bpsp)
    if bar is not None:
        bar.close()
    summary = dict(meta, steps=step, val_bpsp=val_bpsp, log_tail=log[-3:])
    Path(str(opt.out) + ".json").write_text(json.dumps(summary, indent=1))
    return summary
