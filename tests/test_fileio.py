import os
import shutil

import pytest

from cxrgan.errors import UserError
from cxrgan.fileio import (atomic_output, check_free_space, check_not_an_input, check_output_path, output_lock,
                           sha256_file, write_json_atomic)


def test_atomic_output_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["f.txt"]


def test_stale_temp_of_a_dead_process_is_removed(tmp_path):
    target = tmp_path / "f.json"
    stale = tmp_path / ".f.json.999999999.tmp"
    stale.write_text("left by kill -9")
    write_json_atomic(target, {"a": 1})
    assert not stale.exists() and target.read_text().strip().startswith("{")


def test_check_output_path(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(UserError, match="--overwrite"):
        check_output_path(tmp_path / "x", overwrite=False)
    with pytest.raises(UserError, match="directory"):
        check_output_path(tmp_path, overwrite=True)
    assert check_output_path(tmp_path / "x", overwrite=True) == tmp_path / "x"


def test_sha256(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_file(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_an_output_that_is_an_input_is_refused(tmp_path):
    data = tmp_path / "d.h5"
    data.write_bytes(b"x")
    link = tmp_path / "link.h5"
    link.symlink_to(data)
    for out in (data, link, tmp_path / "." / "d.h5"):
        with pytest.raises(UserError, match="also an input"):
            check_output_path(out, overwrite=True, inputs={"--data": data})
    with pytest.raises(UserError, match="also an input"):
        check_not_an_input(tmp_path / "new.h5", {"--ckpt": [tmp_path / "a.pt", tmp_path / "new.h5"]})
    check_output_path(tmp_path / "other.h5", overwrite=False, inputs={"--data": data, "--csv": None})


def test_output_suffix_and_writability_are_checked_up_front(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="must end in .h5"):
        check_output_path(tmp_path / "x.csv", overwrite=True, suffixes=(".h5", ".hdf5"))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a folder"):
        check_output_path(tmp_path / "file" / "x.h5", overwrite=False)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # (root may write anywhere: simulate it)
    with pytest.raises(UserError, match="cannot write in"):
        check_output_path(tmp_path / "new" / "x.h5", overwrite=False)


def test_free_space_is_checked_before_long_work(tmp_path, monkeypatch):
    check_free_space(tmp_path, 1000, "--out")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 500, 500))
    with pytest.raises(UserError, match=r"needs about 1\.0 KB .* has 500 B free"):
        check_free_space(tmp_path / "not" / "yet", 1000, "--out x.h5")


def test_output_lock_refuses_a_second_writer_and_is_released(tmp_path):
    out = tmp_path / "o.h5"
    with output_lock(out):
        with pytest.raises(UserError, match="another run is writing"):
            with output_lock(out):
                pass
    assert not (tmp_path / ".o.h5.lock").exists()
    with output_lock(out):  # free again
        pass
