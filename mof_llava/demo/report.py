"""What `mof-llava demo` prints at the end: the losses, the scores and where everything is."""

from __future__ import annotations

from .run import DemoResult

# MMVP asks each question with two options, and a pair counts when both of its questions are right:
# a model that guesses scores 50% of the questions and 25% of the pairs.
QUESTION_CHANCE = 50.0
PAIR_CHANCE = 25.0


def format_report(result: DemoResult) -> str:
    language = result.components.language_loss
    lines = [
        "",
        f"mof-llava demo finished in {sum(result.seconds.values()):.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())})",
        "  losses: median of the first and of the last steps of each run (5, fewer on short runs); "
        "every step is in metrics.jsonl",
        f"  data:        {result.data_dir}/ (stage1_pretrain.json, stage2_instruct.json, images/, mmvp/)",
        f"  components:  {result.components.root}/ (clip/, dinov2/ = the toy lab's trained towers; tiny random "
        f"llm/; llm-text/ = llm after "
        f"language pre-training, loss {language[0]:.3f} -> {language[1]:.3f})",
    ]
    for r in result.variants:
        lines += [
            f"  {r.variant.name} (mixer {r.variant.mixer.mode}"
            + (f", alpha {r.variant.mixer.alpha:g}" if r.variant.mixer.mode == "additive" else "")
            + ")",
        ]
        for number, stage in ((1, r.stage1), (2, r.stage2)):
            start, end = stage.loss_ends()
            lines += [
                f"    stage {number}: {stage.steps} steps, loss {start:.3f} -> {end:.3f} "
                f"(median of the first / last {stage.loss_window} steps)",
                f"      config       {stage.config}",
                f"      checkpoints  {', '.join(str(c) for c in stage.checkpoints) or '(none)'}",
                f"      metrics      {stage.metrics}",
                f"      {'adapters' if number == 1 else 'final model':<12} {stage.artifact}/",
            ]
        if r.eval_dir is not None:
            lines += _mmvp_lines(r.scores)
            lines += [
                f"      answers      {r.answers}",
                f"      metrics      {r.eval_dir / 'metrics.json'}",
            ]
    lines.append(f"  summary:     {result.out_dir / 'demo.json'}")
    return "\n".join(lines)


def _mmvp_lines(s: dict) -> list[str]:
    lines = [
        f"    synthetic MMVP: pair accuracy {s['pair_accuracy']:.1f}% ({s['pairs_correct']}/{s['pairs']} pairs; "
        f"chance {PAIR_CHANCE:.0f}%), question accuracy {s['question_accuracy']:.1f}% (chance "
        f"{QUESTION_CHANCE:.0f}%), {s['unread']} answers without a readable choice",
        "      per pattern  "
        + ", ".join(f"{name} {v['accuracy']:.0f}% ({v['pairs']} pairs)" for name, v in s["per_pattern"].items()),
    ]
    if s["pair_accuracy"] < PAIR_CHANCE:
        lines.append(
            "      below chance is expected here: the two questions of a pair have opposite answers, so a "
            "model that gives the same letter to both (what a model this small mostly does) scores no "
            "pair and half the questions; see 'Reading the output' in docs/demo.md"
        )
    return lines
