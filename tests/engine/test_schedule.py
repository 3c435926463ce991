import math

import pytest

from tailcon.engine import lr_at_epoch


def test_bcl_cosine_is_per_epoch_and_ends_above_zero():
    o = {"lr": 0.1, "schedule": "cosine", "warmup_epochs": 0}
    assert lr_at_epoch(0, o, 90) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 91)))
    assert 0 < lr_at_epoch(89, o, 90) < 1e-4


def test_warmup_then_step_decay_as_the_cifar_recipes():
    o = {"lr": 0.15, "schedule": "step", "warmup_epochs": 5, "milestones": [160, 180], "gamma": 0.1}
    assert [lr_at_epoch(e, o, 200) for e in range(5)] == pytest.approx([0.03, 0.06, 0.09, 0.12, 0.15])
    assert lr_at_epoch(159, o, 200) == 0.15
    assert lr_at_epoch(160, o, 200) == pytest.approx(0.015) and lr_at_epoch(199, o, 200) == pytest.approx(0.0015)


def test_rescom_cosine_end_reaches_the_floor_at_the_last_epoch():
    o = {"lr": 0.06, "schedule": "cosine_end", "warmup_epochs": 10, "min_lr_ratio": 1e-5}
    assert lr_at_epoch(9, o, 400) == pytest.approx(0.06)
    assert lr_at_epoch(399, o, 400) == pytest.approx(0.06 * 1e-5)


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="unknown optim.schedule 'linear'"):
        lr_at_epoch(0, {"lr": 0.1, "schedule": "linear"}, 10)


def test_paco_cifar_warmup_overshoots_to_1_1x_in_its_last_warmup_epoch_when_asked():
    o = {"lr": 0.05, "schedule": "step", "warmup_epochs": 10, "milestones": [321, 361], "gamma": 0.1,
         "warmup_overshoot": True}
    assert lr_at_epoch(9, o, 400) == pytest.approx(0.05)
    assert lr_at_epoch(10, o, 400) == pytest.approx(0.055), "the authors' `e <= 10`"
    assert lr_at_epoch(11, o, 400) == pytest.approx(0.05)
    assert lr_at_epoch(320, o, 400) == pytest.approx(0.05) and lr_at_epoch(321, o, 400) == pytest.approx(0.005)
    assert lr_at_epoch(10, {**o, "warmup_overshoot": False}, 400) == pytest.approx(0.05)


def test_per_iteration_cosine_follows_dscls_fractional_epoch():
    from tailcon.engine.schedule import lr_at_position

    o = {"lr": 0.1, "schedule": "cosine_end", "warmup_epochs": 10, "min_lr_ratio": 0.0, "per_iteration": True}
    assert lr_at_position(0.0, o, 200) == 0.0 and lr_at_position(5.5, o, 200) == pytest.approx(0.055)
    assert lr_at_position(10.0, o, 200) == pytest.approx(0.1)
    e = 105.25
    assert lr_at_position(e, o, 200) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * (e - 10) / 190)))
    step = {"lr": 0.1, "schedule": "step", "warmup_epochs": 0, "milestones": [3], "gamma": 0.1}
    assert lr_at_position(2.9, step, 5) == pytest.approx(0.1) and lr_at_position(3.0, step, 5) == pytest.approx(0.01)


def test_per_iteration_schedule_changes_the_lr_inside_an_epoch(tmp_path):
    from tailcon.engine import Trainer

    from conftest import tiny_cfg

    trainer = Trainer.from_config(tiny_cfg(tmp_path, "optim.per_iteration=true", "optim.warmup_epochs=1",
                               "train.max_steps_per_epoch=4", epochs=2))
    seen = []
    original = trainer.train_step

    def spy(views, labels, extra, amp, **step):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return original(views, labels, extra, amp, **step)

    trainer.train_step = spy
    trainer.train_one_epoch(0, 2)
    assert seen == pytest.approx([0.0, 0.025, 0.05, 0.075]), "lr0 * e / W at e = step / 4"
