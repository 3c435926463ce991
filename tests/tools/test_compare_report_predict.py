"""tailcon compare (same budget and seeds, mean ± std, resumable), tailcon report (figures and
page), tailcon predict / tailcon.load (the run's preprocessing, same predictions as evaluation)."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import tailcon
from tailcon import config, resolution
from tailcon.cli import embedded_config_path, main
from tailcon.tools import compare as compare_mod
from tailcon.engine import train

from conftest import tiny_cfg

BUDGET = ["train.epochs=2", "train.eval_every=1", "optim.warmup_epochs=0", "train.progress=false"]


def _configs(tmp_path):
    base = embedded_config_path()
    paths = []
    for name in ("ce", "logit_adjusted"):
        p = tmp_path / "configs" / f"{name}.yaml"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"_base_: {base}\nmethod:\n  name: {name}\n")
        paths.append(str(p))
    return paths


def test_compare_trains_each_config_per_seed_and_tabulates_mean_and_std(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    configs = _configs(tmp_path)
    assert main(["compare", *configs, "--seeds", "0", "1", "--out", str(out), *BUDGET,
                 "method.linear_epochs=1"]) == 0
    for name in ("ce", "logit_adjusted"):
        for seed in (0, 1):
            res = json.loads((out / name / f"seed{seed}" / "results.json").read_text())
            assert res["epoch"] == 2
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert {r["config"] for r in rows} == {"ce", "logit_adjusted"}
    for r in rows:
        tops = [json.loads((out / r["config"] / f"seed{s}" / "results.json").read_text())["top1"] for s in (0, 1)]
        assert float(r["final_top1_mean"]) == pytest.approx(np.mean(tops), abs=1e-3)
        assert float(r["final_top1_std"]) == pytest.approx(np.std(tops, ddof=1), abs=1e-3)
        assert r["seeds"] == "0 1" and r["best_selected_on"] == "val"
        eces = [json.loads((out / r["config"] / f"seed{s}" / "results.json").read_text())["ece"]["overall"]
                for s in (0, 1)]
        assert float(r["final_ece_mean"]) == pytest.approx(np.mean(eces), abs=1e-3)
    md = (out / "compare.md").read_text()
    assert "| top-5 | ECE |" in md and "different training sets" not in md
    assert "±" in md and "picked on val" in md and "Final epoch" in md
    # a second call reads the finished runs back instead of training again
    monkeypatch.setattr("tailcon.engine.stages.train", lambda cfg: pytest.fail("retrained a finished run"))
    rows2 = compare_mod.compare(configs, [0, 1], BUDGET, out)
    assert len(rows2) == 2


def test_compare_resumes_an_interrupted_run(tmp_path):
    out = tmp_path / "cmp"
    configs = _configs(tmp_path)[:1]
    spec = compare_mod.plan(configs, [0], BUDGET, out)[0]
    cfg = dict(spec.cfg, train=dict(spec.cfg["train"], epochs=1))  # as if killed after epoch 1 of 2
    train(cfg)
    (spec.run_dir / "results.json").unlink()
    compare_mod.compare(configs, [0], BUDGET, out)
    records = [json.loads(l) for l in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    dirs = []
    for name in ("ce", "logit_adjusted"):
        cfg = tiny_cfg(tmp / name, f"method.name={name}", "optim.lr=0.1", epochs=3)
        train(cfg)
        dirs.append(tmp / name / "run")
    return dirs


@pytest.mark.slow
def test_report_writes_figures_and_a_page(two_runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_runs), "--out", str(out), "--tsne-points", "150"]) == 0
    page = (out / "report.md").read_text()
    for name in ("per_class_accuracy.png", "shot_groups.png", "training_curves.png", "reliability.png",
                 "confusion_0.png", "confusion_1.png", "tsne_0.png", "tsne_1.png"):
        assert f"({name})" in page, name
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
            pixels = np.asarray(im.convert("L"))
            assert pixels.std() > 5, f"{name} is blank"
    assert "| ce |" in page or "ce" in page
    assert "| top-5 | ECE |" in page and "ECE per group" in page


def test_load_predicts_like_the_evaluation(two_runs):
    from tailcon.data import build_data

    model = tailcon.load(two_runs[1])
    data = build_data(model.config)
    images = data.test.images[:40]
    probs = model(list(images))
    assert probs.shape == (40, 10) and torch.allclose(probs.sum(1), torch.ones(40), atol=1e-5)
    results = json.loads((two_runs[1] / "results.json").read_text())
    all_probs = model(data.test.images)
    acc = 100 * float((all_probs.argmax(1).numpy() == data.test.targets).mean())
    assert acc == pytest.approx(results["top1"], abs=1e-6), "same preprocessing and logits as tailcon eval"
    # tensors, a [B, C, H, W] batch and PIL images give the same answer as arrays
    t = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(model(t), probs[:4])
    torch.testing.assert_close(model([Image.fromarray(a) for a in images[:4]]), probs[:4])
    top = model.topk(images[:2], k=3)
    assert len(top) == 2 and len(top[0]) == 3 and top[0][0][1] >= top[0][1][1]
    assert top[0][0][0] in model.classes


def test_predict_cli_prints_topk_for_image_files(two_runs, tmp_path, capsys):
    from tailcon.data import build_data

    model = tailcon.load(two_runs[0])
    data = build_data(model.config)
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(data.test.images[i]).save(p)
        paths.append(str(p))
    assert main(["predict", str(two_runs[0]), *paths, "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("  1. ") == 3 and out.count("  2. ") == 3 and "%" in out
    expected = model.topk(list(data.test.images[:3]), k=1)
    for (name, _), path in zip((t[0] for t in expected), paths):
        block = out.split(path)[1].splitlines()[1]
        assert name in block


def test_predict_names_an_unreadable_image(two_runs, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", str(two_runs[0]), str(bad)]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_compare_records_a_failed_run_and_keeps_going(tmp_path):
    out = tmp_path / "cmp"
    configs = _configs(tmp_path)
    bad = tmp_path / "configs" / "diverges.yaml"
    bad.write_text(f"_base_: {embedded_config_path()}\noptim:\n  lr: 1.0e+6\n  weight_decay: 1.0e+6\n")
    rows = compare_mod.compare([str(bad), configs[1]], [0], BUDGET + ["train.log_every=1"], out)
    assert (out / "diverges" / "seed0" / "failed.txt").read_text().startswith("NonFiniteLossError")
    md = (out / "compare.md").read_text()
    assert "Runs without a result" in md and "diverges: seed 0: NonFiniteLossError" in md
    assert json.loads((out / "logit_adjusted" / "seed0" / "results.json").read_text())["epoch"] == 2
    assert {r["name"] for r in rows} == {"diverges", "logit_adjusted"}


def test_report_and_load_follow_a_two_stage_run(tmp_path):
    cfg = tiny_cfg(tmp_path, "method.name=supcon", "method.linear_epochs=1", "data.batch_size=32",
                   "train.max_steps_per_epoch=3", epochs=1)
    train(cfg)
    run = tmp_path / "run"
    model = tailcon.load(run)
    assert model.checkpoint.parent.name == "linear"
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--tsne-points", "100"]) == 0
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "training_curves.png" in page and "tsne_0.png" in page


def test_compare_table_shows_single_seed_without_spread_and_unrun_configs():
    def row(name, seeds, top1s):
        return {"name": name, "method": name, "seeds": seeds, "epochs": 2, "selected_on": "val", "minutes": 1.0, "failed": [],
                "final": {m: compare_mod._mean_std(top1s) for m in compare_mod.METRICS},
                "best": {m: compare_mod._mean_std(top1s) for m in compare_mod.METRICS}}

    rows = [row("two", [0, 1], [10.0, 20.0]), row("one", [0], [30.0]),
            dict(row("none", [], []), failed=["seed 0: not finished"])]
    md = compare_mod.to_markdown(rows)
    lines = {l.split("|")[1].strip(): l for l in md.splitlines() if l.startswith("| ")}
    assert "15.00 ± 7.07" in lines["two"]
    assert "| 30.00 |" in lines["one"] and "±" not in lines["one"]
    assert "not run" in lines["none"] and "seed 0: not finished" in md
    # ordered by mean final top-1, unrun configs last
    order = [l.split("|")[1].strip() for l in md.splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert order == ["one", "two", "none"]
    csv_rows = list(csv.DictReader(compare_mod.to_csv(rows).splitlines()))
    assert csv_rows[1]["final_top1_std"] == "" and csv_rows[2]["final_top1_mean"] == ""


def test_report_legends_drop_the_parts_all_runs_share_and_never_reuse_a_colour():
    from pathlib import Path

    from tailcon.tools.report import _colours, _strip_shared, run_labels

    names = [f"cifar10_lt-{m}/seed0" for m in ("bcl", "ce", "hybrid_sc", "hybrid_psc")]
    assert _strip_shared(names) == ["bcl", "ce", "hybrid_sc", "hybrid_psc"]
    # Stripping must keep runs apart and never leave an empty name.
    assert _strip_shared(["a-x/seed0", "a-x/seed1"]) == ["seed0", "seed1"]
    assert _strip_shared(["run", "run-long"]) == ["run", "run-long"]
    assert _strip_shared(["only-one"]) == ["only-one"]
    # seed directories are named with their config's directory, then shared parts dropped
    runs = [{"dir": Path(f"out/cifar10_lt-{m}/seed0"), "name": "seed0"} for m in ("bcl", "ce")]
    assert run_labels(runs) == ["bcl", "ce"]
    for n in (3, 11, 25):
        assert len(set(_colours(n))) == n


def test_report_runs_the_backbone_once_per_test_batch(two_runs, monkeypatch):
    from tailcon.tools.report import outputs_on_test_split
    from tailcon.methods.base import Method

    calls = []
    original = Method.features

    def counted(self, images):
        calls.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(Method, "features", counted)
    out = outputs_on_test_split(two_runs[0], max_points=50)
    assert sum(calls) == len(out["labels"]) == 300, "each test image through the backbone once"
    assert out["features"].shape == (50, 64)


def _config_with_paper(tmp_path):
    """The embedded config at a 2-epoch budget, with a published figure for exactly that recipe."""
    config_file = tmp_path / "with_paper.yaml"
    config_file.write_text(f"_base_: {embedded_config_path()}\ntrain:\n  epochs: 2\n  max_steps_per_epoch: 2\n"
                           "optim:\n  warmup_epochs: 0\npaper:\n  top1: 90.0\n  few: 80.0\n  source: a test table\n")
    return config_file


def test_the_paper_figure_stands_beside_the_runs_in_results_compare_and_report(tmp_path, capsys):
    config_file = _config_with_paper(tmp_path)
    out = tmp_path / "cmp"
    # another seed, evaluation cadence and progress display are the same recipe
    rows = compare_mod.compare([str(config_file)], [0, 1], ["train.eval_every=1", "train.progress=false"], out)
    results = json.loads((out / config.config_name(config_file) / "seed0" / "results.json").read_text())
    assert results["paper"] == {"top1": 90.0, "few": 80.0, "source": "a test table", "config": str(config_file.resolve())}
    assert results["vs_paper"]["top1"] == pytest.approx(results["top1"] - 90.0)
    assert results["vs_paper"]["few"] == pytest.approx(results["few"] - 80.0)
    assert "paper: top1 90.00 (final epoch" in capsys.readouterr().out
    mean = rows[0]["final"]["top1"][0]
    md = (out / "compare.md").read_text()
    assert "| paper top-1 | final - paper |" in md and f"| 90.00 | {mean - 90.0:+.2f} |" in md
    assert "Empty paper columns" not in md
    header, line = (out / "compare.csv").read_text().splitlines()[:2]
    record = dict(zip(header.split(","), line.split(",")))
    assert float(record["paper_top1"]) == 90.0
    assert float(record["final_top1_minus_paper"]) == pytest.approx(mean - 90, abs=0.01)
    run = out / config.config_name(config_file) / "seed0"
    assert main(["report", str(run), "--no-model", "--out", str(tmp_path / "rep")]) == 0
    assert "| 90.00 |" in (tmp_path / "rep" / "report.md").read_text()
    # the paper figure describes the run; correcting it changes nothing trained: the runs are read back
    compare_mod.compare([str(config_file)], [0, 1], ["train.eval_every=1", "train.progress=false", "paper.top1=91.0"], out)


def test_a_run_of_another_recipe_gets_no_paper_figure_and_every_output_names_the_keys_that_differ(tmp_path, capsys):
    config_file = _config_with_paper(tmp_path)
    out = tmp_path / "cmp"
    rows = compare_mod.compare([str(config_file)], [0], ["train.epochs=3", "optim.lr=0.05", "train.progress=false"], out)
    results = json.loads((out / config.config_name(config_file) / "seed0" / "results.json").read_text())
    assert "paper" not in results and "vs_paper" not in results
    assert results["paper_withheld"] == (f"the recipe differs from {config_file.resolve()}'s: "
                                         "optim.lr 0.1 -> 0.05; train.epochs 2 -> 3")
    printed = capsys.readouterr().out
    assert "paper: no comparison, the recipe differs from" in printed and "train.epochs 2 -> 3" in printed
    assert "paper: top1" not in printed
    assert rows[0]["paper_top1"] is None
    md = (out / "compare.md").read_text()
    assert "| - | - |" in md and "Empty paper columns:" in md and "train.epochs 2 -> 3" in md
    run = out / config.config_name(config_file) / "seed0"
    assert main(["report", str(run), "--no-model", "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "no paper figure: the recipe differs from" in page and "optim.lr 0.1 -> 0.05" in page


def test_a_recalled_paper_figure_is_marked_so_in_compare():
    assert compare_mod.recalled("LDAM-DRW (Cao et al. 2019), Table 2, error 22.97 [recalled]")
    assert compare_mod.recalled("Hybrid (Wang et al. 2021), Table 1 [PAPER-r]")
    assert not compare_mod.recalled("BCL (Zhu et al. 2022), CIFAR-10-LT IF100, ResNet-32 [PAPER-v]")
    assert not compare_mod.recalled(None)
    row = {"paper_top1": 77.0, "paper_recalled": True}
    assert compare_mod._paper(row) == "77.00 (recalled)"


def test_compare_reads_existing_runs_groups_seeds_and_separates_other_recipes(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, extra in (("a0", ["seed=0"]), ("a1", ["seed=1"]), ("lr", ["seed=0", "optim.lr=0.05"])):
        train(tiny_cfg(runs / name, "train.max_steps_per_epoch=2", *extra, epochs=1))
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    out = tmp_path / "table"
    assert main(["compare", str(runs / "*" / "run"), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == before, "nothing trained or rewritten"
    md = (out / "compare.md").read_text()
    cfg = resolution.resolve(embedded_config_path())
    name, method = cfg["name"], cfg["method"]["name"]
    assert f"| {name} | {method} | 2 |" in md and f"| {name}#2 | {method} | 1 |" in md
    assert f"{name}#2 ({runs / 'lr' / 'run'}) is another recipe than {name}: optim.lr 0.1 -> 0.05" in md
    capsys.readouterr()
    assert main(["compare", str(runs / "a0"), "--out", str(out)]) == 2
    assert f"{runs / 'a0'} is a directory that holds no run" in capsys.readouterr().err
    assert main(["compare", str(runs / "a0" / "run"), "train.epochs=3", "--out", str(out)]) == 2
    assert "either run directories" in capsys.readouterr().err


def test_the_reliability_diagram_hides_empty_bins_and_shows_how_many_images_each_holds(tmp_path, monkeypatch):
    import matplotlib.figure

    from tailcon.tools import report

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    count = [0] * 15
    count[3], count[14] = 2, 998
    conf = [None] * 15
    acc = [None] * 15
    conf[3], acc[3], conf[14], acc[14] = 0.22, 0.0, 0.98, 0.97
    run = {"label": "r", "results": {"reliability": {"count": count, "confidence": conf, "accuracy": acc},
                                    "ece": {"overall": 1.0}}}
    report.plot_reliability([run], tmp_path / "rel.png")
    curve_ax, counts_ax = saved[0].axes
    (points,) = curve_ax.collections
    assert len(points.get_offsets()) == 2, "empty bins are not drawn"
    small, large = points.get_sizes()
    assert large > 50 * small / 10 and small < 10, "marker area follows the bin's images"
    assert sorted(round(p.get_height()) for p in counts_ax.patches if p.get_height() > 0) == [2, 998]
