"""Images found in a training split and an evaluation split at once (tailcon.data.overlap)."""

from conftest import write_image_folder


def test_images_copied_from_train_into_test_are_counted_named_and_recorded(tmp_path, capsys):
    import json
    import shutil

    from tailcon.cli import main

    from PIL import Image

    root = write_image_folder(tmp_path / "data", {"train": {"a": 3, "b": 2}, "test": {"a": 2, "b": 2}})
    for path in (root / "test").rglob("*.png"):  # the helper draws the same pictures in both splits: make test's its own
        image = Image.open(path).convert("RGB")
        image.putpixel((0, 0), (1, 2, 3))
        image.save(path)
    shutil.copyfile(root / "train" / "a" / "2.png", root / "test" / "a" / "copy.png")  # byte-identical copies
    shutil.copyfile(root / "train" / "b" / "1.png", root / "test" / "b" / "copy.png")
    common = ["data.name=folder", f"data.root={root}", "data.image_size=8", "data.batch_size=2",
              "train.epochs=1", "train.max_steps_per_epoch=1", "--no-progress"]
    assert main(["train", f"run_dir={tmp_path / 'run'}", *common]) == 0
    out = capsys.readouterr().out
    assert "tailcon: warning: 2 test images are also in the training split (same content)" in out
    assert str(root / "test" / "a" / "copy.png") in out and "data.allow_overlap=true" in out
    for name in ("manifest.json", "results.json"):
        recorded = json.loads((tmp_path / "run" / name).read_text())["train_overlap"]
        assert recorded["test"]["count"] == 2, name
    # the same count without the image check's pass (the files are read for their bytes alone)
    assert main(["train", f"run_dir={tmp_path / 'run2'}", "data.check_images=false", "data.allow_overlap=true",
                 *common]) == 0
    assert "also in the training split" not in capsys.readouterr().out
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["train_overlap"]["test"]["count"] == 2


def test_the_shipped_benchmarks_have_no_image_in_both_splits():
    from tailcon.data import build_data
    from tailcon.data.overlap import find_overlap
    from tailcon import resolution
    from tailcon.cli import embedded_config_path

    data = build_data(resolution.resolve(embedded_config_path()))
    found = find_overlap(data.train, {"val": data.val, "test": data.test})
    assert found["test"]["count"] == 0 and found["val"]["count"] == 0
