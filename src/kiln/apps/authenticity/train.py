"""``kiln auth train``: fine-tune the per-view model, then calibrate it on held-out cases.

Training sees each photo with its own target (counterfeit evidence or not) plus two auxiliary
cosine-classifier heads on the embedding (view, and brand/model), which make the embedding space
meaningful for wrong-view detection and reference search. With design heads (``design_heads``, for
data of more than one brand/model) every photo trains both the generic classifier and the
classifier of its own design, which can learn that design's house style. Everything is CPU-friendly: photos are
decoded once into memory at the model's size, augmentation runs batched in torch, the network is
small and channels-last. Nothing is downloaded: weights start random unless ``pretrained`` names a
local file.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.apps.authenticity.calibration import (
    AuthCalibration,
    HeadCalibration,
    Pooling,
    Thresholds,
    ViewProfile,
    choose_thresholds,
    fit_logistic,
    fit_logistic_features,
    fit_temperature,
    sigmoid,
)
from kiln.apps.authenticity.dataset import Dataset, Photo, load_dataset
from kiln.apps.authenticity.fusion import pooled_features
from kiln.apps.authenticity.imaging import DecodedPhoto, decode_photo
from kiln.apps.authenticity.model import (
    DEFAULT_BACKBONE,
    DEFAULT_EMBED_DIM,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_WIDTH,
    PREPROCESSING,
    auth_multiview,
    source_string,
)
from kiln.apps.authenticity.quality import QualityMetrics, learn_limits, measure
from kiln.apps.authenticity.views import VIEWS, design_key
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
PHOTO_POS_WEIGHT = 3.0  # flawed photos are about a quarter of a batch
CELL_POS_WEIGHT = 8.0  # flawed cells are a few of a flawed photo's cells
AUGMENT_MARGIN = 1.1  # training photos are loaded this much larger, then randomly cropped


@dataclass
class TrainConfig:
    backbone: str = DEFAULT_BACKBONE
    width: float = DEFAULT_WIDTH
    epochs: int = 10
    # seconds of training (epochs with their validation pass): after the first epoch the run keeps as
    # many of ``epochs`` as fit and re-plans the learning-rate schedule for them; None: all ``epochs``
    time_budget_s: float | None = None
    image_size: int = DEFAULT_IMAGE_SIZE
    batch_size: int = 48
    lr: float = 3e-3
    weight_decay: float = 0.02
    val_fraction: float = 0.2
    seed: int = 0
    threads: int | None = None
    pretrained: Path | None = None
    embed_dim: int = DEFAULT_EMBED_DIM
    target_precision: float = 0.99
    # no verdict for a case whose own calibrated probability is below this (calibration.choose_thresholds)
    min_confidence: float = 0.97
    min_authentic_views: int = 3
    min_side: int = 224
    device: str = "cpu"  # torch device for the network ("cuda" trains on a GPU; data stays on the CPU)
    design_heads: bool = False  # also one classifier per (brand, model) besides the generic one
    amp: bool = True  # bf16 autocast for the network on a CUDA device (the CPU always trains in fp32)
    # how the case calibration pools the photos' log-odds (fusion.pooled_features), and whether each
    # view's log-odds are first rescaled by their own logistic fit on the validation photos
    pooling: Pooling = "top_two"
    view_scaling: bool = True


@dataclass
class EpochStats:
    epoch: int
    loss: float
    val_loss: float
    val_photo_accuracy: float
    seconds: float
    images_per_s: float


@dataclass
class TrainResult:
    checkpoint: Path
    calibration: AuthCalibration
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Arrays:
    photos: list[Photo]
    pixels: np.ndarray  # N×S×S×3 uint8
    metrics: list[QualityMetrics]


def _decode_all(photos: list[Photo], pre: Preprocessing, threads: int, reporter: Reporter, what: str) -> list[DecodedPhoto]:
    def one(photo: Photo) -> DecodedPhoto:
        return decode_photo(photo.path.read_bytes(), pre, name=str(photo.path))

    results: list[DecodedPhoto] = []
    with reporter.task(what, total=len(photos)) as task, ThreadPoolExecutor(max(1, threads)) as pool:
        for decoded in pool.map(one, photos):
            results.append(decoded)
            task.advance()
    return results


def load_arrays(photos: list[Photo], size: int, threads: int, reporter: Reporter, what: str) -> _Arrays:
    decoded = _decode_all(photos, PREPROCESSING.with_size(size, size), threads, reporter, what)
    pixels = np.stack([d.pixels for d in decoded]) if decoded else np.zeros((0, size, size, 3), np.uint8)
    return _Arrays(photos, pixels, [measure(d.pixels, d.width, d.height) for d in decoded])


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    import torch

    mean = torch.tensor(PREPROCESSING.mean).view(1, 3, 1, 1).to(batch.device)
    std = torch.tensor(PREPROCESSING.std).view(1, 3, 1, 1).to(batch.device)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def to_model_input(pixels: np.ndarray) -> torch.Tensor:
    """N×S×S×3 uint8 → normalised N×3×S×S float (channels-last), exactly as the engine is fed."""
    import torch

    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    return _normalise(x)


def _augment(pixels: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, size: int, generator: torch.Generator,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop-and-resize (scale, aspect, position) plus brightness, contrast and saturation jitter.

    The defect masks go through the same crop. No flips and no hue changes: mirrored lettering and
    shifted colours are counterfeit signs.
    """
    import torch
    from torchvision.ops import roi_align

    # Random numbers come from ``generator``, which lives on ``device`` as the pixel work does: on a
    # GPU, numbers drawn on the CPU would cost a copy, and a stream sync, every step.
    pixels = torch.from_numpy(pixels) if isinstance(pixels, np.ndarray) else pixels
    masks = torch.from_numpy(masks) if isinstance(masks, np.ndarray) else masks
    x = pixels.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = masks.to(device).unsqueeze(1).float().div_(255.0)
    x = torch.cat([x, m], dim=1)
    n, _, h, w = x.shape
    rand = torch.rand(n, 6, generator=generator, device=x.device)
    side = (0.85 + 0.15 * rand[:, 0]) * min(h, w)
    aspect = 1.0 + 0.1 * (rand[:, 1] - 0.5)
    bw = torch.clamp(side * aspect, max=w)
    bh = torch.clamp(side / aspect, max=h)
    x0 = (w - bw) * rand[:, 2]
    y0 = (h - bh) * rand[:, 3]
    boxes = torch.stack([torch.arange(n, dtype=torch.float32, device=x.device), x0, y0, x0 + bw, y0 + bh], dim=1)
    x = roi_align(x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    x, m = x[:, :3], x[:, 3:]
    brightness = 0.85 + 0.3 * rand[:, 4].view(n, 1, 1, 1)
    contrast = 0.85 + 0.3 * rand[:, 5].view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean * brightness
    gray = x.mean(dim=1, keepdim=True)
    saturation = 0.9 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator, device=x.device)
    x = gray + (x - gray) * saturation
    x = x + 0.01 * torch.randn(x.shape, generator=generator, device=x.device)
    return _normalise(x.clamp_(0.0, 1.0)), m


def defect_masks(photos: list[Photo], pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each flawed photo differs from its flawless twin (uint8 masks), and which photos have one.

    Clean photos have an empty mask (nothing is wrong anywhere); flawed photos without a twin have
    no known mask, and only their photo-level label is used.
    """
    import cv2

    masks = np.zeros(pixels.shape[:3], np.uint8)
    known = np.array([p.target == 0 for p in photos])
    twin_index = {(p.twin_of, p.view): i for i, p in enumerate(photos) if p.twin_of}
    small, kernel = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    for i, photo in enumerate(photos):
        j = twin_index.get((photo.case_id, photo.view)) if photo.target else None
        if j is None:
            continue
        diff = np.abs(pixels[i].astype(np.int16) - pixels[j].astype(np.int16)).max(axis=2)
        # Opening drops isolated compression differences; dilation covers the flaw's surroundings.
        mask = cv2.dilate(cv2.morphologyEx((diff > 16).astype(np.uint8) * 255, cv2.MORPH_OPEN, small), kernel)
        if mask.any():
            masks[i] = mask
            known[i] = True
    return masks, known


def _resident(pixels: np.ndarray, masks: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training arrays as tensors on ``device`` when they take at most half of its free memory,
    otherwise (and on the CPU) as views of the arrays."""
    import torch

    on_cpu = torch.from_numpy(pixels), torch.from_numpy(masks)
    if device.type != "cuda":
        return on_cpu
    free, _ = torch.cuda.mem_get_info(device)
    if pixels.nbytes + masks.nbytes > free // 2:
        return on_cpu
    return on_cpu[0].to(device), on_cpu[1].to(device)


def _predict(model: torch.nn.Module, pixels: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    logits, embeddings, heatmaps = [], [], []
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            logit, embedding, heatmap = model(to_model_input(pixels[start : start + batch_size]).to(device))
            logits.append(logit.float().cpu().numpy())
            embeddings.append(embedding.float().cpu().numpy())
            heatmaps.append(heatmap.float().cpu().numpy())
    if not logits:
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), np.zeros((0, 1, 1), np.float32)
    return np.concatenate(logits), np.concatenate(embeddings), np.concatenate(heatmaps)


def photo_heads(photos: list[Photo], designs: list[str]) -> np.ndarray:
    """The logit column each photo is judged by: its design's head, or the generic one (0)."""
    index = {key: 1 + i for i, key in enumerate(designs)}
    return np.array([index.get(design_key(p.brand, p.model), 0) for p in photos], dtype=np.int64)


def chosen_logits(logits: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Each photo's logit from its own head (N×H, N heads → N)."""
    logits = logits.reshape(len(heads), -1)
    return logits[np.arange(len(heads)), np.where(heads < logits.shape[1], heads, 0)]


def _load_pretrained(model: torch.nn.Module, path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise KilnError(f"cannot read --pretrained {path}: {exc}", hint="pass a timm state_dict saved with torch.save") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    backbone: Any = getattr(model, "backbone")  # noqa: B009  (the app's model always has one)
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not usable:
        raise KilnError(f"--pretrained {path} holds no weights for this backbone", hint="use a checkpoint of the same timm model")
    backbone.load_state_dict(usable, strict=False)


class PairSampler:
    """Batches where half the photos are flawed photos next to their flawless twins.

    A pair differs only where the flaw is, so each pair teaches exactly what is wrong; the other
    half of every batch is drawn from the remaining photos so that every photo is seen once per
    epoch. Without twins (users' own data), counterfeit-evidence photos are oversampled instead.
    """

    def __init__(self, photos: list[Photo], batch_size: int, generator: torch.Generator, pair_share: float = 0.5) -> None:
        self.batch_size = max(2, batch_size)
        self.generator = generator
        index = {(p.twin_of, p.view): i for i, p in enumerate(photos) if p.twin_of}
        self.pairs = np.array(
            [(i, index[(p.case_id, p.view)]) for i, p in enumerate(photos) if p.target and (p.case_id, p.view) in index],
            dtype=np.int64,
        ).reshape(-1, 2)
        paired = set(self.pairs.ravel().tolist())
        self.others = np.array([i for i in range(len(photos)) if i not in paired], dtype=np.int64)
        self.positives = np.array([i for i, p in enumerate(photos) if p.target], dtype=np.int64)
        self.per_batch = self.batch_size // 4 * (1 if len(self.pairs) else 0) if pair_share > 0 else 0
        rest = self.batch_size - 2 * self.per_batch
        self.steps_per_epoch = max(1, math.ceil(len(self.others) / rest), math.ceil(len(self.pairs) / max(self.per_batch, 1))
                                   if self.per_batch else 1)

    def _perm(self, n: int) -> np.ndarray:
        import torch

        return torch.randperm(n, generator=self.generator).numpy()

    def epoch(self) -> list[np.ndarray]:
        rest = self.batch_size - 2 * self.per_batch
        others = self.others[self._perm(len(self.others))] if len(self.others) else self.others
        pairs = self.pairs[self._perm(len(self.pairs))] if len(self.pairs) else self.pairs
        positives = self.positives[self._perm(len(self.positives))] if len(self.positives) else self.positives
        batches = []
        for step in range(self.steps_per_epoch):
            parts = []
            if self.per_batch:
                take = np.arange(step * self.per_batch, (step + 1) * self.per_batch) % len(pairs)
                parts.append(pairs[take].ravel())
            elif len(positives) and not len(self.pairs):
                take = np.arange(step * (rest // 4), (step + 1) * (rest // 4)) % len(positives)
                parts.append(positives[take])
            chosen = others[step * rest : (step + 1) * rest] if len(others) else others
            if len(chosen) < rest and len(others):
                chosen = np.concatenate([chosen, others[: rest - len(chosen)]])
            parts.append(chosen)
            batch = np.concatenate(parts)
            if len(batch) >= 2:
                batches.append(batch)
        return batches


class _Heads:
    """Auxiliary cosine classifiers on the embedding (training only; not part of the checkpoint)."""

    def __init__(self, embed_dim: int, groups: int, generator: torch.Generator, device: torch.device | str = "cpu") -> None:
        import torch

        self.views = torch.nn.Parameter((torch.randn(len(VIEWS), embed_dim, generator=generator) * 0.1).to(device))
        self.groups = torch.nn.Parameter((torch.randn(max(1, groups), embed_dim, generator=generator) * 0.1).to(device))
        self.scale = 16.0

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.views, self.groups]

    def logits(self, embedding: torch.Tensor, which: torch.nn.Parameter) -> torch.Tensor:
        from torch.nn import functional as F

        return self.scale * embedding @ F.normalize(which, dim=1).t()


def train(
    data: Path | Dataset,
    checkpoint: Path,
    config: TrainConfig,
    *,
    reporter: Reporter | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train, calibrate on the validation cases, and write ``checkpoint`` (state_dict + kiln_extra)."""
    import torch
    from torch.nn import functional as F

    try:
        device = torch.device(config.device)
    except RuntimeError as exc:
        raise KilnError(f"--device {config.device!r} is not a torch device", hint="cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KilnError("--device cuda: no CUDA GPU is available to torch", hint="train with --device cpu")
    photo_pos_weight = torch.tensor(PHOTO_POS_WEIGHT, device=device)
    cell_pos_weight = torch.tensor(CELL_POS_WEIGHT, device=device)
    started = time.perf_counter()
    reporter = reporter or NullReporter()
    threads = config.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dataset = data if isinstance(data, Dataset) else load_dataset(Path(data))
    if config.epochs < 1:
        raise KilnError(f"--epochs {config.epochs} must be at least 1")
    if config.time_budget_s is not None and not config.time_budget_s > 0:
        raise KilnError(f"--time-budget {config.time_budget_s:g} must be more than 0 seconds")
    if not 32 <= config.image_size <= 512:
        raise KilnError(f"--image-size {config.image_size} is out of range 32..512")
    train_set, val_set = dataset.split(config.val_fraction, config.seed)
    size = config.image_size
    big = round(size * AUGMENT_MARGIN)
    train_big = load_arrays(train_set.photos, big, threads, reporter, f"load {len(train_set.photos)} training photos")
    train_eval = load_arrays(train_set.photos, size, threads, reporter, "measure training photos")
    val = load_arrays(val_set.photos, size, threads, reporter, f"load {len(val_set.photos)} validation photos")

    groups = sorted({(p.brand, p.model) for p in dataset.photos})
    group_index = {g: i for i, g in enumerate(groups)}
    designs = sorted({design_key(b, m) for b, m in groups}) if config.design_heads and len(groups) > 1 else []
    head_count = 1 + len(designs)
    train_heads = torch.from_numpy(photo_heads(train_set.photos, designs)).to(device)
    val_heads = photo_heads(val_set.photos, designs)
    targets = torch.tensor([p.target for p in train_set.photos], dtype=torch.float32, device=device)
    masks, mask_known = defect_masks(train_set.photos, train_big.pixels)
    known = torch.from_numpy(mask_known).to(device)
    view_ids = torch.tensor([VIEWS.index(p.view) for p in train_set.photos], device=device)
    group_ids = torch.tensor([group_index[(p.brand, p.model)] for p in train_set.photos], device=device)
    val_targets = torch.tensor([p.target for p in val_set.photos], dtype=torch.float32)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    augment_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
    model = auth_multiview(backbone=config.backbone, embed_dim=config.embed_dim, width=config.width, heads=head_count)
    if config.pretrained is not None:
        _load_pretrained(model, config.pretrained)
    model = model.to(device).to(memory_format=torch.channels_last)
    heads = _Heads(config.embed_dim, len(groups), generator, device)
    optimizer = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=config.lr, weight_decay=config.weight_decay)
    sampler = PairSampler(train_set.photos, config.batch_size, generator)
    steps_per_epoch = sampler.steps_per_epoch
    schedule = one_cycle(optimizer, config.lr, config.epochs * steps_per_epoch)
    epochs = config.epochs
    training_start = time.perf_counter()
    # The training photos and masks live where the network does when they fit (a GPU then indexes its
    # batches itself instead of receiving a copy per step); on the CPU these share the arrays' memory.
    train_pixels, train_masks = _resident(train_big.pixels, masks, device)
    history: list[EpochStats] = []
    epoch = 0
    while epoch < epochs:
        epoch += 1
        model.train()
        epoch_start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
        seen = 0
        with reporter.task(f"epoch {epoch}/{epochs}", total=steps_per_epoch) as task:
            for batch in sampler.epoch():
                # (a pinned, non-blocking copy: a copy from pageable memory would wait for the GPU every step)
                host_index = torch.from_numpy(batch)
                index = host_index.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host_index
                where = index if train_pixels.device == index.device else host_index
                x, mask = _augment(train_pixels[where], train_masks[where], size, augment_generator, device)
                with autocast:
                    logit, embedding, heatmap = model(x)
                logit, embedding, heatmap = logit.float(), embedding.float(), heatmap.float()
                if heatmap.dim() == 3:
                    heatmap = heatmap.unsqueeze(1)
                # The generic head, and each photo's own design head (the same one when there are none).
                rows = torch.arange(len(batch), device=device)
                columns = [torch.zeros_like(train_heads[index])] + ([train_heads[index]] if head_count > 1 else [])
                cells = torch.clamp(F.adaptive_avg_pool2d(mask, heatmap.shape[-2:])[:, 0] * 4.0, 0.0, 1.0)
                weight = known[index].float().view(-1, 1, 1).expand_as(cells)
                loss = torch.zeros((), device=device)
                for column in columns:
                    # Flaws are rare (a quarter of the photos, a few cells of those): weigh them up so that
                    # "nothing is ever wrong" is not the easy answer.
                    loss = loss + F.binary_cross_entropy_with_logits(logit[rows, column], targets[index],
                                                                     pos_weight=photo_pos_weight)
                    # Where the flaw is (from the twin difference), cell by cell: dense supervision of the heatmap.
                    # (With no known mask in the batch every weight is 0 and so is this term: no branch, no sync.)
                    cell_loss = F.binary_cross_entropy_with_logits(heatmap[rows, column], cells, weight=weight,
                                                                   pos_weight=cell_pos_weight, reduction="sum")
                    loss = loss + cell_loss / weight.sum().clamp(min=1.0)
                loss = loss + 0.3 * F.cross_entropy(heads.logits(embedding, heads.views), view_ids[index])
                loss = loss + 0.3 * F.cross_entropy(heads.logits(embedding, heads.groups), group_ids[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.detach().double() * len(batch)
                seen += len(batch)
                task.advance()
        seconds = time.perf_counter() - epoch_start
        val_logits = chosen_logits(_predict(model, val.pixels)[0], val_heads)
        val_loss = float(F.binary_cross_entropy_with_logits(torch.from_numpy(val_logits), val_targets)) if len(val_logits) else 0.0
        accuracy = float(((val_logits > 0) == (val_targets.numpy() > 0.5)).mean()) if len(val_logits) else 0.0
        stats = EpochStats(epoch, float(total) / max(seen, 1), val_loss, accuracy, seconds, seen / max(seconds, 1e-9))
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if epoch == 1 and config.time_budget_s is not None:
            fitting = epochs_within(config.time_budget_s, time.perf_counter() - training_start, config.epochs)
            if fitting < epochs:
                epochs = fitting
                if epochs > 1:  # the rest of a schedule planned for the epochs that fit
                    schedule = one_cycle(optimizer, config.lr, epochs * steps_per_epoch, done=steps_per_epoch)
                else:
                    log.warning("--time-budget %g s: only the first epoch (%.1f s) fits; the model stops mid-warm-up, "
                                "before its learning rate anneals", config.time_budget_s, stats.seconds)

    with reporter.task("calibrate on validation cases", total=1) as task:
        calibration = calibrate(model, train_eval, val, config, dataset, designs)
        task.advance()
    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), "kiln_extra": calibration.model_dump(mode="json")}, tmp)
    tmp.replace(checkpoint)
    return TrainResult(checkpoint, calibration, history, time.perf_counter() - started)


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int, done: int = 0) -> Any:
    """The one-cycle learning-rate schedule over ``total_steps``, moved on past the ``done`` steps
    already taken (a schedule re-planned mid-run, ``TrainConfig.time_budget_s``)."""
    import torch

    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15)
    with warnings.catch_warnings():  # "step() before optimizer.step()": these steps were taken under the old plan
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(done):
            schedule.step()
    return schedule


def epochs_within(budget_s: float, first_epoch_s: float, most: int) -> int:
    """How many epochs of ``first_epoch_s`` each fit in ``budget_s`` (at least the one that ran, at most ``most``)."""
    return max(1, min(most, math.floor(budget_s / max(first_epoch_s, 1e-9))))


def _case_groups(photos: list[Photo]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, photo in enumerate(photos):
        groups.setdefault(photo.case_id, []).append(index)
    return groups


def calibrate(model: torch.nn.Module, train: _Arrays, val: _Arrays, config: TrainConfig, dataset: Dataset,
              designs: list[str] | None = None) -> AuthCalibration:
    """Temperature, case calibration, thresholds and per-view profiles from held-out cases (each
    photo judged by its design's head when the model has design heads)."""
    from kiln.apps.authenticity.assessment import assess_case

    designs = list(designs or [])
    train_all, train_emb, _ = _predict(model, train.pixels)
    val_all, val_emb, val_heat = _predict(model, val.pixels)
    train_logits = chosen_logits(train_all, photo_heads(train.photos, designs))
    val_logits = chosen_logits(val_all, photo_heads(val.photos, designs))
    val_generic = val_all.reshape(len(val.photos), -1)[:, 0]
    val_targets = np.array([p.target for p in val.photos])
    cases = _case_groups(val.photos)
    case_labels = np.array([val.photos[idx[0]].label for idx in cases.values()])

    val_views = np.array([p.view for p in val.photos])

    def fit_head(logits: np.ndarray) -> HeadCalibration:
        temperature = fit_temperature(logits, val_targets)
        log_odds = np.asarray(logits, np.float64) / temperature
        view_scales: dict[str, tuple[float, float]] = {}
        if config.view_scaling:
            for view in sorted(set(val_views.tolist())):
                mask = val_views == view
                if 0 < val_targets[mask].sum() < mask.sum():  # a view with both clean and flawed photos
                    a, b = view_scales[view] = fit_logistic(log_odds[mask], val_targets[mask])
                    log_odds[mask] = a * log_odds[mask] + b
        features = np.array([pooled_features([float(log_odds[i]) for i in idx], config.pooling) for idx in cases.values()])
        weights, bias = fit_logistic_features(features, case_labels)
        case_p = sigmoid(features @ np.array(weights) + bias)
        counterfeit_t, authentic_t = choose_thresholds(case_p, case_labels, config.target_precision,
                                                       min_confidence=config.min_confidence)
        return HeadCalibration(temperature=temperature, fusion_scale=weights[0], fusion_bias=bias,
                               counterfeit=counterfeit_t, authentic=authentic_t, pooling=config.pooling,
                               fusion_second_scale=weights[1] if len(weights) > 1 else 0.0, view_scales=view_scales)

    chosen = fit_head(val_logits)
    # With design heads, the generic column (what items outside the designs get) is fitted on its own.
    generic = fit_head(val_generic) if designs else None

    views: dict[str, ViewProfile] = {}
    # The resolution floor never demands more than the training photos had: a model trained on
    # 176-px photos that rejected every 176-px photo as too small would decide nothing.
    smallest = min((min(m.width, m.height) for m in train.metrics), default=config.min_side)
    min_side = min(config.min_side, smallest)
    train_views = np.array([p.view for p in train.photos])
    centroids: dict[str, np.ndarray] = {}
    for view in VIEWS:
        mask = train_views == view
        if not mask.any():
            continue
        centroid = train_emb[mask].mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-9)
        centroids[view] = centroid
    for view, centroid in centroids.items():
        mask = train_views == view
        # Floors that keep 99.5% of the held-out validation photos of the view (the training photos'
        # when there are none): the embedding of a photo of something else rarely clears both.
        held = val_emb[val_views == view] if (val_views == view).any() else train_emb[mask]
        sims = held @ centroid
        others = [held @ c for v, c in centroids.items() if v != view]
        margins = sims - np.max(others, axis=0) if others else np.full_like(sims, 2.0)
        stats = np.array([m.stats() for m, keep in zip(train.metrics, mask, strict=True) if keep])
        views[view] = ViewProfile(
            centroid=[round(float(v), 6) for v in centroid],
            min_similarity=float(np.quantile(sims, 0.005) - 0.02),
            min_margin=float(np.quantile(margins, 0.005) - 0.02) if others else -2.0,
            stats_mean=[float(v) for v in stats.mean(axis=0)],
            stats_std=[float(v) for v in stats.std(axis=0) + 1e-3],
            quality=learn_limits([m for m, keep in zip(train.metrics, mask, strict=True) if keep], min_side),
            photos=int(mask.sum()),
        )
    calibration = AuthCalibration(
        backbone=config.backbone,
        width=config.width,
        embed_dim=config.embed_dim,
        image_size=config.image_size,
        temperature=chosen.temperature,
        pooling=chosen.pooling,
        fusion_scale=chosen.fusion_scale,
        fusion_second_scale=chosen.fusion_second_scale,
        fusion_bias=chosen.fusion_bias,
        view_scales=chosen.view_scales,
        thresholds=Thresholds(
            counterfeit=chosen.counterfeit, authentic=chosen.authentic, target_precision=config.target_precision,
            min_confidence=config.min_confidence, min_authentic_views=config.min_authentic_views,
        ),
        views=views,
        designs=designs,
        generic=generic,
        trained_on={
            "dataset": str(dataset.root),
            "synthetic": dataset.synthetic,
            "source": source_string(config.backbone, config.embed_dim, config.width, 1 + len(designs)),
            **{k: v for k, v in dataset.summary().items() if k in ("photos", "cases", "models")},
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        },
    )
    # How the fitted calibration does on the validation cases, through the full gate and fusion.
    correct = covered = 0
    for idx in cases.values():
        outputs = {"logit": val_all[idx], "embedding": val_emb[idx], "heatmap": val_heat[idx]}
        first = val.photos[idx[0]]
        result = assess_case([val.photos[i].view for i in idx], [val.metrics[i] for i in idx], outputs, calibration,
                             brand=first.brand, model=first.model)
        verdict = result.fusion.verdict.value
        if verdict != "inconclusive":
            covered += 1
            correct += int(verdict == ("counterfeit" if val.photos[idx[0]].label else "authentic"))
    calibration.validation = {
        "cases": len(cases),
        "photos": len(val.photos),
        "photo_accuracy": round(float(((val_logits > 0) == (val_targets > 0.5)).mean()), 4),
        "generic_photo_accuracy": round(float(((val_generic > 0) == (val_targets > 0.5)).mean()), 4),
        "coverage": round(covered / max(len(cases), 1), 4),
        "accuracy_covered": round(correct / max(covered, 1), 4),
        "train_photos": len(train.photos),
        "train_photo_accuracy": round(float(((train_logits > 0) == (np.array([p.target for p in train.photos]) > 0.5)).mean()), 4),
    }
    return calibration


def recalibrate(checkpoint: Path, data: Path | Dataset, config: TrainConfig, out: Path | None = None, *,
                reporter: Reporter | None = None) -> AuthCalibration:
    """Refit the calibration of a trained checkpoint on its dataset's validation split (same split as
    training: ``config.val_fraction`` and ``config.seed``), keeping the weights; writes ``out``
    (default: the checkpoint itself)."""
    import torch

    reporter = reporter or NullReporter()
    threads = config.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    state: Any = torch.load(checkpoint, map_location="cpu", weights_only=True)
    old = AuthCalibration.model_validate(state["kiln_extra"])
    config.backbone, config.width, config.embed_dim, config.image_size = old.backbone, old.width, old.embed_dim, old.image_size
    config.design_heads = bool(old.designs)
    model = auth_multiview(backbone=config.backbone, embed_dim=config.embed_dim, width=config.width, heads=old.heads)
    model.load_state_dict(state["state_dict"])
    dataset = data if isinstance(data, Dataset) else load_dataset(Path(data))
    train_set, val_set = dataset.split(config.val_fraction, config.seed)
    size = config.image_size
    train_eval = load_arrays(train_set.photos, size, threads, reporter, f"load {len(train_set.photos)} training photos")
    val = load_arrays(val_set.photos, size, threads, reporter, f"load {len(val_set.photos)} validation photos")
    calibration = calibrate(model, train_eval, val, config, dataset, old.designs)
    target = Path(out or checkpoint)
    tmp = target.with_name(target.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), "kiln_extra": calibration.model_dump(mode="json")}, tmp)
    tmp.replace(target)
    return calibration


def describe(result: TrainResult) -> dict[str, Any]:
    return {
        "checkpoint": str(result.checkpoint),
        "seconds": round(result.seconds, 1),
        "history": [asdict(h) for h in result.history],
        "validation": result.calibration.validation,
        "temperature": result.calibration.temperature,
        "thresholds": result.calibration.thresholds.model_dump(),
    }
