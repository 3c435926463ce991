"""CIFAR loaders on small files written in the official python layout; the download path with
a stubbed network (never the real one)."""

import dataclasses
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from tailcon import config, resolution
from tailcon.data import DataError, build_data, long_tail_counts
from tailcon.data import cifar


def _write_cifar10(folder, per_class=60, test_per_class=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    labels = rng.permutation(np.repeat(np.arange(10), per_class)).tolist()
    data = rng.randint(0, 255, (len(labels), 3072), dtype=np.uint8)
    for b in range(5):
        s = slice(b * len(labels) // 5, (b + 1) * len(labels) // 5)
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({b"labels": labels[s], b"data": data[s]}, f)
    tl = np.repeat(np.arange(10), test_per_class).tolist()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": tl, b"data": rng.randint(0, 255, (len(tl), 3072), dtype=np.uint8)}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    return labels, data


def test_cifar10_lt_from_official_layout(tmp_path):
    labels, data = _write_cifar10(tmp_path / "cifar-10-batches-py")
    cfg = resolution.resolve(None, ["data.name=cifar10_lt", f"data.root={tmp_path}", "data.max_per_class=60",
                           "data.imbalance_factor=10"])
    d = build_data(cfg)
    assert d.cls_num_list == long_tail_counts(10, 60, 10)
    assert d.classes[3] == "class3" and len(d.test) == 30 and not d.has_val
    # pixels: channel planes of the official row become HWC
    img = d.train.images[0]
    first = np.flatnonzero(np.asarray(labels) == 0)
    assert any(np.array_equal(img, data[i].reshape(3, 32, 32).transpose(1, 2, 0)) for i in first)


def test_cifar100_lt_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.RandomState(1)
    y = np.repeat(np.arange(100), 6).tolist()
    for name, n in (("train", len(y)), ("test", 100)):
        ys = y if name == "train" else list(range(100))
        with open(folder / name, "wb") as f:
            pickle.dump({b"fine_labels": ys, b"coarse_labels": [0] * n,
                         b"data": rng.randint(0, 255, (n, 3072), dtype=np.uint8)}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    d = build_data(resolution.resolve(None, ["data.name=cifar100_lt", f"data.root={folder}", "data.max_per_class=6",
                                    "data.imbalance_factor=6"]))
    assert d.num_classes == 100 and d.cls_num_list[0] == 6 and d.cls_num_list[-1] == 1


def test_missing_cifar_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"data.root=.*cifar-10-batches-py.*data.download=true"):
        build_data(resolution.resolve(None, ["data.name=cifar10_lt", f"data.root={tmp_path}"]))


def _archive_bytes(tmp_path):
    _write_cifar10(tmp_path / "src" / "cifar-10-batches-py", per_class=10, test_per_class=1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_download_fetches_official_url_verifies_md5_and_extracts(tmp_path, monkeypatch):
    payload = _archive_bytes(tmp_path)
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(cifar, "urlopen", fake_urlopen)
    spec = dataclasses.replace(cifar.CIFAR10, md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(cifar.SPECS, "cifar10", spec)
    root = tmp_path / "dl"
    d = build_data(resolution.resolve(None, ["data.name=cifar10_lt", f"data.root={root}", "data.download=true",
                                    "data.max_per_class=10", "data.imbalance_factor=10"]))
    assert requested == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert d.cls_num_list == long_tail_counts(10, 10, 10)
    build_data(resolution.resolve(None, ["data.name=cifar10_lt", f"data.root={root}", "data.download=true",
                                "data.max_per_class=10"]))
    assert len(requested) == 1, "files present: no second download"


def test_download_with_wrong_checksum_is_rejected_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "urlopen", lambda url, timeout=None: _FakeResponse(b"truncated garbage"))
    with pytest.raises(DataError, match="checksum mismatch"):
        cifar.download_cifar(tmp_path, cifar.CIFAR10)
    assert list(tmp_path.iterdir()) == []


def test_network_failure_tells_how_to_fetch_by_hand(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise OSError("no route to host")

    monkeypatch.setattr(cifar, "urlopen", offline)
    with pytest.raises(DataError, match="could not download .*cifar-10-python.tar.gz"):
        cifar.download_cifar(tmp_path, cifar.CIFAR10)


def test_official_checksums_are_the_published_ones():
    assert cifar.CIFAR10.md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar.CIFAR100.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
