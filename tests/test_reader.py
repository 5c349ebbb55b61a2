import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cxrgan.data.datasetfile import DatasetWriter, parse_ref, read_info, write_dataset
from cxrgan.errors import UserError
from cxrgan.data.reader import H5ImageDataset, to_tensor, to_uint8


@pytest.fixture
def small_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    path = tmp_path / "s.h5"
    with write_dataset(path, 16, ["No Finding", "Infiltration"], {"train": 30, "val": 5, "test": 10}) as w:
        for i, im in enumerate(images):
            split = "train" if i < 30 else "val" if i < 35 else "test"
            w.add(split, i % 2, f"img{i:03d}.png", image=im, patient_id=i)  # no patient in two splits
        w.close(source="test")
    return path, images


def test_write_dataset_replaces_the_file_only_when_closed(small_file):
    path, _ = small_file
    before = path.read_bytes()
    with pytest.raises(ValueError, match="must be uint8"):
        with write_dataset(path, 16, ["a", "b"], {"train": 2}) as w:
            w.add("train", 0, "x.png", image=np.zeros((16, 16), np.uint8))
            w.add("train", 1, "y.png", image=np.zeros((8, 8), np.uint8))  # wrong size: the block fails
    with pytest.raises(RuntimeError, match="without close"):
        with write_dataset(path, 16, ["a", "b"], {"train": 1}) as w:
            w.add("train", 0, "x.png", image=np.zeros((16, 16), np.uint8))
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_writer_trims_unused_capacity_and_counts(small_file):
    path, _ = small_file
    info = read_info(path)
    assert info.counts == {"train": {"No Finding": 15, "Infiltration": 15}, "val": {"No Finding": 3, "Infiltration": 2},
                           "test": {"No Finding": 2, "Infiltration": 3}}
    with h5py.File(path) as f:
        assert f["test/images"].shape == (5, 16, 16) and f["val/names"].asstr()[0] == "img030.png"


def test_tensor_conversion_is_exact_both_ways():
    u = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = to_tensor(u)
    assert x.shape == (1, 16, 16) and x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x), u)


def test_dataloader_with_workers_matches_direct_access(small_file):
    path, images = small_file
    ds = H5ImageDataset(path, "train")
    loader = DataLoader(ds, batch_size=7, shuffle=False, num_workers=2)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert np.array_equal(to_uint8(x), images[:30]) and y.tolist() == [i % 2 for i in range(30)]


def test_batched_read_keeps_the_requested_order(small_file):
    path, images = small_file
    for in_memory in (False, True):
        ds = H5ImageDataset(path, "train", in_memory=in_memory)
        idx = [7, 2, 2, 29, 0]
        batch = ds.__getitems__(idx)
        assert np.array_equal(to_uint8(torch.stack([b[0] for b in batch])), images[idx])
        assert [b[1] for b in batch] == [i % 2 for i in idx]


def test_transform_is_applied(small_file):
    path, _ = small_file
    ds = H5ImageDataset(path, "train", transform=lambda x: x * 0)
    assert ds[0][0].abs().sum() == 0


def test_refuses_unknown_schema_and_bad_files(small_file, tmp_path):
    path, _ = small_file
    with h5py.File(path, "a") as f:
        f.attrs["schema"] = "someone-else/9"
    with pytest.raises(UserError, match="schema 'someone-else/9'"):
        H5ImageDataset(path)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        H5ImageDataset(tmp_path / "junk.h5")
    with pytest.raises(UserError, match="no such file"):
        H5ImageDataset(tmp_path / "absent.h5")


def test_missing_split(small_file):
    with pytest.raises(UserError, match="no split 'synthetic'"):
        H5ImageDataset(small_file[0], "synthetic")


def test_parse_ref():
    assert parse_ref("data/x.h5:test", "train") == ("data/x.h5", "test")
    assert parse_ref("data/x.h5", "train") == ("data/x.h5", "train")


def test_batch_loader_yields_whole_batches(small_file):
    path, images = small_file
    ds = H5ImageDataset(path, "train", in_memory=True)
    batches = list(ds.batch_loader(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [8, 8, 8, 6]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (30, 1, 16, 16) and y.dtype == torch.int64
    order = [int(v) for v in y]  # every image once, labels matching their images
    got = to_uint8(x)
    for img, label in zip(got, order):
        k = next(i for i in range(30) if np.array_equal(images[i], img))
        assert label == k % 2
    streamed = list(H5ImageDataset(path, "train").batch_loader(30, shuffle=False, num_workers=2))
    assert np.array_equal(to_uint8(streamed[0][0]), images[:30])


def test_add_batch_equals_add_one_by_one(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (9, 16, 16), dtype=np.uint8)
    hashes = []
    for name, batched in (("a.h5", False), ("b.h5", True)):
        w = DatasetWriter(tmp_path / name, 16, ["x", "y"], {"synthetic": 4}, with_patients=False)
        if batched:
            w.add_batch("synthetic", [0] * 5, [f"s{i}" for i in range(5)], images[:5])
            w.add_batch("synthetic", [1] * 4, [f"s{i}" for i in range(5, 9)], images[5:])
        else:
            for i, im in enumerate(images):
                w.add("synthetic", int(i >= 5), f"s{i}", image=im)
        hashes.append(w.close()["content_sha256"])
        with h5py.File(tmp_path / name) as f:
            assert np.array_equal(f["synthetic/images"][:], images) and f["synthetic/labels"][:].tolist() == [0] * 5 + [1] * 4
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("damage,words", [
    (lambda f: f["train"]["labels"].__setitem__(0, 7), "outside the"),
    (lambda f: (f["train"].__delitem__("names"), f["train"].create_dataset("names", data=[b"a"])), "has shape"),
    (lambda f: f.attrs.__setitem__("size", 48), "not uint8"),
    (lambda f: f.attrs.__setitem__("size", -3), "not an image side"),
    (lambda f: f["val"].__delitem__("labels"), "no dataset 'labels'"),
])
def test_files_breaking_the_contract_are_refused_when_opened(tmp_path, damage, words):
    from cxrgan.data.phantoms import generate
    from cxrgan.errors import UserError

    path = tmp_path / "p.h5"
    generate(path, n=24, size=32, seed=0)
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(UserError, match=words):
        for split in ("train", "val", "test"):
            H5ImageDataset(path, split)
