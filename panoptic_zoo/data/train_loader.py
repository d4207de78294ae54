"""
The training data stream, made resumable: the batch of iteration ``i`` depends only on the seed
and ``i``, never on how many iterations this process has run, so a run resumed at iteration ``k``
sees exactly the batches ``k, k+1, ...`` of the uninterrupted run.

detectron2's own loader cannot do this: its sampler draws a fresh random seed per process, the
stream restarts from the beginning on resume, augmentations draw from each worker's global
random state (seeded once per worker), and aspect-ratio grouping keeps leftovers between batches.
Here

* the sampler (detectron2's, by ``DATALOADER.SAMPLER_TRAIN``) is seeded with the training seed;
* batches are formed from the sampler's indices alone (aspect-ratio grouping uses each record's
  ``width``/``height``, detectron2's ``w > h`` rule), so skipping to iteration ``k`` replays
  index bookkeeping only, no image is read;
* each sample is mapped with the global random generators seeded from ``(seed, rank, position
  in this rank's stream)`` and restored afterwards, so neither the sample nor the training step
  depends on which process maps it (``DATALOADER.NUM_WORKERS`` does not change the results).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.data.samplers import (
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from detectron2.utils import comm

from ..utils.seeding import SAMPLE_STREAM, derived_seed, isolated_cpu_rngs

__all__ = ["ResumableTrainLoader", "build_resumable_train_loader"]

# A batch of one rank: (record index, rank, position in the rank's sample stream) per sample.
SampleKey = tuple[int, int, int]


class ResumableTrainLoader:
    """
    An infinite iterable of batches (lists of mapped dataset dicts) of this rank, starting at
    iteration :attr:`start_iter`.

    Iterating does no work until the first batch is requested, so a trainer may iterate it when
    it is built and still set :attr:`start_iter` when it resumes, before training starts.
    """

    def __init__(
        self,
        dataset_dicts: list[dict[str, Any]],
        mapper: Callable[[dict[str, Any]], dict[str, Any]],
        sampler: torch.utils.data.Sampler,
        batch_size: int,
        *,
        seed: int,
        aspect_ratio_grouping: bool,
        num_workers: int,
    ):
        self.landscape = _landscape_flags(dataset_dicts) if aspect_ratio_grouping else None
        self.dataset = _SeededMapDataset(DatasetFromList(dataset_dicts, copy=False), mapper, seed)
        self.sampler = sampler
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._start_iter = 0
        self._started = False

    @property
    def start_iter(self) -> int:
        return self._start_iter

    @start_iter.setter
    def start_iter(self, iteration: int) -> None:
        if self._started:
            raise RuntimeError(
                "the training data stream has already started; its first iteration can only be "
                "set before the first batch is requested"
            )
        self._start_iter = iteration

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        # A generator: the body runs at the first next(), after any resume set start_iter.
        self._started = True
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=itertools.islice(self.sample_keys(), self._start_iter, None),
            collate_fn=list,
            num_workers=self.num_workers,
            # Its own generator: starting an iterator draws a worker base seed, which from the
            # global generator would shift the model's random draws of the first iteration.
            generator=torch.Generator().manual_seed(self.dataset.seed),
        )
        yield from loader

    def sample_keys(self) -> Iterator[list[SampleKey]]:
        """The keys of every batch of this rank from iteration 0 on (index bookkeeping only)."""
        rank = comm.get_rank()
        keys = ((index, rank, position) for position, index in enumerate(self.sampler))
        if self.landscape is None:
            while True:
                yield list(itertools.islice(keys, self.batch_size))
        buckets = ([], [])  # detectron2's groups: w > h, and the rest
        for key in keys:
            bucket = buckets[0 if self.landscape[key[0]] else 1]
            bucket.append(key)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()


class _SeededMapDataset(torch.utils.data.Dataset):
    """Maps the record of a :data:`SampleKey` with the random generators seeded from the key."""

    def __init__(self, records: DatasetFromList, mapper, seed: int):
        self.records = records
        self.mapper = mapper
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        index, rank, position = key
        record = self.records[index]
        with isolated_cpu_rngs(derived_seed(self.seed, SAMPLE_STREAM, rank, position)):
            mapped = self.mapper(record)
        if mapped is None:
            # detectron2's MapDataset would retry another random record, which makes the stream
            # depend on history; panoptic_zoo's mappers raise a clear error instead.
            raise ValueError(
                f"dataset mapper {type(self.mapper).__name__} returned None for "
                f"{record.get('file_name', f'record {index}')}; skipping records is not supported"
            )
        return mapped


def _landscape_flags(dataset_dicts: list[dict[str, Any]]) -> list[bool]:
    flags = []
    for index, record in enumerate(dataset_dicts):
        if "width" not in record or "height" not in record:
            raise ValueError(
                f"training record {index} ({record.get('file_name', '?')}) has no width/height, "
                "which aspect-ratio grouping needs; add them or set "
                "DATALOADER.ASPECT_RATIO_GROUPING False"
            )
        flags.append(record["width"] > record["height"])
    return flags


def build_resumable_train_loader(
    cfg, mapper, seed: int, skip_files: frozenset[str] = frozenset()
) -> ResumableTrainLoader:
    """
    The :class:`ResumableTrainLoader` of ``cfg.DATASETS.TRAIN`` with ``mapper``, without the
    records whose image file is in ``skip_files``.
    """
    dataset_dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=(
            cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
        ),
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    if skip_files:
        dataset_dicts = [d for d in dataset_dicts if d["file_name"] not in skip_files]
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple of the number "
            f"of processes ({world_size})"
        )
    return ResumableTrainLoader(
        dataset_dicts,
        mapper,
        _seeded_sampler(cfg, dataset_dicts, seed),
        cfg.SOLVER.IMS_PER_BATCH // world_size,
        seed=seed,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def _seeded_sampler(cfg, dataset_dicts, seed: int) -> torch.utils.data.Sampler:
    """detectron2's sampler named by ``DATALOADER.SAMPLER_TRAIN``, seeded with ``seed``."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return TrainingSampler(len(dataset_dicts), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(repeat_factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        return RandomSubsetTrainingSampler(
            len(dataset_dicts),
            cfg.DATALOADER.RANDOM_SUBSET_RATIO,
            seed_shuffle=seed,
            seed_subset=seed,
        )
    raise ValueError(
        f"unknown DATALOADER.SAMPLER_TRAIN {name!r}; expected TrainingSampler, "
        "RepeatFactorTrainingSampler or RandomSubsetTrainingSampler"
    )
