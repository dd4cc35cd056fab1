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
