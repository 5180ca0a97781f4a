"""benchmarks/variants.py's tables: paired differences never pair runs from different results files."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_fixtures import load_benchmark


@pytest.fixture(scope="module")
def variants() -> ModuleType:
    return load_benchmark("variants")


def _row(variant: str, seed: int, miou: float) -> dict:
    scheme = {"joint": "joint", "oracle": "oracle", "target-only": "target-only"}.get(variant, "w19")
    return {"variant": variant, "scheme": scheme, "seed": seed, "val_miou": miou / 100, "train_seconds": 1.0,
            "val_iou": {"road": miou / 100}}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_second_file_adds_seeds_paired_with_its_own_references(variants: ModuleType, tmp_path: Path) -> None:
    # machine A: references on seeds 0-1, the variant on seed 0 only; machine B: everything on seed 1
    a = _write(tmp_path / "a.jsonl", [_row("joint", 0, 30), _row("oracle", 0, 34), _row("x", 0, 32),
                                      _row("joint", 1, 30), _row("oracle", 1, 34)])
    b = _write(tmp_path / "b.jsonl", [_row("joint", 1, 20), _row("oracle", 1, 24), _row("x", 1, 24)])
    rows = variants.load_rows(a, source=0) + variants.load_rows(b, source=1)
    by = variants.ByVariant(rows)
    assert by["joint"][1]["val_miou"] == pytest.approx(0.30)  # the first file's row is shown
    assert by["x"][1]["val_miou"] == pytest.approx(0.24)  # a later file fills a missing seed
    assert variants.paired(by, "x", "joint") == pytest.approx({0: 2.0, 1: 4.0})  # not 24 - 30 = -6
    assert variants.capture(by, "x") == pytest.approx(3.0 / 4.0)
    table = variants.table(rows)
    line = next(ln for ln in table.splitlines() if ln.startswith("| x |"))
    assert "| 0,1* |" in line and "+3.0 ± 1.4 (2)" in line and "75 %" in line
    assert "24.0*" in variants.per_seed(rows, ["x"])
    assert "| road | 30.0 | +3.0 |" in variants.class_table(rows, ["x"])


def test_one_file_pairs_by_seed_as_before(variants: ModuleType, tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", [_row("joint", 0, 30), _row("x", 0, 31), _row("joint", 1, 28),
                                      _row("x", 1, 31)])
    by = variants.ByVariant(variants.load_rows(a))
    assert variants.paired(by, "x", "joint") == pytest.approx({0: 1.0, 1: 3.0})
    assert variants.capture(by, "x") is None  # no oracle: no capture ratio


def test_within_one_file_a_later_row_replaces_an_earlier_one(variants: ModuleType, tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", [_row("joint", 0, 30), _row("x", 0, 31), _row("x", 0, 33)])
    by = variants.ByVariant(variants.load_rows(a))
    assert by["x"][0]["val_miou"] == pytest.approx(0.33)
    assert variants.paired(by, "x", "joint") == pytest.approx({0: 3.0})


def test_a_second_preparation_of_the_same_scenes_counts_as_the_same_scenes(
        variants: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> None:
    import h5py

    from tests.data_fixtures import cached_synthetic_data, copy_data

    data = cached_synthetic_data(tmp_path_factory)
    again = copy_data(data, tmp_path_factory.mktemp("again") / "data")
    split = again / "gtav" / "train"
    manifest = json.loads((split / "manifest.json").read_text())
    for shard in manifest["shards"]:  # what a re-preparation changes: the inputs' recorded times, and so the file
        with h5py.File(split / shard["file"], "r+") as f:
            stamps = f["prepare_fingerprints"][()]
            del f["prepare_fingerprints"]
            f["prepare_fingerprints"] = stamps[::-1].copy()
        shard["sha256"] = "changed-" + shard["sha256"]
    (split / "manifest.json").write_text(json.dumps(manifest))
    first, second = variants.scenes_of(data), variants.scenes_of(again)
    assert first["source_sha"] != second["source_sha"] and first["content_sha"] == second["content_sha"]
    assert variants.same_scenes({"scenes": first}, second)
    assert variants.same_scenes({"scenes": {"source_sha": first["source_sha"]}}, first)  # rows stamped before
    assert not variants.same_scenes({"scenes": {**first, "content_sha": "other"}}, first)
