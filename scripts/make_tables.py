"""Build the tables in results/tables/ from the committed results (never typed by hand).

    python scripts/make_tables.py            # or: make reproduce-tables

- results/tables/kernels-<gpu>.md: dense backends, our kernel and PBS end to end per length, from
  results/kernels/<gpu>.csv (ratios against cuDNN SDPA measured in the same run).
- results/tables/eval.md: per (model, method, kwargs) LongBench's category means and "Avg" (their mean, as Table 1),
  LongBench v2 accuracy per protocol, the mean of any other tasks, density and prefill time, then every task's
  score, from results/index.csv (the evaluation runs' index), with the run ids they come from.
- results/proxy/{scores.csv, table.md, curves.csv, accuracy_vs_density.png} and results/tables/proxy-ruler.md:
  every method on the proxy model over the RULER-style suite, from the runs in results/proxy/eval
  (scripts/proxy_report.py).
- results/tables/table7-<gpu>.{md,png}: the paper's Table 7 layout (dense attention, permutation, selection, sparse
  attention, total, overhead, speedup per length) from results/kernels/<gpu>.csv, beside the paper's (stacked bars).
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
           "| N | cuDNN SDPA ms | flash SDPA | FlexAttention | ours, all tiles | PBS end to end (density, overhead) "
           "| PBS vs cuDNN |", "|---|---|---|---|---|---|---|"]
    for n in lengths:
        cudnn = get("dense", "sdpa_cudnn", n)
        if cudnn is None or not cudnn["median_ms"]:
            continue
        base = float(cudnn["median_ms"])

        def cell(section, variant):
            r = get(section, variant, n)
            return f"{float(r['median_ms']):.3g} ({base / float(r['median_ms']):.2f}×)" if r and r["median_ms"] else "—"

        p = get("methods", "pbs", n)
        pbs_cell = (f"{float(p['total_ms']):.3g} ({float(p['density']):.2f}, {float(p['overhead_pct']):.0f}%)"
                    if p and p["total_ms"] else "—")
        speed = f"{float(p['speedup_vs_fastest_dense']):.2f}×" if p and p["speedup_vs_fastest_dense"] else "—"
        out.append(f"| {n // 1024}K | {base:.3g} | {cell('dense', 'sdpa_flash')} | {cell('dense', 'flex_causal')} | "
                   f"{cell('dense', 'ours_dense')} | {pbs_cell} | {speed} |")
    return "\n".join(out) + "\n"


def eval_table(index_path: Path) -> str:
    """Two tables from the evaluation index: per (model, method, kwargs) the headline scores (LongBench: the six
    category means and "Avg", their mean, as Table 1; LongBench v2 accuracy per protocol; the mean of other tasks),
    then every task's score."""
    from pbs.eval.longbench.scoring import CATEGORIES, CATEGORY_TITLES
    from pbs.eval.report import run_scores

    rows = [r for r in csv.DictReader(index_path.open()) if r["status"] == "ok" and r["score"]]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["method"], r["method_kwargs"])].append(r)
    task_rows = [r for r in rows if r.get("level") in (None, "", "task")]
    tasks = sorted({r["task"] for r in task_rows})
    headline = {key: run_scores(rs) for key, rs in groups.items()}
    v2_keys = sorted({k for h in headline.values() for k in h if k.startswith("pbs_longbench_v2")})
    has_other = any("other" in h for h in headline.values())
    source = index_path.relative_to(ROOT) if index_path.is_relative_to(ROOT) else index_path
    cats = [c for c in CATEGORIES if any(r["task"] == f"pbs_longbench_{c}" for r in rows)]
    cols = ([CATEGORY_TITLES[c] for c in cats] + (["LongBench Avg"] if any("longbench" in h for h in headline.values())
            else []) + v2_keys + (["other tasks (mean)"] if has_other else []))
    out = [f"# Evaluation runs (from {source})", "",
           "LongBench Avg is the mean of the category means (LongBench's README, the paper's Table 1); v2 columns are "
           "accuracy in percent.", "",
           "| model | method | kwargs | " + " | ".join(cols) + " | density | prefill ms | runs |",
           "|---|---|---|" + "---|" * len(cols) + "---|---|---|"]

    def fmt(value) -> str:
        return "—" if value is None else f"{value:.2f}"

    for key, rs in sorted(groups.items()):
        model, method, kwargs = key
        cat_means = {r["task"]: float(r["score"]) for r in rs if r.get("level") == "category"}
        h = headline[key]
        cells = [fmt(cat_means.get(f"pbs_longbench_{c}")) for c in cats]
        if "LongBench Avg" in cols:
            cells.append(fmt(h.get("longbench")))
        cells += [fmt(h.get(k)) for k in v2_keys]
        if has_other:
            cells.append(fmt(h.get("other")))
        density = rs[0]["density"] and f"{float(rs[0]['density']):.3f}"
        prefill = rs[0]["prefill_ms"] and f"{float(rs[0]['prefill_ms']):.1f}"
        runs = ", ".join(sorted({r["run_id"] for r in rs}))
        out.append(f"| {model} | {method} | `{kwargs}` | " + " | ".join(cells) + f" | {density} | {prefill} | {runs} |")
    out += ["", "## Every task", "", "| model | method | kwargs | " + " | ".join(tasks) + " |",
            "|---|---|---|" + "---|" * len(tasks)]
    for (model, method, kwargs), rs in sorted(groups.items()):
        by_task = {r["task"]: float(r["score"]) for r in rs if r.get("level") in (None, "", "task")}
        out.append(f"| {model} | {method} | `{kwargs}` | " + " | ".join(fmt(by_task.get(t)) for t in tasks) + " |")
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


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    tables = args.results / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    written = []
    for csv_path in sorted((args.results / "kernels").glob("*.csv")):
        path = tables / f"kernels-{csv_path.stem}.md"
        path.write_text(kernel_table(csv_path))
        written.append(path)
        written += table7(csv_path, tables)
    written += speed_reports(args.results / "speed", tables)
    if (args.results / "index.csv").exists():
        path = tables / "eval.md"
        path.write_text(eval_table(args.results / "index.csv"))
        written.append(path)
    runs = args.results / "proxy" / "eval"
    if (runs / "runs").exists():
        from proxy_report import main as proxy_report  # scripts/ is on sys.path when run as a script

        proxy_report(["--runs", str(runs), "--out", str(args.results / "proxy")])
        path = tables / "proxy-ruler.md"
        path.write_text((args.results / "proxy" / "table.md").read_text())
        written.append(path)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
