"""Building on tailcon without forking it: a method, backbone or dataset of your own, loaded with
custom_imports or an installed package's tailcon.plugins entry point (docs/extending.md)."""

import importlib.metadata
import shutil
import sys
from pathlib import Path

import pytest

from tailcon import config, resolution
from tailcon import plugins
from tailcon.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "extending"


@pytest.fixture(autouse=True)
def registries_restored():
    """What a test registers is gone after it: other tests see tailcon's own parts only."""
    from tailcon.data import build
    from tailcon.methods import METHODS
    from tailcon.models import BACKBONE_BUILDERS

    saved = dict(METHODS), dict(BACKBONE_BUILDERS), dict(build.DATASET_BUILDERS), list(build.DATASETS)
    yield
    for registry, before in zip((METHODS, BACKBONE_BUILDERS, build.DATASET_BUILDERS), saved):
        registry.clear()
        registry.update(before)
    build.DATASETS[:] = saved[3]


@pytest.fixture
def example(tmp_path):
    """docs/extending's method and config, copied to a folder outside the package."""
    folder = tmp_path / "my_project"
    folder.mkdir()
    for f in ("balanced_supcon.py", "balanced_supcon.yaml"):
        shutil.copy(EXAMPLE / f, folder / f)
    yield folder
    sys.modules.pop("balanced_supcon", None)


def test_the_documented_example_trains_from_outside_the_package(example, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # neither the package nor the example's folder is the working directory
    run = tmp_path / "run"
    config_file = str(example / "balanced_supcon.yaml")
    assert main(["train", config_file, f"run_dir={run}", "train.epochs=1", "train.max_steps_per_epoch=2",
                 "--no-progress"]) == 0
    assert config.load_yaml(run / "config.yaml")["custom_imports"] == ["balanced_supcon"]
    assert main(["config", config_file]) == 0
    assert "ce_weight: 1.0" in capsys.readouterr().out, "tailcon config shows the method's keys"
    with pytest.raises(config.ConfigError, match=r"method.temperatur.*did you mean 'method.temperature'"):
        resolution.resolve(config_file, ["method.temperatur=0.2"])
    with pytest.raises(config.ConfigError, match=r"'method.ce_weight' must be a number >= 0"):
        resolution.resolve(config_file, ["method.ce_weight=-1"])
    assert main(["train", config_file, f"resume={run}", "method.ce_weight=2.0", "--no-progress"]) == 2
    assert "method.ce_weight: 1.0 -> 2.0" in capsys.readouterr().err, "resume checks its keys"


def test_a_finished_run_imports_its_modules_from_sys_path_only(example, tmp_path, monkeypatch, capsys):
    import tailcon

    run = example / "run"  # the module sits next to the run: it must still not be imported from there
    assert main(["train", str(example / "balanced_supcon.yaml"), f"run_dir={run}", "train.epochs=1",
                 "train.max_steps_per_epoch=2", "--no-progress"]) == 0
    sys.modules.pop("balanced_supcon", None)
    shutil.copy(example / "balanced_supcon.py", run / "balanced_supcon.py")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert "custom_imports: no module named 'balanced_supcon' in sys.path" in capsys.readouterr().err
    monkeypatch.syspath_prepend(str(example))
    monkeypatch.setattr(plugins, "_announced", set())  # said once per process
    model = tailcon.load(run)
    assert "tailcon: imported balanced_supcon" in capsys.readouterr().err
    assert model.config["method"]["name"] == "balanced_supcon"
    assert main(["eval", str(run)]) == 0
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.torchscript.pt")]) == 0


def test_custom_imports_as_an_override_and_a_missing_module_in_one_line(example, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(example))
    run = tmp_path / "run"
    assert main(["train", "custom_imports=[balanced_supcon]", "method.name=balanced_supcon", f"run_dir={run}",
                 "train.epochs=1", "train.max_steps_per_epoch=2", "data.batch_size=32", "--no-progress"]) == 0
    assert main(["train", "custom_imports=[no_such_module_here]", f"run_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert "custom_imports: no module named 'no_such_module_here'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


PLUGIN = '''
import numpy as np
import torch
from torch import nn

from tailcon.data import ArrayDataset, DataBundle, register_dataset
from tailcon.data.transforms import ImageInfo
from tailcon.models import register_backbone


@register_backbone("tiny_cnn")
def tiny_cnn(zero_init_residual=False):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    net.num_features = 8
    return net


@register_dataset("stripes_lt")
def stripes(d):
    rng = np.random.default_rng(0)
    def split(counts):
        labels = np.repeat(np.arange(3), counts)
        images = rng.integers(0, 50, (len(labels), 8, 8, 3)).astype(np.uint8)
        images[np.arange(len(labels)), :, labels * 2] = 250  # a bright column per class
        return ArrayDataset(images, labels, 3, ["a", "b", "c"])
    info = ImageInfo(size=8, mean=(0.5,) * 3, std=(0.5,) * 3, small=True)
    return DataBundle("stripes_lt", split([40, 12, 4]), split([5, 5, 5]), None, 3, ["a", "b", "c"], info)
'''


def test_an_installed_plugin_registers_a_backbone_and_a_dataset(tmp_path, monkeypatch, capsys):
    (tmp_path / "tailcon_stripes.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint(name="stripes", value="tailcon_stripes", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [entry] if kw.get("group") == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    run = tmp_path / "run"
    assert main(["train", "data.name=stripes_lt", "model.backbone=tiny_cnn", f"run_dir={run}", "train.epochs=2",
                 "data.batch_size=8", "train.channels_last=false", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "data stripes_lt (56 train images, 3 classes, counts 40..4)" in out and "model tiny_cnn" in out
    assert main(["eval", str(run)]) == 0
    sys.modules.pop("tailcon_stripes", None)
