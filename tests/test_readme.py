"""README's map of the code ("How it is built") against the tree: every path it names exists, and every module and
folder of the ``pbs`` package and of ``benchmarks/`` is named."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("pbs/", "benchmarks/", "experiments/", "conf/", "models/", "scripts/", "tests/", "results/", "docs/")
COMPLETE = ("pbs", "benchmarks")  # folders whose every module must be on the map


def _map() -> list[tuple[str, str]]:
    """(entry, description) per entry of the code block under "## How it is built"; continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## How it is built", 1)[1]
    block = section.split("```", 2)[1]
    entries: list[tuple[str, str]] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
        else:
            entry, _, desc = line.partition(" ")
            entries.append((entry, desc.strip()))
    return entries


def _named_paths() -> set[str]:
    """Every path the map names: entries, full paths in descriptions, and file / folder names relative to their
    entry (a folder entry) or to the entry's folder (a file entry)."""
    out = set()
    for entry, desc in _map():
        out.add(entry.rstrip("/"))
        base = entry if entry.endswith("/") else entry.rsplit("/", 1)[0] + "/"
        for token in re.findall(r"(?<![\w./-])([\w.-]+(?:/[\w.-]+)*(?:\.(?:py|json|yaml)|/))(?![\w-])", desc):
            path = token if token.startswith(TOP) else base + token
            out.add(path.rstrip("/"))
    return out


def test_every_named_path_exists():
    missing = sorted(p for p in _named_paths() if not (ROOT / p).exists())
    assert not missing, f"README names paths that do not exist: {missing}"


def test_every_module_and_folder_is_named():
    named = _named_paths()
    files = [p for top in COMPLETE for p in (ROOT / top).rglob("*.py")
             if p.name != "__init__.py" and "__pycache__" not in p.parts]
    folders = {p.parent for p in files} | {p.parent for top in COMPLETE for p in (ROOT / top).rglob("__init__.py")}
    unnamed = sorted(str(p.relative_to(ROOT)) for p in [*files, *folders] if str(p.relative_to(ROOT)) not in named)
    assert not unnamed, f"README's map does not name: {unnamed}"
