"""core.cache: one rule for every preprocessing cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError, OptionError


def test_changed_settings_are_refused_naming_each(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path / "c", "toy-tiles")
    cache.open_for_writing({"tile_size": 256, "level": 1})
    assert cache.settings() == {"tile_size": 256, "level": 1}
    with pytest.raises(OptionError, match=r"tile_size: 256 → 128.*--overwrite"):
        cache.open_for_writing({"tile_size": 128, "level": 1})
    with pytest.raises(OptionError, match=r"n_tiles: unset → 36"):
        cache.open_for_writing({"tile_size": 256, "level": 1, "n_tiles": 36})
    cache.open_for_writing({"tile_size": 128, "level": 1}, overwrite=True)
    assert cache.settings()["tile_size"] == 128


def test_pending_skips_finished_items_and_honours_part(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path / "c", "toy")
    cache.open_for_writing({})
    items = [f"case_{i}" for i in range(6)]
    (tmp_path / "c" / "case_2.npy").write_bytes(b"x")
    (tmp_path / "c" / ".case_9.npy.tmp.partial.npy").write_bytes(b"half")
    def marker(i: str) -> Path:
        return tmp_path / "c" / f"{i}.npy"
    assert cache.pending(items, marker) == ["case_0", "case_1", "case_3", "case_4", "case_5"]
    assert cache.pending(items, marker, part="1/2") == ["case_0", "case_4"]  # case_2 of part 1 is done
    assert cache.pending(items, marker, part="1/2", overwrite=True) == ["case_0", "case_2", "case_4"]
    cache.open_for_writing({})
    assert not (tmp_path / "c" / ".case_9.npy.tmp.partial.npy").exists()  # killed runs' leftovers go


def test_reading_a_folder_that_is_not_this_cache(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a toy cache"):
        CacheDir(tmp_path, "toy").settings()
    CacheDir(tmp_path / "other", "kits-slices").open_for_writing({})
    with pytest.raises(DataError, match="kind 'kits-slices', expected 'toy'"):
        CacheDir(tmp_path / "other", "toy").settings()


def test_overwrite_rebuilds_a_cache_of_an_older_format(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "meta.json").write_text('{"crop": 112}')  # the flat meta of an older version
    with pytest.raises(OptionError, match="older version.*--overwrite"):
        CacheDir(root, "toy").open_for_writing({"crop": 112})
    CacheDir(root, "toy").open_for_writing({"crop": 112}, overwrite=True)
    assert CacheDir(root, "toy").settings() == {"crop": 112}
