"""dlmi.detect YOLO v1 (issue 8, part 1): targets, the loss term by term, decoding, the model.

The loss is checked against numbers computed by hand from eq. (3) of Redmon et al. (2016) on a
2 × 2 grid with B = 2 predictors and C = 2 classes, built so that each classic mistake changes
a term: √w/√h, the second predictor being the responsible one, the noobj term covering the
non-responsible predictor of an object cell, and class probabilities of empty cells. Decoding is
checked against a loop over cells with torchvision's batched NMS, and by a round trip
(encode → perfect predictions → decode → mAP 1).
"""
import math

import pytest
import torch
import torchvision

from dlmi.detect import (YOLOv1, decode_yolo, encode_yolo_targets, mean_average_precision,
                         responsible_predictors, yolo_boxes, yolo_loss)

S, B, C, SIZE = 2, 2, 2, 64        # 2 x 2 grid of 32-pixel cells


def target(boxes, labels, dtype=torch.float32):
    return {"boxes": torch.tensor(boxes, dtype=dtype).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


# -- the hand-made example ----------------------------------------------------------------------
# Image 0: object A (class 2) centred at (24, 16), 36 x 16 px -> cell (row 0, col 0),
#          x = 24/32 = 0.75, y = 16/32 = 0.5, w = 36/64 = 0.5625, h = 16/64 = 0.25;
#          object B (class 1) centred at (48, 48), 16 x 23.04 px -> cell (1, 1),
#          x = 0.5, y = 0.5, w = 0.25, h = 0.36.
# Image 1: no object.
HAND_TARGETS = [target([[6, 8, 42, 24], [40, 36.48, 56, 59.52]], [2, 1], torch.float64),
                target([], [], torch.float64)]


def hand_predictions():
    P = torch.zeros(2, S, S, 5 * B + C, dtype=torch.float64)
    # cell (0, 0): predictor 1 -> box [8, 8, 24, 24]: IoU with A = 256 / 576 = 4/9;
    #              predictor 2 -> box [-0.48, 10.88, 40.48, 21.12] (40.96 x 10.24):
    #              inter 34.48 x 10.24, IoU = 353.0752 / 642.3552 = 0.5497 > 4/9: predictor 2
    #              (the SECOND one) is responsible.
    P[0, 0, 0] = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.6, 0.625, 0.5, 0.64, 0.16, 0.7, 0.3, 0.7], dtype=torch.float64)
    # cell (1, 1): predictor 1 -> box [40, 24.32, 56, 55.68]: IoU with B = 307.2 / 563.2 = 6/11;
    #              predictor 2 -> a 2.56-px box at (35.2, 60.8), outside B: IoU 0. Predictor 1.
    P[0, 1, 1] = torch.tensor([0.5, 0.25, 0.25, 0.49, 0.8, 0.1, 0.9, 0.04, 0.04, 0.5, 0.6, 0.4], dtype=torch.float64)
    # cell (0, 1): no object; confident predictors and class probabilities that must not count.
    P[0, 0, 1] = torch.tensor([0.3, 0.3, 0.2, 0.2, 0.2, 0.7, 0.7, 0.1, 0.1, 0.1, 0.9, 0.1], dtype=torch.float64)
    # image 1, cell (0, 0): no object.
    P[1, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.4, 0.5, 0.5, 0.5, 0.5, 0.3, 0.5, 0.5], dtype=torch.float64)
    return P


IOU_A2 = (34.48 * 10.24) / (36 * 16 + 40.96 * 10.24 - 34.48 * 10.24)
IOU_B1 = 6 / 11


def hand_targets():
    return encode_yolo_targets(HAND_TARGETS, S, C, SIZE)


def test_encoding_by_hand():
    enc = encode_yolo_targets(HAND_TARGETS, S, C, SIZE)
    assert enc.shape == (2, S, S, 5 + C) and enc.dtype == torch.float64      # the boxes' dtype
    want = torch.zeros(2, S, S, 5 + C, dtype=torch.float64)
    want[0, 0, 0] = torch.tensor([0.75, 0.5, 0.5625, 0.25, 1, 0, 1])
    want[0, 1, 1] = torch.tensor([0.5, 0.5, 0.25, 0.36, 1, 1, 0])
    torch.testing.assert_close(enc, want)


def test_responsible_predictor_is_the_one_with_the_larger_iou():
    responsible, iou = responsible_predictors(hand_predictions(), hand_targets())
    want = torch.zeros(2, S, S, B, dtype=torch.bool)
    want[0, 0, 0, 1] = True          # the second predictor of cell (0, 0)
    want[0, 1, 1, 0] = True          # the first of cell (1, 1)
    assert torch.equal(responsible, want)
    torch.testing.assert_close(iou[0, 0, 0], torch.tensor([4 / 9, IOU_A2], dtype=torch.float64))
    torch.testing.assert_close(iou[0, 1, 1], torch.tensor([IOU_B1, 0.0], dtype=torch.float64))
    assert (iou[0, 0, 1] == 0).all() and (iou[1] == 0).all()       # cells without an object


def test_loss_term_by_term_by_hand():
    losses = yolo_loss(hand_predictions(), hand_targets())
    assert set(losses) == {"loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class"}
    N = 2                                                   # sums over the batch / batch size
    want = {
        # responsible: cell (0,0) predictor 2 and cell (1,1) predictor 1
        "loss_xy": 5 * ((0.625 - 0.75) ** 2 + (0.5 - 0.5) ** 2 + (0.5 - 0.5) ** 2 + (0.25 - 0.5) ** 2) / N,
        # on square roots: √0.64 = 0.8 vs √0.5625 = 0.75, √0.16 = 0.4 vs 0.5, √0.25 vs √0.25, √0.49 = 0.7 vs 0.6
        "loss_wh": 5 * ((0.8 - 0.75) ** 2 + (0.4 - 0.5) ** 2 + 0.0 + (0.7 - 0.6) ** 2) / N,
        # confidence target = IoU of the responsible box (rescore)
        "loss_obj": ((0.7 - IOU_A2) ** 2 + (0.8 - IOU_B1) ** 2) / N,
        # every other predictor, INCLUDING predictor 1 of cell (0,0) (0.6) and predictor 2 of cell (1,1) (0.5)
        "loss_noobj": 0.5 * (0.6 ** 2 + 0.5 ** 2 + 0.2 ** 2 + 0.1 ** 2 + 0.4 ** 2 + 0.3 ** 2) / N,
        # object cells only: (0.3, 0.7) vs (0, 1) and (0.6, 0.4) vs (1, 0); cell (0,1)'s (0.9, 0.1) does not count
        "loss_class": ((0.3 ** 2 + 0.3 ** 2) + (0.4 ** 2 + 0.4 ** 2)) / N,
    }
    for key, value in want.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert want["loss_xy"] == pytest.approx(0.1953125) and want["loss_wh"] == pytest.approx(0.05625)
    assert want["loss_noobj"] == pytest.approx(0.2275) and want["loss_class"] == pytest.approx(0.25)


def test_rescore_off_uses_one_and_lambdas_scale():
    P, T = hand_predictions(), hand_targets()
    plain = yolo_loss(P, T, rescore=False)
    assert plain["loss_obj"].item() == pytest.approx(((0.7 - 1) ** 2 + (0.8 - 1) ** 2) / 2)   # 0.065
    rescored = yolo_loss(P, T)
    for key in ("loss_xy", "loss_wh", "loss_noobj", "loss_class"):
        assert plain[key].item() == pytest.approx(rescored[key].item())
    weighted = yolo_loss(P, T, lambda_coord=1.0, lambda_noobj=1.0)
    assert weighted["loss_xy"].item() == pytest.approx(rescored["loss_xy"].item() / 5)
    assert weighted["loss_wh"].item() == pytest.approx(rescored["loss_wh"].item() / 5)
    assert weighted["loss_noobj"].item() == pytest.approx(rescored["loss_noobj"].item() * 2)


def test_empty_targets_give_only_the_noobj_term():
    P = hand_predictions()
    empty = encode_yolo_targets([target([], []), target([], [])], S, C, SIZE).double()
    assert empty.abs().sum() == 0
    losses = yolo_loss(P, empty)
    confidences = P[..., [4, 9]]
    assert losses["loss_noobj"].item() == pytest.approx(0.5 * (confidences ** 2).sum().item() / 2)
    for key in ("loss_xy", "loss_wh", "loss_obj", "loss_class"):
        assert losses[key].item() == 0
    P.requires_grad_(True)
    sum(yolo_loss(P, empty).values()).backward()
    assert torch.isfinite(P.grad).all()


def loop_loss(P, T, lambda_coord=5.0, lambda_noobj=0.5, rescore=True):
    """Eq. (3) with Python loops over images, cells and predictors, on floats."""
    N, S_, _, D = P.shape
    Cn = T.shape[-1] - 5
    Bn = (D - Cn) // 5
    total = dict(loss_xy=0.0, loss_wh=0.0, loss_obj=0.0, loss_noobj=0.0, loss_class=0.0)
    for n in range(N):
        for i in range(S_):
            for j in range(S_):
                t = T[n, i, j].tolist()
                p = P[n, i, j].tolist()
                preds = [p[5 * b:5 * b + 5] for b in range(Bn)]
                best = -1
                if t[4] == 1:
                    def corners(x, y, w, h):
                        return ((j + x) - w * S_ / 2, (i + y) - h * S_ / 2, (j + x) + w * S_ / 2, (i + y) + h * S_ / 2)
                    g = corners(*t[:4])
                    ious = []
                    for q in preds:
                        b_ = corners(*q[:4])
                        iw = max(0.0, min(g[2], b_[2]) - max(g[0], b_[0]))
                        ih = max(0.0, min(g[3], b_[3]) - max(g[1], b_[1]))
                        inter = iw * ih
                        union = (g[2] - g[0]) * (g[3] - g[1]) + (b_[2] - b_[0]) * (b_[3] - b_[1]) - inter
                        ious.append(inter / union if union > 0 else 0.0)
                    best = max(range(Bn), key=lambda b: (ious[b], -b))
                    q = preds[best]
                    total["loss_xy"] += lambda_coord * ((q[0] - t[0]) ** 2 + (q[1] - t[1]) ** 2)
                    total["loss_wh"] += lambda_coord * ((math.sqrt(q[2]) - math.sqrt(t[2])) ** 2
                                                        + (math.sqrt(q[3]) - math.sqrt(t[3])) ** 2)
                    total["loss_obj"] += (q[4] - (ious[best] if rescore else 1.0)) ** 2
                    total["loss_class"] += sum((a - b) ** 2 for a, b in zip(p[5 * Bn:], t[5:]))
                for b in range(Bn):
                    if b != best:
                        total["loss_noobj"] += lambda_noobj * preds[b][4] ** 2
    return {k: v / N for k, v in total.items()}


def random_scene(generator, n_images, grid, classes, size, max_boxes=6):
    targets = []
    for _ in range(n_images):
        k = int(torch.randint(0, max_boxes + 1, (1,), generator=generator))
        xy = torch.rand(k, 2, generator=generator) * size * 0.7
        wh = 1 + torch.rand(k, 2, generator=generator) * size * 0.3
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).double(),
                        "labels": torch.randint(1, classes + 1, (k,), generator=generator)})
    return targets


def random_predictions(generator, n, grid, boxes, classes):
    P = torch.rand(n, grid, grid, 5 * boxes + classes, generator=generator, dtype=torch.float64)
    P[..., 5 * boxes:] = torch.softmax(3 * P[..., 5 * boxes:], -1)
    return P


@pytest.mark.parametrize("grid,boxes,classes,rescore", [(7, 2, 3, True), (4, 3, 1, False), (5, 1, 4, True)])
def test_loss_matches_a_loop_over_cells_on_random_input(grid, boxes, classes, rescore):
    g = torch.Generator().manual_seed(grid * 10 + boxes)
    targets = random_scene(g, 3, grid, classes, 35 * grid)
    T = encode_yolo_targets(targets, grid, classes, 35 * grid)
    P = random_predictions(g, 3, grid, boxes, classes)
    got = yolo_loss(P, T, rescore=rescore, lambda_coord=3.0, lambda_noobj=0.25)
    want = loop_loss(P, T, rescore=rescore, lambda_coord=3.0, lambda_noobj=0.25)
    for key in want:
        assert got[key].item() == pytest.approx(want[key], rel=1e-10, abs=1e-12), key


# -- gradients --------------------------------------------------------------------------------
def test_loss_is_differentiable_and_the_choice_carries_no_gradient():
    P = hand_predictions().requires_grad_(True)
    T = hand_targets()
    losses = yolo_loss(P, T)
    grad_obj, = torch.autograd.grad(losses["loss_obj"], P)
    # The IoU target and the choice are constants: loss_obj moves only the responsible confidences.
    moved = grad_obj.nonzero().tolist()
    assert moved == [[0, 0, 0, 9], [0, 1, 1, 4]], moved
    torch.testing.assert_close(grad_obj[0, 0, 0, 9], torch.tensor(2 * (0.7 - IOU_A2) / 2, dtype=torch.float64))
    grad_xy, = torch.autograd.grad(yolo_loss(P, T)["loss_xy"], P)
    # only the responsible predictors' x, y: predictor 2 (entries 5, 6) of cell (0,0), predictor 1 of (1,1)
    assert grad_xy.nonzero().tolist() == [[0, 0, 0, 5], [0, 1, 1, 1]]
    torch.testing.assert_close(grad_xy[0, 0, 0, 5], torch.tensor(5 * 2 * (0.625 - 0.75) / 2, dtype=torch.float64))
    grad_wh, = torch.autograd.grad(yolo_loss(P, T)["loss_wh"], P)
    # d/dw 5 (√w - √t)² / N = 5 (√w - √t) / (√w N)
    torch.testing.assert_close(grad_wh[0, 0, 0, 7], torch.tensor(5 * (0.8 - 0.75) / 0.8 / 2, dtype=torch.float64))
    # The whole loss against finite differences (double precision, no tie nearby), without
    # rescoring: with it the IoU target moves with the box under a finite difference, while the
    # analytic gradient treats it as the constant it is meant to be. Empty cells' zero widths are
    # moved inside (0, 1) so that a finite difference does not step below 0.
    inside = torch.where(P.detach() == 0, 0.05, P.detach()).requires_grad_(True)
    assert torch.equal(responsible_predictors(inside, T)[0], responsible_predictors(P, T)[0])
    torch.autograd.gradcheck(lambda p: sum(yolo_loss(p, T, rescore=False).values()), (inside,))


def test_zero_width_predictions_do_not_give_nan_gradients():
    P = hand_predictions()
    P[0, 0, 1, 2] = 0.0                                      # a zero-width box in an empty cell
    P[0, 1, 1, 7] = 0.0                                      # ... and in a non-responsible slot
    P.requires_grad_(True)
    sum(yolo_loss(P, hand_targets()).values()).backward()
    assert torch.isfinite(P.grad).all()


# -- encoding rules -----------------------------------------------------------------------------
def test_collisions_larger_box_wins_then_the_first():
    # three centres in cell (0, 0) of a 4 x 4 grid of 16-px cells: areas 36, 100 and 100
    boxes = [[2, 2, 8, 8], [0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 60]]
    enc = encode_yolo_targets([target(boxes, [1, 2, 3, 1])], 4, 3, 64)
    assert int(enc[0, ..., 4].sum()) == 2                   # two objects survive, one per cell
    # box 1 and box 2 tie on area: the earlier one (box 1, class 2, centre (5, 5)) wins
    torch.testing.assert_close(enc[0, 0, 0], torch.tensor([5 / 16, 5 / 16, 10 / 64, 10 / 64, 1, 0, 1, 0]))
    torch.testing.assert_close(enc[0, 3, 2], torch.tensor([13 / 16, 2 / 16, 10 / 64, 20 / 64, 1, 1, 0, 0]))
    # the order of the list does not matter, except between equal areas
    swapped = encode_yolo_targets([target([boxes[2], boxes[0], boxes[1], boxes[3]], [3, 1, 2, 1])], 4, 3, 64)
    assert swapped[0, 0, 0, 5:].tolist() == [0, 0, 1]       # now box 2 (class 3) comes first
    # areas are compared in pixels: 10 x 12 and 12 x 10 tie on a non-square image too
    tie = [[2, 2, 12, 14], [1, 3, 13, 13]]
    for first in (0, 1):
        enc = encode_yolo_targets([target(tie[first:] + tie[:first], [1 + first, 2 - first])], 4, 2, (64, 96))
        assert enc[0, 0, 0, 5:].tolist() == ([1, 0] if first == 0 else [0, 1])


def test_centres_on_cell_lines_and_on_the_image_edge():
    # centre (16, 32) lies on the lines x = 16 and y = 32: it belongs to the cell right / below
    enc = encode_yolo_targets([target([[12, 28, 20, 36]], [1])], 4, 1, 64)
    assert enc[0, 2, 1, 4] == 1 and enc[0, 2, 1, :2].tolist() == [0.0, 0.0]
    # a zero-width, zero-height box at the bottom-right corner: last cell, offset 1
    enc = encode_yolo_targets([target([[64, 64, 64, 64]], [1])], 4, 1, 64)
    assert enc[0, 3, 3].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    # non-square image 64 (h) x 96 (w), 4 x 4 grid: cells are 24 px wide, 16 px high
    enc = encode_yolo_targets([target([[30, 10, 54, 42]], [1])], 4, 1, (64, 96))   # centre (42, 26)
    torch.testing.assert_close(enc[0, 1, 1], torch.tensor([18 / 24, 10 / 16, 24 / 96, 32 / 64, 1, 1]))


def test_offsets_lie_in_the_unit_square_on_random_boxes():
    g = torch.Generator().manual_seed(7)
    targets = random_scene(g, 20, 7, 3, 112, max_boxes=10)
    enc = encode_yolo_targets(targets, 7, 3, 112)
    obj = enc[..., 4] == 1
    assert ((enc[..., :2][obj] >= 0) & (enc[..., :2][obj] < 1)).all()
    assert (enc[..., 5:][obj].sum(-1) == 1).all() and (enc[..., 5:][~obj] == 0).all()
    kept = int(obj.sum())
    assert 0 < kept <= sum(len(t["labels"]) for t in targets)
    # decoding the encoded boxes gives back the surviving ground-truth boxes
    decoded = yolo_boxes(enc[..., :4], 112)[obj]
    truth = torch.cat([t["boxes"] for t in targets]).float()
    assert (torchvision.ops.box_iou(decoded, truth).max(dim=1).values > 1 - 1e-5).all()


# -- decoding -----------------------------------------------------------------------------------
def perfect_predictions(enc, boxes_per_cell=2, slot=0):
    N, S_, _, D = enc.shape
    classes = D - 5
    P = torch.zeros(N, S_, S_, 5 * boxes_per_cell + classes, dtype=enc.dtype)
    P[..., 5 * slot:5 * slot + 4] = enc[..., :4]
    P[..., 5 * slot + 4] = enc[..., 4]
    P[..., 5 * boxes_per_cell:] = enc[..., 5:]
    return P


def test_round_trip_encode_perfect_predictions_decode_map_one():
    g = torch.Generator().manual_seed(3)
    grid, classes, size = 6, 3, 96
    targets = []
    while len(targets) < 5:                                  # centres in distinct cells
        t = random_scene(g, 1, grid, classes, size, max_boxes=5)[0]
        t["boxes"] = t["boxes"].float()
        centres = ((t["boxes"][:, :2] + t["boxes"][:, 2:]) / 2 // (size / grid)).tolist()
        if len(set(map(tuple, centres))) == len(centres):
            targets.append(t)
    enc = encode_yolo_targets(targets, grid, classes, size)
    for slot in (0, 1):
        out = decode_yolo(perfect_predictions(enc, slot=slot), classes, size)
        for det, t in zip(out, targets):
            assert len(det["boxes"]) == len(t["boxes"])
            order = torch.argsort(det["boxes"][:, 0] * 1000 + det["boxes"][:, 1])
            truth = torch.argsort(t["boxes"][:, 0] * 1000 + t["boxes"][:, 1])
            torch.testing.assert_close(det["boxes"][order], t["boxes"][truth], atol=1e-5, rtol=0)
            assert torch.equal(det["labels"][order], t["labels"][truth])
            assert det["labels"].dtype == torch.int64 and (det["scores"] == 1).all()
        assert mean_average_precision(out, targets)["map"].item() == pytest.approx(1.0)


def test_class_specific_scores_threshold_and_nms():
    P = torch.zeros(1, 2, 2, 5 * 2 + 2)
    # cell (0, 0), predictor 1: a 32 x 32 box centred at (16, 16), confidence 0.8;
    # Pr(class | object) = (0.25, 0.75) -> two detections: 0.6 (label 2) and 0.2 (label 1)
    P[0, 0, 0, :5] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.8])
    P[0, 0, 0, 10:] = torch.tensor([0.25, 0.75])
    # predictor 2 of the same cell: the same size centred at (20, 16), IoU 28/36 = 0.78 with the
    # first; confidence 0.5 -> 0.375 (label 2) and 0.125 (label 1), each suppressed by the box
    # of ITS class (the 0.2 box of label 1 survives the 0.6 box of label 2: other class)
    P[0, 0, 0, 5:10] = torch.tensor([0.625, 0.5, 0.5, 0.5, 0.5])
    det = decode_yolo(P, 2, 64)[0]
    assert det["labels"].tolist() == [2, 1]
    torch.testing.assert_close(det["scores"], torch.tensor([0.6, 0.2]))
    torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 2))
    loose = decode_yolo(P, 2, 64, nms_thresh=0.8)[0]          # 0.78 < 0.8: nothing suppressed
    assert loose["scores"].tolist() == pytest.approx([0.6, 0.375, 0.2, 0.125])
    assert loose["labels"].tolist() == [2, 2, 1, 1]
    torch.testing.assert_close(loose["boxes"][1], torch.tensor([4.0, 0.0, 36.0, 32.0]))
    assert decode_yolo(P, 2, 64, nms_thresh=0.8, score_thresh=0.2)[0]["scores"].tolist() == \
        pytest.approx([0.6, 0.375])                           # strictly above the threshold
    assert decode_yolo(P, 2, 64, nms_thresh=0.8, detections_per_img=3)[0]["scores"].tolist() == \
        pytest.approx([0.6, 0.375, 0.2])
    # clipped to each image's own size
    small = decode_yolo(P, 2, 64, image_sizes=[(20, 24)])[0]
    assert small["boxes"][0].tolist() == [0.0, 0.0, 24.0, 20.0]


def test_decode_matches_a_loop_with_torchvision_nms():
    g = torch.Generator().manual_seed(11)
    grid, boxes, classes, size = 4, 2, 3, 64
    P = random_predictions(g, 3, grid, boxes, classes).float()
    got = decode_yolo(P, classes, size, score_thresh=0.1, nms_thresh=0.4, detections_per_img=7)
    cell = size / grid
    for n, det in enumerate(got):
        cand, scores, labels = [], [], []
        for i in range(grid):
            for j in range(grid):
                for b in range(boxes):
                    x, y, w, h, conf = P[n, i, j, 5 * b:5 * b + 5].tolist()
                    cx, cy = (j + x) * cell, (i + y) * cell
                    box = [min(max(v, 0.0), size) for v in (cx - w * size / 2, cy - h * size / 2,
                                                           cx + w * size / 2, cy + h * size / 2)]
                    for c in range(classes):
                        score = conf * P[n, i, j, 5 * boxes + c].item()
                        if score > 0.1:
                            cand.append(box), scores.append(score), labels.append(c + 1)
        cand, scores, labels = torch.tensor(cand), torch.tensor(scores), torch.tensor(labels)
        keep = torchvision.ops.batched_nms(cand, scores, labels, 0.4)[:7]
        torch.testing.assert_close(det["scores"], scores[keep])
        torch.testing.assert_close(det["boxes"], cand[keep], atol=1e-4, rtol=0)
        assert torch.equal(det["labels"], labels[keep])


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="must divide the image size"):
        encode_yolo_targets(HAND_TARGETS, 5, C, SIZE)
    with pytest.raises(ValueError, match="must divide the image size"):
        YOLOv1(torch.nn.Identity(), 2, image_size=(64, 60), grid_size=8)
    with pytest.raises(ValueError, match="not inside the 64 x 64 image"):
        encode_yolo_targets([target([[50, 50, 70, 60]], [1])], 2, 1, 64)
    with pytest.raises(ValueError, match="not inside"):
        encode_yolo_targets([target([[-1, 0, 10, 10]], [1])], 2, 1, 64)
    with pytest.raises(ValueError, match=r"1\.\.2"):
        encode_yolo_targets([target([[0, 0, 10, 10]], [0])], 2, 2, 64)      # 0 is the background
    with pytest.raises(ValueError, match=r"1\.\.2"):
        encode_yolo_targets([target([[0, 0, 10, 10]], [3])], 2, 2, 64)
    with pytest.raises(TypeError, match="list of dicts"):
        encode_yolo_targets(HAND_TARGETS[0], 2, 2, 64)
    with pytest.raises(ValueError, match="image_size"):
        encode_yolo_targets(HAND_TARGETS, 2, 2, (64,))
    P, T = hand_predictions(), hand_targets()
    with pytest.raises(TypeError, match="encode the list of dicts first"):
        yolo_loss(P, HAND_TARGETS)
    with pytest.raises(ValueError, match=r"\[N, S, S\]"):
        yolo_loss(P[:1], T)
    with pytest.raises(ValueError, match="not 5B \\+ C"):
        yolo_loss(P[..., :-1], T)
    with pytest.raises(TypeError, match="floating-point"):
        yolo_loss(P.long(), T)
    with pytest.raises(ValueError, match="an S x S grid"):
        yolo_loss(P[:, :1], T)
    negative = P.clone()
    negative[0, 0, 0, 2] = -0.1
    with pytest.raises(ValueError, match="apply the head's activation"):
        yolo_loss(negative, T)
    with pytest.raises(ValueError, match="non-negative"):
        yolo_loss(P, T, lambda_coord=-1.0)
    with pytest.raises(ValueError, match="not 5B \\+ C"):
        decode_yolo(P, 3, SIZE)
    with pytest.raises(ValueError, match="one \\(height, width\\) per image"):
        decode_yolo(P, C, SIZE, image_sizes=[(64, 64)])


# -- the model ----------------------------------------------------------------------------------
def small_model(**kw):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, 2, 1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU())
    net.out_channels = 16
    return YOLOv1(net, 4, image_size=64, grid_size=8, **kw)


@pytest.mark.parametrize("head", ["conv", "fc"])
def test_model_train_and_eval_interfaces(head):
    model = small_model(head=head, hidden=32)
    images = [torch.rand(1, 64, 64), torch.rand(1, 48, 56)]           # the second one is padded
    targets = [target([[4, 4, 20, 30], [30, 30, 60, 60]], [1, 4]), target([], [])]
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
        grid = model.predict_grid(torch.rand(3, 1, 64, 64))             # a batch tensor works too
    assert grid.shape == (3, 8, 8, 5 * 2 + 4)
    assert ((grid[..., :10] > 0) & (grid[..., :10] < 1)).all()
    torch.testing.assert_close(grid[..., 10:].sum(-1), torch.ones(3, 8, 8))
    assert len(out) == 2
    for det, (h, w) in zip(out, [(64, 64), (48, 56)]):
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert det["boxes"].shape == (len(det["scores"]), 4) == (len(det["labels"]), 4)
        assert len(det["scores"]) <= 100 and (det["scores"] > 0.05).all()
        if len(det["labels"]):
            assert det["labels"].min() >= 1 and det["labels"].max() <= 4
            assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all()


def test_model_bad_input():
    model = small_model().train()
    with pytest.raises(ValueError, match="needs targets"):
        model([torch.rand(1, 64, 64)])
    with pytest.raises(ValueError, match="at most 64 x 64"):
        model([torch.rand(1, 80, 64)], [target([], [])])
    with pytest.raises(ValueError, match=r"1\.\.4"):
        model([torch.rand(1, 64, 64)], [target([[0, 0, 5, 5]], [5])])
    with pytest.raises(TypeError, match="floating-point"):
        model([torch.zeros(1, 64, 64, dtype=torch.uint8)], [target([], [])])
    with pytest.raises(ValueError, match="kind must be"):
        small_model(head="mlp")
    with pytest.raises(ValueError, match="num_classes"):
        YOLOv1(torch.nn.Identity(), 0, image_size=64)


def test_training_on_lesion_phantoms_lowers_the_loss():
    from dlmi.data.lesions import LesionDataset

    data = LesionDataset("train", n=8, size=64, seed=0, classes=("cardiomegaly", "effusion", "mass", "nodule"),
                         p_empty=0.0)
    images = [data[i][0] for i in range(len(data))]
    targets = [data[i][1] for i in range(len(data))]
    model = small_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(100):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.25 * history[0], history[::10]           # 4.8 -> 0.6 when written
    model.eval()
    with torch.no_grad():
        result = mean_average_precision(model(images), targets, iou_thresholds=[0.5])
    assert result["map_50"] > 0.5                 # it has learnt the training boxes (0.90 when written)


def test_lecture_builder_adds_yolo_after_the_unit_10_models():
    from dlmi.detect.pretrained import CONFIG, MODELS, build, lesion_data

    assert MODELS == ("rcnn", "fast_rcnn", "faster_rcnn", "torchvision", "yolo")
    model = build("yolo")
    assert isinstance(model, YOLOv1) and model.num_classes == len(CONFIG["data"]["classes"])
    assert model.grid_size == 12 and model.image_size == (96, 96)
    image, target = lesion_data("train", n=2)[1]
    losses = model.train()([image], [target])
    assert torch.isfinite(sum(losses.values()))
    assert build("yolo", num_classes=3).num_classes == 2          # num_classes counts the background
