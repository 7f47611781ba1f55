"""scripts/run_proxy_eval.py's jobs (table, sweeps, the paper's ablations; another model folder) and
scripts/proxy_report.py over hand-made runs: families, paper settings, Table 5's density layout, the plots."""

import csv
import json

import pytest

from tests.scripts import load_script


def test_jobs_by_part_and_model():
    ev = load_script("run_proxy_eval")
    all_jobs = ev.jobs("4096,8192", 16384, 25, 25)
    # a table job per method and length; 7 ablation settings x 5 thresholds
    assert len(all_jobs) == 2 * len(ev.TABLE_METHODS) + len(ev.SWEEPS) + 7 * 5
    ablations = [o for _, o in ev.jobs("4096", 16384, 25, 25, parts=("ablations",), model="models/v2")]
    assert len(ablations) == 35 and all(o[:4] == ["model=proxy", "task=ruler", "model.path=models/v2",
                                                  "model.name=v2"] for o in ablations)
    assert ["method=pbs", "method.segment_size=2048", "method.threshold=0.9", "task.lengths=[16384]",
            "task.samples=25"] in [o[4:] for o in ablations]
    table = [o for _, o in ev.jobs("4096,8192", 16384, 25, 5, parts=("table",))]
    assert len(table) == 2 * len(ev.TABLE_METHODS)
    assert all("task.lengths=[8192]" in o for o in table[:9]) and all("task.lengths=[4096]" in o for o in table[9:])
    # parts in the order given, not by cost: a cheap table job before an expensive sweep
    ordered = [o for _, o in ev.jobs("4096", 32768, 25, 25, parts=("table", "sweeps"))]
    assert "task.lengths=[4096]" in ordered[0] and "task.lengths=[32768]" in ordered[-1]
    assert "task.lengths=[4096]" in [o for _, o in ev.jobs("4096", 32768, 25, 25, parts=("sweeps", "table"))][-1]
    cheap_first = [o for _, o in ev.jobs("4096,8192", 16384, 25, 5, parts=("table",), shortest_first=True)]
    assert all("task.lengths=[4096]" in o for o in cheap_first[:9]) and sorted(cheap_first) == sorted(table)
    with pytest.raises(ValueError, match="parts"):
        ev.jobs("4096", 16384, 1, 1, parts=("tabel",))


def _run(runs, name, method, kw, lengths, gens):
    d = runs / "runs" / name
    d.mkdir(parents=True)
    cfg = {"method_name": method, "method": kw, "model": {"name": "toy-proxy"},
           "task": {"lengths": lengths, "samples": 2}}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "status.json").write_text(json.dumps({"status": "ok"}))
    (d / "generations.jsonl").write_text("\n".join(json.dumps(g) for g in gens))


def _gens(length, density, scores):
    return [{"task": f"pbs_ruler_{t}", "length": length + 1, "score": s, "density": density}
            for t in ("niah_single_1", "vt") for s in scores]


def test_report_families_density_table_and_ablation_plot(tmp_path):
    rep = load_script("proxy_report")
    pbs = {"block_size": 128, "segment_size": 256, "share_permutation": "q_head", "threshold": 0.9}
    runs = tmp_path / "eval"
    _run(runs, "a", "pbs", {**pbs, "permute": "key"}, [4096, 8192], _gens(4096, 0.40, [1, 0]) + _gens(8192, 0.30, [1, 1]))
    _run(runs, "b", "pbs", {**pbs, "permute": "none"}, [4096, 8192], _gens(4096, 0.50, [1, 0]) + _gens(8192, 0.40, [0, 0]))
    _run(runs, "c", "oracle", {"threshold": 0.9}, [4096, 8192], _gens(4096, 0.20, [1, 1]) + _gens(8192, 0.10, [1, 1]))
    for name, t, d in (("d", 0.9, 0.35), ("e", 0.7, 0.25)):  # the ablation S=512 at the sweep length
        _run(runs, name, "pbs", {**pbs, "permute": "key", "segment_size": 512, "threshold": t}, [8192],
             _gens(8192, d, [1, 0]))
    _run(runs, "f", "pbs", {**pbs, "permute": "key", "threshold": 0.7}, [8192], _gens(8192, 0.2, [0, 0]))

    assert rep.family("pbs", {**pbs, "permute": "key+query"}) == "pbs (key+query perm.)"
    assert rep.family("pbs", {**pbs, "permute": "key", "block_size": 64, "share_permutation": "kv_head"}) == \
        "pbs (key perm., B=64, one perm. per kv_head)"
    assert not rep.is_paper("pbs", {**pbs, "permute": "key", "segment_size": 512})
    assert rep.is_paper("pbs", {**pbs, "permute": "none"})

    out = tmp_path / "out"
    rep.main(["--runs", str(runs), "--out", str(out), "--sweep-lengths", "8192,4096"])
    # a second sweep length: its own front and plot named by length; no ablation ran at 4K, so no ablation files
    assert (out / "accuracy_vs_density-4k.png").stat().st_size > 0 and (out / "permutation_front-4k.md").exists()
    assert not (out / "ablations-4k.md").exists() and not (out / "ablations-4k.png").exists()
    with open(out / "curves.csv", newline="") as f:
        assert {r["length"] for r in csv.DictReader(f)} == {"8192", "4096"}
    table = (out / "density_table.md").read_text()
    assert "## toy-proxy" in table
    # 4K: without 0.500 (score 50), with key 0.400 (50): -10 pt absolute, 20% relative; the oracle 0.200 (100)
    # paired over the same 4 prompts: 10 density points saved on each (SE 0); scores equal at 4K, +100 at 8K
    assert ("| 4,096 | 0.500 (50.0) | 0.400 (50.0) | +10.0 pt | +20.0% | +10.0 ± 0.0 pt | +0.0 ± 0.0 | "
            "0.200 (100.0) |") in table
    assert ("| 8,192 | 0.400 (0.0) | 0.300 (100.0) | +10.0 pt | +25.0% | +10.0 ± 0.0 pt | +100.0 ± 0.0 | "
            "0.100 (100.0) |") in table
    # Table 3's mean carries its standard error over the 4 samples: key at 4K scores 1, 0, 1, 0 -> 50 ± 28.9
    assert "| pbs (key perm.) | 50 | 50 | 50.0 ± 28.9 | 0.400 |" in (out / "table.md").read_text()
    curves = (out / "curves.csv").read_text().splitlines()
    ablation_rows = [r for r in curves[1:] if "S=512" in r]
    assert len(ablation_rows) == 2 and all(",True," in r for r in ablation_rows)
    assert (out / "ablations.png").stat().st_size > 0 and (out / "accuracy_vs_density.png").stat().st_size > 0
    ablations = (out / "ablations.md").read_text()
    with open(out / "ablations.csv", newline="") as f:
        csv_rows = {(r["ablation"], r["threshold"]): r for r in csv.DictReader(f)}
    assert csv_rows[("key perm., S=512", "0.7")]["score_change"] == "50.0"
    assert csv_rows[("key perm., S=512", "0.7")]["vs_front_note"] == "other prompts"
    # S=512 at tau 0.7 against key perm. at tau 0.7 on the same 4 prompts: answers 1, 0 vs 0, 0 per task ->
    # differences 100, 0, 100, 0 -> +50 ± 28.9; density 0.25 vs 0.20 on each -> +5.0 ± 0.0 points
    # last column: at 0.25 the paper's front runs between tau 0.7 (0.20) and tau 0.9 (0.30), but its tau 0.9 point
    # ran other prompts (4K and 8K in one run), so there is nothing to pair with
    assert ("| key perm., S=512 | 0.7 | 50.0 ± 28.9 | 0.250 | +50.0 ± 28.9 | +5.0 ± 0.0 pt | — (other prompts) |"
            in ablations)
    # at tau 0.9 the paper's setting ran over another sample set: not paired; 0.35 is beyond its densest point
    assert ("| key perm., S=512 | 0.9 | 50.0 ± 28.9 | 0.350 | — | — | — (outside its τ range) |"
            in ablations)


def test_front_at_interpolates_each_prompt_between_neighbouring_points():
    rep = load_script("proxy_report")
    low = {"p1": (80.0, 0.2), "p2": (60.0, 0.2)}    # prompt -> (score, density): mean density 0.2
    high = {"p1": (100.0, 0.4), "p2": (80.0, 0.4)}  # 0.4
    no_density = {"p1": (0.0, None), "p2": (0.0, None)}
    front = [high, no_density, low]                 # any order; a point without densities is left out
    assert rep.front_at(front, 0.3) == pytest.approx({"p1": 90.0, "p2": 70.0})
    assert rep.front_at(front, 0.25) == pytest.approx({"p1": 85.0, "p2": 65.0})
    assert rep.front_at(front, 0.1) is None and rep.front_at(front, 0.5) is None
    assert rep.front_at([low], 0.2) == {"p1": 80.0, "p2": 60.0} and rep.front_at([], 0.2) is None


def test_ablations_pair_each_point_with_the_paper_front_at_its_density():
    rep = load_script("proxy_report")

    def row(family, tau, samples, ablation):
        return {"length": 8192, "method": "pbs", "setting": f"threshold={tau}", "family": family,
                "ablation": ablation, "_samples": samples}

    rows = [row("pbs (key perm.)", 0.7, {"p1": (80.0, 0.2), "p2": (60.0, 0.2)}, False),
            row("pbs (key perm.)", 0.9, {"p1": (100.0, 0.4), "p2": (80.0, 0.4)}, False),
            # B=64 at tau 0.8: density 0.3, where the front scores 90 and 70 -> +5 on each prompt
            row("pbs (key perm., B=64)", 0.8, {"p1": (95.0, 0.3), "p2": (75.0, 0.3)}, True)]
    [c] = rep.ablation_comparisons(rows, 8192)
    assert c["vs_front"] == pytest.approx(5.0) and c["vs_front_se"] == 0.0 and c["vs_front_note"] == ""
    assert c["score_change"] is None and c["n"] == 2  # the paper's setting did not run at tau 0.8
    md = rep.ablations_md([c], "## t")
    assert "| key perm., B=64 | 0.8 | 85.0 ± 10.0 | 0.300 | — | — | +5.0 ± 0.0 |" in md
    # beyond the front's densest point: nothing to pair with, and the table and the csv say why
    [far] = rep.ablation_comparisons([*rows[:2], row("pbs (key perm., B=64)", 0.95, {"p1": (99.0, 0.5)}, True)], 8192)
    assert far["vs_front"] is None and far["vs_front_note"] == "outside its τ range"
    assert "| — (outside its τ range) |" in rep.ablations_md([far], "## t")


def test_paired_difference_by_hand():
    rep = load_script("proxy_report")
    # differences 1, 2, 3, 4 over the shared keys (key "x" is in one side only): mean 2.5, sd sqrt(5/3), SE sd/2
    a = {("vt", 0): 1.0, ("vt", 1): 2.0, ("vt", 2): 3.0, ("vt", 3): 4.0, "x": 9.0}
    b = {("vt", 0): 0.0, ("vt", 1): 0.0, ("vt", 2): 0.0, ("vt", 3): 0.0}
    mean, se, n = rep.paired_difference(a, b)
    assert (mean, n) == (2.5, 4) and se == pytest.approx((5 / 3) ** 0.5 / 2)


def test_provenance_footer_names_gpu_versions_dates_commit():
    rep = load_script("proxy_report")
    prov = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0", "transformers": "5.17.0",
            "date_utc": "2026-11-26T08:01:01Z", "git_commit": "0847447461"}
    rows = [{"_provenance": prov}, {"_provenance": {**prov, "date_utc": "2026-11-27T01:00:00Z"}}]
    footer = rep.provenance_footer(rows)
    assert footer.startswith("NVIDIA H100 80GB HBM3; torch 2.11.0, triton 3.6.0, transformers 5.17.0; "
                             "2026-11-26 to 2026-11-27; commit 0847447; python scripts/run_proxy_eval.py")
    assert rep.provenance_footer([{"_provenance": {}}]).startswith("provenance: not recorded")


def test_permutation_front_pairs_each_threshold_with_none_at_0_9(tmp_path):
    rep = load_script("proxy_report")
    pbs = {"block_size": 128, "segment_size": 256, "share_permutation": "q_head"}
    runs = tmp_path / "eval"
    _run(runs, "ref", "pbs", {**pbs, "permute": "none", "threshold": 0.9}, [8192], _gens(8192, 0.50, [1, 0]))
    _run(runs, "k8", "pbs", {**pbs, "permute": "key", "threshold": 0.8}, [8192], _gens(8192, 0.30, [1, 0]))
    _run(runs, "n8", "pbs", {**pbs, "permute": "none", "threshold": 0.8}, [8192], _gens(8192, 0.30, [0, 0]))
    _run(runs, "k9", "pbs", {**pbs, "permute": "key", "threshold": 0.9}, [8192], _gens(8192, 0.55, [1, 1]))
    # other prompts: a run over two lengths numbers its 8K samples differently, so it is not paired
    _run(runs, "k7", "pbs", {**pbs, "permute": "key", "threshold": 0.7}, [4096, 8192], _gens(8192, 0.20, [0, 0]))
    out = tmp_path / "out"
    rep.main(["--runs", str(runs), "--out", str(out), "--sweep-lengths", "8192"])
    front = (out / "permutation_front.md").read_text()
    # tau 0.8: the same answers on the same 4 prompts (change 0) with 20 density points fewer on each
    # ... and against none at its own tau 0.8 (answers 0, 0 per task): differences 100, 0, 100, 0 -> +50 ± 28.9
    assert "| key perm. | 0.8 | 50.0 ± 28.9 | 0.300 | +0.0 ± 0.0 | +20.0 ± 0.0 pt | +50.0 ± 28.9 |" in front
    # tau 0.9: per-prompt score differences 0, 100, 0, 100 -> 50 ± sd/2 = 28.9; 5 density points more (and the
    # reference is none at its own tau)
    assert "| key perm. | 0.9 | 100.0 ± 0.0 | 0.550 | +50.0 ± 28.9 | -5.0 ± 0.0 pt | +50.0 ± 28.9 |" in front
    assert "| key perm. | 0.7 | 0.0 ± 0.0 | 0.200 | — (other prompts) | — | — |" in front
    assert "| none perm. | 0.9 | 50.0 ± 28.9 | 0.500 | +0.0 ± 0.0 | +0.0 ± 0.0 pt | — |" in front
    assert "| none perm. | 0.8 | 0.0 ± 0.0 | 0.300 | -50.0 ± 28.9 | +20.0 ± 0.0 pt | — |" in front


def test_skip_finished_leaves_out_jobs_with_an_ok_run(tmp_path, capsys):
    ev = load_script("run_proxy_eval")
    cmd = ("python -m experiments.eval model=proxy task=ruler method=pbs method.permute=none task.lengths=[8192] "
           "task.samples=25 results_dir=/tmp/x hydra.run.dir=outputs/${now:%H} wandb.mode=disabled")
    for name, status in (("a", "ok"), ("b", "failed")):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        c = cmd if status == "ok" else cmd.replace("[8192]", "[4096]")
        (d / "status.json").write_text(json.dumps({"status": status, "provenance": {"command": c}}))
    assert ev.finished(tmp_path) == {frozenset(["model=proxy", "task=ruler", "method=pbs", "method.permute=none",
                                                 "task.lengths=[8192]", "task.samples=25"])}
    ev.main(["--list", "--parts", "table", "--table-lengths", "4096,8192", "--skip-finished", str(tmp_path)])
    left = [line.split()[1:] for line in capsys.readouterr().out.splitlines()]
    # only the finished 8K job goes: the failed 4K one and every other method stay
    assert len(left) == 2 * len(ev.TABLE_METHODS) - 1
    assert ["model=proxy", "task=ruler", "method=pbs", "method.permute=none", "task.lengths=[4096]",
            "task.samples=25"] in left
    assert ["model=proxy", "task=ruler", "method=pbs", "method.permute=none", "task.lengths=[8192]",
            "task.samples=25"] not in left


def test_skip_finished_takes_several_folders(tmp_path, capsys):
    """A resumed evaluation skips what the committed results and the machine's own folder both finished."""
    ev = load_script("run_proxy_eval")
    for folder, length in (("committed", 8192), ("machine", 4096)):
        d = tmp_path / folder / "runs" / "r"
        d.mkdir(parents=True)
        cmd = (f"python -m experiments.eval model=proxy task=ruler method=full task.lengths=[{length}] "
               "task.samples=25 results_dir=/tmp/x")
        (d / "status.json").write_text(json.dumps({"status": "ok", "provenance": {"command": cmd}}))
    ev.main(["--list", "--parts", "table", "--table-lengths", "4096,8192",
             "--skip-finished", str(tmp_path / "committed"), "--skip-finished", str(tmp_path / "machine")])
    left = [line.split()[1:] for line in capsys.readouterr().out.splitlines()]
    assert len(left) == 2 * len(ev.TABLE_METHODS) - 2
    assert not any("method=full" in o for o in left)


def test_only_selects_jobs_by_whole_overrides_and_repeats(capsys):
    """--only matches whole overrides (permute=key is not permute=key+query); repeated, a job needs one match."""
    ev = load_script("run_proxy_eval")
    ev.main(["--list", "--parts", "sweeps,ablations", "--sweep-length", "32768",
             "--only", "method.permute=key method.threshold=0.5", "--only", "method.segment_size=512"])
    left = [line.split()[1:] for line in capsys.readouterr().out.splitlines()]
    assert len(left) == 1 + 5
    assert left[0] == ["model=proxy", "task=ruler", "method=pbs", "method.permute=key", "method.threshold=0.5",
                       "task.lengths=[32768]", "task.samples=25"]
    assert all("method.segment_size=512" in o for o in left[1:])
    ev.main(["--list", "--parts", "table", "--table-lengths", "4096", "--only", "method=full"])
    assert [line.split()[3] for line in capsys.readouterr().out.splitlines()] == ["method=full"]
    for bad in ("method.segment_size=513", "", "method.permute=key+query"):  # a typo, nothing, not in these parts
        with pytest.raises(SystemExit):
            ev.main(["--list", "--parts", "table", "--only", "method=full", "--only", bad])
        assert f"--only {bad!r} matches no job" in capsys.readouterr().err


@pytest.mark.parametrize("extra", ["/tmp/proxy-v2/eval", "eval", "wandb.mode"])
def test_extra_arguments_must_be_hydra_overrides(extra, capsys):
    """Anything that is not an override is refused before a job starts (each job would fail on it)."""
    ev = load_script("run_proxy_eval")
    with pytest.raises(SystemExit):
        ev.main(["--list", "--parts", "table", extra])
    assert f"got extra={extra!r}" in capsys.readouterr().err


def test_hydra_overrides_pass_as_extra(capsys):
    ev = load_script("run_proxy_eval")
    assert ev.main(["--list", "--parts", "table", "--table-lengths", "4096", "wandb.mode=disabled",
                    "+trainer.x=1", "++trainer.y=2", "~task.limit", "hydra.run.dir=outputs/${now:%H}",
                    "+hydra/launcher=basic", "~hydra/sweeper", "method@backup=pbs", "task.lengths=[16384]"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(load_script("run_proxy_eval").TABLE_METHODS)
