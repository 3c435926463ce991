"""benchmarks/gpu_check.py: the one command a lent GPU runs, tried on the CPU at toy sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_dry_run_smoke_tests_every_method_benches_and_runs_recipes_side_by_side(tmp_path):
    from tailcon.methods import METHODS

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path)  # a hang guard only
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert {"device", "torch", "smoke", "bench", "recipes"} <= set(report)
    assert {f"{m}/bf16" for m in METHODS} | {"jpeg_decode/device"} == set(report["smoke"])
    assert set(report["smoke"].values()) == {"ok"}
    for figures in report["bench"].values():
        assert figures["images_per_s"] > 0 and figures["peak_memory_mb"] > 0
    assert set(report["recipes"]) == set(report["bench"]) == {"digits_lt/bcl", "digits_lt/logit_adjusted"}
    for run in report["recipes"].values():
        assert run["finished"] and run["epochs_done"] == 2 and 0 <= run["top1_final"] <= 100
        assert set(run) >= {"epochs_done", "wall_s", "top1_final", "top1_best", "many", "medium", "few",
                            "images_per_s", "images_per_s_alone", "concurrency_cost"}
        assert run["images_per_s"] > 0 and run["images_per_s_alone"] > 0
    assert "done:" in (out / "gpu_check.log").read_text()


@pytest.mark.slow
def test_a_recipe_is_stopped_cleanly_at_the_budget_and_says_so(tmp_path):
    import gpu_check

    check = gpu_check.Check(tmp_path, budget_s=12)
    embedded = str(REPO / "tailcon" / "configs" / "digits_lt.yaml")
    gpu_check.recipe(check, "digits", [embedded, "train.epochs=500", "train.eval_every=1", "device=cpu"],
                     tmp_path / "run", min_s=1)
    result = json.loads((tmp_path / "gpu_check.json").read_text())["recipes"]["digits"]
    assert not result["finished"] and result["exit_code"] in (130, -2), result  # SIGINT: caught, or during start-up
    gpu_check.recipe(check, "late", [embedded], tmp_path / "late")  # no budget left: listed, not started
    assert "recipe late" in check.report["not_reached"] and not (tmp_path / "late").exists()


@pytest.mark.slow
def test_recipes_run_side_by_side_and_all_stop_cleanly_at_the_deadline(tmp_path):
    import gpu_check

    check = gpu_check.Check(tmp_path, budget_s=15)
    embedded = str(REPO / "tailcon" / "configs" / "digits_lt.yaml")
    jobs = {name: ([embedded, "train.epochs=500", "device=cpu", "data.num_workers=0", *extra], tmp_path / name)
            for name, extra in (("ce", ["method.name=ce"]), ("la", []))}
    gpu_check.run_recipes(check, jobs, min_s=1)
    results = json.loads((tmp_path / "gpu_check.json").read_text())["recipes"]
    assert set(results) == {"ce", "la"}
    for result in results.values():  # both were still running at the deadline: launched together, stopped together
        assert not result["finished"] and result["exit_code"] in (130, -2), result
    assert {p.name for p in tmp_path.glob("*.log")} >= {"ce.log", "la.log"}
