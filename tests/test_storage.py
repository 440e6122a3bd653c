"""The sweep store: atomic files with the user's umask, named errors, no stray temporary files."""

import os
import stat

import numpy as np
import pytest
import xarray as xr

from specdyn import storage
from specdyn.storage import CellStore

CONFIG = {"steps": 4, "seeds": [0, 1]}
CELL = {"loss": np.ones((3, 2)), "diverged_at": np.full(3, -1, np.int32)}


def test_cells_round_trip_and_check_their_run_count(tmp_path):
    store = CellStore(tmp_path / "s", CONFIG)
    store.save(0, CELL)
    assert store.has(0) and not store.has(1)
    back = store.load(0, runs=3)
    np.testing.assert_array_equal(back["loss"], CELL["loss"])
    with pytest.raises(ValueError, match=r"cell-0000.npz.*not a cell of this sweep.*fresh=True"):
        store.load(0, runs=4)


def test_truncated_cell_file_is_named_with_the_remedy(tmp_path):
    store = CellStore(tmp_path / "s", CONFIG)
    store.save(2, CELL)
    path = tmp_path / "s" / "cell-0002.npz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cell-0002.npz.*truncated or not a specdyn cell.*--fresh"):
        CellStore(tmp_path / "s", CONFIG).load(2)
    np.savez(path, something_else=np.zeros(2))  # a readable file, but not a cell
    with pytest.raises(ValueError, match=r"cell-0002.npz.*not a cell of this sweep"):
        CellStore(tmp_path / "s", CONFIG).load(2)
    fresh = CellStore(tmp_path / "s", CONFIG, fresh=True)
    assert not fresh.has(2)


def test_corrupt_config_is_named(tmp_path):
    CellStore(tmp_path / "s", CONFIG)
    (tmp_path / "s" / "config.json").write_text('{"steps": 4, "se')
    with pytest.raises(ValueError, match=r"config.json.*cannot be read.*fresh=True"):
        CellStore(tmp_path / "s", CONFIG)
    CellStore(tmp_path / "s", CONFIG, fresh=True)  # the remedy works
    with pytest.raises(ValueError, match=r"different sweep \(steps: stored 4, now 5\)"):
        CellStore(tmp_path / "s", dict(CONFIG, steps=5))


@pytest.mark.parametrize("fresh", [False, True])
def test_stray_temporary_files_are_removed_at_open(tmp_path, fresh):
    CellStore(tmp_path / "s", CONFIG).save(0, CELL)
    stray = [tmp_path / "s" / ".cell-0001.npz.123-abcd.tmp", tmp_path / "s" / ".config.json.9-ff.tmp"]
    for f in stray:
        f.write_bytes(b"half a cell")
    store = CellStore(tmp_path / "s", CONFIG, fresh=fresh)
    assert not any(f.exists() for f in stray)
    assert store.has(0) != fresh


def test_failed_write_leaves_no_file(tmp_path):
    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        storage.atomic_write(tmp_path / "x.nc", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_are_written_with_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        store = CellStore(tmp_path / "s", CONFIG)
        store.save(0, CELL)
        path = storage.save(xr.Dataset({"loss": ("step", np.arange(3.0))}), tmp_path / "r.nc")
    finally:
        os.umask(old)
    for f in (tmp_path / "s" / "config.json", tmp_path / "s" / "cell-0000.npz", path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


def test_a_file_where_the_store_should_be_is_refused(tmp_path):
    (tmp_path / "s").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        CellStore(tmp_path / "s", CONFIG)


def test_a_store_below_a_file_or_not_a_path_is_refused_naming_it(tmp_path):
    (tmp_path / "f").write_text("x")
    for path in (tmp_path / "f" / "x", "/dev/null/x"):
        with pytest.raises(ValueError, match=rf"store '{path}' cannot be made or written to as a folder "
                                             r"\(Not a directory\)"):
            CellStore(path, CONFIG)
    for bad in (5, "", None):
        with pytest.raises(ValueError, match=rf"store must be a folder path, got store={bad!r}"):
            CellStore(bad, CONFIG)


def test_load_names_the_path_of_a_foreign_truncated_or_missing_file(tmp_path):
    foreign = tmp_path / "notes.nc"
    foreign.write_text("not netCDF at all\n")
    good = storage.save(xr.Dataset({"loss": ("step", np.arange(3.0))}), tmp_path / "good.nc")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:60])
    for path, what in [(foreign, "not a results file"), (truncated, "not a results file"),
                       (tmp_path, "is a folder"), (tmp_path / "none.nc", "no results file")]:
        with pytest.raises(ValueError, match=what) as err:
            storage.load(path)
        assert str(path) in str(err.value)
    np.testing.assert_array_equal(storage.load(good)["loss"].values, np.arange(3.0))
