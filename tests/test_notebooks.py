"""Every notebook runs top to bottom on the committed results (outputs are not committed)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_shows_its_figures(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit with outputs cleared"
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()
    plotting = [cell for cell in nb.cells if cell.cell_type == "code" and "plt.subplots" in cell.source]
    assert plotting
    for cell in plotting:  # a figure drawn is a figure shown (no non-interactive backend)
        assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.source[:80]


def test_committed_tables_match_the_results(tmp_path):
    """The committed tables are what make reproduce-tables builds from the committed CSVs (nobody edited them)."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "results" / "kernels", tmp_path / "kernels")
    shutil.copytree(ROOT / "results" / "proxy" / "eval", tmp_path / "proxy" / "eval")
    subprocess.run([sys.executable, "scripts/make_tables.py", "--results", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    built_kernels = list((tmp_path / "tables").glob("kernels-*.md"))
    assert built_kernels
    for built in built_kernels:
        committed = (ROOT / "results" / "tables" / built.name).read_text()
        assert built.read_text().split("\n", 1)[1] == committed.split("\n", 1)[1]  # title names the source path
    for name in ("table.md", "curves.csv", "scores.csv"):
        assert (tmp_path / "proxy" / name).read_text() == (ROOT / "results" / "proxy" / name).read_text(), name
    assert (tmp_path / "tables" / "proxy-ruler.md").read_text() == (ROOT / "results" / "tables" / "proxy-ruler.md").read_text()
