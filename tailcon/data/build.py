"""Build the train / val / test splits named by a config's ``data`` section."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from . import cifar, digits
from .datasets import ArrayDataset, DataError, FileListDataset, parse_list_file, scan_image_folder
from .long_tail import long_tail_counts, select_long_tail_indices
from .transforms import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, INAT_MEAN, INAT_STD,
                         ImageInfo)


@dataclass
class DataBundle:
    name: str
    train: Dataset
    test: Dataset
    val: Optional[Dataset]
    num_classes: int
    classes: list[str]
    info: ImageInfo
    cls_num_list: list[int] = field(default_factory=list)

    @property
    def has_val(self) -> bool:
        return self.val is not None


# List-file datasets with known layouts (the ImageNet-LT / Places-LT / iNaturalist list files the long-tail codes share). iNaturalist's val list doubles as its test.
LIST_PRESETS: dict[str, dict[str, Any]] = {
    "imagenet_lt": dict(num_classes=1000, train="ImageNet_LT_train.txt", val="ImageNet_LT_val.txt",
                        test="ImageNet_LT_test.txt", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "places_lt": dict(num_classes=365, train="Places_LT_train.txt", val="Places_LT_val.txt",
                      test="Places_LT_test.txt", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "inat2018": dict(num_classes=8142, train="iNaturalist18_train.txt", val=None,
                     test="iNaturalist18_val.txt", mean=INAT_MEAN, std=INAT_STD),
}
DATASETS = ["digits_lt", "cifar10_lt", "cifar100_lt", "list", "folder", *LIST_PRESETS]  # + registered ones
DATASET_BUILDERS: dict[str, Callable[[Mapping[str, Any]], DataBundle]] = {}


def register_dataset(name: str):
    """Decorator: ``@register_dataset("mydata")`` over ``fn(data_cfg) -> DataBundle`` (the
    ``data`` section of the config; train/val/test datasets exposing ``targets``, ``num_classes``,
    ``classes``); then ``data.name=mydata`` builds it. Class counts and checks are tailcon's."""
    def add(fn: Callable[[Mapping[str, Any]], DataBundle]) -> Callable[[Mapping[str, Any]], DataBundle]:
        DATASET_BUILDERS[name] = fn
        if name not in DATASETS:
            DATASETS.append(name)
        return fn
    return add


def _long_tail(x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int, d: Mapping) -> tuple:
    counts = long_tail_counts(num_classes, d["max_per_class"] or per_class,
                              float(d["imbalance_factor"]), d["imbalance_profile"])
    keep = select_long_tail_indices(y, counts, seed=int(d["subset_seed"]))
    return x[keep], y[keep]


def _info(d: Mapping, size: int, mean, std, small: bool) -> ImageInfo:
    if small and d["image_size"] and int(d["image_size"]) != size:
        raise DataError(f"data.image_size={d['image_size']}: {d['name']} holds {size}x{size} images in memory, which "
                        f"are padded and cropped, never resized; leave data.image_size unset (or {size}), or use "
                        "larger images (data.name=folder or list)")
    return ImageInfo(size=int(d["image_size"] or size), mean=tuple(d["mean"] or mean),
                     std=tuple(d["std"] or std), small=small, resize=d["resize_size"])


def build_data(cfg: Mapping[str, Any]) -> DataBundle:
    d = cfg["data"]
    name = d["name"]
    if name == "digits_lt":
        x, y = digits.load_digits_arrays()
        split = digits.split_digits(y)
        xtr, ytr = _long_tail(x[split["train"]], y[split["train"]], 10, digits.MAX_PER_CLASS, d)
        classes = [str(i) for i in range(10)]
        mk = lambda a, b, s: ArrayDataset(a, b, 10, classes, name=f"digits_lt/{s}")
        info = _info(d, digits.SIZE, (0.5,) * 3, (0.5,) * 3, small=True)
        bundle = DataBundle(name, mk(xtr, ytr, "train"), mk(x[split["test"]], y[split["test"]], "test"),
                            mk(x[split["val"]], y[split["val"]], "val"), 10, classes, info)
    elif name in ("cifar10_lt", "cifar100_lt"):
        spec = cifar.SPECS[name[: -len("_lt")]]
        folder = cifar.find_cifar_folder(d["root"], spec, download=bool(d["download"]))
        classes = cifar.load_cifar_classes(folder, spec)
        xtr, ytr = _long_tail(*cifar.load_cifar_split(folder, spec, train=True), spec.num_classes,
                              spec.per_class, d)
        xte, yte = cifar.load_cifar_split(folder, spec, train=False)
        mk = lambda a, b, s: ArrayDataset(a, b, spec.num_classes, classes, name=f"{folder}/{s}")
        info = _info(d, 32, CIFAR_MEAN, CIFAR_STD, small=True)
        bundle = DataBundle(name, mk(xtr, ytr, "train"), mk(xte, yte, "test"), None, spec.num_classes,
                            classes, info)
    elif name == "list" or name in LIST_PRESETS:
        bundle = _build_list(name, d)
    elif name == "folder":
        bundle = _build_folder(d)
    elif name in DATASET_BUILDERS:
        bundle = DATASET_BUILDERS[name](d)
    else:
        raise DataError(f"unknown dataset data.name={name!r}; known: {', '.join(DATASETS)}")
    bundle.cls_num_list = np.bincount(bundle.train.targets, minlength=bundle.num_classes).tolist()
    empty = [i for i, n in enumerate(bundle.cls_num_list) if n == 0]
    if empty and not d["allow_empty_classes"]:
        names = [bundle.classes[i] for i in empty[:20]]
        raise DataError(f"{len(empty)} of {bundle.num_classes} classes have no training image: ids {empty[:20]}"
                        f"{' ...' if len(empty) > 20 else ''} (names {names}). A label above the others, or a "
                        "data.num_classes larger than the labels, leaves such classes; if they are intended, set "
                        "data.num_classes and data.allow_empty_classes=true")
    return bundle


def build_eval_data(cfg: Mapping[str, Any], classes: Sequence[str]) -> DataBundle:
    """The validation and test splits for evaluating a trained model, whose output ids are
    ``classes`` (the checkpoint's class names, in order). Image folders are mapped to those ids
    by name, so evaluation data lacking some training class (or another root altogether) scores
    every image against the right class; a class folder the model does not know is an error
    naming it, and so is a list label outside the model's classes. The training split is not
    read where it need not be (``train`` is None then); the checkpoint has the counts."""
    d = cfg["data"]
    classes = [str(c) for c in classes]
    if d["name"] == "folder":
        root = _root(d)
        mk = lambda sub: FileListDataset(*scan_image_folder(os.path.join(root, sub), classes, known_as="the model")[:2],
                                         len(classes), classes, name=os.path.join(root, sub),
                                         max_pixels=d["max_image_pixels"])
        return DataBundle("folder", None, mk(d["test_dir"]), mk(d["val_dir"]) if d["val_dir"] else None, len(classes),
                          classes, _info(d, 224, IMAGENET_MEAN, IMAGENET_STD, small=False))
    if d["name"] == "list" or d["name"] in LIST_PRESETS:
        root = _root(d)
        preset = LIST_PRESETS.get(d["name"], {})
        lists = {s: _list_path(root, d[f"{s}_list"] or preset.get(s)) for s in ("val", "test")}
        if not lists["test"]:
            raise DataError("list datasets need data.test_list (a file of 'path label' lines)")
        mk = lambda s: (FileListDataset(*parse_list_file(lists[s], root, len(classes)), len(classes), classes,
                                        name=lists[s], max_pixels=d["max_image_pixels"]) if lists[s] else None)
        info = _info(d, 224, preset.get("mean", IMAGENET_MEAN), preset.get("std", IMAGENET_STD), small=False)
        return DataBundle(d["name"], None, mk("test"), mk("val"), len(classes), classes, info)
    bundle = build_data(cfg)  # fixed class lists (CIFAR, digits): only the names can disagree
    if list(bundle.classes) != classes:
        raise DataError(f"the model's classes {_short_list(classes)} are not those of {bundle.name!r} "
                        f"{_short_list(bundle.classes)}")
    return bundle


def _short_list(names: Sequence[str]) -> str:
    return str(list(names[:8]))[:-1] + (", ...]" if len(names) > 8 else "]")


def _root(d: Mapping) -> str:
    root = d["root"]
    if not root:
        raise DataError(f"data.root is not set (dataset {d['name']!r} reads its images from there)")
    if not os.path.isdir(root):
        raise DataError(f"data.root={root!r} is not a directory")
    return root


def _list_path(root: str, name: Optional[str]) -> Optional[str]:
    if not name:
        return None
    return name if os.path.isabs(name) else os.path.join(root, name)


def _build_list(name: str, d: Mapping) -> DataBundle:
    root = _root(d)
    preset = LIST_PRESETS.get(name, {})
    lists = {s: _list_path(root, d[f"{s}_list"] or preset.get(s)) for s in ("train", "val", "test")}
    if not lists["train"] or not lists["test"]:
        raise DataError("list datasets need data.train_list and data.test_list (files of 'path label' lines)")
    known = d["num_classes"] or preset.get("num_classes")
    parsed = {s: parse_list_file(p, root, known) for s, p in lists.items() if p}
    train_labels = set(parsed["train"][1].tolist())
    for split in ("val", "test"):
        unseen = sorted(set(parsed[split][1].tolist()) - train_labels) if split in parsed else []
        if unseen:
            raise DataError(f"{lists[split]}: labels {unseen[:20]}{' ...' if len(unseen) > 20 else ''} have no "
                            f"training image in {lists['train']}; their images could not be scored fairly. Add "
                            "training images for them or remove them from the list")
    num_classes = known or int(parsed["train"][1].max()) + 1
    classes = [str(i) for i in range(num_classes)]
    mk = lambda s: (FileListDataset(*parsed[s], num_classes, classes, name=lists[s], max_pixels=d["max_image_pixels"])
                    if s in parsed else None)
    info = _info(d, 224, preset.get("mean", IMAGENET_MEAN), preset.get("std", IMAGENET_STD), small=False)
    return DataBundle(name, mk("train"), mk("test"), mk("val"), num_classes, classes, info)


def _build_folder(d: Mapping) -> DataBundle:
    root = _root(d)
    train_dir = os.path.join(root, d["train_dir"])
    tr_paths, tr_y, classes = scan_image_folder(train_dir)
    mk = lambda sub: FileListDataset(*scan_image_folder(os.path.join(root, sub), classes)[:2], len(classes),
                                     classes, name=os.path.join(root, sub), max_pixels=d["max_image_pixels"])
    train = FileListDataset(tr_paths, tr_y, len(classes), classes, name=train_dir, max_pixels=d["max_image_pixels"])
    val = mk(d["val_dir"]) if d["val_dir"] else None
    info = _info(d, 224, IMAGENET_MEAN, IMAGENET_STD, small=False)
    return DataBundle("folder", train, mk(d["test_dir"]), val, len(classes), classes, info)
