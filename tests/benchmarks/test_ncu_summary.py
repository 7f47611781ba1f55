"""scripts/ncu_summary.py on a hand-written raw CSV in ncu's layout (header row, units row, one row per kernel)."""

import importlib.util
import lzma
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("ncu_summary", ROOT / "scripts" / "ncu_summary.py")
ncu_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ncu_summary)

RAW = (
    '"==PROF== preamble line"\n'
    '"ID","Kernel Name","gpu__time_duration.sum","sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",'
    '"smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio","launch__grid_size"\n'
    '"","","ms","%","inst",""\n'
    '"0","cudnn_kernel","12.546208","75.874865","1.372991","132"\n'
    '"2","_pbs_fwd_kernel","18.507584","49.910539","2.356217","8,192"\n'
)


def test_summary_picks_the_kernels_and_rounds(tmp_path):
    path = tmp_path / "raw.csv.xz"
    with lzma.open(path, "wt") as fh:
        fh.write(RAW)
    table = ncu_summary.summary(path, ids=[2])
    lines = table.splitlines()
    assert lines[0] == "| metric | 2: _pbs_fwd_kernel |"
    assert "| time ms | 18.5 |" in lines
    assert "| tensor pipe % active | 49.9 |" in lines
    assert "| stall barrier | 2.36 |" in lines
    assert "| CTAs | 8.19e+03 |" in lines
    assert not any("cudnn" in line for line in lines)  # kernel 0 not picked
    both = ncu_summary.summary(path)
    assert both.splitlines()[0] == "| metric | 0: cudnn_kernel | 2: _pbs_fwd_kernel |"
