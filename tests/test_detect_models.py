"""dlmi.detect models: R-CNN, Fast R-CNN, Faster R-CNN (issue 7, part 4).

Interfaces (train → loss dict, eval → detections), the RPN's target assignment, sampling and
proposal selection against direct computations with torchvision.ops, selective search against
sliding windows, bad input, and that every model overfits a tiny batch.
"""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from dlmi.detect import (RCNN, AnchorGenerator, FastRCNN, FasterRCNN, Matcher, RegionProposalNetwork,
                         RPNHead, SlidingWindows, box_iou, proposal_recall, sample_balanced,
                         selective_search, sliding_windows)
from dlmi.detect.fast_rcnn import check_proposals

SIZE = 64


def backbone(channels: int = 16) -> nn.Module:
    """Stride-4 three-layer CNN (what every model here gets)."""
    net = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, channels, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU())
    net.out_channels = channels
    return net


def scene(seed: int, count: int = 2):
    """A 64×64 image with ``count`` objects: bright ellipses (class 1) and grey rectangles (class 2)."""
    rng = np.random.default_rng(seed)
    image = 0.05 * rng.standard_normal((SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    boxes, labels = [], []
    while len(boxes) < count:
        w, h = rng.integers(12, 24, 2)
        x, y = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
        box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
        if boxes and box_iou(box, torch.tensor(boxes, dtype=torch.float32)).max() > 0:
            continue
        c = 1 + len(boxes) % 2
        if c == 1:
            mask = ((xx - x - w / 2) / (w / 2)) ** 2 + ((yy - y - h / 2) / (h / 2)) ** 2 <= 1
        else:
            mask = (xx > x) & (xx < x + w) & (yy > y) & (yy < y + h)
        image[mask] += 1.0 if c == 1 else 0.5
        boxes.append([x, y, x + w, y + h])
        labels.append(c)
    return (torch.tensor(image, dtype=torch.float32)[None],
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})


def faster(**kw):
    torch.manual_seed(0)
    options = dict(rpn_anchor_generator=AnchorGenerator(((8, 16, 32),), ((0.5, 1.0, 2.0),)),
                   representation_size=64, rpn_batch_size_per_image=64, box_batch_size_per_image=64,
                   rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                   rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100)
    options.update(kw)
    return FasterRCNN(backbone(), 3, **options)


def fast():
    torch.manual_seed(0)
    return FastRCNN(backbone(), 3, representation_size=64, batch_size_per_image=64,
                    proposer=SlidingWindows(sizes=(12, 16, 24), stride_fraction=0.25))


def rcnn():
    torch.manual_seed(0)
    return RCNN(backbone(), 3, representation_size=64, warp_size=24, batch_size_per_image=32,
                proposer=SlidingWindows(sizes=(12, 16, 24), stride_fraction=0.25), max_regions=400, context=0.1)


MODELS = {"faster": faster, "fast": fast, "rcnn": rcnn}
LOSS_KEYS = {"faster": {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"},
             "fast": {"loss_classifier", "loss_box_reg"},
             "rcnn": {"loss_classifier", "loss_svm", "loss_box_reg"}}


@pytest.fixture(scope="module")
def batch():
    items = [scene(s) for s in (1, 2)]
    return [i for i, _ in items], [t for _, t in items]


# -- interfaces ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_and_eval_interfaces(name, batch):
    images, targets = batch
    model = MODELS[name]()
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS[name]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(torch.stack(images))                 # a batched tensor works too
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[1:] == (4,) and det["boxes"].dtype == torch.float32
        assert det["scores"].shape == det["labels"].shape == det["boxes"].shape[:1]
        assert det["labels"].dtype == torch.int64
        if det["labels"].numel():
            assert det["labels"].min() >= 1 and det["labels"].max() <= 2
            assert (det["boxes"] >= 0).all() and (det["boxes"] <= SIZE).all()


def test_images_without_objects_train(batch):
    images, _ = batch
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    for name in ("faster", "fast"):
        losses = MODELS[name]().train()(images, empty)
        assert torch.isfinite(sum(losses.values()))
        assert losses["loss_box_reg"] == 0


# -- RPN: assignment, sampling, proposal selection -------------------------------------------------
def test_matcher_thresholds_and_low_quality_matches():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    anchors = torch.tensor([[0.0, 0, 10, 10],     # IoU 1 with gt 0         -> 0
                            [0, 0, 10, 14],       # IoU 0.714 with gt 0     -> 0
                            [0, 0, 10, 20],       # IoU 0.5 with gt 0       -> ignored
                            [50, 50, 60, 60],     # no overlap              -> background
                            [20, 20, 30, 30],     # IoU 0.25, gt 1's best   -> 1 (low quality)
                            [15, 15, 25, 25]])    # IoU 0.08 with gt 1      -> background
    iou = box_iou(gt, anchors)
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, 0, -2, -1, -1, -1]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).tolist() == [0, 0, -2, -1, 1, -1]
    # the same as torchvision's Matcher
    from torchvision.models.detection._utils import Matcher as TVMatcher
    assert torch.equal(Matcher(0.7, 0.3, True)(iou), TVMatcher(0.7, 0.3, True)(iou))
    assert Matcher(0.7, 0.3)(torch.zeros(0, 6)).tolist() == [-1] * 6


def test_rpn_assigns_labels_and_matched_boxes():
    rpn = RegionProposalNetwork(AnchorGenerator(((8,),), ((1.0,),)), RPNHead(4, 1))
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60], [20, 20, 30, 30]])
    labels, matched = rpn.assign_targets_to_anchors([anchors], [{"boxes": gt, "labels": torch.tensor([1, 1])}])
    assert labels[0].tolist() == [1.0, -1.0, 0.0, 1.0]
    assert torch.equal(matched[0][[0, 3]], gt)
    labels, matched = rpn.assign_targets_to_anchors([anchors], [{"boxes": torch.zeros(0, 4),
                                                                 "labels": torch.zeros(0, dtype=torch.long)}])
    assert labels[0].tolist() == [0.0] * 4


def test_balanced_sampling_counts():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 50)
    pos, neg = sample_balanced(labels, 64, 0.25, generator=torch.Generator().manual_seed(0))
    assert int(pos.sum()) == 10 and int(neg.sum()) == 54         # too few positives: fill with negatives
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos, neg = sample_balanced(torch.tensor([1] * 100 + [0] * 100), 64, 0.25)
    assert int(pos.sum()) == 16 and int(neg.sum()) == 48
    pos, neg = sample_balanced(torch.tensor([0] * 5), 64, 0.5)
    assert int(pos.sum()) == 0 and int(neg.sum()) == 5


def test_proposal_selection_equals_torchvision_ops():
    from torchvision.models.detection._utils import BoxCoder as TVCoder
    from torchvision.ops import boxes as ops

    torch.manual_seed(0)
    gen = AnchorGenerator(((8, 16, 32),), ((0.5, 1.0, 2.0),))
    images, features = torch.zeros(2, 1, 64, 48), torch.zeros(2, 4, 16, 12)
    anchors = gen(images, [features])
    objectness = torch.randn(2, anchors[0].shape[0])
    deltas = 0.5 * torch.randn(2, anchors[0].shape[0], 4)
    sizes = [(64, 48), (50, 40)]
    rpn = RegionProposalNetwork(gen, RPNHead(4, 9), pre_nms_top_n=500, post_nms_top_n=60,
                                nms_thresh=0.7, min_size=2.0, score_thresh=0.1).eval()
    boxes, scores = rpn.select_proposals(anchors, objectness, deltas, sizes)
    coder = TVCoder((1.0, 1.0, 1.0, 1.0))
    for i, size in enumerate(sizes):
        top = objectness[i].topk(500).indices
        b = coder.decode_single(deltas[i, top], anchors[i][top])
        s = torch.sigmoid(objectness[i, top])
        b = ops.clip_boxes_to_image(b, size)
        keep = ops.remove_small_boxes(b, 2.0)
        b, s = b[keep], s[keep]
        keep = torch.where(s >= 0.1)[0]
        b, s = b[keep], s[keep]
        keep = ops.nms(b, s, 0.7)[:60]
        torch.testing.assert_close(boxes[i], b[keep])
        torch.testing.assert_close(scores[i], s[keep])


def test_rpn_loss_matches_hand_computation():
    """With every anchor sampled, the losses are plain BCE and smooth L1 over all anchors."""
    torch.manual_seed(0)
    gen = AnchorGenerator(((16,),), ((1.0,),))
    rpn = RegionProposalNetwork(gen, RPNHead(4, 1), batch_size_per_image=10_000, positive_fraction=1.0)
    anchors = [gen(torch.zeros(1, 1, 32, 32), [torch.zeros(1, 4, 4, 4)])[0]]
    gt = {"boxes": torch.tensor([[0.0, 0, 16, 16], [10, 12, 30, 28]]), "labels": torch.tensor([1, 1])}
    labels, matched = rpn.assign_targets_to_anchors(anchors, [gt])
    logits, deltas = torch.randn(1, 16), torch.randn(1, 16, 4)
    losses = rpn.compute_loss(logits, deltas, labels, anchors, matched)
    used = labels[0] >= 0
    pos = labels[0] == 1
    expect_obj = nn.functional.binary_cross_entropy_with_logits(logits[0, used], labels[0][used],
                                                                reduction="sum") / used.sum()
    from torchvision.models.detection._utils import BoxCoder as TVCoder
    t = TVCoder((1.0, 1.0, 1.0, 1.0)).encode_single(matched[0][pos], anchors[0][pos])
    expect_box = nn.functional.smooth_l1_loss(deltas[0, pos], t, beta=1 / 9, reduction="sum") / used.sum()
    torch.testing.assert_close(losses["loss_objectness"], expect_obj)
    torch.testing.assert_close(losses["loss_rpn_box_reg"], expect_box)


# -- proposals -------------------------------------------------------------------------------------
def test_selective_search_beats_sliding_windows_at_equal_count():
    recall_ss, recall_sw, counts = [], [], []
    for seed in range(4):
        image, target = scene(100 + seed, count=3)
        boxes = selective_search(image, max_proposals=60)
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes <= SIZE).all() and (boxes >= 0).all()
        assert torch.unique(boxes, dim=0).shape[0] == boxes.shape[0]
        windows = sliding_windows((SIZE, SIZE), sizes=(8, 16, 32), max_windows=len(boxes))
        assert len(windows) <= len(boxes)
        recall_ss.append(proposal_recall(boxes, target["boxes"]))
        recall_sw.append(proposal_recall(windows, target["boxes"]))
    assert np.mean(recall_ss) >= 0.9
    assert np.mean(recall_ss) > np.mean(recall_sw) + 0.2


def test_selective_search_is_deterministic_and_checks_input():
    image, _ = scene(7)
    assert torch.equal(selective_search(image), selective_search(image))
    with pytest.raises(ValueError):
        selective_search(torch.zeros(64, 64))
    with pytest.raises(ValueError):
        selective_search(image, strategies=(("colour", "shape"),))
    with pytest.raises(TypeError):
        selective_search([[0.0]])


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_bad_input_raises_clear_errors(name, batch):
    images, targets = batch
    model = MODELS[name]().train()
    with pytest.raises(ValueError, match="C, H, W"):
        model([images[0][0]], targets[:1])                                    # rank 2
    with pytest.raises(ValueError, match=r"N, C, H, W"):
        model(images[0], targets[:1])                                         # one 3-D tensor
    with pytest.raises(TypeError, match="floating-point"):
        model([(images[0] * 255).to(torch.uint8)], targets[:1])
    with pytest.raises(ValueError, match="missing"):
        model(images, [{"boxes": targets[0]["boxes"]}, targets[1]])
    with pytest.raises(ValueError, match="lie in 1..2"):
        model(images, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([1, 3])}, targets[1]])
    with pytest.raises(ValueError, match="lie in 1..2"):
        model(images, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([0, 1])}, targets[1]])
    with pytest.raises(TypeError, match="integer"):
        model(images, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([1.0, 2.0])}, targets[1]])
    with pytest.raises(ValueError, match="one target dict per image"):
        model(images, targets[:1])
    with pytest.raises(ValueError, match="x1 <= x2"):
        model(images, [{"boxes": targets[0]["boxes"][:, [2, 1, 0, 3]], "labels": targets[0]["labels"]},
                       targets[1]])
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    with pytest.raises(TypeError):
        model("not images", targets)


def test_bad_construction_and_proposals():
    with pytest.raises(ValueError, match="num_classes"):
        FasterRCNN(backbone(), 1)
    with pytest.raises(ValueError, match="out_channels"):
        FastRCNN(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="proposal sets"):
        check_proposals([torch.zeros(0, 4)], 2, [(64, 64)] * 2, "cpu")
    with pytest.raises(TypeError):
        check_proposals(torch.zeros(3, 4), 1, [(64, 64)], "cpu")


# -- each model overfits a tiny batch ---------------------------------------------------------------
def _overfit(model, images, targets, steps, lr):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first = last = None
    for _ in range(steps):
        total = sum(model(images, targets).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        first = float(total.detach()) if first is None else first
        last = float(total.detach())
    model.eval()
    with torch.no_grad():
        return first, last, model(images)


def _found(detections, target) -> bool:
    """Every training box is detected, with its class, at IoU > 0.5 (among the top detections)."""
    for box, label in zip(target["boxes"], target["labels"]):
        mine = detections["labels"] == label
        if not mine.any() or box_iou(box[None], detections["boxes"][mine][:5]).max() <= 0.5:
            return False
    return True


@pytest.mark.parametrize("name,steps,lr", [("faster", 120, 3e-3), ("fast", 100, 3e-3), ("rcnn", 150, 3e-3)])
def test_overfits_a_tiny_batch(name, steps, lr, batch):
    images, targets = batch
    first, last, detections = _overfit(MODELS[name](), images, targets, steps, lr)
    assert last < 0.5 * first
    for det, target in zip(detections, targets):
        assert _found(det, target), (det, target)
