"""What the lm-eval task folders share: the score aggregation their YAMLs point at, and writing / checking the
generated YAMLs (``_generate.py`` in each folder)."""

from __future__ import annotations

from pathlib import Path

from pbs.eval.longbench.scoring import aggregate


def aggregate_score(items: list) -> float:
    """A task score: ``round(100 * mean, 2)`` over the samples, None entries (other buckets or lengths) skipped;
    NaN if none is left (LongBench's and RULER's rule)."""
    return aggregate(x for x in items if x is not None)


def first_given(*values):
    """The first value that is not None or empty."""
    return next((v for v in values if v not in (None, "", [])), None)


def stale(files: dict[Path, str], folder: Path) -> list[Path]:
    """Generated files that are missing or differ, plus YAMLs in ``folder`` that nothing generates."""
    out = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    return out + [p for p in folder.glob("*.yaml") if p not in files]


def write_or_check(files: dict[Path, str], folder: Path, argv: list[str]) -> int:
    """``--check``: list stale files, exit 1 if any; otherwise write every file."""
    if "--check" in argv:
        for p in stale(files, folder):
            print(f"stale: {p.name}")
        return 1 if stale(files, folder) else 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} task files to {folder}")
    return 0
