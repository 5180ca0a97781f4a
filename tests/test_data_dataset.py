"""ShardDataset over prepared splits (lazy per-process HDF5, fork and spawn workers) and DomainSampler."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_fixtures import cached_synthetic_data
from hrseg.data.dataset import DomainSampler, ShardDataset, available_splits, open_split
from hrseg.data.shards import ShardReader
from hrseg.errors import HrsegError


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def test_items_have_the_contract_types_and_match_the_shards(data: Path) -> None:
    ds = open_split(data, "gtav", "train", fields=("image", "label", "realism", "name", "index"))
    assert len(ds) == 12 and ds.size == (64, 36)
    assert len(ds.manifest.shards) == 3  # the fixture writes 4 images per shard
    for i in (0, 3, 4, 11):  # first/last of a shard and the shard boundary
        item = ds[i]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 36, 64)
        assert item["label"].dtype == torch.uint8 and item["label"].shape == (36, 64)
        assert item["realism"].dtype == torch.uint8
        assert item["index"] == i
        shard, row = divmod(i, 4)
        with ShardReader(ds.split_dir / f"shard-{shard:05d}.h5") as r:
            assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), r.read("images", row))
            assert np.array_equal(item["label"].numpy(), r.read("labels", row))
            assert item["name"] == r.name(row)


def test_only_requested_fields_and_full_labels(data: Path) -> None:
    val = open_split(data, "cityscapes", "val", fields=("image", "label", "full_label"))
    item = val[0]
    assert set(item) == {"image", "label", "full_label"}
    assert item["full_label"].shape == (32, 64)
    assert set(open_split(data, "cityscapes", "train", fields=("label",))[0]) == {"label"}


def test_subset_and_indices(data: Path) -> None:
    ds = open_split(data, "cityscapes", "train", fields=("index",))
    sub = ds.subset([5, 1])
    assert len(sub) == 2 and [sub[0]["index"], sub[1]["index"]] == [5, 1]
    with pytest.raises(IndexError):
        ShardDataset(ds.split_dir, fields=("index",), indices=[99])


def test_missing_split_and_missing_fields_are_user_errors(data: Path, tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match="cityscapes/test is not prepared.*cityscapes/train"):
        open_split(data, "cityscapes", "test")
    with pytest.raises(HrsegError, match="no realism"):
        open_split(data, "cityscapes", "train", fields=("image", "realism"))
    with pytest.raises(HrsegError, match="no full-resolution labels"):
        open_split(data, "gtav", "train", fields=("full_label",))
    assert available_splits(data) == ["cityscapes/train", "cityscapes/val", "gtav/train"]
    assert available_splits(tmp_path / "nothing") == []


def test_pickling_drops_open_handles(data: Path) -> None:
    ds = open_split(data, "gtav", "train")
    ds[0]
    assert ds._files  # opened lazily by the first read
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._files == {}
    assert torch.equal(clone[7]["label"], ds[7]["label"])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(data: Path, context: str) -> None:
    ds = open_split(data, "gtav", "train", fields=("image", "label", "index"))
    ds[0]  # the parent holds an open handle that a forked worker must not reuse
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context, shuffle=False)
    batches = list(loader)
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(12))
    expected = torch.stack([ds[i]["label"] for i in range(12)])
    assert torch.equal(torch.cat([b["label"] for b in batches]), expected)


def test_domain_sampler_is_seeded_endless_and_resumable() -> None:
    def take(sampler: DomainSampler, n: int) -> list[int]:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    a = take(DomainSampler(5, seed=3), 12)
    assert a == take(DomainSampler(5, seed=3), 12)
    assert a != take(DomainSampler(5, seed=4), 12)
    assert sorted(a[:5]) == list(range(5)) and sorted(a[5:10]) == list(range(5))  # epochs are permutations
    assert a[:5] != a[5:10]  # each epoch reshuffles
    resumed = DomainSampler(5, seed=3)
    resumed.set_consumed(7)
    assert take(resumed, 5) == a[7:12]
    t = DomainSampler(5, seed=3)
    t.set_consumed(8)
    assert take(t, 4) == a[8:12]


def test_domain_sampler_ranks_partition_each_epoch() -> None:
    r0 = DomainSampler(7, seed=1, rank=0, world_size=2)
    r1 = DomainSampler(7, seed=1, rank=1, world_size=2)
    i0, i1 = iter(r0), iter(r1)
    first = [next(i0) for _ in range(4)] + [next(i1) for _ in range(4)]
    assert set(first) == set(range(7))  # padded to 8 like DistributedSampler
    with pytest.raises(ValueError):
        DomainSampler(3, rank=2, world_size=2)


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_direct_chunk_reads_and_filtered_reads_agree(tmp_path: Path, compression: str) -> None:
    from data_fixtures import make_gtav_root
    from hrseg.data.prepare import PrepareConfig, prepare

    root = make_gtav_root(tmp_path / "GTAV", count=5)
    prepare(PrepareConfig(dataset="gtav", root=root, out=tmp_path / "d", size=(24, 14), shard_size=2,
                          compression=compression), show_progress=False)
    ds = open_split(tmp_path / "d", "gtav", "train", fields=("image", "label"))
    for i in range(5):
        item = ds[i]
        shard, row = ds.locate(i)
        with ShardReader(ds.split_dir / ds.manifest.shards[shard].file) as r:
            assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), r.read("images", row))
            assert np.array_equal(item["label"].numpy(), r.read("labels", row))
    uses_pread = bool(ds._files[0].offsets)
    assert uses_pread == (compression == "none")
