import nbformat
import pytest
import torch
from torch.autograd import grad as aliased_grad

import dlmi
import dlmi.rnn.recurrence
from dlmi.course.execute import headline_results
from dlmi.results import MIME
from dlmi.rnn import rnn_bptt as aliased_reference
from dlmi.testing import forbid, forbid_autograd


def test_show_result_formats_and_prints(capsys):
    assert dlmi.show_result("final loss", torch.tensor(0.0123456)) == "RESULT final loss: 0.0123"
    assert dlmi.show_result("tiny", 1.5e-9) == "RESULT tiny: 1.500e-09"
    assert dlmi.show_result("count", 12, unit="reports") == "RESULT count: 12 reports"
    assert "RESULT final loss: 0.0123" in capsys.readouterr().out
    with pytest.raises(TypeError, match="non-empty string"):
        dlmi.show_result("", 1)


def test_headline_results_read_both_output_forms():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "x", MIME: {"name": "mAP", "value": "0.5"}}),
                    nbformat.v4.new_output("stream", name="stdout", text="noise\nRESULT BLEU-4: 0.21\n")]
    nb.cells = [cell]
    assert headline_results(nb) == [("mAP", "0.5"), ("BLEU-4", "0.21")]


def test_forbid_catches_aliases_and_restores():
    x = torch.ones(2, requires_grad=True)
    with forbid_autograd(), forbid(dlmi.rnn.recurrence.rnn_bptt):
        with pytest.raises(RuntimeError, match="forbidden call"):
            x.sum().backward()
        with pytest.raises(RuntimeError, match="forbidden call"):
            aliased_grad(x.sum(), x)
        with pytest.raises(RuntimeError, match="forbidden call"):
            aliased_reference(None, None, None, None, None)
    x.sum().backward()
    assert torch.equal(x.grad, torch.ones(2))
    with pytest.raises(TypeError, match="plain Python functions"):
        with forbid(len):
            pass


def test_draw_detections_draws_truth_and_confident_detections():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pytest
    import torch

    from dlmi.viz import draw_detections

    image = torch.rand(1, 32, 32)
    target = {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0]]), "labels": torch.tensor([1])}
    prediction = {"boxes": torch.tensor([[1.0, 2.0, 11.0, 12.0], [5.0, 5.0, 9.0, 9.0]]),
                  "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 2])}
    fig, ax = plt.subplots()
    draw_detections(ax, image, target, prediction, classes=("bg", "nodule", "mass"), min_score=0.5)
    colours = [p.get_edgecolor()[:3] for p in ax.patches]
    assert colours == [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]                  # one truth, one detection
    assert ax.patches[1].get_width() == 10.0 and ax.patches[1].get_height() == 10.0
    assert [t.get_text() for t in ax.texts] == ["nodul 0.90"]
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        draw_detections(ax, torch.rand(1, 1, 32, 32))
    plt.close(fig)
