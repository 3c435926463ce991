"""List-file and image-folder datasets, the way ImageNet-LT / Places-LT / iNaturalist ship."""

import numpy as np
import pytest
import torch
from PIL import Image

from tailcon import config, resolution
from tailcon.data import DataError, build_data, parse_list_file


def _write_images(root, rel_paths, size=20):
    rng = np.random.RandomState(0)
    for rel in rel_paths:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.randint(0, 255, (size, size + 3, 3), dtype=np.uint8)).save(p)


def test_list_file_parses_paths_and_labels(tmp_path):
    (tmp_path / "train.txt").write_text("train/n01/a b.jpg 0\n\n# comment\ntrain/n02/c.jpg 3\n")
    paths, labels = parse_list_file(tmp_path / "train.txt", tmp_path)
    assert paths == [str(tmp_path / "train/n01/a b.jpg"), str(tmp_path / "train/n02/c.jpg")]
    assert labels.tolist() == [0, 3]


@pytest.mark.parametrize("line,what", [("only_a_path.jpg", "expected"), ("x.jpg cat", "not an integer"),
                                       ("x.jpg -1", "negative")])
def test_malformed_list_line_names_file_and_line(tmp_path, line, what):
    f = tmp_path / "ImageNet_LT_train.txt"
    f.write_text(f"a.jpg 0\n{line}\n")
    with pytest.raises(DataError, match=rf"ImageNet_LT_train.txt:2: .*{what}"):
        parse_list_file(f, tmp_path)


def _imagenet_lt_tree(tmp_path, train_counts=(5, 3, 1)):
    lines = {"train": [], "val": [], "test": []}
    for c, n in enumerate(train_counts):
        lines["train"] += [f"train/c{c}/{i}.jpg {c}" for i in range(n)]
        lines["val"] += [f"train/c{c}/v{i}.jpg {c}" for i in range(2)]
        lines["test"] += [f"val/c{c}/{i}.jpg {c}" for i in range(2)]
    for split, ls in lines.items():
        (tmp_path / f"list_{split}.txt").write_text("\n".join(ls) + "\n")
        _write_images(tmp_path, [l.split()[0] for l in ls])
    return tmp_path


def test_list_dataset_counts_classes_from_the_training_list(tmp_path):
    root = _imagenet_lt_tree(tmp_path)
    cfg = resolution.resolve(None, ["data.name=list", f"data.root={root}", "data.train_list=list_train.txt",
                           "data.val_list=list_val.txt", "data.test_list=list_test.txt", "data.image_size=16"])
    data = build_data(cfg)
    assert data.num_classes == 3 and data.cls_num_list == [5, 3, 1]
    assert data.has_val and len(data.test) == 6
    from tailcon.data import build_eval_transform
    data.test.transform = build_eval_transform(data.info)
    x, y = data.test[0]
    assert tuple(x.shape) == (3, 16, 16) and y == 0


def test_imagenet_lt_preset_reads_the_official_list_names(tmp_path):
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        (tmp_path / f"ImageNet_LT_{split}.txt").write_text("".join(f"x/{split}{i}.jpg {i * 400}\n" for i in range(n)))
    cfg = resolution.resolve(None, ["data.name=imagenet_lt", f"data.root={tmp_path}", "data.allow_empty_classes=true"])
    data = build_data(cfg)
    assert data.num_classes == 1000 and data.cls_num_list[400] == 1 and sum(data.cls_num_list) == 3


def test_label_out_of_range_names_the_list(tmp_path):
    (tmp_path / "ImageNet_LT_train.txt").write_text("a.jpg 0\nb.jpg 1000\n")
    (tmp_path / "ImageNet_LT_val.txt").write_text("a.jpg 0\n")
    (tmp_path / "ImageNet_LT_test.txt").write_text("a.jpg 0\n")
    with pytest.raises(DataError, match=r"ImageNet_LT_train.txt:2: label 1000 .* out of range \[0, 999\]"):
        build_data(resolution.resolve(None, ["data.name=imagenet_lt", f"data.root={tmp_path}"]))


def test_corrupt_image_error_names_the_file(tmp_path):
    root = _imagenet_lt_tree(tmp_path)
    (root / "val/c0/0.jpg").write_bytes(b"not a jpeg")
    cfg = resolution.resolve(None, ["data.name=list", f"data.root={root}", "data.train_list=list_train.txt",
                           "data.test_list=list_test.txt"])
    data = build_data(cfg)
    with pytest.raises(DataError, match=r"corrupt or unreadable image: .*val/c0/0.jpg"):
        data.test[0]


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        build_data(resolution.resolve(None, ["data.name=list", f"data.root={tmp_path / 'nope'}"]))


def test_image_folder_dataset(tmp_path):
    _write_images(tmp_path, [f"train/cat/{i}.png" for i in range(4)] + ["train/dog/0.png", "test/cat/0.png",
                                                                          "test/dog/0.png"])
    data = build_data(resolution.resolve(None, ["data.name=folder", f"data.root={tmp_path}"]))
    assert data.classes == ["cat", "dog"] and data.cls_num_list == [4, 1]
    assert data.test.targets.tolist() == [0, 1] and not data.has_val


def test_jpeg_folder_trains_through_the_device_decode_pipeline(tmp_path):
    """File datasets with data.pipeline=device: bytes from workers, decode_jpeg on the device,
    images of different sizes padded into one batch, random-resized crops from each true size."""
    import numpy as np
    from PIL import Image

    from tailcon.engine import Trainer

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
                p = tmp_path / split / cls / f"{i}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p, quality=90)
    cfg = resolution.resolve(None, ["data.name=folder", f"data.root={tmp_path}", "data.pipeline=device", "data.image_size=24",
                           "data.batch_size=8", "data.num_workers=0", "model.backbone=resnet8", "train.epochs=1",
                           "train.progress=false", f"run_dir={tmp_path / 'run'}"])
    trainer = Trainer.from_config(cfg)
    assert trainer.pipeline == "device"
    trainer.sampler.set_epoch(0)
    views, labels, _ = next(trainer.batches())
    assert views[0].shape == (8, 3, 24, 24) and torch.isfinite(views[0]).all() and labels.shape == (8,)
    assert trainer.train_one_epoch(0, 1)["images"] == 12
