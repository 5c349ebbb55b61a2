import os

import pytest

from cxrgan.errors import UserError
from cxrgan.fileio import atomic_output, check_output_path, sha256_file, write_json_atomic


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
