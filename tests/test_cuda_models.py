"""The lectures' trained models on a CUDA device give the CPU's answers, and train there.

The unit tests of each op already compare CUDA with CPU (``-m cuda``); these check the whole
models the lectures load (``map_location=device``) and train (``train_detector``,
``train_model``), so a tensor left on the CPU anywhere in a forward or backward pass fails here
rather than in a student's Colab session. Skipped without a CUDA device (see conftest.py).
"""
import math

import pytest
import torch

from dlmi.detect import mean_average_precision

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


def _on_cuda(model):
    return all(p.device.type == "cuda" for p in model.parameters())


@pytest.mark.parametrize("name", ["rcnn", "fast_rcnn", "faster_rcnn", "torchvision", "yolo"])
def test_shipped_detectors_give_the_cpu_answer_on_cuda(name):
    from dlmi.detect.pretrained import lesion_data, load_pretrained

    test = lesion_data("test", n=12)
    images, targets = [test[i][0] for i in range(len(test))], [test[i][1] for i in range(len(test))]
    cpu, gpu = load_pretrained(name), load_pretrained(name, map_location=CUDA)
    assert _on_cuda(gpu), "load_pretrained(map_location='cuda') must return a model on the GPU"
    with torch.no_grad():
        on_cpu = [cpu([im])[0] for im in images]
        on_gpu = [gpu([im.to(CUDA)])[0] for im in images]
    assert all(v.device.type == "cuda" for p in on_gpu for v in p.values())
    on_gpu = [{k: v.cpu() for k, v in p.items()} for p in on_gpu]
    # Float sums differ in the last bits between devices, so a near-tie in NMS may keep another box:
    # compare what matters (the top detection of each image and the mAP), not every box.
    for a, b in zip(on_cpu, on_gpu):
        if len(a["scores"]) and len(b["scores"]):
            torch.testing.assert_close(b["scores"][0], a["scores"][0], atol=1e-3, rtol=1e-3)
            torch.testing.assert_close(b["boxes"][0], a["boxes"][0], atol=0.05, rtol=0)
    map_cpu = mean_average_precision(on_cpu, targets)["map_50"]
    map_gpu = mean_average_precision(on_gpu, targets)["map_50"]
    assert abs(map_cpu - map_gpu) < 0.01, (map_cpu, map_gpu)


@pytest.mark.parametrize("name", ["fast_rcnn", "faster_rcnn", "torchvision", "yolo"])
def test_detectors_train_on_cuda(name):
    from dlmi.detect.pretrained import build, lesion_data, precompute_proposals, train_detector

    data = lesion_data("train", n=16)
    model = build(name).to(CUDA)
    proposals = precompute_proposals(model, data) if name == "fast_rcnn" else None
    before = [p.detach().clone() for p in model.parameters()]
    losses = train_detector(model, data, epochs=2, batch_size=8, proposals=proposals)
    assert all(math.isfinite(x) for x in losses), losses
    assert _on_cuda(model)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_ct_detector_gives_the_cpu_answer_on_cuda():
    from dlmi.detect.ct_detection import ct_data, detect_volume, load_ct_detector

    volume = ct_data("test", n_volumes=1).volumes[0]
    cpu, gpu = load_ct_detector("ct_multislice"), load_ct_detector("ct_multislice", map_location=CUDA)
    assert _on_cuda(gpu)
    with torch.no_grad():
        a, b = detect_volume(cpu, volume), detect_volume(gpu, volume)
    assert len(a) == len(b) == volume.shape[0]
    top_a = torch.sort(torch.cat([p["scores"] for p in a]), descending=True).values[:10]
    top_b = torch.sort(torch.cat([p["scores"] for p in b]), descending=True).values[:10]
    torch.testing.assert_close(top_b, top_a, atol=1e-3, rtol=1e-3)


def test_ct_detector_trains_on_cuda():
    from dlmi.detect.ct_detection import build_ct_detector, ct_data, train_ct_detector

    model = build_ct_detector().to(CUDA)
    history = train_ct_detector(model, ct_data("train", n_volumes=2), epochs=1, batch_size=8, steps_per_epoch=3)
    assert _on_cuda(model) and math.isfinite(history.last())


@pytest.mark.parametrize("name", ["captioning", "hierarchical"])
def test_report_generators_on_cuda(name):
    from dlmi.data.cxr import CXRReportDataset
    from dlmi.seq.report_generation import CONFIG, evaluate_model, load_pretrained, train_model

    model, vocab = load_pretrained(name, map_location=CUDA)
    assert _on_cuda(model)
    cpu_model, _ = load_pretrained(name)
    d = CONFIG["data"]
    train = CXRReportDataset(32, size=d["size"], seed=d["train_seed"])
    test = CXRReportDataset(24, size=d["size"], seed=d["test_seed"], bank=train.bank)
    with torch.no_grad():
        f1_gpu = evaluate_model(name, model, vocab, test)["f1"]
        f1_cpu = evaluate_model(name, cpu_model, vocab, test)["f1"]
    assert abs(f1_gpu - f1_cpu) < 0.05, (f1_cpu, f1_gpu)
    trained, history = train_model(name, train, vocab, epochs=1, device=CUDA)
    assert _on_cuda(trained) and math.isfinite(history.last())
