from pathlib import Path

import pytest

from tailcon import config, resolution
from tailcon.methods import get_method

REPO = Path(__file__).resolve().parents[2]


def test_dotted_overrides_are_parsed_as_yaml_values():
    cfg = resolution.resolve(None, ["optim.lr=0.05", "data.imbalance_factor=50", "train.epochs=3",
                           "optim.milestones=[10, 20]", "train.channels_last=true", "seed=7"])
    assert cfg["optim"]["lr"] == 0.05 and cfg["data"]["imbalance_factor"] == 50
    assert cfg["optim"]["milestones"] == [10, 20] and cfg["train"]["channels_last"] is True
    assert cfg["seed"] == 7 and cfg["train"]["epochs"] == 3


def test_required_keys_exist_for_every_config():
    flat = config.flatten(config.DEFAULTS)
    for key in ("data.root", "data.imbalance_factor", "train.epochs", "seed", "run_dir"):
        assert key in flat


@pytest.mark.parametrize("bad,closest", [("optim.lrr=0.1", "optim.lr"), ("data.imbalance=50", "data.imbalance_factor"),
                                         ("trian.epochs=2", "train.epochs"), ("lr=0.1", "optim.lr")])
def test_unknown_key_names_the_key_and_the_closest_valid_one(bad, closest):
    with pytest.raises(config.ConfigError, match=rf"unknown config key '{bad.split('=')[0]}' \(did you mean '{closest}'\?\)"):
        resolution.resolve(None, [bad])


def test_unknown_key_in_a_config_file_is_an_error(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("optim:\n  lr: 0.1\n  wd: 0.1\n")
    with pytest.raises(config.ConfigError, match="unknown config key 'optim.wd'"):
        resolution.resolve(f)


def test_string_for_a_bool_is_rejected_not_read_as_true():
    with pytest.raises(config.ConfigError, match="train.progress.*bool.*'False'"):
        resolution.resolve(None, ["train.progress='False'"])


def test_unknown_method_and_method_key():
    with pytest.raises(config.ConfigError, match="unknown method.name 'logit_adjustd'.*did you mean 'logit_adjusted'"):
        get_method("logit_adjustd")
    with pytest.raises(config.ConfigError, match="unknown config key 'method.taus' for method 'logit_adjusted'.*method.tau"):
        get_method("logit_adjusted").validate_config({"name": "logit_adjusted", "taus": 1})


def test_base_inheritance_and_config_name(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.2\ntrain:\n  epochs: 9\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain:\n  epochs: 3\n")
    cfg = resolution.resolve(tmp_path / "child.yaml", ["seed=1"])
    assert cfg["optim"]["lr"] == 0.2 and cfg["train"]["epochs"] == 3 and cfg["optim"]["momentum"] == 0.9
    assert cfg["name"].endswith("child")


def test_override_without_equals_is_an_error():
    with pytest.raises(config.ConfigError, match="key=value"):
        config.parse_overrides(["optim.lr"])


def shipped_configs():
    return sorted((REPO / "configs").rglob("*.yaml")) + sorted((REPO / "tailcon" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_validates(path):
    cfg = resolution.resolve(path)
    hparams = get_method(cfg["method"]["name"]).validate_config(cfg["method"])
    from tailcon.data.transforms import RECIPES
    for key, value in {**hparams, "train_augment": cfg["data"]["train_augment"]}.items():
        if key.endswith(("view", "augment")):
            assert value in RECIPES, f"{key}={value!r} is not an augmentation recipe"
    text = path.read_text()
    assert text.startswith("#"), "a header comment says what the config reproduces"


def test_the_old_config_resolve_names_its_new_home():
    with pytest.raises(AttributeError, match=r"tailcon.resolution.resolve"):
        config.resolve  # noqa: B018


def test_a_shipped_recipe_at_another_budget_withholds_the_paper_figure_naming_the_keys():
    cfg = resolution.resolve("cifar10_lt/ldam_drw", ["train.epochs=40", "optim.warmup_epochs=1",
                                                     "optim.milestones=[32,36]", "method.drw_epoch=32"])
    assert [cfg["paper"][g] for g in ("top1", "many", "medium", "few")] == [None] * 4
    assert cfg["paper"]["config"] == "cifar10_lt/ldam_drw"
    assert cfg["paper"]["withheld"] == ("the recipe differs from cifar10_lt/ldam_drw's: method.drw_epoch 160 -> 32; "
                                        "optim.milestones [160, 180] -> [32, 36]; optim.warmup_epochs 5 -> 1; "
                                        "train.epochs 200 -> 40")


def test_plumbing_seed_and_evaluation_cadence_keep_the_paper_figure():
    cfg = resolution.resolve("cifar10_lt/ldam_drw", ["seed=3", "data.root=/elsewhere", "data.num_workers=7",
                                                     "train.eval_every=10", "train.log_every=5", "device=cpu",
                                                     "train.channels_last=false", "method.max_margin=0.5"])
    assert cfg["paper"]["top1"] == 77.0 and cfg["paper"]["withheld"] is None
    # resolving a run's saved config again (resume) keeps the decision
    again = resolution.resolve(None, ["train.epochs=200"], extra=config.plain(cfg))
    assert again["paper"]["top1"] == 77.0
    assert resolution.resolve(None, ["train.epochs=300"], extra=config.plain(cfg))["paper"]["top1"] is None


def test_a_paper_figure_given_on_the_command_line_is_the_users_own_claim():
    cfg = resolution.resolve("cifar10_lt/ldam_drw", ["train.epochs=40", "paper.top1=60.0"])
    assert cfg["paper"]["top1"] == 60.0 and cfg["paper"]["withheld"] is None and cfg["paper"]["config"] is None


def test_scale_schedule_keeps_the_recipes_shape_at_another_budget_and_records_it():
    cfg = resolution.resolve("cifar10_lt/ldam_drw", ["train.epochs=40", "train.scale_schedule=true"])
    assert (cfg["optim"]["warmup_epochs"], cfg["optim"]["milestones"], cfg["method"]["drw_epoch"]) == (1, [32, 36], 32)
    assert cfg["train"]["scaled_from"] == 200 and cfg["train"]["eval_every"] == 1
    # the very schedule the LDAM-DRW code's scaled run uses (benchmarks/reference_parity.py)
    explicit = resolution.resolve("cifar10_lt/ldam_drw", ["train.epochs=40", "optim.warmup_epochs=1",
                                                          "optim.milestones=[32,36]", "method.drw_epoch=32"])
    for key in ("optim.warmup_epochs", "optim.milestones", "method.drw_epoch", "train.eval_every"):
        assert config.get(cfg, key) == config.get(explicit, key), key
    # a key the command line sets itself is kept; a resumed run (its saved config) is not scaled again
    own = resolution.resolve("cifar10_lt/ldam_drw", ["train.epochs=20", "train.scale_schedule=true", "method.drw_epoch=19"])
    assert own["method"]["drw_epoch"] == 19 and own["optim"]["milestones"] == [16, 18] and own["optim"]["warmup_epochs"] == 1
    again = resolution.resolve(None, ["train.epochs=50"], extra=config.plain(cfg))
    assert again["optim"]["milestones"] == [32, 36] and again["train"]["scaled_from"] == 200


def test_a_shortened_recipe_warns_about_each_switch_it_never_reaches():
    short = resolution.resolve("cifar10_lt/ldam_drw", ["train.epochs=40"])
    warnings = resolution.schedule_warnings(short)
    assert [w.split("=")[0] for w in warnings] == ["optim.milestones", "method.drw_epoch"]
    assert "optim.milestones=[160, 180] is at or past the run's end (train.epochs=40): the lr never drops" in warnings[0]
    assert "method.drw_epoch=160" in warnings[1] and "never happens" in warnings[1]
    assert resolution.schedule_warnings(resolution.resolve("cifar10_lt/ldam_drw")) == []
    # a cosine schedule has no milestones to miss; a warm-up as long as the run is one
    cosine = resolution.resolve("digits_lt", ["train.epochs=2"])
    assert [w.split("=")[0] for w in resolution.schedule_warnings(cosine)] == ["optim.warmup_epochs"]
