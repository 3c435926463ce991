"""DDP through the trainer: 2 gloo processes with half a batch each train exactly like one
process with the whole batch (losses and weights), for BCL, ResCom and DSCL; checkpoints and
logs come from rank 0 only; a run resumes under another world size."""

import json
import os

import pytest
import torch

from tailcon import config, resolution
from tailcon.engine import Trainer, load_checkpoint, train

from conftest import tiny_cfg
from ddp_utils import run_ddp

FIT_DIGITS = {"rescom": ["method.k_neg=20"], "dscl": ["method.queue_size=64", "method.patch_size=8"]}
CASES = {  # method -> extra overrides; DSCL's stage 1 uses the reference (per-image) pipeline
    "bcl": ["data.pipeline=device"],
    "rescom": ["data.pipeline=device", "method.contrast_batch=global"],
    "dscl": ["method.stage=pretrain", "data.num_workers=0", "method.contrast_batch=global"],
    "proco": ["data.pipeline=device"],  # estimator updated with all-gathered features: the same state everywhere
}
# ProCo's float32 Miller routine at kappa = 1e5 amplifies the last-bit differences of a split batch
# (~2e-4 after 3 steps); a rank-local estimator update would be off by ~1e-1 and halve its exact counts
TOLERANCE = {"proco": dict(rtol=1e-3, atol=1e-3)}
LOCAL_ANCHORS = {"paco": ["method.queue_size=64"], "gpaco": ["method.queue_size=64"],  # the authors' default:
                 "rescom": ["data.pipeline=device"],  # each rank contrasts its own batch with the shared queue
                 "dscl": ["method.stage=pretrain", "data.num_workers=0"]}


def _cfg(tmp_path, name, *extra):
    return tiny_cfg(tmp_path, f"method.name={name}", "train.max_steps_per_epoch=3", "data.batch_size=32",
                    "train.log_every=1", "model.sync_bn=true", "optim.lr=0.05", "train.eval_every=100",
                    # NCHW: oneDNN's NHWC kernels round differently for different batch sizes
                    "train.channels_last=false",
                    *FIT_DIGITS.get(name, []), *extra, epochs=1)


def _case(tmp_path, name):
    return _cfg(tmp_path, name, *CASES[name])


def _train_steps(rank, world, cfg):
    trainer = Trainer.from_config(cfg)
    stats = trainer.train_one_epoch(0, 1)
    state = {k: v.detach().clone() for k, v in trainer.method.state_dict().items()}
    return stats, state


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_train_like_one_with_the_whole_batch(tmp_path, name):
    cfg = _case(tmp_path, name)
    torch.set_num_threads(1)
    single_stats, single_state = _train_steps(0, 1, cfg)
    results = run_ddp(_train_steps, cfg, tmp_path=tmp_path)
    (stats0, state0), (stats1, state1) = results
    assert stats0["images"] == single_stats["images"] == 96
    for key in single_stats:
        if key.startswith("loss"):
            assert stats0[key] == pytest.approx(single_stats[key], rel=1e-4, abs=1e-5), key
            assert stats1[key] == pytest.approx(stats0[key], rel=1e-6), key
    compared = 0
    for key, value in single_state.items():
        if not value.is_floating_point():
            assert torch.equal(value, state0[key]), key
            continue
        torch.testing.assert_close(state0[key], value, **TOLERANCE.get(name, dict(rtol=1e-4, atol=2e-5)),
                                   msg=f"{name}: {key}")
        torch.testing.assert_close(state1[key], state0[key], rtol=1e-5, atol=1e-6)
        compared += 1
        if key.endswith("_amount"):  # samples seen by an estimator: exact counts of the global batch
            assert torch.equal(state0[key], value), key
    assert compared > 20


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOCAL_ANCHORS))
def test_local_contrast_ranks_stay_in_step_with_one_shared_queue(tmp_path, name):
    """Local contrast sets (the authors' choice for PaCo, GPaCo, ResCom and DSCL) differ from one
    process with the whole batch, but every rank must hold the same weights and the same queue of
    all ranks' keys."""
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path, name, *LOCAL_ANCHORS[name])
    (stats0, state0), (stats1, state1) = run_ddp(_train_steps, cfg, tmp_path=tmp_path)
    assert stats0["images"] == 96
    for key, value in state0.items():
        torch.testing.assert_close(state1[key], value, rtol=1e-5, atol=1e-6, msg=key)
    if name in ("paco", "gpaco"):
        assert int(state0["queue.ptr"]) == 96 % 64, "the queue took the keys of both ranks"


def _paco_shard(rank, world, b, k_size):
    from tailcon.losses import paco_loss
    from tailcon.memory import LabeledQueue

    q, k, labels, logits, counts = _paco_batch(2 * b)
    torch.manual_seed(5)
    queue = LabeledQueue(k_size, q.shape[1], random_init_labels=True, init_label_range=4, normalize_dim=0)
    rows = slice(rank * b, (rank + 1) * b)
    loss = paco_loss(q[rows], k[rows], labels[rows], queue.keys.clone(), queue.labels.clone(), logits[rows], counts,
                     temperature=0.2, alpha=0.05)
    queue.push(k[rows], labels[rows])
    return float(loss), queue.keys.clone(), queue.labels.clone()


def _paco_batch(n):
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
    return q, k, torch.randint(0, 4, (n,), generator=g), torch.randn(n, 4, generator=g, dtype=torch.float64), [9, 5, 3, 1]


@pytest.mark.slow
def test_paco_loss_under_ddp_is_each_ranks_local_anchors_against_the_gathered_queue(tmp_path):
    from tailcon.losses import paco_loss
    from tailcon.memory import LabeledQueue

    b, k_size = 4, 12
    results = run_ddp(_paco_shard, b, k_size, tmp_path=tmp_path)
    q, k, labels, logits, counts = _paco_batch(2 * b)
    torch.manual_seed(5)
    single = LabeledQueue(k_size, 8, random_init_labels=True, init_label_range=4, normalize_dim=0)
    for rank, (loss, keys, key_labels) in enumerate(results):
        rows = slice(rank * b, (rank + 1) * b)
        local = paco_loss(q[rows], k[rows], labels[rows], single.keys, single.labels, logits[rows], counts,
                          temperature=0.2, alpha=0.05)
        assert loss == pytest.approx(float(local), rel=1e-12)
    single.push(k, labels)  # one process pushing the global batch in rank order
    for _, keys, key_labels in results:
        torch.testing.assert_close(keys, single.keys.to(keys.dtype), rtol=0, atol=0)
        assert torch.equal(key_labels, single.labels)


class _Killed(Exception):
    pass


def _fit_killed_in_epoch_2(rank, world, cfg):
    """Train, but die at the start of the second epoch (after epoch 1's checkpoint)."""
    original = Trainer.train_one_epoch

    def dying(self, epoch, num_epochs):
        if epoch == 1:
            raise _Killed
        return original(self, epoch, num_epochs)

    Trainer.train_one_epoch = dying
    try:
        train(cfg)
    except _Killed:
        return "killed"
    return "finished"


@pytest.mark.slow
def test_only_rank0_writes_and_a_run_resumes_under_another_world_size(tmp_path):
    base = tiny_cfg(tmp_path, "data.batch_size=32", "train.max_steps_per_epoch=4", "data.pipeline=device",
                    "model.sync_bn=true", "train.channels_last=false", epochs=2)
    assert run_ddp(_fit_killed_in_epoch_2, base, tmp_path=tmp_path) == ["killed", "killed"]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1], "one writer: one record per epoch"
    assert records[0]["images"] == 128
    # continue the 2-process run for one more epoch in a single process ...
    resumed = train(dict(base, resume=str(run)))
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    # ... and it ends where an uninterrupted single-process run ends (same global batches)
    alone = train(dict(base, run_dir=str(tmp_path / "alone")))
    a = load_checkpoint(run / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "alone" / "last.pt")["model"]
    for key in b:
        if b[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=2e-5, msg=key)
    assert resumed["top1"] == pytest.approx(alone["top1"], abs=1.0)


@pytest.mark.slow
def test_torchrun_launches_a_two_process_run(tmp_path):
    import subprocess
    import sys

    from tailcon.cli import embedded_config_path

    run = tmp_path / "tr"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tailcon", "train", str(embedded_config_path()), f"run_dir={run}", "train.epochs=1",
           "train.max_steps_per_epoch=2", "train.progress=false", "model.sync_bn=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Results on the test split") == 1, "rank 0 alone prints the report"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "last.pt").is_file() and (run / "results.json").is_file()


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return sorted(kids)


def _torchrun(run, extra=(), kill_after_epoch=None):
    """A 2-process torchrun of the embedded config into ``run``; with ``kill_after_epoch``, one
    worker is SIGKILLed as soon as that epoch is recorded. Returns (exit code, output)."""
    import signal
    import subprocess
    import sys
    import time

    from tailcon.cli import embedded_config_path

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *extra,
           "-m", "tailcon", "train", str(embedded_config_path()), f"run_dir={run}", "train.epochs=6",
           "train.max_steps_per_epoch=4", "data.batch_size=32", "data.pipeline=device", "model.sync_bn=true",
           "train.channels_last=false", "train.progress=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TAILCON_DIST_TIMEOUT": "60"})
    if kill_after_epoch is not None:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while time.monotonic() < deadline and not (
                metrics.is_file() and len(metrics.read_text().splitlines()) >= kill_after_epoch):
            time.sleep(0.02)
        workers = _children(proc.pid)
        assert len(workers) == 2, f"expected 2 workers under torchrun, found {workers}"
        os.kill(workers[-1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers through /proc")
def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_an_uninterrupted_one(tmp_path):
    code, out = _torchrun(tmp_path / "killed", ["--max-restarts", "1"], kill_after_epoch=1)
    assert code == 0, out[-3000:]
    assert "resume=auto: continuing the run" in out, "the restarted workers continue the run"
    code, out_alone = _torchrun(tmp_path / "alone")
    assert code == 0, out_alone[-3000:]
    a = load_checkpoint(tmp_path / "killed" / "last.pt")
    b = load_checkpoint(tmp_path / "alone" / "last.pt")
    assert a["epoch"] == b["epoch"] == 6
    for key in b["model"]:  # same world size, same global batches and draws: the same weights
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    records = [json.loads(line)["epoch"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert records == [1, 2, 3, 4, 5, 6], "each epoch recorded once"


def test_a_restart_under_torchrun_needs_a_fixed_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    cfg = tiny_cfg(tmp_path)
    cfg["run_dir"] = None
    with pytest.raises(config.ConfigError, match="give run_dir=DIR"):
        train(cfg)


def test_resume_auto_starts_a_fresh_run_and_continues_an_existing_one(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path, "resume=auto", "train.max_steps_per_epoch=2", epochs=1)
    train(cfg)
    assert "resume=auto: continuing" not in capsys.readouterr().out
    train(tiny_cfg(tmp_path, "resume=auto", "train.max_steps_per_epoch=2", epochs=2))
    assert "resume=auto: continuing the run" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2


def test_a_restarted_worker_resumes_as_with_resume_auto(tmp_path, monkeypatch, capsys):
    train(tiny_cfg(tmp_path, "train.max_steps_per_epoch=2", epochs=1))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    train(tiny_cfg(tmp_path, "train.max_steps_per_epoch=2", epochs=2))
    assert "resume=auto: continuing the run" in capsys.readouterr().out


@pytest.mark.parametrize("nodelist, first", [("node01", "node01"), ("node[01-04]", "node01"),
                                             ("node[03-05,9],gpu1", "node03"), ("rack1-gpu[005-010,012]", "rack1-gpu005"),
                                             ("a1,a2", "a1"), ("n[1-2]-[07-08]", "n1-07")])
def test_the_first_host_of_a_slurm_node_list(nodelist, first):
    from tailcon.distributed import first_host

    assert first_host(nodelist) == first


def test_slurm_tasks_become_the_process_group_torchrun_would_describe():
    from tailcon.distributed import slurm_environment

    job = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[12-13]",
           "SLURM_JOB_ID": "123456"}
    assert slurm_environment(job) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu12",
                                      "MASTER_PORT": str(15000 + 123456 % 20000)}
    assert slurm_environment({**job, "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29400"})["MASTER_ADDR"] == "10.1.2.3"
    assert slurm_environment({**job, "SLURM_NTASKS": "1"}) == {}, "a one-task job stays one process"
    assert slurm_environment({**job, "RANK": "5", "WORLD_SIZE": "8"}) == {}, "under torchrun, torchrun's variables"
    assert slurm_environment({"PATH": "/bin"}) == {}


@pytest.mark.slow
def test_two_srun_style_tasks_train_the_same_weights_as_torchrun(tmp_path):
    import socket
    import subprocess
    import sys

    from tailcon.cli import embedded_config_path

    args = [str(embedded_config_path()), "train.epochs=1", "train.max_steps_per_epoch=3", "data.batch_size=32",
            "data.pipeline=device", "model.sync_bn=true", "train.channels_last=false", "train.progress=false"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    tasks = [subprocess.Popen([sys.executable, "-m", "tailcon", "train", *args, f"run_dir={tmp_path / 'srun'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**base, "OMP_NUM_THREADS": "1", "SLURM_PROCID": str(r), "SLURM_NTASKS": "2",
                                   "SLURM_LOCALID": str(r), "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_ID": "7",
                                   "MASTER_PORT": str(port), "TAILCON_DIST_TIMEOUT": "60"})
             for r in (0, 1)]
    outs = [t.communicate(timeout=300)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "x 2 processes" in outs[0], "one run of two processes, not two one-process runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tailcon",
           "train", *args, f"run_dir={tmp_path / 'torchrun'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**base, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "srun" / "last.pt"), load_checkpoint(tmp_path / "torchrun" / "last.pt")
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_two_torchrun_agents_on_one_machine_train_one_run_into_one_run_dir(tmp_path):
    import socket
    import subprocess
    import sys

    from tailcon.cli import embedded_config_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-agents",
           "-m", "tailcon", "train", str(embedded_config_path()), f"run_dir={run}", "train.epochs=1",
           "train.max_steps_per_epoch=2", "train.progress=false"]
    agents = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "TAILCON_DIST_TIMEOUT": "60"})
              for _ in range(2)]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert sum(o.count("Results on the test split") for o in outs) == 1, "one run, reported once"
    assert "x 2 processes" in "".join(outs)
    assert (run / "results.json").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 1
