"""Training batches: one global batch per step, split across DDP ranks, through either pipeline.

* ``reference``: per-image PIL/torchvision transforms in DataLoader workers (the authors' way).
  Each sample's random draws are seeded from (seed, epoch, position in the epoch), so the views
  do not depend on the number of workers or ranks.
* ``device``: the whole uint8 dataset lives on the training device; a batch is an index gather
  and every view is computed batched there (:mod:`tailcon.data.batched_augment`), with the
  parameters drawn for the global batch so N ranks augment exactly as one process would.

``data.batch_size`` is the *global* batch: with N ranks each takes a contiguous 1/N of every
global batch, in rank order, which is the order the feature gathers concatenate in.
"""

from __future__ import annotations

import queue
import random
import threading
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..config import ConfigError
from .batched_augment import BatchedView
from .datasets import DataError
from .samplers import EpochSampler

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: decorrelates (seed, epoch, position)


def draw_seed(seed: int, epoch: int, position: int) -> int:
    return ((seed * 1_000_003 + epoch) * _MIX + position) % (2**63)


class GlobalBatches:
    """Global batches of one epoch's sampler order and this rank's share of each.

    A last global batch shorter than ``batch_size`` is kept unless ``drop_last``; under N ranks
    it is cut to a multiple of N (every rank must hold the same number of samples). A last batch
    that would give each rank a single image is dropped: BatchNorm cannot normalise one image
    (a projection head's BatchNorm1d raises), so it is left out whatever the method
    (:attr:`dropped_single`)."""

    def __init__(self, sampler: EpochSampler, batch_size: int, drop_last: bool, world_size: int = 1, rank: int = 0):
        if batch_size % world_size:
            raise ConfigError(f"data.batch_size={batch_size} is the global batch; it must be divisible by the "
                             f"number of processes ({world_size})")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.world_size, self.rank = world_size, rank

    def sizes(self) -> list[int]:
        n, b = self.sampler.total, self.batch_size
        sizes = [b] * (n // b)
        rest = n % b
        rest -= rest % self.world_size
        if rest > self.world_size and not self.drop_last:
            sizes.append(rest)
        return sizes

    @property
    def dropped_single(self) -> bool:
        """Whether the epoch's last batch is left out for holding one image per rank."""
        rest = self.sampler.total % self.batch_size
        return not self.drop_last and rest - rest % self.world_size == self.world_size

    def __len__(self) -> int:
        return len(self.sizes())

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
        """Yields (local indices, local positions in the epoch, global batch size, offset of this
        rank's rows in the global batch)."""
        order = self.sampler.global_indices()
        start = 0
        for size in self.sizes():
            share = size // self.world_size
            lo = start + self.rank * share
            yield order[lo:lo + share], torch.arange(lo, lo + share), size, self.rank * share
            start += size


class _SeededBatchSampler(Sampler[list]):
    def __init__(self, batches: GlobalBatches, seed: int):
        self.batches, self.seed = batches, seed

    def __iter__(self):
        epoch = self.batches.sampler.epoch
        for idx, pos, _, _ in self.batches.epoch():
            yield [(int(i), draw_seed(self.seed, epoch, int(p))) for i, p in zip(idx, pos)]

    def __len__(self) -> int:
        return len(self.batches)


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` seeds Python, NumPy and torch first."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        if get_worker_info() is not None:  # a worker's RNGs serve only the transforms
            seed_everything(seed)
            return self.dataset[index]
        # in the main process: leave the training RNGs as they were
        state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        try:
            seed_everything(seed)
            return self.dataset[index]
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.random.set_rng_state(state[2])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reference_loader(dataset: Dataset, batches: GlobalBatches, seed: int, num_workers: int,
                     pin_memory: bool) -> DataLoader:
    return DataLoader(SeededDataset(dataset), batch_sampler=_SeededBatchSampler(batches, seed),
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0)


class DeviceBatches:
    """Iterable of ``(views, labels)`` for the in-memory device pipeline (see module docstring)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], batches: GlobalBatches,
                 views: Sequence[BatchedView], device: torch.device, seed: int,
                 memory_format=torch.contiguous_format):
        # [N, H, W, 3] uint8 -> [N, 3, H, W] on the device, once
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long).to(device)
        self.batches, self.views, self.device, self.seed = batches, list(views), device, seed
        self.memory_format = memory_format
        self.generator = torch.Generator(device=device)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if self.device.type != "cpu":  # GPU kernels run asynchronously already
            return self._produce()
        return _prefetched(self._produce())

    def _produce(self):
        epoch = self.batches.sampler.epoch
        for step, (idx, _, global_n, offset) in enumerate(self.batches.epoch()):
            idx = idx.to(self.device, non_blocking=True)
            x = self.images[idx].float().div_(255)
            self.generator.manual_seed(draw_seed(self.seed, epoch, step))
            views = [v(x, self.generator, global_n, offset).contiguous(memory_format=self.memory_format)
                     for v in self.views]
            yield views, self.targets[idx]


_END = object()


def _prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """Compute the next batch in a background thread while the caller trains on this one (on
    CPUs the convolution backward leaves cores idle that the augmentation can use)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        # one intra-op thread here: the training step's OpenMP team keeps the cores; this thread
        # fills the time they wait (OpenMP thread counts are per calling thread)
        torch.set_num_threads(1)
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=work, name="tailcon-augment", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


# ---- file datasets decoded on the device -------------------------------------------------------
class EncodedImages(Dataset):
    """``(file bytes as a uint8 tensor, label)``: workers only read files; decoding happens on the
    training device (:class:`DecodedDeviceBatches`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from .datasets import open_checked

        path = self.dataset.paths[index]
        open_checked(path, self.dataset.max_pixels).close()  # the header's size, before a GPU decodes it
        with open(path, "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        return data, int(self.dataset.targets[index])


def _collate_encoded(batch):
    return [data for data, _ in batch], torch.tensor([label for _, label in batch], dtype=torch.long)


class _IndexBatchSampler(Sampler[list]):
    def __init__(self, batches: GlobalBatches):
        self.batches = batches

    def __iter__(self):
        for idx, _, _, _ in self.batches.epoch():
            yield idx.tolist()

    def __len__(self) -> int:
        return len(self.batches)


class DecodedDeviceBatches:
    """File datasets on a GPU: workers read the JPEG bytes, ``torchvision.io.decode_jpeg`` decodes
    the batch on the device, the images are zero-padded into one tensor with their true sizes, and
    the recipe (starting with its random-resized crop) runs batched as for in-memory data."""

    def __init__(self, dataset, batches: GlobalBatches, views: Sequence[BatchedView], device: torch.device,
                 seed: int, num_workers: int, memory_format=torch.contiguous_format):
        self.batches, self.views, self.device, self.seed = batches, list(views), device, seed
        self.memory_format = memory_format
        self.paths = dataset.paths
        self.loader = DataLoader(EncodedImages(dataset), batch_sampler=_IndexBatchSampler(batches),
                                 num_workers=num_workers, collate_fn=_collate_encoded,
                                 pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
        self.generator = torch.Generator(device=device)

    def __len__(self) -> int:
        return len(self.batches)

    def decode(self, data: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """[n] encoded files -> (zero-padded uint8 batch [n, 3, Hmax, Wmax], sizes [n, 2])."""
        import warnings

        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            with warnings.catch_warnings():
                # torchvision >= 0.29 flags its decoders as deprecated in favour of torchcodec, on
                # every call; they still work, and torch 2.4's torchvision has no torchcodec to move to.
                warnings.simplefilter("ignore", DeprecationWarning)
                images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)  # one batched call
        except RuntimeError as e:
            raise DataError(f"decoding a batch on {self.device} failed ({e}); the device pipeline reads JPEG "
                             "files only: use data.pipeline=reference for other formats") from None
        sizes = torch.tensor([im.shape[-2:] for im in images], device=self.device)  # shapes only
        with warnings.catch_warnings():  # the strided nested layout is all to_padded_tensor needs
            warnings.simplefilter("ignore", UserWarning)
            padded = torch.nested.as_nested_tensor(images).to_padded_tensor(0)
        return padded, sizes

    def __iter__(self):
        epoch = self.batches.sampler.epoch
        shares = self.batches.epoch()
        for step, ((data, labels), (_, _, global_n, offset)) in enumerate(zip(self.loader, shares)):
            images, sizes = self.decode(data)
            x = images.float().div_(255)
            self.generator.manual_seed(draw_seed(self.seed, epoch, step))
            views = [v(x, self.generator, global_n, offset, sizes=sizes).contiguous(memory_format=self.memory_format)
                     for v in self.views]
            yield views, labels.to(self.device, non_blocking=True)
