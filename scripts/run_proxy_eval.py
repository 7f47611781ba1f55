"""Accuracy vs density of every method on the proxy model over the RULER-style suite (issue 5's evaluation).

Two parts, each job one ``python -m experiments.eval`` run (results under ``--results``, one folder per run):

- table: every method at the paper's settings (PBS with key, none and query permutation), lengths 4K-32K;
- sweeps: thresholds (PBS x 3 permutations, MeanPooling, XAttention, oracle), FlexPrefill's gamma and
  MInference's vertical/slash budgets, at ``--sweep-length``;
- ablations (the paper's §4.3, Fig. 6): PBS's threshold sweep with one setting changed (permute key+query, segment
  size 512 / 1024 / 2048, block size 64 / 256, one permutation per KV head), at ``--sweep-length``.

Jobs run in parallel, ``--procs`` per GPU, part by part in the order of ``--parts``, each part's longest first
(table jobs: one method at one length); a job still running at ``--deadline`` seconds is killed
(finished jobs are kept; ``--skip-finished RESULTS`` leaves out the jobs that
have a finished run there, e.g. the committed ones). Processes share a GPU, so prefill times in these results are not
speed figures (those come from ``experiments.bench_kernels``).

    python scripts/run_proxy_eval.py --gpus 1 --procs 6 --parts table          # the committed proxy (model=proxy)
    python scripts/run_proxy_eval.py --model /path/to/model --results /tmp/eval --parts table,sweeps
    python scripts/run_proxy_eval.py --list          # print the jobs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TABLE_METHODS = [
    ["method=full"],
    ["method=pbs"],
    ["method=pbs", "method.permute=none"],
    ["method=pbs", "method.permute=query"],
    ["method=meanpool"],
    ["method=xattention"],
    ["method=minference"],
    ["method=flexprefill"],
    ["method=oracle"],
]
THRESHOLDS = [0.5, 0.7, 0.8, 0.95]  # the paper's 0.9 is in the table
SWEEPS = (
    [["method=pbs", f"method.permute={p}", f"method.threshold={t}"] for p in ("key", "none", "query")
     for t in THRESHOLDS]
    + [[f"method={m}", f"method.threshold={t}"] for m in ("meanpool", "xattention", "oracle") for t in THRESHOLDS]
    + [["method=flexprefill", f"method.gamma={g}"] for g in (0.8, 0.9, 0.99)]
    + [["method=minference", f"method.vertical_size={v}", f"method.slash_size={s}"]
       for v, s in ((100, 500), (300, 1000), (500, 2000), (1000, 4000))]
)
# one PBS setting changed from the paper's (B 128, S 256, key permutation per query head), swept like the table's
ABLATION_SETTINGS = [["method.permute=key+query"], ["method.segment_size=512"], ["method.segment_size=1024"],
                     ["method.segment_size=2048"], ["method.block_size=64"], ["method.block_size=256"],
                     ["method.share_permutation=kv_head"]]
ABLATIONS = [["method=pbs", *a, f"method.threshold={t}"] for a in ABLATION_SETTINGS for t in (*THRESHOLDS, 0.9)]
PARTS = ("table", "sweeps", "ablations")


def jobs(table_lengths: str, sweep_length: int, samples: int, sweep_samples: int,
         parts: tuple[str, ...] = PARTS, model: str | None = None,
         shortest_first: bool = False) -> list[tuple[float, list[str]]]:
    """(relative cost, hydra overrides) per job of ``parts`` (``model``: a model folder instead of the committed
    proxy). Parts come in the order given, each part's jobs most expensive first (the shortest makespan), or
    cheapest first (``shortest_first``: the most finished jobs by a deadline); a table job is one method at one
    length, so a job cut off at the deadline loses one length, not four."""
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise ValueError(f"parts must be drawn from {list(PARTS)}, got parts={list(parts)!r}")
    lengths = [int(n) for n in table_lengths.split(",")]
    base = ["model=proxy", "task=ruler"] + ([f"model.path={model}", f"model.name={Path(model).name}"] if model else [])
    out = []
    for part in parts:
        if part == "table":
            part_jobs = [(samples * n / 4096, m + [f"task.lengths=[{n}]", f"task.samples={samples}"])
                         for m in TABLE_METHODS for n in lengths]
        else:
            part_jobs = [(sweep_samples * sweep_length / 4096,
                          m + [f"task.lengths=[{sweep_length}]", f"task.samples={sweep_samples}"])
                         for m in (SWEEPS if part == "sweeps" else ABLATIONS)]
        out += sorted(((c, base + o) for c, o in part_jobs), key=lambda t: t[0] if shortest_first else -t[0])
    return out


# what every job passes on to experiments.eval: a mistyped flag or a path would fail each job after it started
_HYDRA_OVERRIDE = re.compile(r"\+{0,2}[\w.\-/@]+=.*|~[\w.\-/@]+(=.*)?")


def finished(results: Path) -> set[frozenset[str]]:
    """The override sets of the finished runs under ``results`` (their status.json commands, less where the results
    went): a job whose overrides are one of them has run, on this code or an earlier commit."""
    own = ("results_dir=", "hydra.", "wandb.")
    out = set()
    for status in results.glob("runs/*/status.json"):
        state = json.loads(status.read_text())
        command = (state.get("provenance") or {}).get("command", "")
        if state.get("status") == "ok" and " -m experiments.eval " in command:
            args = command.split(" -m experiments.eval ", 1)[1].split()
            out.add(frozenset(a for a in args if not a.startswith(own)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all visible; 0 = CPU)")
    p.add_argument("--procs", type=int, default=4, help="parallel jobs per GPU (CPU: in total)")
    p.add_argument("--results", default="results/proxy/v2/eval")
    p.add_argument("--table-lengths", default="4096,8192,16384,32768")
    p.add_argument("--sweep-length", type=int, default=16384)
    p.add_argument("--samples", type=int, default=25, help="per task and length, table jobs (25: a standard error "
                                                            "of <= 2 points on the suite mean)")
    p.add_argument("--sweep-samples", type=int, default=25, help="per task, sweep and ablation jobs")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma separated, of {list(PARTS)}")
    p.add_argument("--model", default=None, help="a model folder (default: the committed proxy, model=proxy)")
    p.add_argument("--deadline", type=float, default=None, help="seconds; jobs still running then are killed")
    p.add_argument("--shortest-first", action="store_true",
                   help="each part's cheapest jobs first (the most finished jobs by --deadline)")
    p.add_argument("--only", action="append", default=[], metavar="OVERRIDES",
                   help="run only the jobs that have all these overrides (space separated, each exactly as "
                        "--list prints it, e.g. 'method.segment_size=512 method.threshold=0.5'); repeat it for "
                        "several selections")
    p.add_argument("--skip-finished", action="append", default=[], metavar="RESULTS",
                   help="leave out the jobs that have a finished run under this results folder (e.g. the committed "
                        "results/proxy/v2/eval: run ids name the commit, so a new commit would run them again); "
                        "repeat it for several folders")
    p.add_argument("--list", action="store_true")
    p.add_argument("extra", nargs="*", help="more hydra overrides for every job")
    a = p.parse_args(argv)
    for override in a.extra:
        if not _HYDRA_OVERRIDE.fullmatch(override):
            p.error(f"extra arguments are hydra overrides (key=value, +key=value, ~key), got extra={override!r}")

    todo = jobs(a.table_lengths, a.sweep_length, a.samples, a.sweep_samples,
                tuple(x for x in a.parts.split(",") if x), a.model, a.shortest_first)
    selections = {sel: set(sel.split()) for sel in a.only}
    for sel, wanted in selections.items():  # a mistyped selection would silently run nothing
        if not wanted or not any(wanted <= set(o) for _, o in todo):
            p.error(f"--only {sel!r} matches no job of --parts {a.parts} (overrides as --list prints them)")
    if selections:
        todo = [j for j in todo if any(wanted <= set(j[1]) for wanted in selections.values())]
    for results in a.skip_finished:
        done_before = finished(Path(results))
        todo = [j for j in todo if frozenset(j[1]) not in done_before]
    if a.list:
        for cost, o in todo:
            print(f"{cost:7.1f}  {' '.join(o)}")
        return 0
    if a.gpus is None:
        import torch

        a.gpus = torch.cuda.device_count()
    slots = [str(g) for g in range(a.gpus) for _ in range(a.procs)] or [""] * a.procs
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    logs = Path(a.results) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    start, running, queue, done = time.time(), {}, list(todo), []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="proxy eval jobs")
    while queue or running:
        for slot in [s for s in range(len(slots)) if s not in running]:
            if not queue:
                break
            _, overrides = queue.pop(0)
            cmd = [sys.executable, "-m", "experiments.eval", *overrides, f"results_dir={a.results}",
                   "hydra.run.dir=outputs/proxy-eval/${now:%Y-%m-%d_%H-%M-%S-%f}", *a.extra]
            # the length too: later calls number from 00 again into the same folder on a warm machine
            name = "_".join(o.split("=", 1)[1].strip("[]") for o in overrides
                            if o.startswith(("method", "task.lengths"))).replace("/", "-").replace(",", "-")
            log = open(logs / f"{len(done) + len(running):02d}_{name}.log", "w")  # noqa: SIM115
            job_env = dict(env, CUDA_VISIBLE_DEVICES=slots[slot]) if slots[slot] else env
            running[slot] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=job_env), log, name)
        time.sleep(0.5)
        for slot, (proc, log, name) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                done.append((name, proc.returncode))
                del running[slot]
                bar.update(1)
        if a.deadline and time.time() - start > a.deadline and running:
            for proc, log, name in running.values():
                proc.kill()
                log.close()
                done.append((name, "killed at deadline"))
            running.clear()
            bar.write(f"deadline: {len(queue)} jobs not started")
            queue.clear()
    bar.close()
    for name, rc in done:
        if rc != 0:
            print(f"job {name}: {rc}")
    ok = sum(rc == 0 for _, rc in done)
    print(f"{ok}/{len(todo)} jobs ok in {time.time() - start:.0f} s")
    return 0 if ok == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
