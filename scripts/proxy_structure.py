"""The proxy model's attention structure on a RULER prompt: where each head's mass goes, PBS's density per head with
and without key permutation, and the paper's Fig. 3 picture (one head's blocks before and after permutation).

Captures every layer's post-RoPE q and k during one forward over a RULER needle-in-a-haystack prompt
(``niah_single_2``, extended with haystack to exactly N tokens), then, per layer and head:
``pbs.structure.attention_structure`` (sink / local / vertical / slash / other shares) and ``pbs.plan`` densities
(pbs at its defaults, τ 0.9, key permutation vs ``permute="none"``). Writes ``structure-<N>.csv``, the plots
``structure-<N>.png`` (shares per head), ``density-<N>.png`` (layer × head heatmaps) and ``fig3-<N>.png``, and
``README.md`` (inputs, provenance, the published Llama-class facts beside the proxy's numbers).

    python scripts/proxy_structure.py --lengths 4096,8192 --out results/proxy/v2/structure    # CPU, the committed proxy
    python scripts/proxy_structure.py --device cuda --lengths 16384,32768 --out /tmp/s
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pbs
from pbs.provenance import provenance
from pbs.structure import CLASSES, StructureConfig, attention_structure, block_attention_mass

# Published, for Llama-class models (each read in the paper's text; see README.md written below for the wording)
PUBLISHED = [
    ("StreamingLLM (arXiv 2309.17453, App. F, Fig. 12)",
     ("Llama-2-7B, 4096 tokens: the last token's attention to the first token 'often exceeds half of the total "
     "attention', except in the two bottom layers (about 0.6-0.9 from layer 2 on, read off the figure).")),
    ("When Attention Sink Emerges (arXiv 2410.10781, Table 1)",
     ("heads whose mean attention to the first token exceeds 0.3 (at 64 tokens, natural text): LLaMA3-8B 99.0%, "
     "LLaMA2-7B 92.5%, Mistral-7B 97.5% (base models); the share falls with sequence length.")),
    ("Retrieval Head (arXiv 2404.15574, Sec. 3.1)",
     "only about 3-6% of heads are retrieval heads (copy-paste score > 0.1 on needle-in-a-haystack, 1K-50K)."),
]


def capture_qk(model, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(q, k)] per layer, post-RoPE: q (1, Hq, N, D), k (1, Hkv, N, D), from one forward."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def attention(module, query, key, value, attention_mask, **kwargs):
        captured[module.layer_idx] = (query.detach().float().cpu(), key.detach().float().cpu())
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("pbs_capture_qk", attention)
    previous = model.config._attn_implementation
    model.set_attn_implementation("pbs_capture_qk")
    try:
        with torch.no_grad():
            model(ids, logits_to_keep=1, use_cache=False)
    finally:
        model.set_attn_implementation(previous)
    return [captured[i] for i in sorted(captured)]


def ruler_prompt(path: str, n: int, seed: int) -> torch.Tensor:
    from benchmarks.speed.config import SpeedModel
    from benchmarks.speed.models import prompt_ids

    spec = SpeedModel(path=path, prompt="ruler", lengths=[n], regime="adaptive")
    return prompt_ids(spec, None, n, seed, "cpu")


def _perm_of_head(plan, h: int, hq: int) -> torch.Tensor | None:
    if plan.key_perm is None:
        return None
    hp = plan.key_perm.shape[1]
    return plan.key_perm[0, h * hp // hq]


def analyse(layers, cfg: StructureConfig, threshold: float) -> list[dict]:
    rows = []
    for layer, (q, k) in enumerate(tqdm(layers, desc="layers")):
        shares = attention_structure(q, k, cfg)
        plans = {mode: pbs.plan(q, k, "pbs", threshold=threshold, permute=mode, planner="torch")
                 for mode in ("key", "none")}
        dens = {mode: p.density_per_head()[0] for mode, p in plans.items()}
        for h in range(q.shape[1]):
            row = {"layer": layer, "head": h, "kv_head": h // (q.shape[1] // k.shape[1])}
            row.update({c: round(shares[c][0, h].item(), 6) for c in CLASSES})
            row.update(density_key=round(dens["key"][h].item(), 6), density_none=round(dens["none"][h].item(), 6))
            rows.append(row)
    return rows


def _stamp(fig, footer: str) -> None:
    """The provenance line (device, versions, date, command, commit) under a figure."""
    if footer:
        fig.text(0.005, 0.003, footer, fontsize=5.5, color="dimgray", va="bottom")


def plot_shares(rows: list[dict], path: Path, title: str, footer: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(rows)), 3.6))
    x = range(len(rows))
    bottom = [0.0] * len(rows)
    for c in CLASSES:
        vals = [r[c] for r in rows]
        ax.bar(x, vals, bottom=bottom, label=c, width=0.85)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(list(x), [f"L{r['layer']}h{r['head']}" for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("share of attention mass")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout(rect=(0, 0.04 if footer else 0, 1, 1))
    _stamp(fig, footer)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_density(rows: list[dict], path: Path, title: str, footer: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = max(r["layer"] for r in rows) + 1
    heads = max(r["head"] for r in rows) + 1
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    grids = {}
    for name in ("density_key", "density_none"):
        g = torch.zeros(layers, heads)
        for r in rows:
            g[r["layer"], r["head"]] = r[name]
        grids[name] = g
    panels = (("PBS density, key permutation", grids["density_key"], "viridis", (0, 1)),
              ("PBS density, no permutation", grids["density_none"], "viridis", (0, 1)),
              ("key − none", grids["density_key"] - grids["density_none"], "coolwarm", (-0.2, 0.2)))
    for ax, (name, g, cmap, (lo, hi)) in zip(axes, panels):
        im = ax.imshow(g.numpy(), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if footer else 0, 1, 1))
    _stamp(fig, footer)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig3(q, k, layer: int, head: int, threshold: float, path: Path, title: str, footer: str = "") -> None:
    """Blocks of one head in natural key order and after PBS's key permutation: attention mass per block (log
    colour) and the tiles PBS selects (τ threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hq, hkv = q.shape[1], k.shape[1]
    qh, kh = q[0, head], k[0, head // (hq // hkv)]
    plans = {mode: pbs.plan(q, k, "pbs", threshold=threshold, permute=mode, planner="torch") for mode in ("none", "key")}
    bs = plans["key"].block_size
    fig, axes = plt.subplots(2, 2, figsize=(8, 7.6), constrained_layout=True)
    for col, mode in enumerate(("none", "key")):
        plan = plans[mode]
        mass = block_attention_mass(qh, kh, bs, key_perm=_perm_of_head(plan, head, hq))
        im = axes[0, col].imshow(mass.clamp(min=1e-6).log10().numpy(), cmap="magma", vmin=-6, vmax=0)
        axes[0, col].set_title(f"{'natural order' if mode == 'none' else 'keys permuted (PBS)'}: "
                               "log10 mass per block", fontsize=8)
        mask = plan.block_mask()[0, head].float()
        axes[1, col].imshow(mask.numpy(), cmap="Greys", vmin=0, vmax=1)
        axes[1, col].set_title(f"tiles PBS computes (black, τ {threshold}): density {plan.density_per_head()[0, head]:.3f}",
                               fontsize=8)
        for ax in axes[:, col]:
            ax.set_xlabel("key block" + (" (permuted slots)" if mode == "key" else ""))
            ax.set_ylabel("query block")
    fig.colorbar(im, ax=axes[0, :].tolist(), fraction=0.03)
    fig.suptitle(title, fontsize=9)
    _stamp(fig, footer)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_readme(out: Path, results: dict[int, list[dict]], args, cfg: StructureConfig, command: str) -> None:
    import transformers

    lines = ["# The proxy model's attention structure", "",
             (f"Model `{args.model}`; prompt: a RULER `niah_single_2` sample (seed {args.seed}) extended with haystack "
             f"to exactly N tokens; q and k captured after RoPE in one forward (float32, {args.device}). Command: "
             f"`{command}`; {datetime.datetime.now(datetime.UTC):%Y-%m-%d}; torch {torch.__version__}, "
             f"transformers {transformers.__version__}; commit {provenance(command)['git_commit']}."), "",
             (f"Classes (`pbs.structure`, each entry of the causal attention matrix in the first that holds): sink = "
             f"key < {cfg.sink_tokens}; local = distance < {cfg.local_window}; vertical = the head's "
             f"{cfg.vertical_fraction:.0%} of key columns with the most remaining mass; slash = its "
             f"{cfg.slash_fraction:.0%} of diagonals with the most remaining mass; other. Shares are means over "
             f"query rows. Densities: `pbs.plan(q, k, 'pbs', threshold={args.threshold})` with `permute='key'` "
             "(the default) and `'none'`, on this one prompt."), ""]
    for n, rows in results.items():
        mean = {c: sum(r[c] for r in rows) / len(rows) for c in CLASSES}
        top_sink = sum(r["sink"] > 0.3 for r in rows) / len(rows)
        dk = sum(r["density_key"] for r in rows) / len(rows)
        dn = sum(r["density_none"] for r in rows) / len(rows)
        lines += [f"## N = {n}", "",
                  "| | " + " | ".join(CLASSES) + " |", "|---" * (len(CLASSES) + 1) + "|",
                  "| mean over heads | " + " | ".join(f"{mean[c]:.3f}" for c in CLASSES) + " |", "",
                  (f"Heads with sink share > 0.3: {top_sink:.0%}. PBS density at τ {args.threshold}: "
                  f"{dk:.3f} with key permutation, {dn:.3f} without (mean over {len(rows)} heads). "
                  f"Per head: `structure-{n}.csv`; plots `structure-{n}.png`, `density-{n}.png`, `fig3-{n}.png`."),
                  ""]
    lines += ["## Published, for Llama-class models (not measured here)", ""]
    lines += [f"- {src}: {fact}" for src, fact in PUBLISHED]
    lines += ["", ("The published sink share is the mass on the first token only, at its own lengths; ours is the "
              f"first {cfg.sink_tokens} tokens averaged over all query rows: compare the picture, not the digits.")]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/pbs-proxy-llama-v2")
    parser.add_argument("--lengths", default="4096")
    parser.add_argument("--out", default="results/proxy/v2/structure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(str(ROOT / args.model) if not Path(args.model).is_absolute()
                                                 else args.model, dtype=torch.float32).to(args.device).eval()
    cfg = StructureConfig()
    results = {}
    import transformers

    command = "python " + " ".join(sys.argv)
    footer = (f"{args.device}, float32, torch {torch.__version__}, transformers {transformers.__version__}, "
              f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}, commit {provenance(command)['git_commit'][:7]}; "
              f"{command}")
    for n in (int(x) for x in args.lengths.split(",")):
        ids = ruler_prompt(str(args.model), n, args.seed).to(args.device)
        layers = capture_qk(model, ids)
        rows = analyse(layers, cfg, args.threshold)
        results[n] = rows
        with open(out / f"structure-{n}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        label = f"{Path(args.model).name}, RULER prompt, N={n}"
        plot_shares(rows, out / f"structure-{n}.png", f"{label}: share of attention mass per head", footer)
        plot_density(rows, out / f"density-{n}.png", f"{label}: PBS density per head (τ {args.threshold})", footer)
        best = max(rows, key=lambda r: r["density_none"] - r["density_key"])
        q, k = layers[best["layer"]]
        plot_fig3(q, k, best["layer"], best["head"], args.threshold, out / f"fig3-{n}.png",
                  f"{label}: layer {best['layer']} head {best['head']} (the head whose density permutation "
                  "lowers most)", footer)
    write_readme(out, results, args, cfg, command)


if __name__ == "__main__":
    main()
