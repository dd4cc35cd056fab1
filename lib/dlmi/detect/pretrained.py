"""The unit 10 lecture's detectors on the lesion phantoms: builders, training, checkpoints.

The lecture compares R-CNN, Fast R-CNN, Faster R-CNN and torchvision's Faster R-CNN on the same
data (:class:`dlmi.data.lesions.LesionDataset`) with the same small CNN (:func:`small_backbone`);
unit 11 adds YOLO v1 (:class:`~dlmi.detect.YOLOv1`) on the same data and backbone.
Training them to a useful mAP takes minutes on a CPU, more than a notebook may spend, so the
notebook loads the checkpoints this module made (``checkpoints/*.pt``, package data) and trains
only a short live run. To remake them (a few minutes per model on a laptop CPU)::

    python -m dlmi.detect.pretrained [--epochs 30] [--only faster_rcnn,fast_rcnn,...,yolo]

Everything — data, sizes, anchors, optimiser, epochs, seeds — is in :data:`CONFIG`, so the
checkpoints are reproducible from this file alone.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from .anchors import AnchorGenerator
from .fast_rcnn import FastRCNN
from .faster_rcnn import FasterRCNN
from .proposals import SelectiveSearch
from .rcnn import RCNN
from .yolo import YOLOv1

__all__ = ["CONFIG", "MODELS", "small_backbone", "build", "load_pretrained", "lesion_data",
           "train_detector", "precompute_proposals", "CHECKPOINTS"]

CHECKPOINTS = Path(__file__).with_name("checkpoints")

CONFIG = {
    "data": {"size": 96, "classes": ("cardiomegaly", "effusion", "mass", "nodule"), "seed": 0,
             "n_train": 240, "n_test": 60},
    "anchors": {"sizes": ((8, 16, 32, 64),), "aspect_ratios": ((0.5, 1.0, 2.0),)},
    "representation_size": 128,
    "selective_search": {"max_proposals": 400},
    "train": {"epochs": 30, "batch_size": 8, "lr": 1e-3, "seed": 0},
    # R-CNN sees each region on its own, cut out and warped: a faint lesion filling its warp is
    # just a grey patch, so the context around it must come along (the paper pads 16 pixels
    # around a 227-pixel warp; here half the box on every side: measured mAP@0.5 0.06 against
    # 0.02 with a tenth after 12 epochs).
    "rcnn": {"warp_size": 32, "context": 0.5},
    # YOLO v1: S = 12 gives 8-pixel cells on the 96-pixel images, the size of the smallest lesions
    # (nodules: 3-12 px, median 6). A coarser grid loses objects whose centres share a cell
    # (of the 410 training lesions 18 at S = 4, 11 at S = 6, 2 at S = 12) and localises worse
    # (COCO mAP 0.08 at S = 6 against 0.12 at S = 12); a finer one (S = 24, 4-pixel cells) learns
    # much more slowly.
    "yolo": {"grid_size": 12, "boxes_per_cell": 2, "hidden": 64},
}
MODELS = ("rcnn", "fast_rcnn", "faster_rcnn", "torchvision", "yolo")


def small_backbone(in_channels: int = 1, channels: int = 32) -> nn.Module:
    """Three 3×3 conv + ReLU layers, stride 4: the CNN every model of the lecture shares."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
    net.out_channels = channels
    return net


def lesion_data(split: str = "train", n: int | None = None):
    """The lecture's :class:`~dlmi.data.lesions.LesionDataset` split."""
    from dlmi.data.lesions import LesionDataset

    d = CONFIG["data"]
    n = n or (d["n_train"] if split == "train" else d["n_test"])
    return LesionDataset(split, n=n, size=d["size"], seed=d["seed"], classes=d["classes"])


def build(name: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A fresh model of the lecture: ``"rcnn"``, ``"fast_rcnn"``, ``"faster_rcnn"``,
    ``"torchvision"`` (``torchvision.models.detection.FasterRCNN`` with the same backbone, anchors,
    heads and settings, and no resizing or normalisation) or ``"yolo"`` (:class:`YOLOv1`, unit 11).

    ``num_classes`` counts the background for every model, as torchvision does; YOLO, which
    has no background class, gets ``num_classes - 1`` object classes."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    num_classes = num_classes or len(CONFIG["data"]["classes"]) + 1
    torch.manual_seed(seed)
    if name == "yolo":
        cfg = CONFIG["yolo"]
        return YOLOv1(small_backbone(), num_classes - 1, image_size=CONFIG["data"]["size"],
                      grid_size=cfg["grid_size"], boxes_per_cell=cfg["boxes_per_cell"], hidden=cfg["hidden"])
    rep = CONFIG["representation_size"]
    anchors = CONFIG["anchors"]
    proposer = SelectiveSearch(**CONFIG["selective_search"])
    common = dict(representation_size=rep)
    if name == "rcnn":
        return RCNN(small_backbone(), num_classes, proposer=proposer, warp_size=CONFIG["rcnn"]["warp_size"],
                    context=CONFIG["rcnn"]["context"],
                    representation_size=rep, max_regions=CONFIG["selective_search"]["max_proposals"])
    if name == "fast_rcnn":
        return FastRCNN(small_backbone(), num_classes, proposer=proposer, **common)
    rpn = dict(rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=300,
               rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=150, box_batch_size_per_image=128)
    if name == "faster_rcnn":
        return FasterRCNN(small_backbone(), num_classes,
                          rpn_anchor_generator=AnchorGenerator(anchors["sizes"], anchors["aspect_ratios"]),
                          **common, **rpn)
    from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = small_backbone()
    size = CONFIG["data"]["size"]
    return TorchvisionFasterRCNN(
        backbone, None, min_size=size, max_size=size, image_mean=[0.0], image_std=[1.0],
        rpn_anchor_generator=TorchvisionAnchors(anchors["sizes"], anchors["aspect_ratios"]),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(backbone.out_channels * 49, rep), box_predictor=FastRCNNPredictor(rep, num_classes),
        **rpn)


def load_checkpoint(model: nn.Module, path: Path, map_location="cpu", remake: str = "") -> nn.Module:
    """``model`` with the weights saved at ``path`` (stored as float16 or float32), on
    ``map_location``, in eval mode; ``remake`` is the command that makes a missing checkpoint."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}; make it with {remake}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    # load_state_dict copies into the model's own (CPU) parameters: move the model itself.
    return model.to(map_location).eval()


def load_pretrained(name: str, map_location="cpu") -> nn.Module:
    """The lecture's model ``name`` with the shipped checkpoint's weights, in eval mode."""
    return load_checkpoint(build(name), CHECKPOINTS / f"{name}.pt", map_location, "python -m dlmi.detect.pretrained")


def precompute_proposals(model: nn.Module, dataset) -> list[torch.Tensor]:
    """The model's (selective search) proposals for every image of ``dataset``, once."""
    return [model.proposer(dataset[i][0]) for i in range(len(dataset))]


def train_detector(model: nn.Module, dataset, *, epochs: int, batch_size: int = 8, lr: float = 1e-3,
                   proposals=None, seed: int = 0, log=None, time_limit: float | None = None) -> list[float]:
    """Adam on the summed losses, shuffled mini-batches; returns the mean loss of each epoch.

    ``proposals`` (one tensor per image) are passed to R-CNN / Fast R-CNN; ``time_limit``
    (seconds) stops early, after the current mini-batch.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history, start = [], time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(dataset), generator=generator).tolist()
        total = steps = 0
        for i in range(0, len(order), batch_size):
            index = order[i:i + batch_size]
            items = [dataset[j] for j in index]
            images = [im.to(device) for im, _ in items]
            targets = [{k: v.to(device) for k, v in t.items()} for _, t in items]
            extra = {"proposals": [proposals[j] for j in index]} if proposals is not None else {}
            loss = sum(model(images, targets, **extra).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
        history.append(total / max(steps, 1))
        if log:
            log(f"epoch {epoch + 1}: loss {history[-1]:.3f} ({time.perf_counter() - start:.0f} s)")
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
    return history


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="train the unit 10 and 11 detectors and save checkpoints")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default: {CONFIG['train']['epochs']}")
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=CHECKPOINTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from .metrics import mean_average_precision

    train, test = lesion_data("train"), lesion_data("test")
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = CONFIG["train"]
    for name in args.only.split(","):
        model = build(name)
        start = time.perf_counter()
        proposals = precompute_proposals(model, train) if name in ("rcnn", "fast_rcnn") else None
        epochs = args.epochs or cfg["epochs"]
        train_detector(model, train, epochs=epochs, batch_size=cfg["batch_size"], lr=cfg["lr"],
                       proposals=proposals, seed=cfg["seed"], log=lambda m: print(name, m, flush=True))
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        model.eval()
        with torch.no_grad():
            predictions = [model([test[i][0]])[0] for i in range(len(test))]
        result = mean_average_precision(predictions, [test[i][1] for i in range(len(test))])
        print(f"{name}: map_50 {float(result['map_50']):.3f} map {float(result['map']):.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
