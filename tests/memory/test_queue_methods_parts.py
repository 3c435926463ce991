"""ResCom / DSCL queues and losses: golden vectors from the authors' code, naive references,
and 2-process DDP equivalence."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailcon.losses import (dscl_loss, dscl_terms, effective_number_weights, pbsd_loss, pbsd_terms,
                            rescom_contrastive_rows, rescom_logits, rescom_loss)
from tailcon.memory import ClassBalancedQueue, LabeledQueue

from conftest import golden_params
from ddp_utils import run_ddp

T = torch.tensor


def _close(actual, expected, rtol=1e-9, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual.detach() if torch.is_tensor(actual) else actual), expected,
                               rtol=rtol, atol=atol)


def _rescom_queue(g):
    d, slots = g["queue_before"].shape if "queue_before" in g else g["queue"].shape
    q = ClassBalancedQueue(int(g["num_classes"]), int(g["queue_size_per_cls"]), d).double()
    q.keys.copy_(T(g["queue_before"] if "queue_before" in g else g["queue"]).t())
    q.ptr.copy_(T(g["queue_ptr_before"]))
    return q


@pytest.mark.parametrize("path", golden_params("rescom_enqueue_"))
def test_class_balanced_queue_matches_golden_exactly(path):
    g = np.load(path)
    q = _rescom_queue(g)
    assert q.keys.shape == (int(g["num_classes"]) * int(g["queue_size_per_cls"]), g["queue_before"].shape[0])
    q.push(T(g["keys"]), T(g["key_labels"]))
    assert np.array_equal(q.keys.numpy(), g["expected_queue_after"].T)
    assert np.array_equal(q.ptr.numpy(), g["expected_queue_ptr_after"]) and q.ptr.dtype == torch.long


@pytest.mark.parametrize("path", golden_params("dscl_enqueue_"))
def test_labeled_queue_matches_golden_exactly(path):
    g = np.load(path)
    q = LabeledQueue(int(g["queue_size"]), g["queue_before"].shape[0]).double()
    q.keys.copy_(T(g["queue_before"]).t())
    q.labels.copy_(T(g["queue_labels_before"]))
    q.ptr.fill_(int(g["queue_ptr_before"]))
    q.push(T(g["keys"]), T(g["key_labels"]))
    assert np.array_equal(q.keys.numpy(), g["expected_queue_after"].T)
    assert np.array_equal(q.labels.numpy(), g["expected_queue_labels_after"])
    assert int(q.ptr) == int(g["expected_queue_ptr_after"]) and q.ptr.dim() == 0


def _sequential_push(keys, ptr, new, labels, q):
    keys, ptr = keys.clone(), ptr.clone()
    for x, c in zip(new, labels.tolist()):
        keys[c * q + int(ptr[c])] = x
        ptr[c] = (ptr[c] + 1) % q
    return keys, ptr


def test_class_balanced_queue_equals_the_sequential_loop_on_random_pushes():
    gen = torch.Generator().manual_seed(0)
    q = ClassBalancedQueue(4, 3, 5)
    ref_keys, ref_ptr = q.keys.clone(), q.ptr.clone()
    for _ in range(20):
        n = int(torch.randint(1, 12, (), generator=gen))
        new, lab = torch.randn(n, 5, generator=gen), torch.randint(0, 4, (n,), generator=gen)
        q.push(new, lab)
        ref_keys, ref_ptr = _sequential_push(ref_keys, ref_ptr, new, lab, 3)
        assert torch.equal(q.keys, ref_keys) and torch.equal(q.ptr, ref_ptr)


def test_labeled_queue_tracks_fill_and_wraps_when_k_is_not_a_multiple_of_the_batch():
    q = LabeledQueue(5, 2)
    assert (q.labels == -1).all(), "empty slots never carry a real label"
    q.push(torch.ones(3, 2), T([1, 2, 3]))
    assert q.labels.tolist() == [1, 2, 3, -1, -1] and int(q.ptr) == 3
    q.push(2 * torch.ones(3, 2), T([4, 5, 6]))
    assert q.labels.tolist() == [6, 2, 3, 4, 5] and int(q.ptr) == 1
    authors = LabeledQueue(8, 2, random_init_labels=True, init_label_range=1000)
    assert (authors.labels >= 0).all()


@pytest.mark.parametrize("path", golden_params("rescom_loss_"))
def test_rescom_logits_loss_gradients_and_queue_update_match_golden(path):
    g = np.load(path)
    feat, logits = T(g["feat"]).requires_grad_(True), T(g["logits_cls"]).requires_grad_(True)
    labels, b = T(g["labels"]), int(g["batch_size"])
    queue = _rescom_queue(g)
    sim, targets = rescom_logits(feat, labels, queue.keys, int(g["queue_size_per_cls"]), int(g["k_pos"]), int(g["k_neg"]))
    _close(sim, g["expected_sim_con"])
    assert np.array_equal(targets.numpy(), g["expected_labels_con"])
    assert float(g["balsfx_n"]) == 0.0
    loss_cls, loss_con, loss = rescom_loss(sim, targets, logits, labels, g["cls_num_list"].tolist(),
                                           float(g["temperature"]), float(g["effective_num_beta"]), float(g["con_weight"]))
    _close(loss_cls, g["expected_loss_cls"])
    _close(loss_con, g["expected_loss_con"])
    _close(loss, g["expected_loss"])
    _close(rescom_contrastive_rows(sim, targets, float(g["temperature"])), g["expected_loss_con_rows"])
    _close(effective_number_weights(g["cls_num_list"], float(g["effective_num_beta"]), sim), g["expected_class_weight"])
    n = g["cls_num_list"]
    _close(n / n.sum(), g["expected_class_prior"])
    loss.backward()
    _close(feat.grad, g["grad_feat"])
    _close(logits.grad, g["grad_logits_cls"])
    queue.push(feat[:b].detach(), labels[:b])
    assert np.array_equal(queue.keys.numpy(), g["expected_queue_after"].T)
    assert np.array_equal(queue.ptr.numpy(), g["expected_queue_ptr_after"])


@pytest.mark.parametrize("path", golden_params("dscl_loss_"))
def test_dscl_loss_rows_targets_and_gradient_match_golden(path):
    g = np.load(path)
    q = T(g["q"]).requires_grad_(True)
    args = (T(g["k"]), T(g["queue"]).t(), T(g["queue_labels"]), T(g["labels"]), float(g["temperature"]),
            float(g["weighted_beta"]))
    loss, rows, weights = dscl_terms(q, *args)
    _close(loss, g["expected_loss"])
    _close(rows, g["expected_loss_rows"])
    _close(weights, g["expected_target_weights"])
    loss.backward()
    _close(q.grad, g["grad_q"])
    assert dscl_loss(q.detach(), *args).item() == loss.item()


@pytest.mark.parametrize("path", golden_params("dscl_pbsd_"))
def test_pbsd_loss_teacher_and_gradients_match_golden(path):
    g = np.load(path)
    roi, small = T(g["roi_features"]).requires_grad_(True), T(g["small_q"]).requires_grad_(True)
    loss, teacher = pbsd_terms(roi, small, T(g["k"]), T(g["queue"]).t(), float(g["temperature"]))
    assert teacher.shape[0] == int(g["num_patches"])
    _close(loss, g["expected_loss"])
    _close(teacher, g["expected_soft_target"])
    loss.backward()
    _close(small.grad, g["grad_small_q"])
    assert roi.grad is None or not roi.grad.any()
    np.testing.assert_array_equal(g["grad_roi_features"], 0)
    assert pbsd_loss(roi, small, T(g["k"]), T(g["queue"]).t(), float(g["temperature"])).item() == loss.item()


def test_dscl_ignores_empty_queue_slots():
    gen = torch.Generator().manual_seed(0)
    q, k = F.normalize(torch.randn(4, 8, generator=gen), dim=1), F.normalize(torch.randn(4, 8, generator=gen), dim=1)
    keys = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    labels, qlab = T([0, 1, 1, 2]), T([1, 2, -1, -1, 0, -1])
    with_empty = dscl_loss(q, k, keys, qlab, labels, 0.1, 8.0)
    keep = qlab >= 0
    assert torch.allclose(with_empty, dscl_loss(q, k, keys[keep], qlab[keep], labels, 0.1, 8.0), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_queue_losses_are_finite_in_half_precision(dtype):
    gen = torch.Generator().manual_seed(1)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=gen), dim=-1)
    feat, labels = unit(8, 16), T([0, 1, 2, 3, 0, 1, 2, 3])
    sim, tgt = rescom_logits(feat.to(dtype), labels, unit(4 * 3, 16).to(dtype), 3, 1, 6)
    out = rescom_loss(sim, tgt, torch.randn(8, 4).to(dtype), labels, [100, 50, 10, 1], 0.2, 0.999999, 0.5)
    assert all(torch.isfinite(x) for x in out)
    assert torch.isfinite(dscl_loss(unit(4, 16).to(dtype), unit(4, 16).to(dtype), unit(10, 16).to(dtype),
                                    torch.randint(0, 3, (10,), generator=gen), labels[:4], 0.07, 8.0))
    assert torch.isfinite(pbsd_loss(unit(2, 4, 16).to(dtype), unit(2, 4, 16).to(dtype), unit(4, 16).to(dtype),
                                    unit(10, 16).to(dtype), 0.07))


def test_rescom_k_neg_larger_than_available_negatives_is_an_error():
    with pytest.raises(ValueError, match=r"k_neg=100 exceeds the 90 negatives the queue holds"):
        rescom_logits(torch.randn(4, 8), T([0, 1, 0, 1]), torch.randn(100, 8), 10, 1, 100)


def _ddp_queue_losses(rank, world, feat, labels, logits, qkeys, q_dscl, k_dscl, dq_keys, dq_labels):
    b = labels.shape[0] // 2  # global images
    h = b // world
    mine = torch.cat([torch.arange(rank * h, (rank + 1) * h), b + torch.arange(rank * h, (rank + 1) * h)])
    f = feat[mine].clone().requires_grad_(True)
    lg = logits[mine].clone().requires_grad_(True)
    queue = ClassBalancedQueue(4, 3, feat.shape[1]).double()
    queue.keys.copy_(qkeys)
    sim, tgt = rescom_logits(f, labels[mine], queue.keys, 3, 1, 6)
    _, _, loss = rescom_loss(sim, tgt, lg, labels[mine], [50, 20, 5, 2], 0.2, 0.999, 0.5)
    loss.backward()
    queue.push(f[:h].detach(), labels[mine][:h])
    sl = slice(rank * (q_dscl.shape[0] // world), (rank + 1) * (q_dscl.shape[0] // world))
    qd = q_dscl[sl].clone().requires_grad_(True)
    dloss = dscl_loss(qd, k_dscl[sl], dq_keys, dq_labels, labels[:b][sl], 0.1, 8.0)
    dloss.backward()
    lq = LabeledQueue(8, k_dscl.shape[1]).double()
    lq.push(k_dscl[sl], labels[:b][sl])
    return dict(rescom=(loss.item(), f.grad, lg.grad, queue.keys, queue.ptr), dscl=(dloss.item(), qd.grad),
                labeled=(lq.keys, lq.labels, lq.ptr))


def _two_rank_case(seed: int) -> tuple[torch.Tensor, ...]:
    """A global batch of 2 x 6 images (two views, 4 classes) split over 2 ranks, with queues:
    (feat, labels, logits, ResCom queue keys, DSCL q, k, queue keys, queue labels)."""
    gen = torch.Generator().manual_seed(seed)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=gen, dtype=torch.float64), dim=-1)
    y = T([0, 1, 2, 0, 3, 1])
    labels, feat, logits = torch.cat([y, y]), unit(12, 8), torch.randn(12, 4, generator=gen, dtype=torch.float64)
    return (feat, labels, logits, unit(12, 8), unit(6, 8), unit(6, 8), unit(10, 8),
            torch.randint(0, 4, (10,), generator=gen))


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_whole_batch(tmp_path):
    feat, labels, logits, qkeys, q_d, k_d, dq_keys, dq_labels = _two_rank_case(2)
    y = labels[:6]
    res = run_ddp(_ddp_queue_losses, feat, labels, logits, qkeys, q_d, k_d, dq_keys, dq_labels, tmp_path=tmp_path)

    f, lg = feat.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    queue = ClassBalancedQueue(4, 3, 8).double()
    queue.keys.copy_(qkeys)
    sim, tgt = rescom_logits(f, labels, queue.keys, 3, 1, 6)
    _, _, loss = rescom_loss(sim, tgt, lg, labels, [50, 20, 5, 2], 0.2, 0.999, 0.5)
    loss.backward()
    queue.push(feat[:6], labels[:6])
    qd = q_d.clone().requires_grad_(True)
    dloss = dscl_loss(qd, k_d, dq_keys, dq_labels, y, 0.1, 8.0)
    dloss.backward()
    lq = LabeledQueue(8, 8).double()
    lq.push(k_d, y)
    for rank, r in enumerate(res):
        mine = torch.cat([torch.arange(rank * 3, rank * 3 + 3), 6 + torch.arange(rank * 3, rank * 3 + 3)])
        rl, fg, lgg, keys, ptr = r["rescom"]
        assert abs(rl - loss.item()) < 1e-12
        torch.testing.assert_close(fg / 2, f.grad[mine], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lgg / 2, lg.grad[mine], rtol=1e-10, atol=1e-12)
        assert torch.equal(keys, queue.keys) and torch.equal(ptr, queue.ptr), "identical replicas"
        dl, qg = r["dscl"]
        assert abs(dl - dloss.item()) < 1e-12
        torch.testing.assert_close(qg / 2, qd.grad[rank * 3:rank * 3 + 3], rtol=1e-10, atol=1e-12)
        lk, ll, lp = r["labeled"]
        assert torch.equal(lk[:6], lq.keys[:6]) and torch.equal(ll, lq.labels) and torch.equal(lp, lq.ptr)


def _ddp_local_contrast(rank, world, feat, labels, logits, qkeys, q_d, k_d, dq_keys, dq_labels):
    mine = torch.cat([torch.arange(rank * 3, rank * 3 + 3), 6 + torch.arange(rank * 3, rank * 3 + 3)])
    sim, tgt = rescom_logits(feat[mine], labels[mine], qkeys, 3, 1, 6, gather=False)
    _, _, loss = rescom_loss(sim, tgt, logits[mine], labels[mine], [50, 20, 5, 2], 0.2, 0.999, 0.5, gather=False)
    sl = slice(rank * 3, rank * 3 + 3)
    dloss = dscl_loss(q_d[sl], k_d[sl], dq_keys, dq_labels, labels[:6][sl], 0.1, 8.0, gather=False)
    return loss.item(), dloss.item()


@pytest.mark.slow
def test_ddp_local_contrast_is_each_ranks_own_batch_against_the_queue(tmp_path):
    args = _two_rank_case(4)
    results = run_ddp(_ddp_local_contrast, *args, tmp_path=tmp_path)
    for rank, (loss, dloss) in enumerate(results):
        alone = _ddp_local_contrast(rank, 2, *args)  # no process group here: nothing can be gathered
        assert loss == pytest.approx(alone[0], rel=1e-12) and dloss == pytest.approx(alone[1], rel=1e-12)
    assert results[0][0] != pytest.approx(results[1][0]), "the two ranks' contrast sets differ"
