"""Plot a proxy training log (pbs.train.proxy's training_log.csv): losses vs step, curriculum length shaded.

    python scripts/plot_training_log.py models/pbs-proxy-llama/training_log.csv results/proxy/training_loss.png
"""

from __future__ import annotations

import csv
import sys


def main(log_path: str, png_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]
    step = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for key, label in (("lm_loss", "LM loss (KJV windows)"), ("ret_loss", "answer loss (RULER tasks)")):
        pts = [(s, float(r[key])) for s, r in zip(step, rows) if r[key]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    # curriculum stages
    prev, start = None, 0
    for s, r in zip(step + [None], rows + [None]):
        length = r["length"] if r else None
        if length != prev:
            if prev is not None:
                ax.axvspan(start, s or step[-1], alpha=0.06 if int(prev) % 2048 else 0.12, color="gray")
                ax.text((start + (s or step[-1])) / 2, ax.get_ylim()[1] * 0.8, f"{int(prev) // 1024}K" if int(prev) >= 1024
                        else prev, ha="center", fontsize=7)
            prev, start = length, s
    ax.legend(fontsize=8)
    ax.set_title("pbs-proxy-llama training (sequence length per stage shaded)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:])
