"""Each corruption against its definition (CIFAR-10-C parameters), and eval --corruptions end to end."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from tailcon.data import corruptions as K
from tailcon.data.corruptions import CORRUPTIONS, FAMILIES, corrupt_array


def natural(n=4, size=32, seed=0) -> np.ndarray:
    """Smooth colour images with edges (not flat: blur and contrast must show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a = rng.uniform(0.2, 0.8, 3)
        img = a * (0.5 + 0.5 * np.sin(6 * xx[..., None] + rng.uniform(0, 6, 3))) * (yy[..., None] > 0.4) + 0.1
        out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_four_families_fourteen_corruptions():
    assert set(FAMILIES) == {"noise", "blur", "weather", "digital"}
    assert len(CORRUPTIONS) == 14 and all(len(v) >= 2 for v in FAMILIES.values())


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_shape_dtype_determinism_and_growing_severity(name):
    x = natural(3)
    outs = [corrupt_array(x, name, s, seed=1) for s in (1, 3, 5)]
    for o in outs:
        assert o.shape == x.shape and o.dtype == np.uint8
    assert np.array_equal(outs[0], corrupt_array(x, name, 1, seed=1)), "seeded"
    dist = [np.abs(o.astype(float) - x).mean() for o in outs]
    assert min(dist) > 0, (name, dist)
    if name != "elastic_transform":  # CIFAR-10-C shrinks its affine part as the elastic part grows
        assert dist[2] > dist[0], (name, dist)


def test_gaussian_noise_has_the_defined_standard_deviation():
    x = np.full((1, 64, 64, 3), 128, np.uint8)
    out = K.gaussian_noise(x[0], 5, np.random.default_rng(0)).astype(float) / 255
    assert abs(out.std() - 0.10) < 0.005 and abs(out.mean() - 128 / 255) < 0.005


def test_shot_noise_is_poisson_with_the_defined_rate():
    x = np.full((64, 64, 3), 102, np.uint8)  # 0.4
    out = K.shot_noise(x, 5, np.random.default_rng(0)).astype(float) / 255
    c = 50
    assert abs(out.var() - 0.4 / c) < 0.0015 and abs(out.mean() - 0.4) < 0.005


def test_impulse_noise_hits_the_defined_fraction():
    x = np.full((64, 64, 3), 100, np.uint8)
    out = K.impulse_noise(x, 5, np.random.default_rng(0))
    hit = out != 100
    assert abs(hit.mean() - 0.07) < 0.01
    assert set(np.unique(out[hit])) <= {0, 255}


def test_contrast_and_brightness_formulas():
    x = natural(1)[0]
    f = x.astype(float) / 255
    mean = f.mean(axis=(0, 1), keepdims=True)
    expect = np.clip(((f - mean) * 0.15 + mean) * 255, 0, 255).round()
    assert np.abs(K.contrast(x, 5, None).astype(float) - expect).max() <= 1
    from matplotlib.colors import rgb_to_hsv

    v_before = rgb_to_hsv(f)[..., 2]
    v_after = rgb_to_hsv(K.brightness(x, 5, None).astype(float) / 255)[..., 2]
    assert np.abs(v_after - np.clip(v_before + 0.3, 0, 1)).max() < 2 / 255


def test_pixelate_and_jpeg_are_pil_round_trips():
    x = natural(1)[0]
    img = Image.fromarray(x)
    expect = np.asarray(img.resize((20, 20), Image.BOX).resize((32, 32), Image.BOX))
    assert np.array_equal(K.pixelate(x, 5, None), expect)  # 32 * 0.65 -> 20
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=40)
    assert np.array_equal(K.jpeg_compression(x, 5, None), np.asarray(Image.open(buf).convert("RGB")))


def test_blur_kernels_are_normalised_and_shaped():
    disk = K.disk_kernel(1.5, 0.1)
    assert abs(disk.sum() - 1) < 1e-12 and np.allclose(disk, disk.T) and np.allclose(disk, disk[::-1])
    assert disk[8, 8] == disk.max()
    line = K.motion_kernel(4, 2, 0)  # horizontal, one-sided: all weight on the centre row, right half
    assert abs(line.sum() - 1) < 1e-12 and line[4, 4:].sum() == pytest.approx(1) and line[4, :4].sum() == 0


def test_zoom_blur_of_zoom_one_is_the_image():
    x = natural(1)[0].astype(float) / 255
    assert np.allclose(K._clipped_zoom(x, 1.0), x)


def test_fog_only_brightens_before_rescaling():
    pf = K.plasma_fractal(np.random.default_rng(0), 32, 3)
    assert pf.shape == (32, 32) and pf.min() == 0 and pf.max() == 1


def test_unknown_corruption_is_named():
    with pytest.raises(ValueError, match="unknown corruption 'frostbite'"):
        corrupt_array(natural(1), "frostbite", 1)


def test_eval_corruptions_reports_errors_and_mce(tmp_path):
    from tailcon.cli import main
    from tailcon.engine import train

    from conftest import tiny_cfg

    train(tiny_cfg(tmp_path / "a", "optim.lr=0.1", epochs=3))
    train(tiny_cfg(tmp_path / "b", "optim.lr=0.1", "method.name=ce", epochs=3))
    rc = main(["eval", str(tmp_path / "a" / "run"), "--corruptions", "--baseline", str(tmp_path / "b" / "run"),
               "--corruption-names", "gaussian_noise", "contrast", "--severities", "1", "5", "--max-images", "60"])
    assert rc == 0
    res = json.loads((tmp_path / "a" / "run" / "corruptions-last.json").read_text())
    base = res["baseline_errors"]
    assert not list((tmp_path / "b" / "run").glob("corruptions*")), "nothing written into the baseline's run"
    assert set(res["errors"]) == {"gaussian_noise", "contrast"} and set(res["family_error"]) == {"noise", "digital"}
    for name in ("gaussian_noise", "contrast"):
        ours, theirs = res["errors"][name], base["errors"][name]
        assert res["ce"][name] == pytest.approx(100 * (ours["1"] + ours["5"]) / (theirs["1"] + theirs["5"]))
    assert res["mCE"] == pytest.approx(np.mean(list(res["ce"].values())))
    assert 0 <= res["clean"] <= 100


def test_imagenet_c_layout_is_read_by_wnid(tmp_path):
    from tailcon.data.corruptions import imagenet_c_images

    for wnid in ("n01440764", "n01443537", "n99999999"):
        d = tmp_path / "fog" / "3" / wnid
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(natural(1, 16)[0]).save(d / f"ILSVRC2012_val_{wnid}_{i}.JPEG")
    paths, labels = imagenet_c_images(tmp_path, "fog", 3, {"n01440764": 0, "n01443537": 1})
    assert labels == [0, 0, 1, 1] and all("/fog/3/" in p for p in paths)  # unknown wnid left out
    with pytest.raises(FileNotFoundError, match="fog/4"):
        imagenet_c_images(tmp_path, "fog", 4, {"n01440764": 0})


def test_released_cifar_c_arrays_are_read_block_by_severity(tmp_path, capsys):
    import torch

    import tailcon
    from tailcon.cli import main
    from tailcon.engine import train

    from conftest import tiny_cfg
    from test_cifar import _write_cifar10

    _write_cifar10(tmp_path / "data" / "cifar-10-batches-py", per_class=20, test_per_class=3)
    train(tiny_cfg(tmp_path, "data.name=cifar10_lt", f"data.root={tmp_path / 'data'}", "data.max_per_class=20",
                   "model.backbone=resnet8", "train.max_steps_per_epoch=2", "data.batch_size=16", epochs=1))
    run = tmp_path / "run"
    model = tailcon.load(run, device="cpu")
    test_labels = np.repeat(np.arange(10), 3)
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 256, (5 * 30, 32, 32, 3), dtype=np.uint8) for name in ("frost", "contrast")}
    for name, a in arrays.items():
        np.save(root / f"{name}.npy", a)
    np.save(root / "labels.npy", np.tile(test_labels, 5))
    assert main(["eval", str(run), "--corruptions", "--cifar-c", str(root), "--corruption-names", "frost", "contrast",
                 "--max-images", "0", "--device", "cpu"]) == 0
    res = json.loads((run / "corruptions-last.json").read_text())
    assert res["source"].startswith("released CIFAR-C arrays") and res["approximation"] is False
    for name, a in arrays.items():
        for s in range(1, 6):
            block = torch.from_numpy(a[(s - 1) * 30:s * 30]).permute(0, 3, 1, 2).float() / 255
            pred = model.batch_logits((block - torch.tensor(model.info.mean).view(1, 3, 1, 1))
                                      / torch.tensor(model.info.std).view(1, 3, 1, 1)).argmax(1).numpy()
            assert res["errors"][name][str(s)] == pytest.approx(100 * (pred != test_labels).mean()), (name, s)
    assert set(res["family_error"]) == {"weather", "digital"}  # frost is a weather corruption
    np.save(root / "labels.npy", np.tile((test_labels + 1) % 10, 5))
    assert main(["eval", str(run), "--corruptions", "--cifar-c", str(root), "--corruption-names", "frost",
                 "--max-images", "0", "--device", "cpu"]) == 2
    assert "does not match the test labels" in capsys.readouterr().err
    assert main(["eval", str(run), "--corruptions", "--cifar-c", str(root), "--corruption-names", "fog"]) == 2
    assert "fog.npy: not found" in capsys.readouterr().err
    assert main(["eval", str(run), "--corruptions", "--corruption-names", "contrast", "--severities", "1",
                 "--max-images", "10", "--device", "cpu"]) == 0
    assert "approximation" in capsys.readouterr().out
    assert json.loads((run / "corruptions-last.json").read_text())["approximation"] is True
