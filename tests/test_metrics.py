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
