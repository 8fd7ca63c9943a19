from __future__ import annotations

import gzip
import struct

import pytest
import torch

from hpo.config.spec import DataSpec
from hpo.errors import DataNotFoundError
from hpo.train import data


def _idx_gz(path, array: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


@pytest.fixture
def debian_copy(tmp_path):
    """A tiny stand-in for /usr/share/datasets/fashion-mnist: .gz IDX files only."""
    folder = tmp_path / "debian"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        _idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return folder


@pytest.fixture
def no_download(monkeypatch):
    import torchvision

    def refuse(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", refuse)


def test_missing_data_lists_the_three_ways(tmp_path, no_download):
    with pytest.raises(DataNotFoundError) as err:
        data.locate(tmp_path / "empty", debian_dir=tmp_path / "no-debian")
    message = str(err.value)
    assert "--data-dir" in message and "HPO_DATA_DIR" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "internet" in message
    assert "\n" not in message


def test_debian_copy_is_decompressed_and_loads(tmp_path, debian_copy, monkeypatch):
    root = tmp_path / "data"
    assert data.locate(root, debian_dir=debian_copy) == root
    for name in data.FILES:
        assert (root / "FashionMNIST" / "raw" / name).is_file()
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "none")  # now found in root itself
    ds = data.load(DataSpec(validation_size=10, train_size=30), root)
    assert ds.train.x.shape == (30, 784) and ds.val.x.shape == (10, 784)
    assert ds.test.x.shape == (20, 784) and ds.train.y.dtype == torch.int64


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "env"))
    assert data.default_data_dir() == tmp_path / "env"
    assert data.default_data_dir(tmp_path / "cli") == tmp_path / "cli"


def test_split_is_seeded_disjoint_and_normalised():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (100, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(100) % 10
    # Tag each image with its index so we can see which split it lands in.
    images[:, 0, 0] = torch.arange(100, dtype=torch.uint8)
    a = data.split(images, labels, images[:10], labels[:10], DataSpec(20, 50, seed=3))
    b = data.split(images, labels, images[:10], labels[:10], DataSpec(20, 50, seed=3))
    c = data.split(images, labels, images[:10], labels[:10], DataSpec(20, 50, seed=4))
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    assert len(a.train) == 50 and len(a.val) == 20
    rows = a.train.rows()
    assert rows.dtype == torch.float32 and rows.shape == (50, 784)
    assert abs(rows.mean().item()) < 1e-4 and abs(rows.std().item() - 1) < 1e-3
    # The same normalisation as float arithmetic on the pixels, with the training statistics.
    pixels = a.train.x.double() / 255
    expected = (pixels - pixels.mean()) / pixels.std()
    assert torch.allclose(rows.double(), expected, atol=1e-5)
    # Validation and test rows are normalised once, exactly as training batches are.
    assert a.val.x.dtype == torch.float32 and a.test.x.dtype == torch.float32
    tags = ((a.val.x[:, 0] - a.train.shift) / a.train.scale).round().long()  # image numbers
    every = data.Split(images.reshape(100, -1), labels, a.train.scale, a.train.shift)
    assert torch.equal(a.val.x, every.gather(tags))


def test_gather_normalises_the_rows_it_is_asked_for():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (40, 28, 28), generator=g, dtype=torch.uint8)
    ds = data.split(images, torch.arange(40) % 10, images, torch.arange(40) % 10, DataSpec(10))
    index = torch.tensor([3, 0, 7])
    out = torch.full((3, 784), float("nan"))
    assert ds.train.gather(index, out=out) is out
    assert torch.equal(out, ds.train.rows()[index])
    floats = data.Split(ds.train.rows(), ds.train.y)  # float rows are used as they are
    assert torch.equal(floats.gather(index), out) and torch.equal(floats.rows(), ds.train.rows())


@pytest.mark.slow
def test_real_fashion_mnist_splits(fmnist_dir):
    ds = data.load(DataSpec(validation_size=10_000), fmnist_dir)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape[1] == 784
    assert ds.train.rows(0, 10).dtype == torch.float32
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    # The validation images are training images held out, never test images.
    raw_val = ds.val.x[:5]
    assert not any(torch.equal(raw_val[0], row) for row in ds.test.x[:1000])
