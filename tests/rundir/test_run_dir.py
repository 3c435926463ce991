"""The run directory: never clobbered, locked while trained into, resumed only as what it is,
evaluated without rewriting what training wrote, loaded without running foreign code."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest
import torch

from tailcon import config, resolution
from tailcon.cli import main
from tailcon.data import DataError
from tailcon.engine import RunDirError, Trainer, load_checkpoint, train
from tailcon.rundir import RunDir, atomic_write_text, save_checkpoint, unique_run_dir
from tailcon.methods import METHODS

from conftest import tiny_cfg, write_image_folder

FAST = ("train.max_steps_per_epoch=2", "--no-progress")


def _train_cli(run, *extra):
    return main(["train", f"run_dir={run}", "train.epochs=1", *FAST, *extra])


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert _train_cli(run) == 0
    return run


def test_a_new_run_into_a_finished_run_directory_is_refused_and_changes_nothing(finished_run, capsys):
    before = _snapshot(finished_run)
    assert _train_cli(finished_run) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"resume={finished_run}" in err and "run_dir=" in err
    assert "Traceback" not in err
    assert _snapshot(finished_run) == before, "every file as it was (no lock file added either)"


def _hold_lock(run):
    """A separate process that holds the run directory's lock, as a training process would."""
    code = ("import sys, time; from tailcon.rundir import RunDir; RunDir(sys.argv[1]).lock().acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_a_second_process_training_into_a_locked_run_directory_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "busy"
    holder = _hold_lock(run)
    try:
        assert _train_cli(run) == 2
        err = capsys.readouterr().err
        assert f"is in use by pid {holder.pid}" in err
        assert not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_does_not_block_resume(tmp_path, capsys):
    run = tmp_path / "killed"
    assert _train_cli(run) == 0
    holder = _hold_lock(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run / ".lock").is_file(), "the file stays; the kernel dropped the lock itself"
    assert main(["train", f"resume={run}", "train.epochs=2", *FAST]) == 0
    assert load_checkpoint(run)["epoch"] == 2


def test_resume_refuses_another_method_listing_the_keys_and_keeps_the_config(finished_run, capsys):
    before = _snapshot(finished_run)
    assert main(["train", f"resume={finished_run}", "method.name=ce", *FAST]) == 2
    err = capsys.readouterr().err
    assert "method.name: 'logit_adjusted' -> 'ce'" in err and "method.tau: 1.0 -> (not set)" in err
    assert _snapshot(finished_run) == before


def test_resume_refuses_another_backbone_naming_it_without_a_traceback(finished_run, capsys):
    assert main(["train", f"resume={finished_run}", "model.backbone=resnet20", *FAST]) == 2
    err = capsys.readouterr().err
    assert "model.backbone: 'resnet8' -> 'resnet20'" in err and "Traceback" not in err and "size mismatch" not in err


def test_resume_refuses_fewer_epochs_than_already_trained(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=2", *FAST]) == 0
    assert main(["train", f"resume={run}", "train.epochs=1", *FAST]) == 2
    assert "train.epochs=1 but the run has already trained 2 epochs" in capsys.readouterr().err


def test_resume_may_extend_epochs_and_change_what_cannot_change_the_result(tmp_path):
    run = tmp_path / "run"
    assert _train_cli(run) == 0
    assert main(["train", f"resume={run}", "train.epochs=2", "data.num_workers=1", "train.log_every=7",
                 "data.eval_batch_size=50", *FAST]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_resume_of_a_path_that_does_not_exist_is_named(tmp_path, capsys):
    assert main(["train", f"resume={tmp_path / 'nope'}"]) == 2
    assert f"resume={tmp_path / 'nope'}: no such run directory or checkpoint" in capsys.readouterr().err


def test_resume_on_other_training_data_is_refused_naming_the_counts(tmp_path, capsys):
    first = write_image_folder(tmp_path / "d1")
    second = write_image_folder(tmp_path / "d2", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    common = ["data.name=folder", "data.image_size=8", "data.batch_size=2", "data.num_workers=0", *FAST]
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", f"data.root={first}", "train.epochs=1", *common]) == 0
    assert main(["train", f"resume={run}", f"data.root={second}", "train.epochs=2", *common]) == 2
    assert "class counts: [3, 2] in the checkpoint, [2, 2] now" in capsys.readouterr().err
    assert load_checkpoint(run)["epoch"] == 1


def test_eval_writes_its_own_file_after_printing_and_compare_reads_what_training_wrote(tmp_path, capsys):
    from tailcon.tools import compare as compare_mod

    run = tmp_path / "run"
    assert _train_cli(run, "train.epochs=2") == 0
    trained = json.loads((run / "results.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", "best", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert out.index("best.pt epoch") < out.index("tailcon eval: wrote")
    assert json.loads((run / "eval-best-val.json").read_text())["split"] == "val"
    assert json.loads((run / "results.json").read_text()) == trained
    spec = compare_mod.RunSpec("run", "x.yaml", 0, run, {"method": {"name": "logit_adjusted"}})
    row = compare_mod.collect([spec])[0]
    assert row["final"]["top1"][0] == pytest.approx(trained["top1"])


def test_an_eval_that_cannot_write_shows_the_figures_then_a_clear_error(finished_run, monkeypatch, capsys):
    from tailcon import rundir

    def read_only(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", read_only)
    assert main(["eval", str(finished_run)]) == 2
    captured = capsys.readouterr()
    assert "last.pt epoch 1 (test)" in captured.out
    assert "the figures above were not saved: cannot write" in captured.err and "Permission denied" in captured.err


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this creates a file


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _RunsCode(str(marker))}, bad)
    with pytest.raises(RunDirError, match="refusing to load .*evil.pt"):
        load_checkpoint(bad)
    from tailcon.cli import embedded_config_path

    for argv in (["eval", str(bad)], ["predict", str(bad), "x.png"],
                 ["train", str(embedded_config_path()), f"resume={bad}", "--no-progress"]):
        assert main(argv) == 2, argv
        assert "refusing to load" in capsys.readouterr().err, argv
    assert not marker.exists(), "the payload never ran"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_methods_checkpoint_loads_weights_only(tmp_path, name):
    extra = {"dscl": ["method.queue_size=64", "method.patch_size=8", "method.stage=pretrain"],
             "supcon": ["method.stage=pretrain"], "rescom": ["method.k_neg=9"],
             "ldam_drw": ["model.classifier=cosine"], "crt": [f"method.init_from={tmp_path / 'ce.pt'}"]}.get(name, [])
    if name == "crt":  # a trained run to start from
        save_checkpoint(Trainer.from_config(tiny_cfg(tmp_path / "ce")).state_dict(1), tmp_path / "ce.pt")
    trainer = Trainer.from_config(tiny_cfg(tmp_path, f"method.name={name}", *extra))
    buf = io.BytesIO()
    torch.save(trainer.state_dict(1), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["epoch"] == 1 and state["config"]["method"]["name"] == name


def test_written_files_keep_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = 2
                tf.addfile(info, io.BytesIO(b"hi"))


@pytest.mark.parametrize("member,kind", [("../cifar-escaped/x", "file"), ("/tmp/abs-x", "file"),
                                         ("cifar-10-batches-py/link", "symlink")])
def test_cifar_extraction_refuses_members_outside_the_root(tmp_path, member, kind):
    from tailcon.data.cifar import extract_archive

    root = tmp_path / "cifar"
    root.mkdir()
    archive = tmp_path / "a.tar.gz"
    _tar(archive, [("cifar-10-batches-py/ok", "file"), (member, kind)])
    with pytest.raises(DataError, match="unsafe member"):
        extract_archive(archive, root)
    assert not (tmp_path / "cifar-escaped").exists() and list(root.iterdir()) == []


def test_cifar_extraction_extracts_plain_members(tmp_path):
    from tailcon.data.cifar import extract_archive

    archive = tmp_path / "a.tar.gz"
    _tar(archive, [("cifar-10-batches-py/ok", "file")])
    extract_archive(archive, tmp_path / "root")
    assert (tmp_path / "root" / "cifar-10-batches-py" / "ok").read_bytes() == b"hi"


def test_a_staged_run_is_evaluated_after_being_moved_from_another_directory(tmp_path, monkeypatch, capsys):
    import tailcon

    run = tmp_path / "here" / "supcon"
    assert main(["train", f"run_dir={run}", "method.name=supcon", "train.epochs=1", "method.linear_epochs=1",
                 *FAST]) == 0
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(run), moved)
    shutil.rmtree(tmp_path / "here")
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["eval", str(moved)]) == 0
    assert (moved / "linear" / "eval-last-test.json").is_file()
    assert tailcon.load(moved).checkpoint == moved / "linear" / "last.pt"


def test_default_run_directories_never_collide(tmp_path):
    first = unique_run_dir("x", parent=str(tmp_path))
    first.mkdir()
    second = unique_run_dir("x", parent=str(tmp_path))
    assert second != first and second.name.startswith(first.name)


def test_a_run_directory_knows_its_stages_relative_to_itself(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert run.final_stage().path == run.path and run.stage_names() == []
    run.write_stage_names(["pretrain", "linear"])
    assert [d.path for d in run.stage_dirs()] == [run.path / "pretrain", run.path / "linear"]
    assert run.eval_file(run.path / "best.pt", "val").name == "eval-best-val.json"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_is_refused_before_any_directory_is_made(tmp_path):
    with pytest.raises(config.ConfigError, match="CUDA is not available"):
        train(tiny_cfg(tmp_path, "device=cuda"))
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_before_its_first_file_leaves_no_directory(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", f"run_dir={run}", "data.name=folder", f"data.root={tmp_path / 'nowhere'}",
                 "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not run.exists()
