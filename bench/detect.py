"""Benchmark: dlmi.detect against torchvision.ops and torchmetrics, in the same run.

- box_iou, nms, batched_nms on 2,000-box sets against torchvision.ops (goal: <= 2x its C++);
- roi_align (and roi_pool) on a Fast R-CNN-sized batch against torchvision.ops;
- mean_average_precision on 5,000 images against torchmetrics' MeanAveragePrecision with the
  pycocotools backend (goal: >= 10x faster).

Every pair is first checked to give the same numbers (identical NMS indices, roi_align to float
tolerance, every mAP key to 1e-6), then timed: the median of several runs for the ops, a single
run for torchmetrics (it takes tens of seconds). Times are CPU time of this process on the CPU
(wall time on a GPU). Ratios are dlmi time / reference time (< 1 is faster), and the
reference's time / dlmi's for mAP.

By default torch uses one thread: on a small shared machine the OpenMP workers of a second
thread spin-wait for a busy core and make every mid-sized tensor operation tens of
milliseconds slow, which measures the machine rather than the code. ``--threads 0`` keeps torch's
default. The torchvision kernels timed here are single-threaded anyway.

    python bench/detect.py [--threads N] [--device cpu|cuda] [--images 5000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import dlmi.detect as dlmi_detect  # noqa: E402

try:
    import torchvision.ops as torchvision_ops
    from torchmetrics.detection import MeanAveragePrecision
except ImportError as missing:   # the references are the `oracles`/`course` extras
    sys.exit(f"bench/detect.py needs torchvision and torchmetrics (pip install -e '.[all]'): {missing}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device):
    # On the CPU the process's CPU time: on a shared machine wall time mostly measures the
    # neighbours. On a GPU the wall time (the host just waits).
    return time.perf_counter if device.type == "cuda" else time.process_time


def median_ms(fn, device, repeats):
    fn()                                   # warm-up (allocations, lazy init)
    now = clock(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = now()
        fn()
        sync(device)
        times.append(now() - start)
    return 1e3 * statistics.median(times)


def random_boxes(n, generator, spread, size):
    corner = torch.rand(n, 2, generator=generator) * spread
    extent = torch.rand(n, 2, generator=generator) * size + 1
    return torch.cat([corner, corner + extent], 1)


def detection_set(images, seed=0, classes=5):
    """Ground truth and jittered / relabelled / missed copies plus false positives, ~8 detections
    and ~4 objects per image (the numbers of the lecture's lesion phantoms, scaled up)."""
    g = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for _ in range(images):
        n = int(torch.randint(0, 8, (1,), generator=g))
        corner = torch.rand(n, 2, generator=g) * 400
        size = torch.rand(n, 2, generator=g) ** 2 * 150 + 4
        boxes = torch.cat([corner, corner + size], 1)
        labels = torch.randint(0, classes, (n,), generator=g)
        hit = torch.rand(n, generator=g) < 0.85
        copies = boxes[hit] + torch.randn(int(hit.sum()), 4, generator=g) * size[hit].repeat(1, 2) * 0.08
        copies = torch.cat([torch.minimum(copies[:, :2], copies[:, 2:]),
                            torch.maximum(copies[:, :2], copies[:, 2:])], 1)
        extra = int(torch.randint(0, 8, (1,), generator=g))
        noise = random_boxes(extra, g, 400, 120)
        predictions.append({"boxes": torch.cat([copies, noise]),
                            "scores": torch.rand(len(copies) + extra, generator=g),
                            "labels": torch.cat([labels[hit], torch.randint(0, classes, (extra,), generator=g)])})
        targets.append({"boxes": boxes, "labels": labels})
    return predictions, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="device for the ops (mAP always runs on the CPU)")
    parser.add_argument("--images", type=int, default=5000, help="images in the mAP comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per op (median)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s)")
    rows = []   # (what, size, reference name, reference ms, dlmi ms, same numbers)

    g = torch.Generator().manual_seed(0)
    # -- box_iou and NMS on 2,000 boxes ---------------------------------------------------------
    for label, spread in (("sparse", 3000.0), ("medium", 1000.0), ("dense", 300.0)):
        boxes = random_boxes(2000, g, spread, 150).to(device)
        scores = torch.rand(2000, generator=g).to(device)
        idxs = torch.randint(0, 10, (2000,), generator=g).to(device)
        for threshold in (0.5, 0.7):
            kept = dlmi_detect.nms(boxes, scores, threshold)
            same = torch.equal(kept, torchvision_ops.nms(boxes, scores, threshold))
            rows.append((f"nms, {label}, iou>{threshold}", f"2000 boxes, {len(kept)} kept", "torchvision",
                         median_ms(lambda: torchvision_ops.nms(boxes, scores, threshold), device, args.repeats),
                         median_ms(lambda: dlmi_detect.nms(boxes, scores, threshold), device, args.repeats), same))
        same = torch.equal(dlmi_detect.batched_nms(boxes, scores, idxs, 0.5),
                           torchvision_ops.batched_nms(boxes, scores, idxs, 0.5))
        rows.append((f"batched_nms, {label}", "2000 boxes, 10 classes", "torchvision",
                     median_ms(lambda: torchvision_ops.batched_nms(boxes, scores, idxs, 0.5), device, args.repeats),
                     median_ms(lambda: dlmi_detect.batched_nms(boxes, scores, idxs, 0.5), device, args.repeats), same))
    a, b = random_boxes(2000, g, 1000, 150).to(device), random_boxes(2000, g, 1000, 150).to(device)
    same = torch.equal(dlmi_detect.box_iou(a, b), torchvision_ops.box_iou(a, b))
    rows.append(("box_iou", "2000 x 2000", "torchvision",
                 median_ms(lambda: torchvision_ops.box_iou(a, b), device, args.repeats),
                 median_ms(lambda: dlmi_detect.box_iou(a, b), device, args.repeats), same))

    # -- RoI align / pool -------------------------------------------------------------------------
    for channels, cells, count in ((256, 50, 1000), (128, 32, 512)):
        features = torch.randn(2, channels, cells, cells, generator=g).to(device)
        corner = torch.rand(count, 2, generator=g) * cells * 16 * 0.8
        rois = torch.cat([torch.randint(0, 2, (count, 1), generator=g).float(), corner,
                          corner + torch.rand(count, 2, generator=g) * 220 + 16], 1).to(device)
        size = f"{count} RoIs on 2x{channels}x{cells}x{cells}"
        for sampling in (2, -1):
            ours = dlmi_detect.roi_align(features, rois, 7, 1 / 16, sampling, True)
            theirs = torchvision_ops.roi_align(features, rois, 7, 1 / 16, sampling, True)
            # nvcc contracts torchvision's CUDA kernel into fused multiply-adds: there it differs from
            # its own CPU kernel by up to 2e-5 on these inputs (measured on an H200), and so do we.
            same = torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 if device.type == "cpu" else 5e-5)
            rows.append((f"roi_align 7x7, sampling {sampling}", size, "torchvision",
                         median_ms(lambda: torchvision_ops.roi_align(features, rois, 7, 1 / 16, sampling, True),
                                   device, args.repeats),
                         median_ms(lambda: dlmi_detect.roi_align(features, rois, 7, 1 / 16, sampling, True),
                                   device, args.repeats), same))
        same = torch.equal(dlmi_detect.roi_pool(features, rois, 7, 1 / 16),
                           torchvision_ops.roi_pool(features, rois, 7, 1 / 16))
        rows.append(("roi_pool 7x7", size, "torchvision",
                     median_ms(lambda: torchvision_ops.roi_pool(features, rois, 7, 1 / 16), device, args.repeats),
                     median_ms(lambda: dlmi_detect.roi_pool(features, rois, 7, 1 / 16), device, args.repeats), same))

    # -- mAP on many images -----------------------------------------------------------------------
    predictions, targets = detection_set(args.images)
    boxes = sum(len(p["boxes"]) for p in predictions), sum(len(t["boxes"]) for t in targets)
    start = time.process_time()
    metric = MeanAveragePrecision(backend="pycocotools")
    metric.update(predictions, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = metric.compute()
    reference_ms = 1e3 * (time.process_time() - start)
    ours = dlmi_detect.mean_average_precision(predictions, targets)
    same = all(abs(float(ours[k]) - float(reference[k])) <= 1e-6 for k in reference if k != "classes")
    ours_ms = median_ms(lambda: dlmi_detect.mean_average_precision(predictions, targets), torch.device("cpu"),
                        max(1, args.repeats // 2))
    rows.append(("mean_average_precision (COCO)", f"{args.images} images, {boxes[0]} dets, {boxes[1]} gts",
                 "torchmetrics", reference_ms, ours_ms, same))
    print(f"mAP {float(ours['map']):.6f} (torchmetrics {float(reference['map']):.6f}), "
          f"mAP@0.5 {float(ours['map_50']):.6f} ({float(reference['map_50']):.6f})")

    # -- table ------------------------------------------------------------------------------------
    print()
    header = f"{'operation':<32} {'size':<36} {'reference':>12} {'ms':>9} {'dlmi ms':>9} {'dlmi/ref':>9} {'same':>5}"
    print(header)
    print("-" * len(header))
    for what, size, name, ref_ms, dlmi_ms, same in rows:
        print(f"{what:<32} {size:<36} {name:>12} {ref_ms:>9.1f} {dlmi_ms:>9.1f} {dlmi_ms / ref_ms:>8.2f}x "
              f"{'yes' if same else 'NO':>5}")
    nms_ratios = [r[4] / r[3] for r in rows if r[0].startswith(("nms", "batched_nms", "box_iou"))]
    align_ratios = [r[4] / r[3] for r in rows if r[0].startswith("roi_align")]
    map_row = rows[-1]
    print()
    print(f"NMS/box_iou: worst {max(nms_ratios):.2f}x torchvision (goal <= 2x); "
          f"roi_align: worst {max(align_ratios):.2f}x; "
          f"mAP: {map_row[3] / map_row[4]:.1f}x faster than torchmetrics (goal >= 10x)")
    if not all(r[5] for r in rows):
        sys.exit("some results differ from the reference: see the 'same' column")


if __name__ == "__main__":
    main()
