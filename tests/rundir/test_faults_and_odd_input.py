"""Under faults and odd input: no silently wrong figure, no lost or blocked file, and one clear
line (exit 2) instead of a traceback or an out-of-memory kill."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tailcon import config, resolution
from tailcon.cli import embedded_config_path, main
from tailcon.data import DataError, build_data
from tailcon.engine import RunDirError, load_checkpoint, train
from tailcon.tools import compare as compare_mod
from tailcon import rundir as rundir_mod
from tailcon.engine.logging import read_metrics
from tailcon.rundir import RunDir, save_checkpoint

from conftest import tiny_cfg, write_image_folder

FAST = ["train.max_steps_per_epoch=2", "train.progress=false"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 0
    return run


# ---- wrong or mislabelled results -------------------------------------------------------------
def _coloured_folder(root, splits):
    """Each class one solid colour, so a briefly trained model gets every image right."""
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}
    for split, classes in splits.items():
        for c, n in classes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), colours[c]).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def abc_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("abc")
    root = _coloured_folder(base / "A", {"train": {"a": 6, "b": 6, "c": 6}, "test": {"a": 2, "b": 2, "c": 2}})
    run = base / "run"
    assert main(["train", "data.name=folder", f"data.root={root}", "train.epochs=15", "data.batch_size=6",
                 "model.backbone=resnet8", f"run_dir={run}", "data.image_size=8", "optim.lr=0.05",
                 "train.progress=false"]) == 0
    assert json.loads((run / "results.json").read_text())["top1"] == 100.0
    return run


def test_eval_on_data_lacking_a_training_class_maps_classes_by_name(abc_run, tmp_path, capsys):
    other = _coloured_folder(tmp_path / "B", {"train": {"b": 2, "c": 2}, "test": {"b": 3, "c": 3}})
    assert main(["eval", str(abc_run), f"data.root={other}"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((abc_run / "eval-last-test.json").read_text())
    assert saved["top1"] == 100.0, "b and c keep the ids the model was trained with"
    assert saved["per_class"] == [None, 100.0, 100.0], "the missing class is empty, not 0"
    assert saved["missing_classes"] == ["a"]
    assert "1 of the model's 3 classes have no image in this split: a" in out


def test_eval_on_a_class_the_model_does_not_know_names_it(abc_run, tmp_path, capsys):
    other = _coloured_folder(tmp_path / "B", {"test": {"b": 1}})
    (other / "test" / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(other / "test" / "zebra" / "0.png")
    assert main(["eval", str(abc_run), f"data.root={other}"]) == 2
    assert "class folders that the model lacks: zebra" in _one_error_line(capsys)


def test_compare_refuses_to_read_back_runs_of_another_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    config_file = tmp_path / "la.yaml"
    config_file.write_text(f"_base_: {embedded_config_path()}\n")
    budget = ["train.eval_every=1", "optim.warmup_epochs=0", "train.progress=false", "train.max_steps_per_epoch=2"]
    compare_mod.compare([str(config_file)], [0], budget + ["train.epochs=1"], out)
    for other in ("optim.lr=0.01", "model.backbone=resnet20"):
        with pytest.raises(config.ConfigError, match=rf"{other.split('=')[0]}: .* -> .*Give another --out"):
            compare_mod.compare([str(config_file)], [0], budget + ["train.epochs=1", other], out)
    with pytest.raises(config.ConfigError, match="train.epochs: 1 -> 0|must be an integer >= 1"):
        compare_mod.compare([str(config_file)], [0], budget + ["train.epochs=0"], out)
    capsys.readouterr()
    rows = compare_mod.compare([str(config_file)], [0], budget + ["train.epochs=2"], out)  # more epochs: continued
    assert "training" in capsys.readouterr().out
    assert rows[0]["epochs"] == 2
    assert load_checkpoint(out / config.config_name(config_file) / "seed0" / "last.pt")["epoch"] == 2


def test_compare_refuses_fewer_epochs_than_a_run_has(tmp_path):
    out = tmp_path / "cmp"
    config_file = tmp_path / "la.yaml"
    config_file.write_text(f"_base_: {embedded_config_path()}\n")
    budget = ["train.progress=false", "train.max_steps_per_epoch=2", "optim.warmup_epochs=0"]
    compare_mod.compare([str(config_file)], [0], budget + ["train.epochs=2"], out)
    with pytest.raises(config.ConfigError, match="train.epochs: 2 -> 1"):
        compare_mod.compare([str(config_file)], [0], budget + ["train.epochs=1"], out, train_runs=False)


@pytest.mark.parametrize("tau", ["nan", "inf", "-1", "-0.5", "1e9", "x"])
def test_tau_norm_refuses_values_that_are_not_a_usable_exponent(digits_run, tau, capsys):
    assert main(["eval", str(digits_run), "--tau-norm", tau]) == 2
    assert "--tau-norm takes a number in [0, 10]" in _one_error_line(capsys)
    assert not (digits_run / "eval-last-test-taunorm.json").exists()


# ---- data loss or blocked work -----------------------------------------------------------------
def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 2
    assert "is a symbolic link" in _one_error_line(capsys)
    assert victim.read_text() == "keep me"


def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    (run / ".lock").mkdir(parents=True)
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 2
    assert ".lock" in _one_error_line(capsys)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_resume_works(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path, *FAST, epochs=1)
    train(cfg)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"epoch": 2, "loss": 0.5, "lr"')  # a write cut short
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1]
    assert f"{metrics}:2: dropped a torn last record" in capsys.readouterr().err
    train(tiny_cfg(tmp_path, *FAST, f"resume={tmp_path / 'run'}", epochs=2))
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2]
    assert main(["report", str(tmp_path / "run"), "--no-model", "--out", str(tmp_path / "rep")]) == 0


def test_a_damaged_metrics_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "lo\n{"epoch": 3}\n')
    with pytest.raises(RunDirError, match=rf"{run / 'metrics.jsonl'}:2: damaged record"):
        read_metrics(run)


def test_temporaries_left_by_a_killed_checkpoint_write_are_removed_on_resume(tmp_path, capsys):
    train(tiny_cfg(tmp_path, *FAST, epochs=1))
    run = tmp_path / "run"
    stale = [run / ".last.pt.k3j_9xq2.tmp", run / ".metrics.jsonl.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    unrelated = run / ".notes.tmp"
    unrelated.write_text("not ours")
    train(tiny_cfg(tmp_path, *FAST, f"resume={run}", epochs=2))
    assert not any(p.exists() for p in stale)
    assert unrelated.exists(), "only the temporaries of tailcon's own files are removed"
    assert f"removed {stale[0]}" in capsys.readouterr().out


def test_loading_a_checkpoint_that_is_replaced_meanwhile_reads_one_consistent_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    state = lambda epoch: {"epoch": epoch, "model": {"w": torch.full((64,), float(epoch))}, "config": {}}
    save_checkpoint(state(1), path)
    real_load, calls = torch.load, []

    def load_while_training_replaces_the_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the race: the file is replaced between the index read and the mapping
            save_checkpoint(state(2), path)
            raise RuntimeError("unable to mmap 1234 bytes from file <last.pt>: size 900 is smaller than the "
                               "required mapping size")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(rundir_mod.torch, "load", load_while_training_replaces_the_file)
    ckpt = load_checkpoint(path, for_inference=True)
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["model"]["w"], torch.full((64,), 2.0))


def test_concurrent_replacements_never_give_a_mixed_or_failed_load(tmp_path):
    path = tmp_path / "last.pt"
    state = lambda epoch: {"epoch": epoch, "model": {"w": torch.full((4096,), float(epoch))}, "config": {}}
    save_checkpoint(state(0), path)
    stop = threading.Event()

    def trainer():
        epoch = 0
        while not stop.is_set():
            epoch += 1
            save_checkpoint(state(epoch % 7), path)

    writer = threading.Thread(target=trainer)
    writer.start()
    try:
        for _ in range(150):
            ckpt = load_checkpoint(path, for_inference=True)
            assert torch.equal(ckpt["model"]["w"], torch.full((4096,), float(ckpt["epoch"])))
    finally:
        stop.set()
        writer.join()


# ---- one clear line instead of a traceback -------------------------------------------------------
def _limit_file_size(limit):
    def setup():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


@pytest.mark.slow
def test_a_checkpoint_write_that_fails_names_the_file_and_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 0
    size = (run / "last.pt").stat().st_size
    cmd = [sys.executable, "-m", "tailcon", "train", f"resume={run}", "train.epochs=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(size // 2))
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert line.startswith(f"tailcon: error: could not write checkpoint {run / 'last.pt'} (")
    assert "File too large" in line or "a file size limit of" in line, "says why"
    assert "the previous last.pt is intact" in line
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("setup", ["file", "read-only"])
def test_a_run_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys, setup):
    run = tmp_path / "run"
    if setup == "file":
        run.write_text("not a directory")
    else:
        run.mkdir()
        real_open = os.open

        def read_only(path, *args, **kwargs):
            if str(path).startswith(str(run)):
                raise OSError(30, "Read-only file system", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(rundir_mod.os, "open", read_only)
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 2
    line = _one_error_line(capsys)
    assert str(run) in line
    assert ("is a file, not a directory" if setup == "file" else "Read-only file system") in line


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_a_pt_file_that_is_not_a_tailcon_checkpoint_is_one_line(tmp_path, capsys, command):
    plain = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, plain)
    args = {"predict": ["predict", str(plain), str(tmp_path / "x.png")], "eval": ["eval", str(plain)],
            "export": ["export", str(plain), "--format", "torchscript"]}[command]
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "is not a tailcon checkpoint" in line and f"model.pretrained={plain}" in line


def test_keys_that_allow_null_still_take_an_empty_value():
    cfg = resolution.resolve(embedded_config_path(), ["data.max_image_pixels=", "model.pretrained=", "method.name=supcon",
                                             "method.proj_hidden="])
    assert cfg["data"]["max_image_pixels"] is None and cfg["method"]["proj_hidden"] is None


def test_an_empty_section_in_a_config_file_keeps_its_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\ntrain:\n  epochs: 3\n")
    cfg = resolution.resolve(p)
    assert cfg["optim"]["lr"] == config.DEFAULTS["optim"]["lr"] and cfg["train"]["epochs"] == 3


@pytest.mark.parametrize("args, message", [
    (["predict", "{run}", "{img}", "--topk", "-1"], "argument --topk: expected an integer >= 1"),
    (["predict", "{run}", "{img}", "--topk", "0"], "argument --topk: expected an integer >= 1"),
    (["bench", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["bench", "--warmup", "-2"], "argument --warmup: expected an integer >= 0"),
])
def test_counts_on_the_command_line_are_checked(digits_run, tmp_path, capsys, args, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    args = [a.format(run=digits_run, img=tmp_path / "x.png") for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in _one_error_line(capsys)


def test_export_to_a_directory_is_one_line_and_writes_nothing(digits_run, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["export", str(digits_run), "--format", "torchscript", "--out", str(folder), "--force"]) == 2
    assert "is a directory; give the artifact's file name" in _one_error_line(capsys)
    assert list(folder.iterdir()) == []


def test_a_yaml_alias_bomb_is_refused_before_it_grows(tmp_path, capsys):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1024  # 9^9 = 387 million strings once expanded
    assert main(["train", str(bomb), f"run_dir={tmp_path / 'run'}"]) == 2
    assert f"config {bomb}: the YAML expands to more than" in _one_error_line(capsys)


def test_aliases_of_a_sensible_size_still_work(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  milestones: &m [10, 20]\nmethod:\n  name: supcon\n  linear_milestones: *m\n")
    assert resolution.resolve(p)["method"]["linear_milestones"] == [10, 20]


def _list_tree(tmp_path, train_lines, test_lines="a.png 0\n", encoding="utf-8"):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "train.txt").write_bytes(train_lines.encode(encoding) if isinstance(train_lines, str) else train_lines)
    (tmp_path / "test.txt").write_text(test_lines)
    return ["data.name=list", f"data.root={tmp_path}", "data.train_list=train.txt", "data.test_list=test.txt"]


def test_a_typo_label_does_not_build_a_billion_classes(tmp_path):
    args = _list_tree(tmp_path, "a.png 0\na.png 1000000000\n")
    with pytest.raises(DataError, match=r"train.txt:2: label 1000000000 would mean 1000000001 classes; .*"
                                        r"data.num_classes"):
        build_data(resolution.resolve(None, args))
    with pytest.raises(DataError, match=r"train.txt:2: label 1000000000 is out of range \[0, 9\]"):
        build_data(resolution.resolve(None, args + ["data.num_classes=10"]))


def test_a_list_file_with_a_byte_order_mark_comments_and_blank_lines(tmp_path):
    args = _list_tree(tmp_path, "\ufeffa.png 0\n# a comment\n\n   \na.png 1\n")
    data = build_data(resolution.resolve(None, args))
    assert [os.path.basename(p) for p in data.train.paths] == ["a.png", "a.png"]
    assert data.train.targets.tolist() == [0, 1]


def test_a_latin1_list_file_reads_the_file_names_it_spells(tmp_path):
    name = "caf\xe9.png".encode("latin-1")  # not UTF-8: the bytes of a Latin-1 file name
    Image.new("RGB", (8, 8), (9, 9, 9)).save(os.path.join(os.fsencode(tmp_path), name))
    args = _list_tree(tmp_path, b"a.png 0\n" + name + b" 1\n")
    data = build_data(resolution.resolve(None, args))
    image, label = data.train[1]
    assert label == 1 and image.getpixel((0, 0)) == (9, 9, 9)


def test_file_names_that_are_not_utf8_train_and_evaluate(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data")
    odd = os.path.join(os.fsencode(root / "train" / "a"), b"caf\xe9.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(odd)
    run = tmp_path / "run"
    assert main(["train", "data.name=folder", f"data.root={root}", "train.epochs=1", "data.batch_size=2",
                 "model.backbone=resnet8", f"run_dir={run}", "data.image_size=8", "train.progress=false"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data_fingerprint"]["num_samples"] == 6
    assert main(["eval", str(run)]) == 0


@pytest.mark.parametrize("name", ["paco", "bcl"])
def test_a_last_batch_of_one_image_is_dropped_for_batchnorm_heads(tmp_path, capsys, name):
    root = write_image_folder(tmp_path / "data", {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    run = tmp_path / "run"
    assert main(["train", "data.name=folder", f"data.root={root}", f"method.name={name}", "data.batch_size=2",
                 "model.backbone=resnet8", f"run_dir={run}", "data.image_size=8", "train.progress=false",
                 "train.epochs=1", "data.num_workers=0"] + (["method.queue_size=4"] if name == "paco" else [])) == 0
    assert "last batch would hold one image per process (5 images, batch 2)" in capsys.readouterr().out
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["images"] == 4


def test_a_fresh_run_that_fails_in_its_first_epoch_leaves_nothing_behind(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data")
    (root / "train" / "a" / "0.png").write_bytes(b"not a png")
    run = tmp_path / "run"
    assert main(["train", "data.name=folder", f"data.root={root}", "train.epochs=1", "data.batch_size=2",
                 "model.backbone=resnet8", f"run_dir={run}", "data.image_size=8", "train.progress=false",
                 "data.pipeline=reference", "data.num_workers=0"]) == 2
    assert "corrupt or unreadable image" in _one_error_line(capsys)
    assert not run.exists()
    empty = tmp_path / "mine"
    empty.mkdir()  # an empty directory the user made: the failed run removes its own files, not the directory
    assert main(["train", "data.name=folder", f"data.root={root}", "train.epochs=1", "model.backbone=resnet8",
                 f"run_dir={empty}", "data.image_size=8", "train.progress=false", "data.pipeline=reference",
                 "data.num_workers=0"]) == 2
    assert "corrupt or unreadable image" in _one_error_line(capsys)
    assert empty.is_dir() and list(empty.iterdir()) == []
    (empty / "notes.txt").write_text("the user's")  # holding anything: a new run is refused before it writes
    assert main(["train", f"run_dir={empty}", "train.epochs=1", *FAST]) == 2
    assert "already holds a run" in _one_error_line(capsys)
    assert [p.name for p in empty.iterdir()] == ["notes.txt"]


# ---- keep holding ---------------------------------------------------------------------------------
def test_a_truncated_checkpoint_is_one_line(digits_run, tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes((digits_run / "last.pt").read_bytes()[:5000])
    for args in (["eval", str(cut)], ["predict", str(cut), str(tmp_path / "x.png")]):
        assert main(args) == 2
        assert f"cannot read checkpoint {cut}" in _one_error_line(capsys)


@pytest.mark.slow
def test_memory_and_open_files_stay_flat_over_30_epochs(tmp_path):
    script = (
        "import os, resource, sys\n"
        "from tailcon.cli import main\n"
        "from tailcon import config, resolution\n"
        "from tailcon.engine import train\n"
        f"cfg = resolution.resolve(config.locate({str(embedded_config_path())!r}), ['run_dir={tmp_path / 'run'}', "
        "'train.progress=false', 'train.max_steps_per_epoch=2', 'train.epochs=5'])\n"
        "train(cfg)\n"
        "fds, rss = len(os.listdir('/proc/self/fd')), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"train(dict(cfg, resume={str(tmp_path / 'run')!r}, train=dict(cfg['train'], epochs=35)))\n"
        "print(fds, len(os.listdir('/proc/self/fd')), rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fds_before, fds_after, rss_before, rss_after = map(int, proc.stdout.split()[-4:])
    assert fds_after <= fds_before + 2, "no file handle leaks per epoch"
    assert rss_after < rss_before * 1.25, "no memory growth per epoch"


def test_corrupt_images_are_named_and_the_others_still_classified(digits_run, tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(good)
    bad.write_bytes(b"\x89PNG not really")
    assert main(["predict", str(digits_run), str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert str(good) in captured.out and "1." in captured.out
    assert f"corrupt or unreadable image: {bad}" in captured.err and "1 of 2 images could not be read" in captured.err


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P", "1", "1x1"])
def test_images_of_every_mode_and_size_are_read_as_rgb(digits_run, tmp_path, capsys, mode):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    if mode == "I;16":
        Image.fromarray(np.full((9, 9), 40000, dtype=np.uint16)).save(path)
    else:
        Image.new("RGB" if mode == "1x1" else mode, (1, 1) if mode == "1x1" else (9, 9)).save(path)
    assert main(["predict", str(digits_run), str(path), "--topk", "1"]) == 0
    assert str(path) in capsys.readouterr().out


def test_symlink_loops_inside_class_folders_are_not_followed(tmp_path):
    root = write_image_folder(tmp_path / "data")
    (root / "train" / "a" / "loop").symlink_to(root / "train")
    data = build_data(resolution.resolve(None, ["data.name=folder", f"data.root={root}"]))
    assert len(data.train) == 5


def test_python_tags_in_a_config_are_refused(tmp_path, capsys):
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "ran"
    p.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["config", str(p)]) == 2
    assert "could not determine a constructor" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("name", ["with space", "naïve-é", "linked"])
def test_run_directories_with_spaces_non_ascii_names_or_links_work(tmp_path, name):
    if name == "linked":
        (tmp_path / "real").mkdir()
        (tmp_path / "linked").symlink_to(tmp_path / "real")
        run = tmp_path / "linked" / "run"
    else:
        run = tmp_path / name / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 0
    assert main(["train", f"resume={run}", "train.epochs=2", *FAST]) == 0
    assert main(["eval", str(run)]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_second_export_and_a_torchscript_file_given_to_predict_are_refused(digits_run, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", str(digits_run), "--format", "torchscript", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["export", str(digits_run), "--format", "torchscript", "--out", str(out)]) == 2
    assert "exists; nothing was written" in _one_error_line(capsys)
    assert out.read_bytes() == before
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["predict", str(out), str(tmp_path / "x.png")]) == 2
    assert "tailcon: error:" in _one_error_line(capsys)


@pytest.mark.slow
def test_killing_a_torchrun_worker_ends_the_job_in_seconds_and_one_process_resumes(tmp_path):
    from test_ddp_training import _torchrun

    run = tmp_path / "run"
    code, out = _torchrun(run, kill_after_epoch=1)  # no --max-restarts: the job ends
    assert code != 0
    assert RunDir(run).checkpoint("last").is_file()
    assert main(["train", f"resume={run}", "train.progress=false"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 6
