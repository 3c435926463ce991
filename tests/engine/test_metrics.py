import pytest
import torch

from tailcon.engine import format_report, shot_accuracy, shot_groups


def test_shot_thresholds_are_strict_at_100_and_20():
    g = shot_groups([101, 100, 20, 19])
    assert g["many"].tolist() == [True, False, False, False]
    assert g["medium"].tolist() == [False, True, True, False]
    assert g["few"].tolist() == [False, False, False, True]


def test_group_accuracy_is_unweighted_mean_of_per_class_accuracy():
    counts = [500, 50, 5]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 0])
    m = shot_accuracy(preds, labels, counts)
    assert m["per_class"] == [75.0, 50.0, 50.0]
    assert (m["many"], m["medium"], m["few"]) == (75.0, 50.0, 50.0)
    assert abs(m["top1"] - 100 * 5 / 8) < 1e-12
    assert m["train_counts"] == counts


def test_empty_group_is_reported_as_empty_not_zero():
    m = shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), [5000, 50])
    assert m["few"] is None and m["num_few_classes"] == 0
    assert "empty" in format_report([("x", m)])


def test_classes_absent_from_the_evaluation_labels_are_ignored():
    m = shot_accuracy(torch.tensor([0, 0]), torch.tensor([0, 0]), [500, 5])
    assert m["few"] is None and m["per_class"][1] is None


# ---- top-5 and calibration ---------------------------------------------------------------------
def _naive_ece(conf, correct, bins=15):
    total, n = 0.0, len(conf)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i in range(n) if (lo <= conf[i] < hi) or (b == bins - 1 and conf[i] == 1.0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            mean_conf = sum(conf[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - mean_conf)
    return 100 * total


def test_ece_matches_a_per_bin_loop_and_is_zero_when_confidence_equals_accuracy():
    from tailcon.engine.metrics import expected_calibration_error

    g = torch.Generator().manual_seed(0)
    conf = torch.rand(500, generator=g)
    conf[:3] = torch.tensor([0.0, 1.0, 14 / 15])  # bin edges
    correct = torch.rand(500, generator=g) < conf
    assert expected_calibration_error(conf, correct) == pytest.approx(_naive_ece(conf.tolist(), correct.tolist()))
    calibrated = torch.full((10,), 0.7)
    assert expected_calibration_error(calibrated, torch.arange(10) < 7) == pytest.approx(0.0, abs=1e-4)  # float32 0.7
    assert expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=torch.bool)) is None


def test_evaluation_metrics_top5_and_ece_per_group():
    from tailcon.engine.evaluation import Predictions
    from tailcon.engine.metrics import evaluation_metrics

    counts = [200, 50, 5]  # one class per group
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    top = torch.tensor([[0, 1], [1, 0], [1, 2], [2, 0], [0, 1], [1, 0]])  # top-2 with 3 classes
    conf = torch.tensor([0.9, 0.6, 0.8, 0.5, 0.7, 0.4])
    m = evaluation_metrics(Predictions(top, conf, labels), counts)
    assert m["top1"] == pytest.approx(200 / 6)
    assert m["top5"] == pytest.approx(300 / 6)  # k = the columns there are: rows 3, 4, 5 miss their label
    correct = (top[:, 0] == labels).tolist()
    assert m["ece"]["overall"] == pytest.approx(_naive_ece(conf.tolist(), correct))
    for group, rows in (("many", [0, 1]), ("medium", [2, 3]), ("few", [4, 5])):
        expected = _naive_ece([conf[i].item() for i in rows], [correct[i] for i in rows])
        assert m["ece"][group] == pytest.approx(expected), group
    assert sum(m["reliability"]["count"]) == 6
