"""Plot a proxy training log (pbs.train.proxy's training_log.csv): losses vs step with the curriculum length shaded,
and below them the held-out task score and perplexity of every evaluation.

    python scripts/plot_training_log.py results/proxy/training_log.csv results/proxy/training_loss.png
    python scripts/plot_training_log.py models/pbs-proxy-llama-v2/training_log.csv \
        results/proxy/v2/training_loss.png --footer "1x H100 80GB HBM3, ..."
"""

from __future__ import annotations

import argparse
import csv
import textwrap
from pathlib import Path


def _stages(ax, step: list[int], lengths: list[str]) -> None:
    """Shade each curriculum stage and label it with its sequence length."""
    prev, start = None, 0
    for s, length in zip(step + [None], lengths + [None]):
        if length != prev:
            if prev is not None:
                end = s or step[-1]
                ax.axvspan(start, end, alpha=0.06 if int(prev) % 2048 else 0.12, color="gray")
                ax.text((start + end) / 2, 0.97, f"{int(prev) // 1024}K" if int(prev) >= 1024 else prev,
                        ha="center", va="top", fontsize=7, transform=ax.get_xaxis_transform())
            prev, start = length, s


def main(log_path: str, png_path: str, footer: str | None = None) -> int:
    """Write the plot; returns the number of evaluations drawn (task score or perplexity points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r["loss"]]
    evals = [r for r in rows if r.get("eval_acc") or r.get("heldout_ppl")]
    step = [int(r["step"]) for r in train]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6.2), sharex=True, height_ratios=[3, 2])
    for key, label in (("lm_loss", "LM loss (corpus windows)"), ("ret_loss", "answer loss (RULER tasks)")):
        pts = [(s, float(r[key])) for s, r in zip(step, train) if r[key]]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line, = ax.plot(xs, ys, lw=0.6, alpha=0.35)
        # the answer loss of a step is a handful of answers: the mean of 15 logged steps shows the trend
        k = 15
        smooth = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
        ax.plot(xs, smooth, lw=1.3, color=line.get_color(), label=f"{label}, mean of {k} logged steps")
    ax.set_yscale("log")
    ax.set_ylabel("cross-entropy (nats/token)")
    _stages(ax, step, [r["length"] for r in train])
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{Path(log_path).parent.name} training (sequence length per stage shaded)")

    # evaluations: the score and perplexity at the length each was run at (during training: the current stage)
    by_len: dict[int, list[dict]] = {}
    for r in evals:
        by_len.setdefault(int(r["length"]), []).append(r)
    ppl_ax = ax2.twinx()
    for n, rs in sorted(by_len.items()):
        tag = f"{n // 1024}K" if n >= 1024 else str(n)
        acc = [(int(r["step"]), 100 * float(r["eval_acc"])) for r in rs if r.get("eval_acc")]
        ppl = [(int(r["step"]), float(r["heldout_ppl"])) for r in rs if r.get("heldout_ppl")]
        if acc:
            ax2.plot(*zip(*acc), "o", ms=4, label=f"task score at {tag}")
        if ppl:
            ppl_ax.plot(*zip(*ppl), "x", ms=5, color="gray")
    ax2.set_ylabel("held-out task score (o)")
    ax2.set_ylim(-5, 105)
    ppl_ax.set_ylabel("held-out perplexity (x)")
    ppl_ax.set_yscale("log")
    ax2.set_xlabel("step")
    if by_len:
        ax2.legend(fontsize=7, loc="center left", ncol=2)
    _stages(ax2, step, [r["length"] for r in train])
    if footer:
        lines = textwrap.wrap(footer, 190)
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6, color="dimgray", va="bottom")
        fig.tight_layout(rect=(0, 0.02 * len(lines), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(png_path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return len(evals)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="training_log.csv")
    p.add_argument("png")
    p.add_argument("--footer", default=None, help="provenance line drawn under the plot")
    a = p.parse_args()
    main(a.log, a.png, a.footer)
