"""Faster R-CNN on CT images: a multi-scale, multi-slice lesion detector (lecture unit 10).

A 2-D detector (:class:`~dlmi.detect.FasterRCNN`) reads one image. Two things change on CT:

* **Slices are context.** On one axial slice a lung nodule and a vessel crossing the slice are
  the same small round blob; above and below, the vessel goes on and the nodule ends. The
  detector reads a stack of ``2k + 1`` adjacent slices as input channels and predicts the boxes
  of the centre slice (Yan et al. 2018, 3DCE; :mod:`dlmi.data.ct_detection`).
* **Lesions are tiny.** A nodule is a few pixels wide, smaller than one cell of a stride-16 (or
  even stride-4) feature map. The features come from a small U-Net (Ronneberger et al. 2015):
  an encoder down to stride 8 and a decoder back up to stride 2, with skip connections, giving
  maps at **strides 2, 4 and 8** — high resolution *and* the deep layers' semantics, like FPN
  (Lin et al. 2017). The RPN proposes at every scale with anchors sized for it.

The model, in the spirit of Zhang et al. 2020 ("3D Aggregated Faster R-CNN for general lesion
detection", DeepLesion and LUNA16: an *aggregated classifier branch* on the RPN's backbone)::

    2k+1 slices ─► U-Net ─► P2 (stride 2) ─┬─ RPN (shared head, anchors per level) ─► proposals
                           P4 (stride 4) ─┤   top-n per level, one NMS over all ─┐
                           P8 (stride 8) ─┘                                      ▼
              RoI align of every proposal from P2, P4 AND P8 ─► concat ─► fc6, fc7 ─► class + box

Each proposal's feature aggregates all scales (:class:`MultiScaleRoIPooler`), rather than FPN's
one level chosen by the box's size: a 4-pixel nodule gets its detail from P2 and its
surroundings from P8. Training and inference are Faster R-CNN's (:class:`AggregatedFasterRCNN`
is a :class:`~dlmi.detect.FasterRCNN` with a multi-scale backbone): ``model(images, targets)``
→ dict of the four losses, ``model(images)`` → ``[{"boxes", "scores", "labels"}]``, images
``[N, 2k+1, H, W]`` (or a list of ``[2k+1, H, W]``), boxes those of the centre slice.

:func:`build_ct_detector` makes it, or with ``context=0, multiscale=False`` the **2-D
baseline**: dlmi's plain ``FasterRCNN`` on the centre slice, one stride-4 map of the same U-Net
(and the two models in between, one change each: :data:`MODELS`).

**Evaluation per volume** (:func:`evaluate_ct_detector`): the detector runs on every slice of a
volume; its boxes are merged into 3-D candidates (:func:`merge_detections`: the best-scoring
box absorbs the boxes of nearby slices around it, like NMS in 3-D), which are scored as LUNA16
does (:func:`dlmi.detect.froc.froc`: sensitivity at 1/8 … 8 false positives per volume, CPM).
Per volume rather than per slice, because that is the unit a reader cares about and LUNA16's:
a nodule seen on three slices is one finding, and a vessel mistaken on three slices one false
alarm, not three. mAP@0.5 is reported per slice (the 2-D boxes, ``mean_average_precision``).

Checkpoints (``checkpoints/ct_*.pt``, package data, one per entry of :data:`MODELS`) are made by
``python -m dlmi.detect.ct_detection [--only ct_multislice,ct_2d] [--out DIR]`` (:func:`main`:
4-9 minutes a model on one CPU core; on a CPU the same weights every run); everything it uses
is in :data:`CONFIG`. On the 40 test volumes (62 nodules) the shipped checkpoints score a CPM of
0.81 (multi-slice, multi-scale) against 0.59 (2-D), mAP@0.5 per slice 0.52 against 0.20.
"""
from __future__ import annotations

import argparse
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .faster_rcnn import FasterRCNN
from .froc import FP_RATES, froc
from .metrics import mean_average_precision
from .nms import _greedy
from .pretrained import load_checkpoint
from .roi_heads import RoIPooler, TwoMLPHead
from .transform import batch_images

__all__ = ["SliceUNet", "MultiScaleRoIPooler", "AggregatedFasterRCNN", "build_ct_detector",
           "train_ct_detector", "detect_volume", "merge_detections", "froc_targets",
           "evaluate_ct_detector", "load_ct_detector", "ct_data", "CONFIG", "MODELS", "CHECKPOINTS"]

CHECKPOINTS = Path(__file__).with_name("checkpoints")

#: Everything the checkpoints depend on: data, architecture, training.
CONFIG = {
    # 64×64 slices, 16-48 slices a volume (make_ct_volume's defaults). Training volumes all hold
    # nodules (more positive slices); a fifth of the test volumes hold none (only false positives).
    "data": {"train": {"n_volumes": 160, "seed": 1, "nodule_prob": 1.0},
             "test": {"n_volumes": 40, "seed": 2, "nodule_prob": 0.8}},
    "context": 2,                       # k: stacks of 2k + 1 = 5 slices
    "unet": {"widths": (16, 32, 48, 64), "out_channels": 32},
    # Nodule cuts are 1-7 pixels: anchors about 1-2 strides wide at each level, one aspect
    # ratio (nodules are round), the same k = 2 per level so that one RPN head serves all.
    "anchors": {2: (2, 4), 4: (6, 8), 8: (12, 16)},
    "roi_output_size": 5,
    "representation_size": 96,
    # torchvision's defaults are made for objects of 32-512 pixels. A few-pixel nodule has one or
    # two anchors of IoU >= 0.5 and none of 0.7: the RPN's positives start at 0.5, and it samples
    # 64 anchors an image so that they are not lost among 256. The RoI head keeps 128 of the 150
    # proposals an image: the hard negatives — vessel cross-sections, a handful a slice — must be
    # among them for the classifier to learn what the neighbouring slices show (with 32, the
    # multi-slice model's CPM was 0.65 instead of 0.81; the 2-D model's did not change).
    "detector": {"rpn_fg_iou_thresh": 0.5, "rpn_bg_iou_thresh": 0.3, "rpn_batch_size_per_image": 64,
                 "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 150,
                 "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
                 "box_batch_size_per_image": 128, "box_positive_fraction": 0.25,
                 "box_score_thresh": 0.02, "box_nms_thresh": 0.3, "box_detections_per_img": 10},
    "train": {"epochs": 12, "batch_size": 16, "lr": 1e-3, "negatives_per_positive": 1.0, "seed": 0},
    "merge": {"z_radius": 2.0, "xy_radius": 3.0},
}
#: The unit 10 lecture's CT detectors: multi-slice multi-scale, the 2-D baseline, and the two
#: models between them (one change each) that tell what each change buys.
MODELS = {
    "ct_multislice": {"context": CONFIG["context"], "multiscale": True},
    "ct_2d": {"context": 0, "multiscale": False},
    "ct_multislice_onescale": {"context": CONFIG["context"], "multiscale": False},
    "ct_2d_multiscale": {"context": 0, "multiscale": True},
}


# -- the backbone --------------------------------------------------------------------------------
def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class SliceUNet(nn.Module):
    """A small U-Net on a stack of slices → feature maps at strides 2, 4 and 8.

    Encoder: a 3×3 conv at full resolution, then three stages of (stride-2 conv, conv) to
    strides 2, 4, 8 with ``widths[1:]`` channels. Decoder (U-Net): from stride 8 upwards,
    upsample, concatenate the encoder's map of the same stride (the skip connection), 3×3 conv
    to ``out_channels``. Every output map has ``out_channels`` channels, so one RPN head serves
    all of them.

    Args:
        in_channels: slices in the stack, ``2k + 1``.
        widths: encoder channels at strides 1, 2, 4, 8.
        out_channels: channels of every output map (attribute ``out_channels``, as torchvision).
        strides: which maps to return, a subset of ``(2, 4, 8)``; the decoder stops at the
            finest one asked for.

    Shapes: ``[N, in_channels, H, W]`` (``H, W`` multiples of 8) → ``OrderedDict`` of
    ``[N, out_channels, H/s, W/s]`` keyed ``"p2"``, ``"p4"``, ``"p8"`` (finest first).
    """

    def __init__(self, in_channels: int, widths=(16, 32, 48, 64), out_channels: int = 32,
                 strides=(2, 4, 8)) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int (slices per stack), got {in_channels!r}")
        if len(widths) != 4:
            raise ValueError(f"widths must give the channels at strides 1, 2, 4, 8 (4 numbers), got {widths!r}")
        strides = tuple(sorted(set(strides)))
        if not strides or not set(strides) <= {2, 4, 8}:
            raise ValueError(f"strides must be a non-empty subset of (2, 4, 8), got {strides!r}")
        self.in_channels, self.out_channels, self.strides = in_channels, out_channels, strides
        w1, w2, w4, w8 = widths
        self.stem = _conv(in_channels, w1)
        self.down2 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))
        self.down4 = nn.Sequential(_conv(w2, w4, 2), _conv(w4, w4))
        self.down8 = nn.Sequential(_conv(w4, w8, 2), _conv(w8, w8))
        self.up8 = _conv(w8, out_channels)
        self.up4 = _conv(w4 + out_channels, out_channels) if min(strides) <= 4 else None
        self.up2 = _conv(w2 + out_channels, out_channels) if min(strides) <= 2 else None

    @staticmethod
    def _merge(coarse: Tensor, skip: Tensor, conv: nn.Module) -> Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="nearest")
        return conv(torch.cat([skip, up], dim=1))

    def forward(self, x: Tensor) -> OrderedDict:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a batch of stacks [N, {self.in_channels}, H, W], got {list(x.shape)}")
        e2 = self.down2(self.stem(x))
        e4 = self.down4(e2)
        maps = {8: self.up8(self.down8(e4))}
        if self.up4 is not None:
            maps[4] = self._merge(maps[8], e4, self.up4)
        if self.up2 is not None:
            maps[2] = self._merge(maps[4], e2, self.up2)
        return OrderedDict((f"p{s}", maps[s]) for s in self.strides)


# -- the aggregated RoI features -----------------------------------------------------------------
class MultiScaleRoIPooler(nn.Module):
    """Every RoI pooled from *every* feature map, then aggregated.

    Args:
        output_size, method, sampling_ratio: of the :class:`~dlmi.detect.RoIPooler` applied to
            each map (its scale inferred from the map's size, as torchvision does).
        aggregate: ``"concat"`` (channels of all levels side by side; the following fc layer
            learns how to weigh them) or ``"sum"``.

    ``features``: list (or dict) of ``[N, C, H_l, W_l]``, boxes per image → ``[K, L·C, s, s]``
    (``concat``) or ``[K, C, s, s]`` (``sum``).
    """

    def __init__(self, output_size: int = 5, method: str = "align", sampling_ratio: int = 2,
                 aggregate: str = "concat") -> None:
        super().__init__()
        if aggregate not in ("concat", "sum"):
            raise ValueError(f"aggregate must be 'concat' or 'sum', got {aggregate!r}")
        self.pool = RoIPooler(output_size, method, sampling_ratio)
        self.output_size = output_size
        self.aggregate = aggregate

    def out_channels(self, channels: int, levels: int) -> int:
        """Channels of the aggregated feature from ``levels`` maps of ``channels`` each."""
        return channels * levels if self.aggregate == "concat" else channels

    def forward(self, features, boxes: list[Tensor], image_shape) -> Tensor:
        maps = (list(features.values()) if isinstance(features, Mapping) else
                [features] if isinstance(features, Tensor) else list(features))
        if not maps:
            raise ValueError("MultiScaleRoIPooler needs at least one feature map")
        pooled = [self.pool(f, boxes, image_shape) for f in maps]
        return torch.cat(pooled, dim=1) if self.aggregate == "concat" else torch.stack(pooled).sum(0)


def _feature_maps(backbone: nn.Module, images: Tensor) -> list[Tensor]:
    features = backbone(images)
    maps = list(features.values()) if isinstance(features, Mapping) else (
        list(features) if isinstance(features, (list, tuple)) else [features])
    for f in maps:
        if not isinstance(f, Tensor) or f.ndim != 4:
            raise ValueError("the backbone must return Tensor[N, C, H, W] maps (a list or a dict of them)")
    return maps


class AggregatedFasterRCNN(FasterRCNN):
    """Faster R-CNN on a multi-scale backbone, with an RPN at every scale and RoI features
    aggregated from all scales (Zhang et al. 2020, in miniature).

    Args:
        backbone: returns several maps (a dict or list, finest first) with ``out_channels``
            channels each, e.g. :class:`SliceUNet`; attribute ``in_channels`` (``2k + 1``) if the
            input is to be checked.
        num_classes: object classes + 1 (background).
        rpn_anchor_generator: one entry of sizes per map, the same ``k`` for each (the RPN head
            is shared). Default: sizes ``(2, 4), (6, 8), (12, 16)`` for strides 2, 4, 8.
        box_roi_pool: default :class:`MultiScaleRoIPooler` (5 × 5, concatenated).
        box_head: default :class:`~dlmi.detect.TwoMLPHead` on the aggregated feature.
        size_divisible: pad the batch to a multiple of the coarsest stride (8).
        **kwargs: the rest of :class:`~dlmi.detect.FasterRCNN`'s settings.

    Attribute ``context`` = ``(in_channels - 1) // 2``, the slices on each side of the centre.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, rpn_anchor_generator=None,
                 box_roi_pool: nn.Module | None = None, box_head: nn.Module | None = None,
                 representation_size: int = 96, size_divisible: int = 8, **kwargs) -> None:
        anchors = rpn_anchor_generator or AnchorGenerator(((2, 4), (6, 8), (12, 16)), ((1.0,),) * 3)
        per_level = anchors.num_anchors_per_location()
        if len(set(per_level)) != 1:
            raise ValueError(f"the RPN head is shared by all levels, so every level needs the same number "
                             f"of anchors per location; got {per_level}")
        pool = box_roi_pool or MultiScaleRoIPooler(5)
        if box_head is None:
            channels = getattr(backbone, "out_channels", None)
            if not isinstance(channels, int) or not hasattr(pool, "out_channels"):
                raise ValueError("give box_head, or a backbone with int out_channels and a MultiScaleRoIPooler")
            size = pool.output_size
            box_head = TwoMLPHead(pool.out_channels(channels, len(per_level)) * size * size, representation_size)
        super().__init__(backbone, num_classes, rpn_anchor_generator=anchors, box_roi_pool=pool,
                         box_head=box_head, representation_size=representation_size,
                         size_divisible=size_divisible, **kwargs)
        in_channels = getattr(backbone, "in_channels", None)
        self.in_channels = in_channels
        self.context = (in_channels - 1) // 2 if isinstance(in_channels, int) else None

    # Faster R-CNN's forward, on a stack of slices and several feature maps.
    def _batch(self, images) -> tuple[Tensor, list]:
        """``images``: ``[N, 2k+1, H, W]`` or a list of ``[2k+1, H, W]`` stacks."""
        return batch_images(images, self.size_divisible, channels=self.in_channels)

    def _features(self, batch: Tensor) -> list[Tensor]:
        features = _feature_maps(self.backbone, batch)
        if len(features) != len(self.rpn.anchor_generator.sizes):
            raise ValueError(f"the backbone gave {len(features)} feature maps but the anchor generator has sizes "
                             f"for {len(self.rpn.anchor_generator.sizes)}")
        return features


# -- builders --------------------------------------------------------------------------------------
def build_ct_detector(context: int = 2, multiscale: bool = True, seed: int = 0,
                      num_classes: int = 2) -> nn.Module:
    """A fresh CT nodule detector with :data:`CONFIG`'s settings.

    Args:
        context: ``k``: the input is a stack of ``2k + 1`` slices (0: the centre slice only).
        multiscale: ``True``: :class:`AggregatedFasterRCNN` on the U-Net's strides 2, 4, 8;
            ``False``: dlmi's :class:`~dlmi.detect.FasterRCNN` on its stride-4 map alone.
        seed: of the weights' initialisation.

    ``build_ct_detector(0, False)`` is the 2-D baseline of the lecture. The model's attribute
    ``context`` tells :func:`evaluate_ct_detector` which stacks to feed it.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be an int >= 0, got {context!r}")
    torch.manual_seed(seed)
    unet, sizes = CONFIG["unet"], CONFIG["anchors"]
    settings = dict(representation_size=CONFIG["representation_size"], **CONFIG["detector"])
    size = CONFIG["roi_output_size"]
    if multiscale:
        backbone = SliceUNet(2 * context + 1, unet["widths"], unet["out_channels"], strides=(2, 4, 8))
        anchors = AnchorGenerator(tuple(sizes[s] for s in (2, 4, 8)), ((1.0,),) * 3)
        model = AggregatedFasterRCNN(backbone, num_classes, rpn_anchor_generator=anchors,
                                     box_roi_pool=MultiScaleRoIPooler(size), **settings)
    else:
        backbone = SliceUNet(2 * context + 1, unet["widths"], unet["out_channels"], strides=(4,))
        # One map, so its anchors must cover every nodule size: all sizes at stride 4.
        anchors = AnchorGenerator((sizes[2] + sizes[4],), ((1.0,),))
        # The same RoI pooling as the multi-scale model, on its one map.
        model = FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchors,
                           box_roi_pool=MultiScaleRoIPooler(size), size_divisible=8, **settings)
    model.context = context
    return model


def ct_data(split: str = "train", context: int | None = None, n_volumes: int | None = None):
    """The lecture's :class:`~dlmi.data.ct_detection.CTSliceDataset` split (``"train"`` / ``"test"``)."""
    from dlmi.data.ct_detection import CTSliceDataset

    if split not in CONFIG["data"]:
        raise ValueError(f"split must be one of {tuple(CONFIG['data'])}, got {split!r}")
    settings = dict(CONFIG["data"][split])
    if n_volumes is not None:
        settings["n_volumes"] = n_volumes
    return CTSliceDataset(context=CONFIG["context"] if context is None else context, **settings)


def train_ct_detector(model: nn.Module, dataset, *, epochs: int, batch_size: int = 16, lr: float = 1e-3,
                      negatives_per_positive: float = 1.0, seed: int = 0, steps_per_epoch: int | None = None,
                      cosine: bool = True, progress: bool = False, history=None):
    """Adam on the summed losses with :func:`dlmi.train.fit`; each epoch every slice with a nodule
    and as many without (new ones every epoch, :class:`~dlmi.data.ct_detection.BalancedSliceSampler`).

    ``steps_per_epoch`` caps an epoch's mini-batches (short live runs); ``cosine`` anneals the
    learning rate to 0 over the ``epochs`` (Loshchilov & Hutter 2017). Returns fit's
    :class:`~dlmi.train.History` (per-epoch means of every loss and their sum, ``loss``).
    """
    from itertools import islice

    from dlmi.data.ct_detection import BalancedSliceSampler
    from dlmi.data.lesions import collate_detection
    from dlmi.train import fit

    context = getattr(model, "context", None)
    if context is not None and context != dataset.context:
        raise ValueError(f"the model reads stacks of {2 * context + 1} slices but the dataset gives "
                         f"{2 * dataset.context + 1}")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=BalancedSliceSampler(dataset, negatives_per_positive, seed),
        collate_fn=lambda items: collate_detection(items, stack=True))

    class _Capped:  # the first steps_per_epoch batches of each pass
        def __iter__(self):
            return iter(loader) if steps_per_epoch is None else islice(iter(loader), steps_per_epoch)

    torch.manual_seed(seed)  # the RPN's and RoI heads' sampling
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs) if cosine else None
    return fit(model, _Capped(), epochs=epochs, optimizer=optimizer, scheduler=scheduler, progress=progress,
               history=history)


# -- evaluation --------------------------------------------------------------------------------------
def _context_of(model: nn.Module, context) -> int:
    context = getattr(model, "context", None) if context is None else context
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError("pass context= (slices on each side of the centre the model reads), or build the "
                         "model with build_ct_detector, which records it")
    return context


@torch.no_grad()
def detect_volume(model: nn.Module, volume: Tensor, context: int | None = None, batch_size: int = 32,
                  padding: str = "edge") -> list[dict]:
    """Run a slice detector on every slice of ``volume`` (``[D, H, W]`` windowed, or ``[D, 1, H, W]``).

    Slice ``z`` is detected from the stack centred on it (ends padded by ``padding``, see
    :func:`dlmi.data.ct_detection.slice_stack`). Returns ``D`` prediction dicts, on the CPU.
    """
    from dlmi.data.ct_detection import volume_stacks

    context = _context_of(model, context)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    stacks = volume_stacks(volume, context, padding)
    out = []
    for start in range(0, len(stacks), batch_size):
        batch = stacks[start:start + batch_size].to(device)
        out += [{k: v.cpu() for k, v in p.items()} for p in model(batch)]
    model.train(was_training)
    return out


def merge_detections(slice_predictions: list[dict], z_radius: float = 2.0, xy_radius: float = 3.0,
                     min_score: float = 0.0) -> dict:
    """Per-slice boxes of one volume → 3-D candidates, greedily by score.

    The best-scoring box becomes a candidate at ``(z + 0.5, box centre y, box centre x)``
    (voxel coordinates, slice ``z``); it absorbs every box not yet taken whose slice is within
    ``z_radius`` slices and whose centre is within ``xy_radius`` pixels in the slice plane; the
    next best box left starts the next candidate — NMS with a 3-D neighbourhood instead of IoU
    (tiny boxes on adjacent slices of one nodule need not overlap much).

    Returns:
        ``{"centers": [P, 3] (z, y, x), "scores": [P], "boxes": [P, 4] (the candidate's own
        box), "slices": [P] int64}``, by decreasing score.
    """
    if not isinstance(slice_predictions, (list, tuple)):
        raise TypeError("slice_predictions must be a list of prediction dicts, one per slice")
    boxes, scores, slices = [], [], []
    for z, p in enumerate(slice_predictions):
        if not isinstance(p, Mapping) or "boxes" not in p or "scores" not in p:
            raise ValueError(f"slice_predictions[{z}] must be a dict with 'boxes' and 'scores'")
        keep = p["scores"] >= min_score
        boxes.append(p["boxes"][keep].float().cpu())
        scores.append(p["scores"][keep].float().cpu())
        slices.append(torch.full((int(keep.sum()),), z, dtype=torch.long))
    boxes, scores, slices = torch.cat(boxes).reshape(-1, 4), torch.cat(scores), torch.cat(slices)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, scores, slices = boxes[order], scores[order], slices[order]
    centres = torch.stack([slices.float() + 0.5, (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2], 1)
    if len(scores):
        near = ((centres[:, None, 0] - centres[None, :, 0]).abs() <= z_radius) & \
               (torch.cdist(centres[:, 1:], centres[:, 1:]) <= xy_radius)
        keep = torch.tensor(_greedy(near), dtype=torch.long)
    else:
        keep = torch.zeros(0, dtype=torch.long)
    return {"centers": centres[keep], "scores": scores[keep], "boxes": boxes[keep], "slices": slices[keep]}


def froc_targets(truth: dict, tolerance: float = 0.5) -> dict:
    """A volume's nodules for :func:`dlmi.detect.froc.froc`: centres ``(z, y, x)`` in voxels and
    their radii per axis plus ``tolerance`` voxels — a candidate's position is only known to
    the voxel (its slice, up to 19 mm thick here, and its box's centre)."""
    return {"centers": truth["centers"], "radii": truth["radii"] + tolerance}


def evaluate_ct_detector(model: nn.Module, data, context: int | None = None, fp_rates=FP_RATES,
                         merge: dict | None = None, batch_size: int = 32) -> dict:
    """FROC per volume and mAP per slice of a detector on held-out volumes.

    Args:
        data: a :class:`~dlmi.data.ct_detection.CTSliceDataset` (its ``volumes`` and ``truths``
            are used, every slice of every volume).
        context: slices on each side the model reads (default: ``model.context``).
        merge: keyword arguments of :func:`merge_detections` (default :data:`CONFIG`'s).

    Returns:
        dict: ``froc`` (:func:`~dlmi.detect.froc.froc`'s result), ``cpm``, ``sensitivity_at``
        (``{fp rate: sensitivity}``), ``map_50`` and ``map`` (per slice), ``slices_per_s`` (the
        detector alone, batches of ``batch_size`` slices), ``predictions`` (per volume, per slice)
        and ``candidates`` (per volume).
    """
    merge = dict(CONFIG["merge"] if merge is None else merge)
    predictions, seconds = [], 0.0
    for volume in data.volumes:
        start = time.perf_counter()
        predictions.append(detect_volume(model, volume, context, batch_size))
        seconds += time.perf_counter() - start
    candidates = [merge_detections(p, **merge) for p in predictions]
    result = froc(candidates, [froc_targets(t) for t in data.truths], fp_rates)
    flat_predictions = [p for volume in predictions for p in volume]
    flat_targets = [{"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}
                    for t in data.truths for boxes in t["slice_boxes"]]
    precision = mean_average_precision(flat_predictions, flat_targets)
    return {"froc": result, "cpm": result["cpm"],
            "sensitivity_at": dict(zip(result["fp_rates"], result["sensitivity_at"].tolist())),
            "map_50": float(precision["map_50"]), "map": float(precision["map"]),
            "slices_per_s": len(flat_predictions) / max(seconds, 1e-9),
            "predictions": predictions, "candidates": candidates}


# -- checkpoints -------------------------------------------------------------------------------------
def load_ct_detector(name: str, map_location="cpu") -> nn.Module:
    """The lecture's model ``name`` (a key of :data:`MODELS`) with its shipped weights, in eval mode."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {tuple(MODELS)}, got {name!r}")
    return load_checkpoint(build_ct_detector(**MODELS[name]), CHECKPOINTS / f"{name}.pt", map_location,
                           "python -m dlmi.detect.ct_detection")


def main(argv=None) -> None:
    """Train the models of :data:`MODELS` on the training volumes, save ``<out>/<name>.pt`` and
    print their FROC / CPM / mAP on the test volumes."""
    parser = argparse.ArgumentParser(description="train the unit 10 CT detectors and save checkpoints")
    parser.add_argument("--out", type=Path, default=CHECKPOINTS)
    parser.add_argument("--epochs", type=int, default=CONFIG["train"]["epochs"])
    parser.add_argument("--only", default=",".join(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small convolutions: one thread is fastest on a shared CPU
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = CONFIG["train"]
    for name in args.only.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from {tuple(MODELS)}")
        model = build_ct_detector(**MODELS[name])
        train, test = ct_data("train", model.context), ct_data("test", model.context)
        start = time.perf_counter()
        history = train_ct_detector(model, train, epochs=args.epochs, batch_size=cfg["batch_size"], lr=cfg["lr"],
                                    negatives_per_positive=cfg["negatives_per_positive"], seed=cfg["seed"])
        trained = time.perf_counter() - start
        path = args.out / f"{name}.pt"
        torch.save(model.state_dict(), path)
        result = evaluate_ct_detector(model, test)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, {path.stat().st_size / 1e6:.2f} MB, "
              f"trained {trained:.0f} s, loss {history.train['loss'][0]:.3f} -> {history.train['loss'][-1]:.3f}; "
              f"test CPM {result['cpm']:.3f}, sensitivity at {result['sensitivity_at']}, "
              f"mAP@0.5 {result['map_50']:.3f}, {result['slices_per_s']:.0f} slices/s", flush=True)


if __name__ == "__main__":
    main()
