"""What `mof-llava demo` prints at the end: the losses, the scores and where everything is."""

from __future__ import annotations

from .run import DemoResult


def format_report(result: DemoResult) -> str:
    lines = [
        "",
        f"mof-llava demo finished in {sum(result.seconds.values()):.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())})",
        f"  data:        {result.data_dir}/ (stage1_pretrain.json, stage2_instruct.json, images/, mmvp/)",
        f"  components:  {result.components.root}/ (tiny random clip/, dinov2/, llm/; llm-text/ = llm after "
        f"language pre-training, loss {result.components.language_loss[0]:.3f} -> {result.components.language_loss[1]:.3f})",
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
                f"    stage {number}: {stage.steps} steps, loss {stage.losses[0]:.3f} (first step) -> "
                f"{stage.losses[-1]:.3f} (last step); median of the first / last {stage.loss_window} steps "
                f"{start:.3f} -> {end:.3f}",
                f"      config       {stage.config}",
                f"      checkpoints  {', '.join(str(c) for c in stage.checkpoints) or '(none)'}",
                f"      metrics      {stage.metrics}",
                f"      {'adapters' if number == 1 else 'final model':<12} {stage.artifact}/",
            ]
        if r.eval_dir is not None:
            s = r.scores
            lines += [
                f"    synthetic MMVP: pair accuracy {s['pair_accuracy']:.1f}% ({s['pairs_correct']}/{s['pairs']} pairs), "
                f"question accuracy {s['question_accuracy']:.1f}%, {s['unread']} answers without a readable choice",
                "      per pattern  "
                + ", ".join(
                    f"{name} {v['accuracy']:.0f}% ({v['pairs']} pairs)"
                    for name, v in s["per_pattern"].items()
                ),
                f"      answers      {r.answers}",
                f"      metrics      {r.eval_dir / 'metrics.json'}",
            ]
    lines.append(f"  summary:     {result.out_dir / 'demo.json'}")
    return "\n".join(lines)
