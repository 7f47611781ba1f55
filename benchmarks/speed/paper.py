"""The paper's speed numbers (PBS-Attn, arXiv 2510.21270 v2), shown beside ours and always marked as the paper's:
an H100 80GB, FlashAttention-2 (``flash_attn_func``) as the dense baseline, transformers' ``generate(max_new_tokens=1)``
timed with CUDA events (``eval/efficiency/eval_efficiency.py``). Read from /work/shared/research/paper.md.
"""

from __future__ import annotations

HARDWARE = "H100 80GB, FlashAttention-2 baseline"

# Table 7 (App. E): one attention call, Llama-3.1-8B-like heads (32 q, D = 128), key permutation; ms.
# Columns: dense (FlashAttention), permutation, block selection, sparse attention, total, overhead %, speedup.
TABLE7 = {
    4096: (0.54, 0.72, 0.84, 0.53, 2.09, 74.6, 0.26),
    8192: (1.78, 0.82, 0.86, 1.31, 2.99, 56.2, 0.60),
    16384: (6.67, 1.02, 0.62, 4.08, 5.71, 28.7, 1.17),
    32768: (26.10, 1.68, 0.60, 13.83, 16.11, 14.2, 1.62),
    65536: (106.84, 3.24, 1.24, 42.44, 46.92, 9.5, 2.28),
    131072: (443.29, 6.22, 3.21, 150.45, 159.87, 5.9, 2.77),
    262144: (1837.32, 13.87, 11.81, 563.54, 589.22, 4.4, 3.12),
    524288: (7496.67, 26.76, 41.99, 2128.16, 2196.91, 3.1, 3.41),
}
TABLE7_COLUMNS = ("dense_ms", "permutation_ms", "selection_ms", "attention_ms", "total_ms", "overhead_pct", "speedup")

# Table 9 (App. F): Qwen3-8B end-to-end TTFT in ms, full attention vs PBS-Attn (256K on 4 GPUs, 512K on 8: not ours).
TABLE9 = {
    8192: (326.8, 368.9, 0.89),
    16384: (732.7, 715.0, 1.02),
    32768: (1905.3, 1536.4, 1.24),
    65536: (5573.0, 3540.4, 1.57),
    131072: (18628.0, 8396.0, 2.22),
    262144: (20104.7, 7400.9, 2.72),
    524288: (53999.5, 28136.1, 1.92),
}

# Fig. 4 (Llama-3.1-8B TTFT speedup over FlashAttention-2, 8K-512K): only curves are published. Stated facts:
FIG4_FACTS = (
    "PBS-Attn has the highest speedup at every length from 8K to 512K",
    "about 2.2× at 128K (read off the curve) and 2.75× at 256K (stated)",
    "MInference shows no speedup until 128K",
    "XAttention's gains stagnate after 128K",
    "FlexPrefill matches PBS's speed in most cases (at lower accuracy)",
)
FIG4_PBS_128K = 2.2  # read off the curve, not a published number

# Table 5: PBS's measured density on Llama-3.1-8B at τ 0.9 (block 128), with key permutation and without.
DENSITY_WITH_PERMUTATION = {8192: 0.579, 16384: 0.485, 32768: 0.405, 65536: 0.287, 131072: 0.219}
DENSITY_WITHOUT_PERMUTATION = {8192: 0.649, 16384: 0.540, 32768: 0.460, 65536: 0.328, 131072: 0.256}
