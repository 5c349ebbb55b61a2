"""make_hdf5 end to end on tiny generated NIH-style data (and on the real NIH files when ../shared is present)."""

import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import cxrgan.data.ingest as ingest
from cxrgan.data.datasetfile import SCHEMA, read_info
from cxrgan.errors import UserError
from cxrgan.data.ingest import IngestConfig, build_dataset, report_path
from cxrgan.data.reader import H5ImageDataset, to_uint8
from conftest import (ROOT, SHARED_DATA, add_member, image_for, nih_rows, png_bytes, requires_shared, run_tool,
                      write_archives, write_csv, write_nih_tree)


def build(src, out, **kw):
    kw.setdefault("size", 32)
    kw.setdefault("workers", 0)
    return build_dataset(IngestConfig(src=str(src), out=str(out), **kw))


def contents(path):
    """split -> {name: (label, patient, image)}"""
    out = {}
    with h5py.File(path, "r") as f:
        for split in ("train", "val", "test"):
            g = f[split]
            out[split] = {n.decode(): (int(l), int(p), im) for n, l, p, im in
                          zip(g["names"][:], g["labels"][:], g["patient_ids"][:], g["images"][:])}
    return out


def remove_member(archive, name):
    """Rewrite ``archive`` without the member whose path ends in ``name``."""
    with tarfile.open(archive) as old:
        keep = [(m, old.extractfile(m).read()) for m in old.getmembers() if not m.name.endswith(name)]
    with tarfile.open(archive, "w:gz") as tar:
        for m, data in keep:
            add_member(tar, m.name, data)


def expected_label(findings, finding="Infiltration"):
    return 1 if finding in findings.split("|") else 0 if findings == "No Finding" else -1


def test_nih_tree_follows_class_rule_splits_and_balance(nih_tree, tmp_path):
    src, rows = nih_tree
    by_name = {r["name"]: r for r in rows}
    out = tmp_path / "d.h5"
    build(src, out, balance=False)
    got = contents(out)
    eligible = {r["name"] for r in rows if expected_label(r["findings"]) >= 0}
    names = [n for s in got.values() for n in s]
    assert sorted(names) == sorted(eligible)  # every eligible row, nothing else
    for split in got.values():
        for name, (label, patient, image) in split.items():
            assert label == expected_label(by_name[name]["findings"]) and patient == by_name[name]["patient"]
            assert np.array_equal(image, image_for(name))  # already 32x32 L: stored exactly
    patient_sets = [{p for _, p, _ in s.values()} for s in got.values()]
    assert not (patient_sets[0] & patient_sets[1] or patient_sets[0] & patient_sets[2]
                or patient_sets[1] & patient_sets[2])

    balanced = tmp_path / "b.h5"
    build(src, balanced, balance=True)
    for split, items in contents(balanced).items():
        labels = [l for l, _, _ in items.values()]
        assert labels.count(0) == labels.count(1)
        assert set(items) <= set(got[split])  # balancing only removes


def test_view_filter_and_finding_only(nih_tree, tmp_path):
    src, rows = nih_tree
    build(src, tmp_path / "pa.h5", view="PA", balance=False)
    names = {n for s in contents(tmp_path / "pa.h5").values() for n in s}
    assert names == {r["name"] for r in rows if r["view"] == "PA" and expected_label(r["findings"]) >= 0}
    build(src, tmp_path / "only.h5", finding_only=True, balance=False)
    pos = {n for s in contents(tmp_path / "only.h5").values() for n, (l, _, _) in s.items() if l == 1}
    assert pos == {r["name"] for r in rows if r["findings"] == "Infiltration"}


def test_attributes_record_the_call(nih_tree, tmp_path):
    src, _ = nih_tree
    out = tmp_path / "d.h5"
    build(src, out, seed=7)
    info = read_info(out)
    assert info.schema == SCHEMA and info.classes == ["No Finding", "Infiltration"] and info.size == 32
    a = info.attrs
    assert a["args"]["seed"] == 7 and a["source"].startswith("nih-csv:") and len(a["csv_sha256"]) == 64
    assert a["created"] and set(a["counts"]) == {"train", "val", "test"}
    with h5py.File(out) as f:
        assert f["train/images"].chunks == (1, 32, 32) and f["train/images"].compression == "gzip"
        assert f["train/images"].dtype == np.uint8 and f["train/labels"].dtype == np.int64


def test_same_seed_same_file_and_workers_do_not_matter(nih_tree, tmp_path):
    src, _ = nih_tree
    build(src, tmp_path / "a.h5", seed=1)
    build(src, tmp_path / "b.h5", seed=1, workers=2)
    build(src, tmp_path / "c.h5", seed=2)
    h = [read_info(tmp_path / f"{x}.h5").attrs["content_sha256"] for x in "abc"]
    assert h[0] == h[1] != h[2]


def test_archives_are_read_in_place_and_match_the_folder(tmp_path):
    rows = nih_rows(10, seed=1)
    write_nih_tree(tmp_path / "dir", rows)
    write_archives(tmp_path / "tars", rows)
    build(tmp_path / "dir", tmp_path / "dir.h5")
    build(tmp_path / "tars", tmp_path / "tar.h5")
    a, b = contents(tmp_path / "dir.h5"), contents(tmp_path / "tar.h5")
    for split in a:
        assert a[split].keys() == b[split].keys()
        for name in a[split]:
            assert np.array_equal(a[split][name][2], b[split][name][2])
    assert not list((tmp_path / "tars").rglob("*.png"))  # nothing extracted to disk


def test_malicious_archive_members_are_refused(tmp_path):
    rows = nih_rows(6, seed=2)
    src = write_archives(tmp_path / "tars", rows)
    victim = rows[0]["name"]
    with tarfile.open(src / "images_099.tar.gz", "w:gz") as tar:
        add_member(tar, f"../{victim}", png_bytes(image_for(victim)))
        add_member(tar, f"/tmp/{victim}", png_bytes(image_for(victim)))
    # the victim is only reachable through unsafe names
    remove_member(src / "images_001.tar.gz", victim)
    report = build(src, tmp_path / "d.h5", balance=False)
    assert {r["reason"] for r in report["refused"]} == {"'..' in path", "absolute path"}
    assert victim in report["missing"]
    assert victim not in {n for s in contents(tmp_path / "d.h5").values() for n in s}
    assert not (tmp_path / victim).exists() and not Path(f"/tmp/{victim}").exists()


def test_corrupt_and_missing_files_are_reported_not_fatal(nih_tree, tmp_path):
    src, rows = nih_tree
    eligible = [r["name"] for r in rows if expected_label(r["findings"]) >= 0]
    files = {p.name: p for p in src.rglob("*.png")}
    files[eligible[0]].write_bytes(files[eligible[0]].read_bytes()[:60])  # truncated
    files[eligible[1]].write_bytes(b"")  # empty
    files[eligible[2]].write_bytes(b"GIF89a not really")  # undecodable
    files[eligible[3]].unlink()  # csv row without a file
    out = tmp_path / "d.h5"
    report = build(src, out, balance=False)
    assert sorted(s["name"] for s in report["skipped"]) == sorted(eligible[:3])
    assert any(s["reason"] == "empty file" for s in report["skipped"])
    assert report["missing"] == [eligible[3]]
    on_disk = json.loads(report_path(out).read_text())
    assert on_disk["skipped"] == report["skipped"] and on_disk["missing"] == report["missing"]
    names = {n for s in contents(out).values() for n in s}
    assert names == set(eligible[4:])


def test_class_folders_and_mixed_sizes(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("No Finding", 6), ("infiltration", 5)):
        d = tmp_path / "src" / cls
        d.mkdir(parents=True)
        for i in range(n):
            side = 16 if i % 2 else 128
            (d / f"{cls[:2]}_{i}.png").write_bytes(png_bytes(rng.integers(0, 255, (side, side), dtype=np.uint8)))
    report = build(tmp_path / "src", tmp_path / "d.h5", balance=False, fractions="1,0,0")
    got = contents(tmp_path / "d.h5")["train"]
    assert sorted(l for l, _, _ in got.values()) == [0] * 6 + [1] * 5
    assert all(im.shape == (32, 32) for _, _, im in got.values())
    assert report["upscaled"] == 5 and all(p == -1 for _, p, _ in got.values())


def test_reader_round_trips_exactly(nih_tree, tmp_path):
    src, _ = nih_tree
    out = tmp_path / "d.h5"
    build(src, out)
    got = contents(out)["train"]
    ds = H5ImageDataset(out, "train")
    mem = H5ImageDataset(out, "train", in_memory=True)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 32, 32) and -1 <= x.min() and x.max() <= 1
        assert np.array_equal(to_uint8(x), got[ds.names[i]][2]) and y == got[ds.names[i]][0]
        assert np.array_equal(mem[i][0].numpy(), x.numpy())


def test_interrupted_run_leaves_nothing_and_keeps_the_old_file(nih_tree, tmp_path, monkeypatch):
    src, _ = nih_tree
    out = tmp_path / "d.h5"
    out.write_bytes(b"previous content")
    calls = []
    real = ingest._decode_task

    def flaky(task, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(task, **kw)

    monkeypatch.setattr(ingest, "_decode_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        build(src, out, overwrite=True)
    assert out.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5", "nih"]  # no temp file left behind


def test_kill_9_mid_run_leaves_nothing_at_the_output(tmp_path):
    rows = nih_rows(60, seed=3)
    src = write_nih_tree(tmp_path / "nih", rows, size=256)
    out = tmp_path / "d.h5"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools/make_hdf5.py"), "--src", src, "--out", out,
                             "--size", "256", "--workers", "1", "--fit", "pad"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".d.h5.*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    build(src, out, size=64)  # a rerun succeeds and clears the dead run's temp file
    assert out.exists() and not list(tmp_path.glob(".d.h5.*.tmp"))


@pytest.mark.parametrize("args,expect", [
    (["--size", "100"], "power of two"),
    (["--fit", "zoom"], "--fit"),
    (["--view", "LL"], "--view"),
    (["--fractions", "0.5,0.6,0.1"], "--fractions"),
    (["--workers", "-1"], "--workers"),
    (["--max-per-class", "0"], "--max-per-class"),
    (["--csv", "nope.csv"], "no such file"),
    (["--finding", "Hernia"], "no images after filtering"),
])
def test_bad_values_give_one_line_errors(nih_tree, tmp_path, args, expect):
    src, _ = nih_tree
    out = tmp_path / "d.h5"
    r = run_tool("make_hdf5.py", "--src", src, "--out", out, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and expect in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_input_errors(tmp_path, nih_tree):
    src, rows = nih_tree
    (tmp_path / "empty").mkdir()
    r = run_tool("make_hdf5.py", "--src", tmp_path / "empty", "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "no images found" in r.stderr
    r = run_tool("make_hdf5.py", "--src", tmp_path / "missing", "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "not a directory" in r.stderr
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("Image Index,Label\n")
    r = run_tool("make_hdf5.py", "--src", src, "--csv", bad_csv, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "Finding Labels" in r.stderr
    (tmp_path / "x.h5").write_text("keep me")
    r = run_tool("make_hdf5.py", "--src", src, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "--overwrite" in r.stderr and (tmp_path / "x.h5").read_text() == "keep me"
    only_normal = write_csv(tmp_path / "normal.csv", [dict(r, findings="No Finding") for r in rows])
    with pytest.raises(UserError, match="'Infiltration' has no images"):
        build(src, tmp_path / "y.h5", csv=only_normal)


def test_help_documents_every_option():
    r = run_tool("make_hdf5.py", "--help")
    assert r.returncode == 0
    text = r.stdout + r.stderr  # python-fire prints help on stderr
    assert "SRC" in text and "OUT" in text
    for opt in ("csv", "size", "seed", "balance", "finding", "finding_only", "view", "max_per_class",
                "fractions", "official_split", "fit", "workers", "overwrite"):
        assert f"--{opt}" in text, opt


def test_cli_builds_a_dataset(nih_tree, tmp_path):
    src, _ = nih_tree
    r = run_tool("make_hdf5.py", "--src", src, "--out", tmp_path / "d.h5", "--size", "16", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "No Finding" in r.stderr and read_info(tmp_path / "d.h5").size == 16


def _link_real(dest, *globs):
    """Symlink real NIH files into ``dest``; the first file of a name wins (full-res before 64x64 copies)."""
    dest.mkdir()
    for pattern in globs:
        for p in sorted(SHARED_DATA.glob(pattern)):
            if not (dest / p.name).exists():
                (dest / p.name).symlink_to(p)
    return dest


@requires_shared
def test_real_nih_fullres_with_the_official_csv(tmp_path):
    """The 18 real 1024x1024 PNGs (all Infiltration) beside real No Finding images, labelled by the full csv."""
    import pandas as pd
    sub = pd.read_csv(SHARED_DATA / "nih64" / "Data_Entry_subset.csv")
    normals = set(sub.loc[sub["Finding Labels"] == "No Finding", "Image Index"][:30])
    src = _link_real(tmp_path / "src", "nih-fullres/*.png")
    for name in normals:
        if not (src / name).exists():
            (src / name).symlink_to(SHARED_DATA / "nih64" / "images" / name)
    out = tmp_path / "full.h5"
    report = build(src, out, csv=str(SHARED_DATA / "Data_Entry_2017_v2020.csv.gz"), size=256, balance=False,
                   workers=2)
    assert sum(c["Infiltration"] for c in report["counts"].values()) == 18
    assert sum(c["No Finding"] for c in report["counts"].values()) == len(normals)
    assert not report["skipped"] and len(report["missing"]) > 50_000  # csv rows whose images are not here
    ds = H5ImageDataset(out, "train")
    assert ds[0][0].shape == (1, 256, 256)
    full = [i for i, n in enumerate(ds.names) if (SHARED_DATA / "nih-fullres" / n).exists()]
    assert full and ds[full[0]][0].std() > 0.2 and ds[full[0]][1] == 1


@requires_shared
def test_real_mixed_sizes_one_csv(tmp_path):
    """The 64x64 NIH images and the 1024x1024 ones in one folder, with one csv."""
    import pandas as pd
    mixed = _link_real(tmp_path / "mixed", "nih-fullres/*.png", "nih64/images/*.png")
    csv = pd.concat([pd.read_csv(SHARED_DATA / "nih-fullres" / "Data_Entry_subset.csv"),
                     pd.read_csv(SHARED_DATA / "nih64" / "Data_Entry_subset.csv")]).drop_duplicates("Image Index")
    csv.to_csv(tmp_path / "Data_Entry_mixed.csv", index=False)
    report = build(mixed, tmp_path / "m.h5", csv=str(tmp_path / "Data_Entry_mixed.csv"), size=64, workers=2)
    assert not report["skipped"] and not report["missing"] and report["upscaled"] == 0
    for per_class in report["counts"].values():
        assert per_class["No Finding"] == per_class["Infiltration"]
    got = contents(tmp_path / "m.h5")
    names = {n for s in got.values() for n in s}
    assert names & {p.name for p in (SHARED_DATA / "nih-fullres").glob("*.png")}
    assert all(im.shape == (64, 64) for s in got.values() for _, _, im in s.values())


def test_official_split_lists(nih_tree, tmp_path):
    src, rows = nih_tree
    test_patients = {1, 2, 3}
    (src / "test_list.txt").write_text("\n".join(r["name"] for r in rows if r["patient"] in test_patients))
    (src / "train_val_list.txt").write_text("\n".join(r["name"] for r in rows if r["patient"] not in test_patients))
    build(src, tmp_path / "o.h5", official_split=True, balance=False)
    got = contents(tmp_path / "o.h5")
    assert {p for _, p, _ in got["test"].values()} <= test_patients
    assert not {p for s in ("train", "val") for _, p, _ in got[s].values()} & test_patients
    assert read_info(tmp_path / "o.h5").attrs["split_method"] == "official"
    (src / "test_list.txt").unlink()
    with pytest.raises(UserError, match="test_list.txt"):
        build(src, tmp_path / "p.h5", official_split=True)


# ---------------------------------------------------------------- robustness: no silent wrong results, bounded memory

def test_oversized_archive_members_are_refused_without_being_read(tmp_path, monkeypatch):
    rows = nih_rows(6, seed=4)
    src = write_archives(tmp_path / "tars", rows)
    victim = next(r["name"] for r in rows if expected_label(r["findings"]) >= 0)
    import cxrgan.data.sources as sources
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 4096)  # above these 32x32 PNGs (about 1 KB), below the bomb
    with tarfile.open(src / "images_099.tar.gz", "w:gz") as tar:  # a bomb: 64 KB of zeros under a wanted name
        add_member(tar, f"images/{victim}", bytes(64 << 10))
    remove_member(src / "images_001.tar.gz", victim)
    report = build(src, tmp_path / "d.h5", balance=False)
    assert [r["member"] for r in report["refused"]] == [victim] and "limit" in report["refused"][0]["reason"]
    assert victim not in report["missing"]
    assert victim not in {n for s in contents(tmp_path / "d.h5").values() for n in s}


def test_a_file_over_the_size_limit_is_skipped_not_decoded(tmp_path, monkeypatch):
    import cxrgan.data.imaging as imaging
    from cxrgan.data.imaging import DecodeError, decode

    monkeypatch.setattr(imaging, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(DecodeError, match="limit"):
        decode(png_bytes(image_for("x.png", 64)), 32)


def test_the_same_name_in_two_class_folders_is_left_out_and_reported(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("No Finding", "Infiltration"):
        d = tmp_path / "src" / cls
        d.mkdir(parents=True)
        for i in range(6):
            (d / f"{cls[:2]}_{i}.png").write_bytes(png_bytes(rng.integers(0, 255, (32, 32), dtype=np.uint8)))
        (d / "same.png").write_bytes(png_bytes(rng.integers(0, 255, (32, 32), dtype=np.uint8)))
    report = build(tmp_path / "src", tmp_path / "d.h5", balance=False, fractions="1,0,0")
    names = set(contents(tmp_path / "d.h5")["train"])
    assert "same.png" not in names and len(names) == 12  # neither copy: which label would be right?
    assert sorted(Path(p).parent.name for p in report["duplicate_names"]) == ["Infiltration", "No Finding"]


def test_balance_holds_after_images_fail_to_decode(nih_tree, tmp_path):
    src, rows = nih_tree
    files = {p.name: p for p in src.rglob("*.png")}
    infiltration = [r["name"] for r in rows if expected_label(r["findings"]) == 1]
    for name in infiltration[:3]:
        files[name].write_bytes(b"not an image")  # known only after decoding
    report = build(src, tmp_path / "d.h5", balance=True)
    assert len(report["skipped"]) >= 1
    for split, per_class in report["counts"].items():
        assert len(set(per_class.values())) == 1, (split, per_class)  # every class the same size, per split
    got = contents(tmp_path / "d.h5")
    for split, imgs in got.items():
        labels = [l for l, _, _ in imgs.values()]
        assert labels.count(0) == labels.count(1), split
    for imgs in got.values():  # kept images moved down together with their names and labels
        for name, (_, _, image) in imgs.items():
            assert np.array_equal(image, image_for(name))


def test_a_failed_run_keeps_the_previous_runs_report(nih_tree, tmp_path):
    src, rows = nih_tree
    out = tmp_path / "d.h5"
    build(src, out, balance=False)
    good = report_path(out).read_text()
    for p in src.rglob("*.png"):
        p.write_bytes(b"broken")
    with pytest.raises(UserError, match="no decodable images"):
        build(src, out, balance=False, overwrite=True)
    assert report_path(out).read_text() == good
    assert json.loads(report_path(out, failed=True).read_text())["skipped"]


def test_fractions_0_0_1_puts_every_image_in_the_test_split(nih_tree, tmp_path):
    """An external test set: every chosen image in test, the classes balanced there as in any split."""
    src, rows = nih_tree
    build(src, tmp_path / "all.h5", balance=False, fractions="0,0,1")
    got = contents(tmp_path / "all.h5")
    eligible = {r["name"] for r in rows if expected_label(r["findings"]) >= 0}
    assert not got["train"] and not got["val"] and set(got["test"]) == eligible
    build(src, tmp_path / "balanced.h5", fractions="0,0,1")
    labels = [label for label, _, _ in contents(tmp_path / "balanced.h5")["test"].values()]
    assert labels.count(0) == labels.count(1) > 0
    r = run_tool("make_hdf5.py", "--src", src, "--out", tmp_path / "x.h5", "--fractions", "0,0,1", "--official-split")
    assert r.returncode == 2 and "cannot be combined with --official-split" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_tool("make_hdf5.py", "--src", src, "--out", tmp_path / "x.h5", "--fractions", "0,0.5,0.5")
    assert r.returncode == 2 and "0,0,1 puts every image in the test split" in r.stderr
