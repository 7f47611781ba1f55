"""Build the tables in results/tables/ from the committed results (never typed by hand).

    python scripts/make_tables.py            # or: make reproduce-tables

- results/tables/kernels-<gpu>.md: dense backends, our kernel and PBS end to end per length, from
  results/kernels/<gpu>.csv (ratios against cuDNN SDPA measured in the same run).
- results/tables/eval.md: the evaluation runs placed in results/eval/ (``python -m experiments.eval ...
  results_dir=results/eval``, then committed): per run and benchmark the score with model, task, length and n,
  LongBench's category means and "Avg" (their mean, as Table 1), every task's score, with the run ids.

Only committed files are read (in a git checkout): runs of your own in results/ do not leak into the tables.
- results/proxy/{scores.csv, table.md, density_table.md, permutation_front.md, ablations.md + .csv, curves.csv,
  accuracy_vs_density.png, ablations.png; the same named -32k for another sweep length} and
  results/tables/proxy-ruler.md, proxy-density.md: every method on the proxy model over the RULER-style suite, from
  the runs in results/proxy/eval (scripts/proxy_report.py); the same under results/proxy/v2/ and proxy-v2-*.md for
  the Step 11 proxy (its GPU runs, results/proxy/v2/eval), and results/proxy/v2/cpu/ + proxy-v2-cpu-*.md from its runs on a
  CPU (results/proxy/v2/eval-cpu: full attention at 4K-32K, every method, the fronts and the ablations at 4K).
- results/tables/table7-<gpu>.{md,png}: the paper's Table 7 layout (dense attention, permutation, selection, sparse
  attention, total, overhead, speedup per length) from results/kernels/<gpu>.csv, beside the paper's (stacked bars).
- results/kernels/step9/throughput.png: Step 9's kernel throughput figure (scripts/plot_kernel_throughput.py).
- results/speed/<gpu>.md, <gpu>-ttft.png, <gpu>-speedup.png and results/tables/speed-<gpu>.md: the end-to-end
  prefill benchmark (time to first token) from results/speed/<gpu>.csv (benchmarks/speed/report.py); absent until
  the GPU run has been made (results/speed/README.md says how).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's pbs, also when run as a script
    sys.path.insert(0, str(ROOT))


def kernel_table(csv_path: Path) -> str:
    rows = list(csv.DictReader(csv_path.open()))

    def get(section, variant, n):
        return next((r for r in rows if r["section"] == section and r["variant"] == variant
                     and int(r["seq_len"]) == n), None)

    lengths = sorted({int(r["seq_len"]) for r in rows})
    source = csv_path.relative_to(ROOT) if csv_path.is_relative_to(ROOT) else csv_path
    out = [f"# Kernel speed: {csv_path.stem} (from {source})", "",
           ("| N | cuDNN SDPA ms | flash SDPA | FlexAttention | ours, all tiles | PBS end to end (density, overhead) "
           "| PBS vs cuDNN |"), "|---|---|---|---|---|---|---|"]
    for n in lengths:
        cudnn = get("dense", "sdpa_cudnn", n)
        if cudnn is None or not cudnn["median_ms"]:
            continue
        base = float(cudnn["median_ms"])

        def cell(section, variant, n=n, base=base):
            r = get(section, variant, n)
            return f"{float(r['median_ms']):.3g} ({base / float(r['median_ms']):.2f}×)" if r and r["median_ms"] else "—"

        p = get("methods", "pbs", n)
        pbs_cell = (f"{float(p['total_ms']):.3g} ({float(p['density']):.2f}, {float(p['overhead_pct']):.0f}%)"
                    if p and p["total_ms"] else "—")
        speed = f"{float(p['speedup_vs_fastest_dense']):.2f}×" if p and p["speedup_vs_fastest_dense"] else "—"
        out.append(f"| {n // 1024}K | {base:.3g} | {cell('dense', 'sdpa_flash')} | {cell('dense', 'flex_causal')} | "
                   f"{cell('dense', 'ours_dense')} | {pbs_cell} | {speed} |")
    return "\n".join(out) + "\n"


def eval_table(index_rows: list[dict], source: str) -> str:
    """Markdown from the evaluation runs' index rows: per run and benchmark the score with model, task, length and
    n (``pbs.eval.report``); LongBench's six category means and "Avg" (their mean, as Table 1); every task's score."""
    from pbs.eval.longbench.scoring import CATEGORIES, CATEGORY_TITLES
    from pbs.eval.report import markdown_table, rows_from_index

    rows = [r for r in index_rows if r["status"] == "ok"]
    out = [f"# Evaluation runs (from {source})", "",
           ("Score: LongBench = the mean of the six category means (LongBench's README, the paper's Table 1); v2 = "
           "accuracy in percent; other tasks (the RULER-style suite) = the mean task score (0-100), per length. n: "
           "samples behind the score. The latest run of each setting."), "",
           markdown_table(rows_from_index(rows)), ""]
    by_run: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_run[r["run_id"]].append(r)
    cats = [c for c in CATEGORIES if any(r["task"] == f"pbs_longbench_{c}" for r in rows)]
    if cats:
        out += ["## LongBench categories", "",
                "| model | method | kwargs | " + " | ".join(CATEGORY_TITLES[c] for c in cats) + " | Avg | run |",
                "|---|---|---|" + "---|" * (len(cats) + 2)]
        for rid, rs in sorted(by_run.items(), key=lambda kv: (kv[1][0]["model"], kv[1][0]["method"])):
            means = {r["task"]: float(r["score"]) for r in rs if r.get("level") in ("category", "benchmark")
                     and r["score"] not in ("", None) and r["metric"] in ("category_mean", "average")}
            if not means:
                continue
            cells = [_fmt(means.get(f"pbs_longbench_{c}")) for c in cats] + [_fmt(means.get("pbs_longbench"))]
            out.append(f"| {rs[0]['model']} | {rs[0]['method']} | `{rs[0]['method_kwargs']}` | " + " | ".join(cells)
                       + f" | {rid} |")
        out.append("")
    tasks = sorted({r["task"] for r in rows if r.get("level") in (None, "", "task") and r["task"]})
    out += ["## Every task", "", "| model | method | kwargs | " + " | ".join(tasks) + " | run |",
            "|---|---|---|" + "---|" * (len(tasks) + 1)]
    for rid, rs in sorted(by_run.items(), key=lambda kv: (kv[1][0]["model"], kv[1][0]["method"])):
        by_task = {r["task"]: float(r["score"]) for r in rs if r.get("level") in (None, "", "task")
                   and r["score"] not in ("", None)}
        out.append(f"| {rs[0]['model']} | {rs[0]['method']} | `{rs[0]['method_kwargs']}` | "
                   + " | ".join(_fmt(by_task.get(t)) for t in tasks) + f" | {rid} |")
    return "\n".join(out) + "\n"


def table7(kernel_csv: Path, tables: Path) -> list[Path]:
    """results/tables/table7-<gpu>.md and .png from the kernel benchmark's CSV (nothing if it has no PBS rows)."""
    from benchmarks.report import read_csv
    from benchmarks.speed.report import table7_markdown, table7_plot, table7_rows

    rows = read_csv(kernel_csv)
    if not table7_rows(rows):
        return []
    source = kernel_csv.relative_to(ROOT) if kernel_csv.is_relative_to(ROOT) else kernel_csv
    md = tables / f"table7-{kernel_csv.stem}.md"
    md.write_text(table7_markdown(rows, kernel_csv.stem, str(source)))
    return [md, table7_plot(rows, tables / f"table7-{kernel_csv.stem}.png", kernel_csv.stem)]


def speed_reports(speed_dir: Path, tables: Path) -> list[Path]:
    """The speed benchmark's report and plots for every results/speed/<gpu>.csv, and a copy of the report in
    results/tables/; none yet is not an error (the GPU run is pending)."""
    from benchmarks.speed.report import write_report

    csvs = sorted(speed_dir.glob("*.csv")) if speed_dir.is_dir() else []
    if not csvs:
        print(f"{speed_dir}: no speed results yet (the GPU run is pending; {speed_dir / 'README.md'} has the command)")
        return []
    written = []
    for csv_path in csvs:
        files = write_report(csv_path)
        copy = tables / f"speed-{csv_path.stem}.md"
        copy.write_text(files[0].read_text())
        written += [*files, copy]
    return written


def _kernel_figure(kernels: Path) -> Path | None:
    """Step 9's throughput figure (scripts/plot_kernel_throughput.py), loaded by path: this module is also imported
    from elsewhere than scripts/."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_kernel_throughput", ROOT / "scripts" / "plot_kernel_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plot(kernels, kernels / "step9" / "throughput.png")


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def committed(folder: Path) -> set[str] | None:
    """Files under ``folder`` (relative paths) that git tracks and that are unmodified; None outside a git checkout
    (then every file counts)."""
    import subprocess

    def git(*args):
        res = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=False)
        return res.stdout if res.returncode == 0 else None

    tracked = git("ls-files", "-z", ".")
    if tracked is None or not folder.exists():
        return None
    modified = set((git("diff", "--name-only", "--relative", "HEAD", "--", ".") or "").split())
    return {p for p in tracked.split("\0") if p and p not in modified}


def _committed_runs(runs_root: Path) -> set[str] | None:
    files = committed(runs_root)
    if files is None:
        return None
    return {Path(f).parts[1] for f in files if f.startswith("runs/") and f.endswith("/status.json")}


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    tables = args.results / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    written = []
    kernels = committed(args.results / "kernels")
    for csv_path in sorted((args.results / "kernels").glob("*.csv")):
        if kernels is not None and csv_path.name not in kernels:
            print(f"skipped {csv_path}: not committed")
            continue
        path = tables / f"kernels-{csv_path.stem}.md"
        path.write_text(kernel_table(csv_path))
        written.append(path)
        written += table7(csv_path, tables)
    figure = _kernel_figure(args.results / "kernels")
    written += [figure] if figure else []
    written += speed_reports(args.results / "speed", tables)
    evals = args.results / "eval"  # paper-protocol runs placed here (results_dir=results/eval) and committed
    if (evals / "runs").exists():
        from pbs.eval.results import RunStore

        rows = RunStore(evals).rows(run_ids=_committed_runs(evals))
        if rows:
            path = tables / "eval.md"
            source = evals.relative_to(ROOT) if evals.is_relative_to(ROOT) else evals
            path.write_text(eval_table(rows, str(source)))
            written.append(path)
    proxy = args.results / "proxy"
    # the Step 4 proxy's evaluation, the Step 11 proxy's (GPU, once it has run) and its runs on a CPU (fronts at 4K)
    for name, runs, folder, extra in (
            ("proxy", proxy / "eval", proxy, []),
            ("proxy-v2", proxy / "v2" / "eval", proxy / "v2", ["--sweep-lengths", "16384,32768"]),
            ("proxy-v2-cpu", proxy / "v2" / "eval-cpu", proxy / "v2" / "cpu", ["--sweep-lengths", "4096"])):
        if not (runs / "runs").exists():
            continue
        from proxy_report import main as proxy_report  # scripts/ is on sys.path when run as a script

        proxy_report(["--runs", str(runs), "--out", str(folder), *extra], run_ids=_committed_runs(runs))
        for report, table in (("table.md", f"{name}-ruler.md"), ("density_table.md", f"{name}-density.md")):
            if (folder / report).exists():
                (tables / table).write_text((folder / report).read_text())
                written.append(tables / table)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
