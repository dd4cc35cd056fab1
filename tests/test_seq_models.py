"""dlmi.seq models: padded batches give each sequence's own result, heads behave, tiny batches overfit."""
import pytest
import torch

from dlmi.rnn import LSTM
from dlmi.seq import (
    EHRModel, Fixed3DCNN, SequenceClassifier, SequenceTagger, SliceSequenceClassifier, TimeAwareLSTM,
    collate_visits, masked_cross_entropy, next_visit_loss, next_visit_pairs, time_decay,
)

torch.set_num_threads(1)


def _ids(lengths, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    for b, n in enumerate(lengths):
        ids[b, n:] = 0
    return ids, torch.tensor(lengths)


@pytest.mark.parametrize("head", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_classifier_padded_batch_equals_each_sequence_alone(head, bidirectional, fused):
    torch.manual_seed(0)
    model = SequenceClassifier(20, 3, embed_dim=8, units=6, head=head, bidirectional=bidirectional,
                               cell="lstm" if bidirectional else "gru", fused=fused).double().eval()
    ids, lengths = _ids([5, 2, 7])
    batch = model(ids, lengths)
    attention = model.last_attention
    for b, n in enumerate(lengths.tolist()):
        alone = model(ids[b:b + 1, :n], torch.tensor([n]))
        assert torch.allclose(batch[b], alone[0], atol=1e-10), (head, bidirectional, b)
    if head == "attention":
        a = attention
        assert torch.allclose(a.sum(1), torch.ones(3, dtype=a.dtype)) and a[1, 2:].abs().sum() == 0


def test_last_head_of_a_unidirectional_model_is_the_layers_final_output():
    torch.manual_seed(0)
    model = SequenceClassifier(20, 2, embed_dim=8, units=6, head="last", fused=False).double()
    ids, lengths = _ids([3, 6])
    model.rnn.return_sequences = False
    final = model.rnn(model.embedding(ids), lengths=lengths)
    model.rnn.return_sequences = True
    assert torch.allclose(model.features(ids, lengths), final)


def test_classifier_feature_input_and_overfit():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 4)
    lengths = torch.tensor([6, 3, 5, 2, 6, 1, 4, 4])
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    model = SequenceClassifier(None, 2, input_size=4, units=16, head="mean")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.05


def test_tagger_outputs_one_prediction_per_real_step_and_overfits():
    torch.manual_seed(0)
    ids, lengths = _ids([6, 3, 5, 4], vocab=12)
    tags = (ids % 3).clone()
    model = SequenceTagger(12, 3, embed_dim=8, units=16)
    out = model(ids, lengths)
    assert out.shape == (4, 6, 3) and out[1, 3:].abs().sum() == 0
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        loss = masked_cross_entropy(model(ids, lengths), tags, lengths)
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.05


def test_classifier_bad_input():
    model = SequenceClassifier(10, 2, embed_dim=4, units=4)
    ids, lengths = _ids([3, 2], vocab=10)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(ids + 10, lengths)
    with pytest.raises(ValueError, match="one length per sequence"):
        model(ids, torch.tensor([3]))
    with pytest.raises(ValueError, match="empty sequences"):
        model(ids, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="non-empty"):
        model(torch.zeros(2, 0, dtype=torch.long), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="head"):
        SequenceClassifier(10, 2, head="first")
    with pytest.raises(ValueError, match="either vocab_size"):
        SequenceClassifier(10, 2, input_size=3)


# --- EHR -------------------------------------------------------------------------------------------
def test_time_aware_lstm_without_decay_is_the_dlmi_lstm():
    torch.manual_seed(0)
    model = TimeAwareLSTM(5, 7, decay="none").double()
    layer = LSTM(5, 7, return_sequences=True, zero_output_for_mask=True).double()
    layer.cell.load_state_dict(model.cell.state_dict())
    x, lengths = torch.randn(3, 4, 5, dtype=torch.float64), torch.tensor([4, 2, 3])
    gaps = torch.rand(3, 4, dtype=torch.float64) * 5
    assert torch.allclose(model(x, gaps, lengths), layer(x, lengths=lengths), atol=1e-12)


def test_time_decay_forgets_more_after_longer_gaps():
    g = time_decay(torch.tensor([0.0, 1.0, 10.0]))
    # 1 / log(e) is 1 up to the rounding of float32 e and of log (libm differs across builds).
    assert torch.isclose(g[0], torch.tensor(1.0), rtol=0, atol=1e-6) and g[0] > g[1] > g[2] > 0
    torch.manual_seed(0)
    model = TimeAwareLSTM(3, 4, decay="log").double()
    x = torch.randn(1, 3, 3, dtype=torch.float64)
    near, far = (model(x, torch.tensor([[0.0, 0.0, gap]], dtype=torch.float64), torch.tensor([3]))
                 for gap in (0.0, 20.0))
    assert torch.equal(near[:, :2], far[:, :2]) and not torch.allclose(near[:, 2], far[:, 2])


@pytest.mark.parametrize("time", ["decay", "input", "none"])
def test_ehr_model_padded_batch_equals_each_patient_alone(time):
    patients = [{"labels": (torch.rand(n, 5) < 0.3).float().numpy(), "age_gap": torch.arange(n).float().numpy()}
                for n in (4, 1, 3)]
    codes, gaps, lengths = collate_visits(patients)
    assert codes.shape == (3, 4, 5) and lengths.tolist() == [4, 1, 3]
    torch.manual_seed(0)
    model = EHRModel(5, units=8, time=time, decay="learned").eval()
    out = model(codes, gaps, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = model(codes[b:b + 1, :n], gaps[b:b + 1, :n], torch.tensor([n]))
        assert torch.allclose(out[b, :n], alone[0], atol=1e-6)
    pred, truth = next_visit_pairs(out, codes, lengths)
    assert pred.shape == (3 + 0 + 2, 5) and torch.equal(truth[0], codes[0, 1])
    loss = next_visit_loss(out, codes, lengths)
    loss.backward()
    with pytest.raises(ValueError, match="gaps must be"):
        model(codes, gaps[:, :2], lengths)
    with pytest.raises(ValueError, match="nothing to predict"):
        next_visit_loss(out[:, :1], codes[:, :1], torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="no visits"):
        collate_visits([{"labels": torch.zeros(0, 5).numpy(), "age_gap": []}])


# --- CT slices -------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["rnn", "max", "mean"])
def test_slice_model_padded_batch_equals_each_volume_alone(head):
    torch.manual_seed(0)
    volumes = torch.rand(2, 6, 1, 32, 32)
    lengths = torch.tensor([6, 4])
    volumes[1, 4:] = 1e3  # padding never reaches the result
    model = SliceSequenceClassifier(1, channels=4, features=8, units=6, head=head).eval()
    out = model(volumes, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(out[b], model(volumes[b:b + 1, :n], torch.tensor([n]))[0], atol=1e-5)
    cnn = Fixed3DCNN(1, depth=8, channels=4).eval()
    assert cnn.resample(volumes, lengths).shape == (2, 1, 8, 32, 32)
    assert torch.allclose(cnn(volumes, lengths)[1], cnn(volumes[1:, :4], torch.tensor([4]))[0], atol=1e-5)
    with pytest.raises(ValueError, match="padded batch"):
        model(volumes[:, :, 0], lengths)
    with pytest.raises(ValueError, match="empty sequences"):
        model(volumes, torch.tensor([6, 0]))
