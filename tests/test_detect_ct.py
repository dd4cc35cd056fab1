"""Faster R-CNN on CT (issue 8, part 2): slice stacks, the multi-scale multi-slice detector, FROC.

The U-Net's maps at every stride, the RPN at every level, RoI features that use every level,
the loss dict and a short training run, the 2-D baseline path, the per-volume evaluation, FROC
numbers by hand and against LUNA16's own formula (scikit-learn's ROC + ``np.interp``), and errors.
"""
import math

import numpy as np
import pytest
import torch
import torchvision

from dlmi.data.ct_detection import BalancedSliceSampler, CTSliceDataset, slice_stack, volume_stacks
from dlmi.detect import AnchorGenerator, FasterRCNN, RegionProposalNetwork, RPNHead
from dlmi.detect.ct_detection import (CHECKPOINTS, MODELS, AggregatedFasterRCNN, MultiScaleRoIPooler,
                                      SliceUNet, build_ct_detector, ct_data, detect_volume,
                                      evaluate_ct_detector, froc_targets, load_ct_detector, merge_detections,
                                      train_ct_detector)
from dlmi.detect.froc import (FP_RATES, candidate_hits, competition_performance_metric, froc, froc_curve,
                              match_candidates, sensitivity_at)


@pytest.fixture(scope="module")
def data():
    """Four small volumes (all with nodules), stacks of 5 slices."""
    return CTSliceDataset(4, seed=3, context=2, nodule_prob=1.0, slice_range=(16, 20))


def positive_batch(data, count=4):
    items = [data[i] for i in torch.where(data.positive)[0][:count].tolist()]
    return [x for x, _ in items], [t for _, t in items]


# -- slice stacks ----------------------------------------------------------------------------------
def test_slice_stacks_and_padding():
    volume = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 2, 2).clone()
    centre = slice_stack(volume, 3, 1)
    assert centre.shape == (3, 2, 2) and centre[:, 0, 0].tolist() == [2, 3, 4]
    assert slice_stack(volume, 0, 2)[:, 0, 0].tolist() == [0, 0, 0, 1, 2]          # edge: repeat
    assert slice_stack(volume, 5, 2)[:, 0, 0].tolist() == [3, 4, 5, 5, 5]
    assert slice_stack(volume + 1, 0, 2, "zeros")[:, 0, 0].tolist() == [0, 0, 1, 2, 3]
    assert slice_stack(volume[:, None], -1, 0)[:, 0, 0].tolist() == [5]            # [D, 1, H, W], negative index
    stacks = volume_stacks(volume, 2)
    assert stacks.shape == (6, 5, 2, 2)
    assert torch.equal(stacks[4], slice_stack(volume, 4, 2))
    # A volume thinner than the stack: edge padding still defines it; padding=None refuses.
    thin = volume[:2]
    assert slice_stack(thin, 1, 2)[:, 0, 0].tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="runs past a volume of 2 slices"):
        slice_stack(thin, 1, 2, padding=None)
    with pytest.raises(ValueError, match="padding"):
        slice_stack(volume, 1, 1, padding="reflect")
    with pytest.raises(ValueError, match="context"):
        slice_stack(volume, 1, -1)
    with pytest.raises(IndexError):
        slice_stack(volume, 6, 1)
    with pytest.raises(ValueError, match=r"\[D, H, W\]"):
        slice_stack(volume[0], 0, 1)
    with pytest.raises(TypeError, match="floating"):
        slice_stack(volume.long(), 0, 1)


def test_slice_dataset_items_targets_and_balance(data):
    assert len(data) == sum(v.shape[0] for v in data.volumes)
    stack, target = data[0]
    assert stack.shape == (5, 64, 64) and stack.dtype == torch.float32 and 0 <= stack.min() <= stack.max() <= 1
    v, k = data.index[0].tolist()
    assert torch.equal(stack, slice_stack(data.volumes[v], k, 2))
    for i in range(len(data)):                       # targets are the truth's boxes of the centre slice
        v, k = data.index[i].tolist()
        boxes = data.truths[v]["slice_boxes"][k]
        assert bool(data.positive[i]) == (len(boxes) > 0)
    empty = data[int(torch.where(~data.positive)[0][0])][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    full = data[int(torch.where(data.positive)[0][0])][1]
    assert full["labels"].tolist() == [1] * len(full["boxes"])
    chosen = data.balanced_indices(2.0, seed=0)
    positives = int(data.positive.sum())
    assert len(chosen) == 3 * positives and int(data.positive[chosen].sum()) == positives
    assert data.balanced_indices(2.0, seed=1) != chosen
    sampler = BalancedSliceSampler(data, 1.0, seed=0)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 2 * positives and first != second     # new negatives, new order
    strict = CTSliceDataset(2, seed=3, context=2, padding=None, slice_range=(16, 20))
    assert all(2 <= k < strict.volumes[v].shape[0] - 2 for v, k in strict.index.tolist())
    with pytest.raises(ValueError, match="no slice"):
        CTSliceDataset(1, context=3, padding=None, n_slices=5)
    with pytest.raises(ValueError, match="negatives_per_positive"):
        data.balanced_indices(-1)


# -- the model ------------------------------------------------------------------------------------
def test_unet_maps_at_every_stride():
    net = SliceUNet(5, out_channels=24)
    maps = net(torch.rand(2, 5, 64, 64))
    assert list(maps) == ["p2", "p4", "p8"]
    assert [tuple(m.shape) for m in maps.values()] == [(2, 24, 32, 32), (2, 24, 16, 16), (2, 24, 8, 8)]
    single = SliceUNet(1, strides=(4,))
    assert [tuple(m.shape) for m in single(torch.rand(1, 1, 48, 64)).values()] == [(1, 32, 12, 16)]
    assert single.up2 is None                        # the decoder stops at the finest map asked for
    with pytest.raises(ValueError, match=r"\[N, 5, H, W\]"):
        net(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="strides"):
        SliceUNet(5, strides=(16,))


def test_multiscale_roi_pool_equals_torchvision_per_level():
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(2, 3, 64 // s, 64 // s, generator=g) for s in (2, 4, 8)]
    boxes = [torch.tensor([[10.0, 12.0, 16.0, 17.0], [30.0, 5.0, 33.5, 9.0]]), torch.tensor([[40.0, 40.0, 44.0, 46.0]])]
    pooled = MultiScaleRoIPooler(5)(maps, boxes, (2, 5, 64, 64))
    want = torch.cat([torchvision.ops.roi_align(m, boxes, 5, 1 / s, 2) for m, s in zip(maps, (2, 4, 8))], dim=1)
    assert pooled.shape == (3, 9, 5, 5)
    torch.testing.assert_close(pooled, want, atol=1e-5, rtol=1e-5)
    summed = MultiScaleRoIPooler(5, aggregate="sum")(maps, boxes, (2, 5, 64, 64))
    torch.testing.assert_close(summed, want.reshape(3, 3, 3, 5, 5).sum(1), atol=1e-5, rtol=1e-5)
    single = MultiScaleRoIPooler(5)(maps[1], boxes, (2, 5, 64, 64))    # one map, as the 2-D baseline has
    torch.testing.assert_close(single, want[:, 3:6], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="aggregate"):
        MultiScaleRoIPooler(5, aggregate="max")


def test_rpn_proposes_from_every_level():
    """Per-level top-n: a coarse level whose anchors all score lower still gets proposals."""
    anchors = AnchorGenerator(((4,), (16,)), ((1.0,),) * 2)
    rpn = RegionProposalNetwork(anchors, RPNHead(4, 1), pre_nms_top_n=1, post_nms_top_n=10).eval()
    fine, coarse = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 2, 2)
    level_anchors = anchors(torch.zeros(1, 1, 16, 16), [fine, coarse])
    objectness = torch.cat([torch.linspace(5, 6, 64), torch.linspace(0, 1, 4)])[None]
    boxes, _ = rpn.select_proposals(level_anchors, objectness, torch.zeros(1, 68, 4), [(16, 16)], [64, 4])
    assert torch.equal(boxes[0], torch.cat([level_anchors[0][63:64], level_anchors[0][67:68]]).clamp(0, 16))
    one, _ = rpn.select_proposals(level_anchors, objectness, torch.zeros(1, 68, 4), [(16, 16)])
    assert len(one[0]) == 1                          # without levels: the single best anchor overall
    proposals, losses = rpn(torch.zeros(1, 1, 16, 16), [(16, 16)], [fine, coarse])
    assert len(proposals) == 1 and losses == {}
    with pytest.raises(ValueError, match="anchors per location"):
        RegionProposalNetwork(anchors, RPNHead(4, 3))(torch.zeros(1, 1, 16, 16), [(16, 16)], [fine, coarse])


def test_aggregated_roi_features_use_every_scale(data):
    torch.manual_seed(0)
    model = build_ct_detector(2, multiscale=True).eval()
    stacks, _ = positive_batch(data, 2)
    features = list(model.backbone(torch.stack(stacks)).values())
    boxes = [torch.tensor([[20.0, 20.0, 26.0, 25.0], [40.0, 30.0, 44.0, 34.0]])] * 2

    def logits(maps):
        with torch.no_grad():
            return model.roi_heads.box_predictor(model.roi_heads.box_head(
                model.roi_heads.box_roi_pool(maps, boxes, (2, 5, 64, 64))))[0]

    reference = logits(features)
    for level in range(3):
        zeroed = [torch.zeros_like(f) if i == level else f for i, f in enumerate(features)]
        assert not torch.allclose(logits(zeroed), reference), f"level {level} does not reach the classifier"


def test_losses_detections_and_the_2d_baseline(data):
    model = build_ct_detector(2, multiscale=True)
    assert isinstance(model, AggregatedFasterRCNN) and model.context == 2
    stacks, targets = positive_batch(data, 3)
    empty = data[int(torch.where(~data.positive)[0][0])]
    losses = model(stacks + [empty[0]], targets + [empty[1]])      # an empty target is background
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(torch.stack(stacks))
    assert len(out) == 3 and set(out[0]) == {"boxes", "scores", "labels"}
    assert all(p["boxes"].shape[1:] == (4,) and len(p["boxes"]) == len(p["scores"]) <= 20 for p in out)
    with pytest.raises(ValueError, match="5 channel"):
        model([s[:3] for s in stacks])

    baseline = build_ct_detector(0, multiscale=False)
    assert type(baseline) is FasterRCNN and baseline.context == 0     # dlmi's plain Faster R-CNN
    assert baseline.backbone.strides == (4,) and baseline.backbone.in_channels == 1
    centre = [s[2:3] for s in stacks]                                  # the centre slice only
    assert set(baseline(centre, targets)) == set(losses)
    baseline.eval()
    with torch.no_grad():
        assert len(baseline(centre)) == 3
    ablation = build_ct_detector(0, multiscale=True)
    assert ablation.context == 0 and ablation.backbone.in_channels == 1
    with pytest.raises(ValueError, match="context"):
        build_ct_detector(-1)
    with pytest.raises(ValueError, match="same number"):
        AggregatedFasterRCNN(SliceUNet(1), 2, rpn_anchor_generator=AnchorGenerator(((2,), (4, 6), (8,)), ((1.0,),) * 3))


def test_short_training_lowers_the_loss(data):
    torch.manual_seed(0)
    model = build_ct_detector(2, multiscale=True)
    stacks, targets = positive_batch(data, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(25):
        loss = sum(model(stacks, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(float(loss.detach()))
    assert np.mean(totals[-5:]) < 0.5 * np.mean(totals[:3]), totals


def test_train_helper_and_context_check(data):
    model = build_ct_detector(2, multiscale=False)
    history = train_ct_detector(model, data, epochs=1, batch_size=4, steps_per_epoch=2)
    assert set(history.train) >= {"loss", "loss_classifier"} and history.epochs == 1
    with pytest.raises(ValueError, match="stacks of 1 slices"):
        train_ct_detector(build_ct_detector(0, multiscale=False), data, epochs=1)


# -- per-volume evaluation -------------------------------------------------------------------------
def test_merge_detections_by_hand():
    def pred(boxes, scores):
        return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores), "labels": torch.ones(len(scores), dtype=torch.long)}

    slices = [pred([[8, 8, 12, 12]], [0.9]),                          # centre (10, 10), z 0.5
              pred([[9, 8, 13, 12], [28, 28, 32, 32]], [0.8, 0.7]),   # absorbed; a second candidate
              pred([], []), pred([], []), pred([], []),
              pred([[8, 8, 12, 12]], [0.6]),                          # same place, 5 slices away
              pred([[8, 8, 12, 12]], [0.95])]                          # best; absorbs slice 5 only
    merged = merge_detections(slices, z_radius=2, xy_radius=3)
    assert merged["scores"].tolist() == pytest.approx([0.95, 0.9, 0.7])
    assert merged["centers"].tolist() == [[6.5, 10, 10], [0.5, 10, 10], [1.5, 30, 30]]
    assert merged["slices"].tolist() == [6, 0, 1]
    assert len(merge_detections([pred([], [])] * 3)["scores"]) == 0
    assert merge_detections(slices, min_score=0.85)["scores"].tolist() == pytest.approx([0.95, 0.9])


def test_detect_and_evaluate_volumes(data):
    model = build_ct_detector(1, multiscale=True)
    small = CTSliceDataset(2, seed=5, context=1, slice_range=(16, 18), nodule_prob=1.0)
    per_slice = detect_volume(model, small.volumes[0])
    assert len(per_slice) == small.volumes[0].shape[0]
    result = evaluate_ct_detector(model, small)
    assert set(result["sensitivity_at"]) == set(FP_RATES)
    assert result["froc"]["n_scans"] == 2
    assert result["froc"]["n_nodules"] == sum(len(t["centers"]) for t in small.truths)
    assert 0 <= result["cpm"] <= 1 and 0 <= result["map_50"] <= 1 and result["slices_per_s"] > 0
    plain = FasterRCNN(SliceUNet(1, strides=(4,)), 2, size_divisible=8, rpn_pre_nms_top_n_test=50,
                       rpn_post_nms_top_n_test=20)
    with pytest.raises(ValueError, match="context"):
        detect_volume(plain, small.volumes[0])
    assert len(detect_volume(plain.eval(), small.volumes[0], context=0)) == small.volumes[0].shape[0]
    target = froc_targets(small.truths[0])
    assert torch.equal(target["radii"], small.truths[0]["radii"] + 0.5)


def test_shipped_checkpoints_load_and_the_multislice_model_wins():
    for name in MODELS:
        assert (CHECKPOINTS / f"{name}.pt").exists(), f"{name}.pt is not shipped: python -m dlmi.detect.ct_detection"
        assert (CHECKPOINTS / f"{name}.pt").stat().st_size < 2_000_000
        model = load_ct_detector(name)
        assert not model.training and model.context == MODELS[name]["context"]
    with pytest.raises(ValueError, match="name"):
        load_ct_detector("ct_3d")
    # The lecture's result on the first 10 of its 40 test volumes (CPM 0.77 vs 0.48 there; 0.81 vs 0.59 on all).
    test = ct_data("test", n_volumes=10)
    multi, flat = (evaluate_ct_detector(load_ct_detector(n), test) for n in ("ct_multislice", "ct_2d"))
    assert multi["cpm"] > flat["cpm"] + 0.15 and multi["map_50"] > flat["map_50"] + 0.15


# -- FROC --------------------------------------------------------------------------------------------
def two_scans():
    """Scan A: nodules at the origin (r 1) and at (10, 10, 10) (r 2); scan B: none."""
    predictions = [
        {"centers": torch.tensor([[0, 0, 0.5], [0, 0, 0], [5, 5, 5], [10, 11, 10]], dtype=torch.float32),
         "scores": torch.tensor([0.9, 0.8, 0.7, 0.6])},
        {"centers": torch.tensor([[1, 1, 1], [2, 2, 2]], dtype=torch.float32), "scores": torch.tensor([0.75, 0.6])},
    ]
    targets = [{"centers": torch.tensor([[0.0, 0, 0], [10, 10, 10]]), "radii": torch.tensor([1.0, 2.0])},
               {"centers": torch.zeros(0, 3), "radii": torch.zeros(0)}]
    return predictions, targets


def test_froc_by_hand():
    predictions, targets = two_scans()
    found, false = match_candidates(predictions[0]["centers"], predictions[0]["scores"], **targets[0])
    assert found.tolist() == pytest.approx([0.9, 0.6])    # the 0.8 hit on nodule 1 is ignored
    assert false.tolist() == pytest.approx([0.7])
    result = froc(predictions, targets)
    # Thresholds 0.9 | 0.75 | 0.7 | 0.6 (a nodule and a false positive tied: one step).
    assert result["fps"].tolist() == [0, 0, 0.5, 1.0, 1.5]
    assert result["sensitivity"].tolist() == [0, 0.5, 0.5, 0.5, 1.0]
    assert result["thresholds"][1:].tolist() == pytest.approx([0.9, 0.75, 0.7, 0.6])
    assert result["sensitivity_at"].tolist() == [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert result["cpm"] == pytest.approx(5 / 7)
    assert result["n_nodules"] == 2 and result["n_detected"] == 2 and result["n_scans"] == 2
    # Between points: linear (LUNA16) vs step.
    assert froc(predictions, targets, fp_rates=(1.25,))["sensitivity_at"].tolist() == [0.75]
    assert froc(predictions, targets, fp_rates=(1.25,), interpolation="step")["sensitivity_at"].tolist() == [0.5]
    assert competition_performance_metric(result["sensitivity_at"]) == pytest.approx(5 / 7)


def test_froc_edge_cases():
    predictions, targets = two_scans()
    none = [{"centers": torch.zeros(0, 3), "scores": torch.zeros(0)}] * 2
    result = froc(none, targets)                              # no detections: sensitivity 0
    assert result["fps"].tolist() == [0] and result["sensitivity"].tolist() == [0]
    assert result["sensitivity_at"].tolist() == [0] * 7 and result["cpm"] == 0 and result["n_detected"] == 0
    no_lesions = [targets[1], targets[1]]                     # no nodules: sensitivity undefined
    result = froc(predictions, no_lesions)
    assert result["fps"][-1] == 3.0 and math.isnan(result["cpm"]) and result["n_nodules"] == 0
    # A missed nodule still counts in the denominator; ties among false positives are one step.
    fps, sens, _ = froc_curve(torch.tensor([0.5, -math.inf]), torch.tensor([0.5, 0.5, 0.2]), n_scans=4)
    assert fps.tolist() == [0, 0.5, 0.75] and sens.tolist() == [0, 0.5, 0.5]
    # Hits: inclusive sphere, and an ellipsoid with one radius per axis.
    hits = candidate_hits(torch.tensor([[0.0, 0, 2], [0, 0, 2.01], [0, 3, 0]]), torch.zeros(1, 3),
                          torch.tensor([[1.0, 4.0, 2.0]]))
    assert hits[:, 0].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="one of each per scan"):
        froc(predictions, targets[:1])
    with pytest.raises(ValueError, match="n_scans"):
        froc_curve(torch.zeros(1), torch.zeros(0), 0)
    with pytest.raises(ValueError, match=r"\[P, 3\]"):
        froc([{"centers": torch.zeros(2, 2), "scores": torch.zeros(2)}], targets[:1])
    with pytest.raises(ValueError, match="scores"):
        froc([{"centers": torch.zeros(2, 3), "scores": torch.zeros(3)}], targets[:1])
    with pytest.raises(ValueError, match="radii"):
        candidate_hits(torch.zeros(1, 3), torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        candidate_hits(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1))
    with pytest.raises(ValueError, match="interpolation"):
        sensitivity_at(torch.zeros(1), torch.zeros(1), interpolation="cubic")
    with pytest.raises(ValueError, match="seven|7"):
        competition_performance_metric([0.5, 0.5])


def test_froc_matches_luna16_formula():
    """LUNA16's computeFROC: sklearn's ROC over (detected nodules, false positives), rescaled to
    FPs per scan and sensitivity, read with np.interp at the seven rates."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(20):
        n_scans, n_nodules = int(rng.integers(3, 12)), int(rng.integers(2, 15))
        detected = np.round(rng.random(int(rng.integers(1, n_nodules + 1))), 1)   # ties on purpose
        false = np.round(rng.random(int(rng.integers(1, 40))), 1)
        nodule_scores = torch.tensor(np.concatenate([detected, np.full(n_nodules - len(detected), -np.inf)]))
        fps, sens, _ = froc_curve(nodule_scores, torch.tensor(false), n_scans)
        labels = np.r_[np.ones(len(detected)), np.zeros(len(false))]
        fpr, tpr, _ = metrics.roc_curve(labels, np.r_[detected, false])
        luna_fps = fpr * len(false) / n_scans
        luna_sens = tpr * len(detected) / n_nodules
        want = np.interp(FP_RATES, luna_fps, luna_sens)
        got = sensitivity_at(fps, sens).numpy()
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"trial {trial}")
