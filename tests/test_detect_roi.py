"""dlmi.detect.roi_align / roi_pool against torchvision.ops: values and gradients (float64), all
options (aligned, sampling ratios incl. adaptive, spatial scales, box formats), odd RoIs."""
import pytest
import torch

torchvision_ops = pytest.importorskip("torchvision.ops")

from dlmi.detect import RoIAlign, RoIPool, roi_align, roi_pool  # noqa: E402



def make_rois(k, batch, generator, extent=80.0, dtype=torch.float64):
    """Boxes of every kind: inside, across the border, outside, tiny, zero-size."""
    corner = torch.rand(k, 2, generator=generator, dtype=torch.float64) * extent * 1.2 - extent * 0.2
    size = torch.rand(k, 2, generator=generator, dtype=torch.float64) ** 2 * extent * 0.8
    size[: k // 8] = 0.0
    rois = torch.cat([torch.randint(0, batch, (k, 1), generator=generator).double(), corner, corner + size], 1)
    return rois.to(dtype)


def upstream_gradient(output, seed):
    return torch.randn(output.shape, generator=torch.Generator().manual_seed(seed), dtype=output.dtype)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 4])
@pytest.mark.parametrize("spatial_scale, output_size", [(1.0, 7), (0.5, (3, 5)), (0.25, (6, 4))])
def test_roi_align_values_and_gradients_equal_torchvision(aligned, sampling_ratio, spatial_scale, output_size):
    g = torch.Generator().manual_seed(sampling_ratio + 10 * int(aligned) + int(100 * spatial_scale))
    size = int(80 * spatial_scale)
    features = torch.randn(2, 3, size, size + 3, generator=g, dtype=torch.float64, requires_grad=True)
    rois = make_rois(40, 2, g)
    ours = roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    theirs = torchvision_ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    weights = upstream_gradient(ours, 1)
    ours_grad, = torch.autograd.grad(ours, features, weights)
    theirs_grad, = torch.autograd.grad(theirs, features, weights)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-12, atol=1e-12)


def test_roi_align_float32_list_boxes_and_module():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(3, 4, 20, 20, generator=g)
    rois = make_rois(30, 3, g, dtype=torch.float32)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(3)]
    expected = torchvision_ops.roi_align(features, boxes, 5, 0.25, 2, True)
    torch.testing.assert_close(roi_align(features, boxes, 5, 0.25, 2, True), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(RoIAlign(5, 0.25, 2, True)(features, boxes), expected, rtol=1e-5, atol=1e-5)
    # rois of a float64 tensor with float32 features are converted, as are those of a list
    torch.testing.assert_close(roi_align(features, rois.double(), 5, 0.25, 2, True),
                               torchvision_ops.roi_align(features, rois, 5, 0.25, 2, True), rtol=1e-5, atol=1e-5)


def test_roi_align_large_adaptive_grid():
    # A RoI covering the whole map with adaptive sampling: 30 x 30 points per bin.
    features = torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    rois = torch.tensor([[0.0, -4.0, -4.0, 66.0, 66.0], [0.0, 10.0, 12.0, 11.0, 13.0],
                         [0.0, -500.0, -700.0, 1500.0, 900.0]], dtype=torch.float64)   # 1000 x 800 points
    torch.testing.assert_close(roi_align(features, rois, 2), torchvision_ops.roi_align(features, rois, 2))


def test_roi_align_of_a_linear_ramp_is_exact():
    # Bilinear interpolation reproduces a linear function: bin averages are the bin centres.
    ramp = torch.arange(10, dtype=torch.float64).repeat(10, 1)[None, None]       # value = x
    out = roi_align(ramp, torch.tensor([[0.0, 2.0, 2.0, 6.0, 6.0]], dtype=torch.float64), 2, aligned=True)
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 4.5], [2.5, 4.5]], dtype=torch.float64))


@pytest.mark.parametrize("spatial_scale, output_size", [(1.0, 7), (0.5, (3, 5)), (0.3, (4, 2))])
@pytest.mark.parametrize("ties", [False, True])
def test_roi_pool_values_and_gradients_equal_torchvision(spatial_scale, output_size, ties):
    g = torch.Generator().manual_seed(int(spatial_scale * 10) + ties)
    size = int(80 * spatial_scale)
    features = torch.randn(2, 3, size, size + 2, generator=g, dtype=torch.float64)
    if ties:   # many equal values per bin (like ReLU zeros): the first maximum gets the gradient
        features = features.clamp(min=0).round()
    features.requires_grad_()
    rois = make_rois(40, 2, g)
    ours = roi_pool(features, rois, output_size, spatial_scale)
    theirs = torchvision_ops.roi_pool(features, rois, output_size, spatial_scale)
    assert torch.equal(ours, theirs)
    weights = upstream_gradient(ours, 2)
    ours_grad, = torch.autograd.grad(ours, features, weights)
    theirs_grad, = torch.autograd.grad(theirs, features, weights)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-12, atol=1e-12)
    with torch.no_grad():    # the faster path without argmax gives the same values
        assert torch.equal(roi_pool(features, rois, output_size, spatial_scale), theirs)


def test_roi_pool_rounds_halves_away_from_zero():
    features = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    rois = torch.tensor([[0.0, 0.5, 0.5, 2.5, 2.5], [0.0, 1.5, 1.5, 4.5, 4.5], [0.0, 2.5, 0.0, 5.5, 3.0]])
    expected = torchvision_ops.roi_pool(features, rois, 2, 1.0)
    assert torch.equal(roi_pool(features, rois, 2, 1.0), expected)
    assert torch.equal(RoIPool((2, 2), 1.0)(features, [rois[:, 1:]]), expected)


def test_empty_rois_give_empty_output():
    features = torch.randn(2, 3, 8, 8)
    for op in (roi_align, roi_pool):
        assert op(features, torch.zeros(0, 5), (2, 3)).shape == (0, 3, 2, 3)
        assert op(features, [torch.zeros(0, 4), torch.zeros(0, 4)], 2).shape == (0, 3, 2, 2)


@pytest.mark.parametrize("call, error, words", [
    (lambda f, r: roi_align(f[0], r, 2), ValueError, "Tensor[N, C, H, W]"),
    (lambda f, r: roi_pool(f.long(), r, 2), TypeError, "floating-point"),
    (lambda f, r: roi_align(f, r[:, 1:], 2), ValueError, "[K, 5]"),
    (lambda f, r: roi_align(f, r.long(), 2), TypeError, "floating-point"),
    (lambda f, r: roi_align(f, "boxes", 2), TypeError, "Tensor[K, 5]"),
    (lambda f, r: roi_pool(f, torch.tensor([[2.0, 0, 0, 4, 4]]), 2), ValueError, "batch indices 0..1"),
    (lambda f, r: roi_pool(f, torch.tensor([[0.5, 0, 0, 4, 4]]), 2), ValueError, "batch indices"),
    (lambda f, r: roi_align(f, torch.tensor([[0.0, 4, 0, 0, 4]]), 2), ValueError, "x1 <= x2"),
    (lambda f, r: roi_align(f, torch.tensor([[0.0, 0, 0, float("nan"), 4]]), 2), ValueError, "finite"),
    (lambda f, r: roi_align(f, [r[:, 1:]] * 3, 2), ValueError, "batch of 2"),
    (lambda f, r: roi_align(f, [r[:, 1:3]], 2), ValueError, "[N, 4]"),
    (lambda f, r: roi_align(f, r, 0), ValueError, "positive"),
    (lambda f, r: roi_align(f, r, (2, 2, 2)), TypeError, "output_size"),
    (lambda f, r: roi_align(f, r, 2.5), TypeError, "output_size"),
    (lambda f, r: roi_align(f, r, 2, spatial_scale=0.0), ValueError, "spatial_scale"),
    (lambda f, r: roi_align(f, r, 2, sampling_ratio=2.0), TypeError, "sampling_ratio"),
    (lambda f, r: roi_align(f, r, 2, aligned=1), TypeError, "aligned"),
])
def test_bad_input(call, error, words):
    features = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0.0, 1.0, 1.0, 5.0, 5.0], [1.0, 0.0, 2.0, 3.0, 7.0]])
    with pytest.raises(error) as info:
        call(features, rois)
    assert words in str(info.value)


@pytest.mark.cuda
def test_roi_ops_on_cuda_match_torchvision():
    g = torch.Generator().manual_seed(9)
    features = torch.randn(2, 8, 20, 20, generator=g)
    rois = make_rois(50, 2, g, dtype=torch.float32)
    for aligned in (False, True):
        ours = roi_align(features.cuda(), rois.cuda(), 7, 0.25, -1, aligned)
        assert ours.device.type == "cuda"
        torch.testing.assert_close(ours.cpu(), torchvision_ops.roi_align(features, rois, 7, 0.25, -1, aligned),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(roi_pool(features.cuda(), rois.cuda(), 7, 0.25).cpu(),
                               torchvision_ops.roi_pool(features, rois, 7, 0.25))
