"""Bad input is refused up front with the key, file or class named; nothing is lost when it is
found late."""

import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tailcon import config, resolution
from tailcon.cli import main
from tailcon.data import DataError, FileListDataset, build_data
from tailcon.engine import NonFiniteLossError, load_checkpoint, train

from conftest import tiny_cfg, write_image_folder

FAST = ("train.max_steps_per_epoch=2", "--no-progress")


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "'train.epochs' must be an integer >= 1, got 0"),
    ("train.epochs=-3", "'train.epochs' must be an integer >= 1, got -3"),
    ("train.epochs=1.5", "'train.epochs' must be an integer >= 1, got 1.5"),
    ("data.batch_size=0", "'data.batch_size' must be an integer >= 1, got 0"),
    ("optim.schedule=cosin", "'optim.schedule' must be one of cosine, cosine_end, step, constant (did you mean 'cosine'?)"),
    ("optim.lr=-1", "'optim.lr' must be a number > 0, got -1"),
    ("optim.lr=0", "'optim.lr' must be a number > 0, got 0"),
    ("data.sampler=balanced", "'data.sampler' must be one of instance, class_balanced, sqrt"),
    ("data.pipeline=gpu", "'data.pipeline' must be one of auto, device, reference"),
    ("model.backbone=resnet33", "'model.backbone' must be one of resnet8,"),
    ("model.classifier=cosin", "'model.classifier' must be one of linear, cosine"),
    ("train.amp=fp32", "'train.amp' must be one of auto, none, bf16, fp16"),
    ("data.train_augment=flip_crop", "'data.train_augment' must be one of"),
    ("device=gpu", "'device' must be auto, cpu, cuda, cuda:N or mps"),
    ("optim.momentum=1.5", "'optim.momentum' must be a number >= 0 and <= 1"),
    ("method.tau=-1", "'method.tau' must be a number >= 0"),
    ("train.compile=fast", "'train.compile' must be true, false, default, reduce-overhead or max-autotune"),
    ("data.mean=[0.5,0.5]", "'data.mean' must have 3 values"),
    ("data.std=[0.2,0.2,0.2,0.2]", "'data.std' must have 3 values"),
    ("optim.lr=1e300", "'optim.lr' must be a number between"),
    ("optim.lr=.nan", "'optim.lr' must be a number"),
    ("optim.weight_decay=.inf", "'optim.weight_decay' must be a number"),
    ("method.tau=1e300", "'method.tau' must be a number between"),
    ("model.backbone=", "'model.backbone' has an empty value"),
    ("optim.lr=", "'optim.lr' has an empty value"),
    ("optim.schedule=", "'optim.schedule' has an empty value"),
    ("optim.milestones=", "'optim.milestones' has an empty value"),
    ("seed=18446744073709551616", "'seed' must be an integer >= 0 and <= 4294967295"),
    ("seed=-1", "'seed' must be an integer >= 0"),
])
def test_a_bad_config_value_is_refused_naming_the_key_before_any_work(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", override, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, "one line"
    assert not run.exists(), "refused before the run directory was made"


@pytest.mark.parametrize("method,override,message", [
    ("bcl", "method.temperature=0", "'method.temperature' must be a number > 0"),
    ("bcl", "method.cl_views=sim-sum", "'method.cl_views' must be one of sim-sim, sim-rand, rand-rand"),
    ("supcon", "method.stage=finetune", "'method.stage' must be one of both, pretrain, linear"),
    ("supcon_joint", "method.con_weight=-0.5", "'method.con_weight' must be a number >= 0"),
    ("class_balanced", "method.beta=1.0", "'method.beta' must be a number >= 0 and < 1"),
    ("rescom", "method.k_pos=0", "'method.k_pos' must be an integer >= 1"),
    ("dscl", "method.momentum=2", "'method.momentum' must be a number >= 0 and <= 1"),
    ("hybrid_sc", "method.ce_sampler=balanced", "'method.ce_sampler' must be one of instance"),
])
def test_method_values_are_checked_when_the_config_is_resolved(tmp_path, method, override, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        tiny_cfg(tmp_path, f"method.name={method}", override)


def test_the_global_batch_must_divide_over_the_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(config.ConfigError, match=r"data.batch_size=64 is the global batch.*\(3\)"):
        tiny_cfg(tmp_path)


def test_no_use_site_restates_a_config_default():
    """Defaults live in config.DEFAULTS alone: ``cfg["train"].get("amp", "none")`` once disagreed
    with the default ``auto``."""
    pattern = re.compile(r"""(\[["'](data|model|optim|train|method)["']\]|\b(cfg|hparams|h|optim))\.get\(""")
    root = Path(__file__).resolve().parents[2] / "tailcon"
    hits = [f"{p.relative_to(root)}:{i + 1}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert hits == []


def _folder_cfg(root, *extra):
    return resolution.resolve(None, ["data.name=folder", f"data.root={root}", "data.image_size=8", "data.num_workers=0",
                            *extra])


def test_a_test_class_folder_that_training_lacks_is_an_error_naming_it(tmp_path):
    root = write_image_folder(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1, "zebra": 2}})
    with pytest.raises(DataError, match=r"test has class folders that the training split lacks: zebra"):
        build_data(_folder_cfg(root))


def _list_tree(tmp_path, train_lines, test_lines):
    root = write_image_folder(tmp_path, {"img": {"a": 4}})
    (root / "train.txt").write_text("".join(f"img/a/{i}.png {y}\n" for i, y in enumerate(train_lines)))
    (root / "test.txt").write_text("".join(f"img/a/{i}.png {y}\n" for i, y in enumerate(test_lines)))
    return resolution.resolve(None, ["data.name=list", f"data.root={root}", "data.train_list=train.txt",
                            "data.test_list=test.txt", "data.image_size=8"])


def test_a_test_label_without_training_images_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"test.txt: labels \[2\] have no training image"):
        build_data(_list_tree(tmp_path, [0, 1, 1], [0, 2]))


def test_a_training_label_above_the_others_is_an_error_naming_the_empty_classes(tmp_path):
    cfg = _list_tree(tmp_path, [0, 1, 5], [0, 1])
    with pytest.raises(DataError, match=r"4 of 6 classes have no training image: ids \[2, 3, 4, 5\]|"
                                        r"3 of 6 classes have no training image: ids \[2, 3, 4\]"):
        build_data(cfg)


def test_empty_classes_are_accepted_when_declared(tmp_path):
    cfg = _list_tree(tmp_path, [0, 1, 1], [0, 1])
    cfg = resolution.resolve(None, [f"{k}={v}" for k, v in config.flatten(cfg["data"], "data.").items() if v is not None]
                    + ["data.num_classes=4", "data.allow_empty_classes=true"])
    data = build_data(cfg)
    assert data.num_classes == 4 and data.cls_num_list == [1, 2, 0, 0]


def _huge_png(path, width=20000, height=20000):
    """A real 8x8 PNG whose header claims ``width`` x ``height`` (what a decompression bomb looks
    like to a reader that trusts the header)."""
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_an_image_over_the_pixel_limit_is_named_not_decoded(tmp_path):
    big = _huge_png(tmp_path / "big.png")
    ds = FileListDataset([str(big)], [0], 1, name="list")
    with pytest.raises(DataError, match=r"image too large: .*big.png is 20000x20000 = 400000000 pixels"):
        ds[0]
    small_limit = FileListDataset([str(_huge_png(tmp_path / "s.png", 100, 100))], [0], 1, max_pixels=5000)
    with pytest.raises(DataError, match=r"s.png is 100x100 = 10000 pixels, over the limit of 5000"):
        small_limit[0]


def test_the_gpu_decode_path_checks_the_pixel_limit_before_reading_the_bytes(tmp_path):
    from tailcon.data.loaders import EncodedImages

    ds = FileListDataset([str(_huge_png(tmp_path / "big.png"))], [0], 1, name="list")
    with pytest.raises(DataError, match=r"big.png is 20000x20000"):
        EncodedImages(ds)[0]


def test_a_worker_error_surfaces_as_its_one_line(tmp_path):
    from torch.utils.data import DataLoader

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    loader = DataLoader(FileListDataset([str(bad)], [0], 1, name="list"), num_workers=1, collate_fn=list)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert str(info.value).startswith("corrupt or unreadable image: ") and "Traceback" not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_an_evaluation_failure_loses_no_training_and_resume_evaluates_that_epoch(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data")
    good = (root / "test" / "a" / "0.png").read_bytes()
    (root / "test" / "a" / "0.png").write_bytes(b"broken")
    run = tmp_path / "run"
    # the image breaks while the run trains (the check before the first step is off to stage that)
    common = ["data.name=folder", f"data.root={root}", "data.image_size=8", "data.batch_size=2", "data.num_workers=0",
              "train.epochs=2", "train.eval_every=1", "data.check_images=false", *FAST]
    assert main(["train", f"run_dir={run}", *common]) == 2
    err = capsys.readouterr().err
    assert "corrupt or unreadable image" in err and f"tailcon train resume={run} continues the run" in err
    saved = load_checkpoint(run)
    assert saved["epoch"] == 1 and saved["pending_eval"]["epoch"] == 1, "the epoch's training was kept"
    (root / "test" / "a" / "0.png").write_bytes(good)
    assert main(["train", f"resume={run}", *common]) == 0
    assert "evaluating epoch 1, saved before its evaluation" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all("test" in r for r in records)
    assert load_checkpoint(run)["pending_eval"] is None


@pytest.mark.slow
def test_predict_reports_a_bad_image_on_its_own_line_and_still_prints_the_others(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "train.epochs=1", *FAST]) == 0
    good = tmp_path / "good.png"
    Image.new("RGB", (16, 16), (200, 200, 200)).save(good)
    bad = _huge_png(tmp_path / "bomb.png")
    capsys.readouterr()
    assert main(["predict", str(run), str(bad), str(good), "--topk", "2"]) == 2
    out, err = capsys.readouterr()
    assert f"{good}\n  1." in out
    assert "bomb.png is 20000x20000" in err and "1 of 2 images could not be read" in err


def test_the_non_finite_loss_message_names_a_checkpoint_only_if_one_exists(tmp_path):
    with pytest.raises(NonFiniteLossError, match="No checkpoint was written yet.*optim.lr") as info:
        train(tiny_cfg(tmp_path, "optim.lr=1e6", "optim.weight_decay=1e6", "train.log_every=1", epochs=1))
    assert "last.pt" not in str(info.value)


def test_the_non_finite_loss_message_points_at_empty_classes(tmp_path):
    cfg = _list_tree(tmp_path, [0, 1, 1], [0, 1])
    args = [f"{k}={v}" for k, v in config.flatten(cfg["data"], "data.").items() if v is not None]
    cfg = resolution.resolve(None, args + ["data.num_classes=3", "data.allow_empty_classes=true", "method.name=logit_adjusted",
                                  "model.backbone=resnet8", "optim.lr=1e6", "optim.weight_decay=1e6",
                                  "train.log_every=1", "train.epochs=1",
                                  "data.batch_size=1", "data.num_workers=0", f"run_dir={tmp_path / 'run'}",
                                  "train.progress=false"])
    with pytest.raises(NonFiniteLossError, match=r"classes \[2\] have no training image"):
        train(cfg)


def test_compile_takes_a_mode_as_well_as_a_bool(tmp_path):
    assert tiny_cfg(tmp_path, "train.compile=reduce-overhead")["train"]["compile"] == "reduce-overhead"
    assert tiny_cfg(tmp_path, "train.compile=true")["train"]["compile"] is True


def test_a_yaml_syntax_error_is_one_line_naming_the_file_line_and_column(tmp_path, capsys):
    from tailcon.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: cifar10_lt\n  root: x\n bad: [1\n")
    assert main(["config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tailcon: error: config {bad}:4:2: invalid YAML: ") and len(err.splitlines()) == 1
    assert "<unicode string>" not in err


def test_a_key_in_the_wrong_section_names_its_file_and_the_same_leaf_elsewhere(tmp_path):
    from tailcon import resolution

    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 0.1\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\noptim:\n  momentum: 0.8\n")
    with pytest.raises(config.ConfigError, match=rf"^config {re.escape(str(base))}: unknown config key 'train.lr' "
                                                 r"\(did you mean 'optim.lr'\?\)$"):
        resolution.resolve(child)
    with pytest.raises(config.ConfigError, match=r"'train.lr' \(did you mean 'optim.lr'\?\)"):
        resolution.resolve(None, ["train.lr=0.1"])


def test_a_corrupt_image_in_any_split_is_found_before_the_first_step_and_leaves_nothing(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", {"train": {"a": 3, "b": 2}, "test": {"a": 2, "b": 1}})
    (root / "test" / "b" / "0.png").write_bytes(b"broken")
    png = (root / "test" / "a" / "1.png").read_bytes()
    (root / "test" / "a" / "1.png").write_bytes(png[: len(png) // 2])  # cut short
    run = tmp_path / "run"
    args = ["train", f"run_dir={run}", "data.name=folder", f"data.root={root}", "data.image_size=8",
            "data.batch_size=2", *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 test images cannot be read" in err and str(root / "test" / "b" / "0.png") in err
    assert str(root / "test" / "a" / "1.png") in err and "data.check_images=false" in err
    assert not run.exists(), "refused before the run wrote anything"
