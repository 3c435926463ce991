"""Configs ship with the package: `tailcon configs` lists them from any directory, `tailcon train`
and `tailcon config` take their names, and a non-editable wheel install carries them.
`tailcon config` prints exactly what the run's config.yaml will hold."""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tailcon import config, resolution
from tailcon.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_shipped_names_resolve_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("cifar10_lt/bcl", "cifar10_lt/bcl.yaml", "configs/cifar10_lt/bcl.yaml"):
        cfg = resolution.resolve(name)
        assert cfg["method"]["name"] == "bcl" and cfg["name"] == "cifar10_lt-bcl", name
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cifar10_lt/bcl ") for line in listed) and len(listed) >= 60
    assert main(["config", "cifar10_lt/bcll"]) == 2
    assert "did you mean 'cifar10_lt/bcl'" in capsys.readouterr().err


def test_config_prints_what_training_writes_to_config_yaml(tmp_path, capsys):
    args = [str(REPO / "tailcon" / "configs" / "digits_lt.yaml"), f"run_dir={tmp_path / 'run'}", "train.epochs=1",
            "train.progress=false", "device=cpu", "model.backbone=resnet8", "data.max_per_class=20"]
    assert main(["config", *args]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# tailcon config ")
    assert main(["train", *args]) == 0
    assert yaml.safe_load(printed) == yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())


def test_config_validates_as_train_does_and_lists_sources(capsys):
    assert main(["config", "cifar10_lt/bcl", "optim.schedule=linear"]) == 2
    assert "optim.schedule" in capsys.readouterr().err
    assert main(["config", "cifar10_lt/bcl", "method.alpha=3.0", "--sources"]) == 0
    table = capsys.readouterr().out
    assert "| `method.alpha` | `3.0` | command line |" in table
    assert "| `optim.lr` | `0.15` | [3P]" in table


@pytest.mark.slow
def test_a_wheel_install_carries_the_configs(tmp_path):
    """Built and installed without -e, imported with the editable install out of the way."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(REPO)],
                           capture_output=True, text=True)
    if build.returncode != 0 and "Could not find a version that satisfies" in build.stderr:
        pytest.skip("no package index to fetch the build backend from")
    assert build.returncode == 0, build.stderr
    wheel = next(wheel_dir.glob("tailcon-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    # -S: no site-packages .pth processing, so the editable checkout cannot shadow the wheel
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *site.getsitepackages()])}
    code = ("import tailcon, sys; from tailcon.cli import main; print(tailcon.__file__); "
            "sys.exit(main(['configs']) or main(['config', 'cifar100_lt/rescom', '--sources']))")
    run = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith(str(target))
    assert "cifar10_lt/rescom_constant_lr" in run.stdout and "imagenet_lt/dscl" in run.stdout
    assert "| `method.k_neg` | `400` | [code]" in run.stdout


def test_version_prints_the_package_version(capsys):
    import tailcon

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"tailcon {tailcon.__version__}"


def test_config_without_an_argument_shows_the_default_config(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "name: digits_lt" in out and "backbone: resnet8" in out


def test_a_shipped_name_works_as_base(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_configs").mkdir()
    (tmp_path / "my_configs" / "mine.yaml").write_text("_base_: cifar10_lt/bcl\noptim:\n  lr: 0.2\n")
    monkeypatch.chdir(tmp_path)
    cfg = resolution.resolve("my_configs/mine.yaml")
    assert cfg["method"]["name"] == "bcl" and cfg["optim"]["lr"] == 0.2
    assert main(["config", "my_configs/mine.yaml", "--sources"]) == 0
    (tmp_path / "my_configs" / "bad.yaml").write_text("_base_: cifar10_lt/bclx\n")
    with pytest.raises(config.ConfigError, match=r"neither a file next to it .* \(did you mean 'cifar10_lt/bcl'\?\)"):
        resolution.resolve("my_configs/bad.yaml")


def test_configs_lists_each_first_sentence_whole(capsys):
    assert main(["configs"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["cifar10_lt/bcl"] == "CIFAR-10-LT IF100, BCL (Zhu et al. 2022)."
    assert lines["cifar100_lt/ce"] == "CIFAR-100-LT, imbalance factor 100: Plain cross-entropy (ERM)."
    assert all(text.endswith(".") for text in lines.values()), [t for t in lines.values() if not t.endswith(".")]


def test_a_backbone_that_cannot_take_the_image_size_is_refused_before_anything_is_written(tmp_path, capsys):
    pytest.importorskip("timm")
    run = tmp_path / "run"
    assert main(["train", "model.backbone=timm:convnext_tiny", f"run_dir={run}", "train.progress=false"]) == 2
    err = capsys.readouterr().err
    assert "cannot take the 16x16 images" in err and "set data.image_size=224" in err and "Traceback" not in err
    assert not run.exists()


def test_image_size_of_in_memory_small_images_is_refused_not_ignored(tmp_path, capsys):
    assert main(["train", "data.image_size=224", f"run_dir={tmp_path / 'run'}"]) == 2
    assert "never resized" in capsys.readouterr().err


@pytest.mark.parametrize("error", [TypeError, ValueError, KeyError, RuntimeError])
def test_a_bug_shows_its_traceback_instead_of_a_one_line_error(monkeypatch, error):
    """Only tailcon's own error types become one line: any other exception is a bug to report."""
    from tailcon import cli

    def broken(args):
        raise error("a bug in tailcon, not a user error")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_configs(parser(), broken))
    with pytest.raises(error, match="a bug in tailcon"):
        main(["configs"])


def test_tailcons_own_errors_are_one_line(monkeypatch, capsys):
    from tailcon import cli
    from tailcon.data import DataError
    from tailcon.engine import NonFiniteLossError, RunDirError
    from tailcon.inference import ExportError

    for error in (config.ConfigError, DataError, RunDirError, NonFiniteLossError, ExportError):
        def broken(args, error=error):
            raise error("what the user did wrong")

        parser = cli.build_parser
        monkeypatch.setattr(cli, "build_parser", lambda: _with_configs(parser(), broken))
        assert main(["configs"]) == 2
        assert capsys.readouterr().err == "tailcon: error: what the user did wrong\n"
        monkeypatch.undo()


def _with_configs(parser, fn):
    for action in parser._subparsers._group_actions:
        action.choices["configs"].set_defaults(func=fn)
    return parser


def test_help_version_configs_and_config_file_errors_start_without_importing_torch(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1\n")
    probe = ("import sys\nfrom tailcon.cli import main\n"
             "for argv in (['--help'], ['train', '--help'], ['export', '--help'], ['--version'], ['configs']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().endswith("NO TORCH"), out[-500:]
    assert "pt2" in out and "cifar10_lt/ldam_drw" in out
