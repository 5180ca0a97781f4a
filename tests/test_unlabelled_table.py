"""benchmarks/unlabelled.py's tables: paired differences per seed, counted wins, rows per table."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.benchmark_fixtures import load_benchmark


@pytest.fixture(scope="module")
def study() -> ModuleType:
    return load_benchmark("unlabelled")


def _row(study: ModuleType, name: str, seed: int, miou: float, **extra: float) -> dict:
    table, scheme, _ = study.ROWS[name]
    return {"variant": name, "table": table, "scheme": scheme, "seed": seed, "val_miou": miou / 100,
            "train_seconds": 10.0, **extra}


def test_pairs_are_per_seed_and_wins_are_counted(study: ModuleType) -> None:
    rows = [_row(study, "w19", 0, 30), _row(study, "w19+self-training", 0, 32, teacher_val_miou=0.31),
            _row(study, "w19", 1, 30), _row(study, "w19+self-training", 1, 29),
            _row(study, "w19+self-training", 2, 40)]  # seed 2 has no partner: not paired
    pairs = study.pairs_table(rows, "a")
    line = next(ln for ln in pairs.splitlines() if ln.startswith("| w19+self-training − w19 |"))
    assert "+0.5 ± 2.1 (2)" in line and "| 1 / 2 |" in line
    table = study.rows_table(rows, "a")
    assert "| w19+self-training | 0,1,2 | 33.7 ± 5.7 | 31.0 |" in table
    assert "uda:" not in table and "uda:" not in study.rows_table(rows, "b")


def test_uda_rows_are_their_own_table(study: ModuleType) -> None:
    rows = [_row(study, "uda:self-training", 0, 20), _row(study, "uda:w19+self-training", 0, 23)]
    pairs = study.pairs_table(rows, "b")
    assert "| uda:w19+self-training − uda:self-training | +3.0 (1) | 1 / 1 |" in pairs
    assert "uda:self-training | 0 | 20.0" in study.rows_table(rows, "b")
    assert {"data.target_images": 0} == study.ROWS["uda:minent"][2]
