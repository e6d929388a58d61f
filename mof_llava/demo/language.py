"""A language for the demo's random LLM: a short causal-LM pre-training on the demo's own text.

Real runs start from a pre-trained LLM (Vicuna); the demo's tiny LLM starts random. A random LLM
with its output layer frozen (stage 1 trains only the adapters) can barely move away from a uniform
next-token distribution, so stage 1 would have nothing to learn. A few hundred steps on the text of
the training files (captions, and the stage-2 conversations without their pictures, in the
templates the stages use) give it the words and the chat format, and leave the pictures to the
adapters: what it still gets wrong about a picture is what stage 1 and stage 2 have to teach.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..constants import IMAGE_TOKEN
from ..conversation import get_template

# A batch costs its longest text: the lab world's four-round conversations reach 316 tokens. Cutting
# at 192 (a third of the demo's texts lose their last round or two; the words and the chat format
# are all in the first rounds) nearly halves a step's cost: 0.91 -> 0.50 CPU s, measured.
MAX_TOKENS = 192


def training_texts(pretrain_file: Path, instruct_file: Path) -> list[str]:
    """Captions as the `plain` template ends them, and conversations in `vicuna_v1` without the
    image marker."""
    plain, chat = get_template("plain"), get_template("vicuna_v1")
    texts = []
    for record in json.loads(Path(pretrain_file).read_text()):
        caption = record["conversations"][1]["value"]
        texts.append(plain.render([(IMAGE_TOKEN, caption)]).text.replace(IMAGE_TOKEN, ""))
    for record in json.loads(Path(instruct_file).read_text()):
        turns = record["conversations"]
        rounds = [
            (turns[i]["value"].replace(IMAGE_TOKEN, "").strip(), turns[i + 1]["value"])
            for i in range(0, len(turns), 2)
        ]
        texts.append(chat.render(rounds).text)
    return texts


def pretrain_language_model(
    source: Path,
    target: Path,
    texts: list[str],
    steps: int,
    learning_rate: float,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    max_tokens: int = MAX_TOKENS,
) -> list[float]:
    """Train the causal LM in `source` on `texts` (every token supervised, linear decay) and save it
    with its tokenizer to `target`. Returns the loss of every step. `progress`: a bar with the loss.
    Texts are cut at `max_tokens`."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(target)  # unchanged; the padding settings below are for this loop only
    tokenizer.padding_side = "right"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.unk_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=steps // 20, num_training_steps=steps
    )
    generator = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(total=steps, desc="language pre-training", unit=" step", disable=not progress, leave=False)
    for _ in range(steps):
        picked = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer(
            [texts[i] for i in picked],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_tokens,
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        bar.update()
    bar.close()
    model.save_pretrained(target)
    return losses
