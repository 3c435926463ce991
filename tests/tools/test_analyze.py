"""tailcon analyze: each geometry figure on synthetic features whose value is known, and the
command on one run and on two runs side by side."""

import json
import math

import pytest
import torch

from tailcon.cli import main
from tailcon.engine import geometry as G

from conftest import tiny_cfg


def _simplex(c: int) -> torch.Tensor:
    """The vertices of a regular simplex: C unit vectors with pairwise cosine -1/(C-1)."""
    return torch.nn.functional.normalize(torch.eye(c, dtype=torch.float64) - 1.0 / c, dim=1)


def test_an_exact_simplex_has_distance_zero_and_a_collapsed_pair_does_not():
    means = _simplex(5) * 3 + torch.tensor([1.0, 2, 0, 0, 1], dtype=torch.float64)  # scale, shift: still one
    geo = G.class_mean_geometry(means)
    assert geo["simplex_distance"] < 1e-12
    torch.testing.assert_close(geo["cosine"][0, 1], torch.tensor(-0.25, dtype=torch.float64))
    collapsed = means.clone()
    collapsed[4] = collapsed[3]  # a tail class on top of another
    geo = G.class_mean_geometry(collapsed)
    assert geo["simplex_distance"] > 0.1 and geo["simplex_gap_per_class"][4] > geo["simplex_gap_per_class"][0]


def test_nc1_is_zero_for_collapsed_classes_and_grows_with_within_class_spread():
    labels = torch.arange(4).repeat_interleave(6)
    means = _simplex(4) * 2
    assert G.within_between_variability(means[labels], labels, 4) < 1e-20
    torch.manual_seed(0)
    noisy = means[labels] + 0.1 * torch.randn(24, 4, dtype=torch.float64)
    noisier = means[labels] + 0.5 * torch.randn(24, 4, dtype=torch.float64)
    assert 0 < G.within_between_variability(noisy, labels, 4) < G.within_between_variability(noisier, labels, 4)


def test_alignment_and_uniformity_of_known_configurations():
    e = torch.eye(2, dtype=torch.float64)
    two_points = torch.stack([e[0], e[0], -e[0], -e[0]])  # two classes, each collapsed, antipodal
    labels = torch.tensor([0, 0, 1, 1])
    out = G.alignment_uniformity(two_points, labels)
    assert out["alignment"] == pytest.approx(0.0)
    # 12 ordered pairs: 4 at distance^2 0, 8 at distance^2 4
    assert out["uniformity"] == pytest.approx(math.log((4 + 8 * math.exp(-8)) / 12))


def test_per_group_means_follow_the_shot_groups():
    counts = [500, 150, 50, 30, 5]
    assert G.per_group([1.0, 3.0, 2.0, 4.0, 7.0], counts) == {"many": 2.0, "medium": 3.0, "few": 7.0}
    assert G.per_group([1.0, 2.0], [500, 200])["few"] is None


@pytest.mark.slow
def test_analyze_one_run_and_two_side_by_side(tmp_path, capsys):
    from tailcon.engine import train

    for name, method in (("la", "logit_adjusted"), ("ce", "ce")):
        train(tiny_cfg(tmp_path / name, f"method.name={method}", "train.max_steps_per_epoch=3", epochs=1))
    runs = [str(tmp_path / name / "run") for name in ("la", "ce")]
    assert main(["analyze", runs[0]]) == 0
    single = json.loads((tmp_path / "la" / "run" / "analysis" / "analysis.json").read_text())
    (figures,) = single.values()
    assert len(figures["mean_cosine"]) == 10 and len(figures["weight_norm_per_class"]) == 10
    assert set(figures["knn_top1"]) == {"top1", "many", "medium", "few"}
    assert {"simplex_distance", "nc1", "alignment", "uniformity", "feature_norm", "weight_norm"} <= set(figures)
    assert main(["analyze", *runs, "--out", str(tmp_path / "both")]) == 0
    both = json.loads((tmp_path / "both" / "analysis.json").read_text())
    assert len(both) == 2 and {r["method"] for r in both.values()} == {"logit_adjusted", "ce"}
    assert (tmp_path / "both" / "class_mean_cosines.png").stat().st_size > 0
    assert "simplex" in capsys.readouterr().out


def test_the_class_cosine_figure_names_classes_and_the_table_says_which_way_is_better(tmp_path, monkeypatch):
    import matplotlib.figure

    from tailcon.tools import analyze

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    result = {"train_counts": [5, 50, 20], "classes": ["cat", "dog", "eel"], "mean_cosine": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
              "simplex_distance": 0.1, "feature_norm_per_class": [1.0, 2.0, 3.0], "weight_norm_per_class": [1, 1, 1],
              "nc1": {"train": 0.5}, "alignment": 0.2, "uniformity": -1.0,
              "knn_top1": {"top1": 50.0, "many": None, "medium": 40.0, "few": 60.0}}
    analyze._plot({"run": result}, tmp_path)
    heatmap = saved[0].axes[0]
    assert [t.get_text() for t in heatmap.get_xticklabels()] == ["dog", "eel", "cat"], "by name, most images first"
    text = analyze.format_analysis({"run": result})
    assert "simplex: distance of the class means from a regular simplex (lower: closer)" in text
    assert "kNN: top-1 % (higher: better)" in text
