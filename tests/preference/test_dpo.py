"""The DPO objective: losses against hand-computed values, chunked log-probs against the naive ones."""

from __future__ import annotations

import math

import pytest
import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.preference.dpo import dpo_loss, pair_losses, response_labels, sequence_logps

torch.set_num_threads(1)

# One pair: chosen log-probs policy -3 / reference -4 (log-ratio +1), rejected -6 / -5 (log-ratio -1).
POLICY = torch.tensor([-3.0, -6.0], dtype=torch.float64)
REFERENCE = torch.tensor([-4.0, -5.0], dtype=torch.float64)
TOKENS = torch.tensor([2, 4])  # response tokens of chosen, rejected


@pytest.mark.parametrize("loss_type, expected", [("sigmoid", math.log(2)), ("hinge", 1.0), ("ipo", 25.0)])
def test_policy_equal_to_reference_gives_the_known_loss(loss_type, expected):
    logps = torch.tensor([-3.0, -7.0, -2.5, -9.0])  # two pairs
    out = dpo_loss(logps, logps.clone(), torch.tensor([3, 5, 2, 4]), beta=0.1, loss_type=loss_type)
    assert out.loss.item() == pytest.approx(expected, rel=1e-7)  # ipo: (0 - 1/(2·0.1))² = 25
    assert out.metrics()["rewards/margins"] == 0.0
    assert out.metrics()["rewards/accuracies"] == 0.0
    smoothed = dpo_loss(logps, logps.clone(), torch.tensor([3, 5, 2, 4]), label_smoothing=0.2)
    assert smoothed.loss.item() == pytest.approx(math.log(2), rel=1e-7)


def test_losses_equal_hand_computed_values():
    # Δ = 1 − (−1) = 2. sigmoid, β=0.5: −log σ(1) = log(1 + e^−1) = 0.31326168751822286.
    assert dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.5).loss.item() == pytest.approx(
        0.31326168751822286, rel=1e-12
    )
    # label smoothing 0.1: 0.9·log(1 + e^−1) + 0.1·log(1 + e^1) = 0.2819355187664006 + 0.1313261687518223
    smoothed = dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.5, label_smoothing=0.1).loss.item()
    assert smoothed == pytest.approx(0.4132616875182229, rel=1e-12)
    # hinge, β=0.1: max(0, 1 − 0.2) = 0.8; β=0.5: max(0, 1 − 1) = 0.
    assert dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.1, loss_type="hinge").loss.item() == pytest.approx(0.8)
    assert dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.5, loss_type="hinge").loss.item() == 0.0
    # ipo, per-token log-ratios 1/2 and −1/4: Δ = 0.75; β=0.5: (0.75 − 1)² = 0.0625.
    assert dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.5, loss_type="ipo").loss.item() == pytest.approx(0.0625)
    # NLL term on the chosen response: −(−3)/2 tokens = 1.5 per token, weight 0.4 → +0.6.
    with_nll = dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.5, nll_weight=0.4).loss.item()
    assert with_nll == pytest.approx(0.31326168751822286 + 0.6, rel=1e-12)


def test_rewards_and_metrics():
    out = dpo_loss(POLICY, REFERENCE, TOKENS, beta=0.5)
    assert out.chosen_rewards.tolist() == [0.5] and out.rejected_rewards.tolist() == [-0.5]
    assert out.metrics() == {
        "rewards/chosen": 0.5,
        "rewards/rejected": -0.5,
        "rewards/margins": 1.0,
        "rewards/accuracies": 1.0,
    }


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown DPO loss type 'kto'"):
        pair_losses(torch.ones(1), torch.zeros(1), 0.1, "kto")
    with pytest.raises(ValueError, match="label smoothing applies to the sigmoid loss"):
        dpo_loss(POLICY, REFERENCE, TOKENS, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="even size"):
        dpo_loss(POLICY[:1], REFERENCE[:1], TOKENS[:1])


def _naive_logps(hidden, head, labels):
    logits = head(hidden[:, :-1]).log_softmax(-1)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = logits.gather(2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(1), mask.sum(1)


def test_chunked_logps_equal_the_full_logits_gather_with_gradients():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=True).double()
    labels = torch.randint(0, 50, (3, 9), generator=gen)
    labels[0, :4] = IGNORE_INDEX  # a prompt
    labels[1] = IGNORE_INDEX  # nothing supervised
    labels[2, 2:5] = IGNORE_INDEX
    expected, expected_counts = _naive_logps(hidden, head, labels)
    (expected.sum()).backward()
    naive_grads = [hidden.grad.clone(), head.weight.grad.clone()]
    hidden.grad = head.weight.grad = None
    got, counts = sequence_logps(hidden, head, labels, chunk_size=3)  # 10 scored positions: 4 chunks
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert counts.tolist() == expected_counts.tolist() == [5, 0, 5]
    got.sum().backward()
    torch.testing.assert_close(hidden.grad, naive_grads[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, naive_grads[1], rtol=0, atol=1e-6)


def test_visual_placeholders_are_never_scored():
    image_id = -200
    #            prompt   8 interleaved placeholders (2 towers × 4)   prompt  response (3) eos
    ids = torch.tensor([[1, 5, 6] + [image_id] * 8 + [7, 8] + [9, 10, 11] + [2]])
    labels = ids.clone()  # as if nothing were masked yet
    labels[0, :13] = torch.where(ids[0, :13] == image_id, ids[0, :13], IGNORE_INDEX)
    masked = response_labels(labels, ids, image_id)
    hidden = torch.randn(1, ids.shape[1], 8, generator=torch.Generator().manual_seed(1))
    _, counts = sequence_logps(hidden, torch.nn.Linear(8, 12), masked)
    assert counts.tolist() == [4]  # the 3 response tokens and the eos, none of the 8 placeholders


def test_tiny_model_pair_scores_only_the_response_and_matches_the_models_loss(tiny_model_dirs):
    """On the tiny interleaved model: the labels the data pipeline builds for prompt + response score
    exactly the response (and its eos), none of the 2×N visual positions; our log-probs from the hidden
    states equal the model's own cross-entropy over them."""
    from PIL import Image

    from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
    from mof_llava.conversation import get_template
    from mof_llava.data.records import Record
    from mof_llava.data.samples import tokenize_record

    directory = tiny_model_dirs("interleave")
    processor = MofLlavaProcessor.from_pretrained(directory)
    model = MofLlavaForConditionalGeneration.from_pretrained(directory).eval()
    response = "The sky in the picture is green."
    record = Record("p", "a.jpg", (("<image>\nWhat colour is the sky?", response),))
    sample = tokenize_record(record, get_template("vicuna_v1"), processor, 10**6)
    ids, labels = torch.tensor(sample.input_ids)[None], torch.tensor(sample.labels)[None]
    labels = response_labels(labels, ids, processor.image_token_id)
    scored = labels[labels != IGNORE_INDEX].tolist()
    eos = processor.tokenizer.eos_token
    assert processor.tokenizer.decode(scored).replace(" ", "") == (response + eos).replace(" ", "")
    assert int((ids == processor.image_token_id).sum()) == processor.num_image_tokens  # interleaved 2×N

    pixels = processor.preprocess_images([Image.new("RGB", (56, 56), (20, 200, 40))])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, labels=labels, output_hidden_states=True)
        logps, counts = sequence_logps(
            out.hidden_states[-1], model.get_output_embeddings(), labels, chunk_size=4
        )
    assert counts.tolist() == [len(scored)]
    torch.testing.assert_close(-logps / counts, out.loss.reshape(1), rtol=0, atol=1e-5)


def test_one_optimiser_step_on_a_toy_pair_lowers_the_loss(tiny_model_dirs):
    """Gradients flow through the checkpointed chunks: one SGD step on the LLM raises the chosen
    answer's margin over the rejected one against the frozen starting point (the reference)."""
    from PIL import Image

    from mof_llava import MofLlavaForConditionalGeneration, MofLlavaProcessor
    from mof_llava.conversation import get_template
    from mof_llava.data.records import Record
    from mof_llava.data.samples import tokenize_record

    torch.manual_seed(0)
    directory = tiny_model_dirs("interleave")
    processor = MofLlavaProcessor.from_pretrained(directory)
    model = MofLlavaForConditionalGeneration.from_pretrained(directory)
    question = "<image>\nWhat colour is the sky?"
    samples = [
        tokenize_record(
            Record("p", "a.jpg", ((question, answer),)), get_template("vicuna_v1"), processor, 10**6
        )
        for answer in ("The sky is green.", "The sky is blue, as skies always are.")
    ]
    width = max(len(s.input_ids) for s in samples)
    ids = torch.zeros(2, width, dtype=torch.long)  # right-padded, the padding ignored
    labels = torch.full((2, width), IGNORE_INDEX)
    for row, s in enumerate(samples):
        ids[row, : len(s.input_ids)], labels[row, : len(s.labels)] = (
            torch.tensor(s.input_ids),
            torch.tensor(s.labels),
        )
    mask = labels.ne(IGNORE_INDEX) | (
        torch.arange(width) < torch.tensor([[len(s.input_ids)] for s in samples])
    )
    pixels = processor.preprocess_images([Image.new("RGB", (56, 56), (20, 200, 40))] * 2)

    def loss():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask.long(), output_hidden_states=True)
        logps, counts = sequence_logps(
            out.hidden_states[-1], model.get_output_embeddings(), labels, chunk_size=5
        )
        return logps, counts

    with torch.no_grad():
        reference, counts = loss()
    optimiser = torch.optim.SGD(model.language_model.parameters(), lr=0.5)
    first = dpo_loss(loss()[0], reference, counts, beta=0.5)
    assert first.loss.item() == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at the start
    first.loss.backward()
    optimiser.step()
    with torch.no_grad():
        after = dpo_loss(loss()[0], reference, counts, beta=0.5)
    assert after.loss.item() < first.loss.item() - 1e-4
    assert after.metrics()["rewards/margins"] > 0
