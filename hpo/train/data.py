"""Fashion-MNIST as tensors in memory: find it, load it once, split it.

Where the data comes from, in order:

1. the data directory (``--data-dir``, else ``$HPO_DATA_DIR``, else ``./data``) in
   torchvision's layout (``<dir>/FashionMNIST/raw/*-ubyte``, or the ``.gz`` files);
2. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
   decompressed into the data directory (its .gz headers differ from the originals, so
   torchvision's checksum check would reject the files themselves);
3. torchvision's download, for machines with internet.

The validation split is a fixed, seeded part of the 60,000 training images. The 10,000 test
images are only ever evaluated after training.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn, Protocol

import torch

from hpo.errors import DataNotFoundError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "HPO_DATA_DIR"
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataSpec(Protocol):
    """How to split the data (a study file's ``[data]`` table; :class:`hpo.config.spec.DataSpec`
    satisfies it). A protocol, so that the training package needs nothing of the config."""

    validation_size: int
    train_size: int | None
    seed: int


CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class Split:
    """Images and their int64 labels, on one device.

    ``x`` holds either raw pixels (N x 784 uint8, a quarter of float32's memory) that
    :meth:`rows` and :meth:`gather` normalise as ``x * scale + shift``, or float rows that are
    used as they are.
    """

    x: torch.Tensor
    y: torch.Tensor
    scale: float = 1.0
    shift: float = 0.0

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def rows(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` as normalised float32."""
        raw = self.x[start:stop]
        return raw if raw.is_floating_point() else self._normalise(raw)

    def normalised(self) -> Split:
        """This split with float rows, normalised once."""
        return self if self.x.is_floating_point() else Split(self.rows(), self.y)

    def gather(self, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``index`` as normalised float32, written into ``out`` if given (no allocation)."""
        if self.x.is_floating_point():
            return torch.index_select(self.x, 0, index, out=out)
        # index_select copies whole rows; x[index] goes element by element, 3x slower here.
        return self._normalise(torch.index_select(self.x, 0, index), out)

    def _normalise(self, raw: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.empty(raw.shape, device=raw.device) if out is None else out
        return out.copy_(raw).mul_(self.scale).add_(self.shift)


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.train.to(device), self.val.to(device), self.test.to(device))


def default_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: the argument, else ``$HPO_DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data")


def locate(data_dir: str | Path | None = None, debian_dir: Path | None = None) -> Path:
    """Return a torchvision root holding Fashion-MNIST's raw files, fetching them if needed.

    Raises:
        DataNotFoundError: the data is nowhere and the download failed; the message lists the
            three ways to provide it.
    """
    root = default_data_dir(data_dir)
    debian_dir = debian_dir or DEBIAN_DIR
    raw = root / "FashionMNIST" / "raw"
    for folder in (root, root / "FashionMNIST", raw):
        if folder.exists() and not folder.is_dir():
            raise DataNotFoundError(
                f"the data folder {folder} is a file, not a folder; point --data-dir or "
                f"${DATA_DIR_ENV} at a folder (it may be empty: hpo fetches the data into it)"
            )
    if all((raw / f).is_file() for f in FILES):
        check(raw)
        return root
    for source in (raw, debian_dir):
        if all((source / f"{f}.gz").is_file() for f in FILES):
            _decompress(source, raw)
            check(raw)
            return root
    try:
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {root}/FashionMNIST/raw or {debian_dir}, and the "
            f"download failed ({reason[:120]}). Provide it one of three ways: "
            f"(1) --data-dir DIR or ${DATA_DIR_ENV}=DIR pointing at a folder with "
            "FashionMNIST/raw/*-ubyte(.gz); (2) 'apt-get install dataset-fashion-mnist' "
            "(Debian/Ubuntu); (3) run once with internet access so torchvision downloads it."
        ) from None
    check(raw)
    return root


IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # IDX headers: unsigned bytes, 3 and 1 dimensions


def check(raw: Path) -> None:
    """Check the four IDX files before anything else runs: headers, sizes, counts, labels.

    Reads the headers and the labels (70 kB), not the images: a truncated or damaged file is
    found before a study is created, not by the first worker that loads it.

    Raises:
        DataNotFoundError: naming the file, what is wrong, and to delete it so it is fetched
            again.
    """
    counts = {}
    for name in FILES:
        path = raw / name
        magic = LABEL_MAGIC if "labels" in name else IMAGE_MAGIC
        shape = _idx_shape(path, magic)
        if magic == IMAGE_MAGIC and tuple(shape[1:]) != (28, 28):
            _damaged(path, f"holds {'x'.join(map(str, shape[1:]))} images, not 28x28")
        counts[name] = shape[0]
        if magic == LABEL_MAGIC:
            labels = read_idx(path)
            if len(labels) and int(labels.max()) >= len(CLASSES):
                _damaged(path, f"has a label {int(labels.max())}; Fashion-MNIST's are 0 to 9")
    for prefix in ("train", "t10k"):
        images, labels = (
            counts[f"{prefix}-images-idx3-ubyte"],
            counts[f"{prefix}-labels-idx1-ubyte"],
        )
        if images != labels or images == 0:
            _damaged(raw / f"{prefix}-labels-idx1-ubyte", f"{labels} labels for {images} images")


def _idx_shape(path: Path, magic: int) -> tuple[int, ...]:
    """The shape an IDX file's header declares, checked against the file's size."""
    try:
        with open(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4 or struct.unpack(">I", header)[0] != magic:
                _damaged(path, "is not an IDX file of Fashion-MNIST's kind")
            dims = f.read(4 * header[3])
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise DataNotFoundError(f"cannot read {path}: {err.strerror or err}") from None
    if len(dims) < 4 * header[3]:
        _damaged(path, "is truncated in its header")
    shape = struct.unpack(f">{header[3]}I", dims)
    expected = 4 + len(dims) + math.prod(shape)
    if size < expected:
        _damaged(path, f"is truncated ({size} of {expected} bytes)")
    if size > expected:
        _damaged(path, f"has {size - expected} bytes more than its header declares")
    return shape


def _damaged(path: Path, what: str) -> NoReturn:
    raise DataNotFoundError(f"{path} {what}; delete it so that hpo fetches it again")


def _decompress(source: Path, raw: Path) -> None:
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            tmp = raw / f"{name}.tmp{os.getpid()}"
            with gzip.open(source / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw / name)  # atomic: concurrent workers never see half a file
    except OSError as err:
        raise DataNotFoundError(
            f"found Fashion-MNIST in {source} but could not decompress it into {raw}: "
            f"{err.strerror or err}; pass a writable --data-dir"
        ) from None


def load(spec: DataSpec, data_dir: str | Path | None = None) -> Dataset:
    """Load Fashion-MNIST once, normalised, split into train/validation/test tensors (CPU)."""
    raw = locate(data_dir) / "FashionMNIST" / "raw"
    train_images, train_labels, test_images, test_labels = (read_idx(raw / f) for f in FILES)
    return split(train_images, train_labels, test_images, test_labels, spec)


def read_idx(path: Path) -> torch.Tensor:
    """Read one IDX file of unsigned bytes (MNIST's format) into a uint8 tensor.

    Read here rather than through torchvision, whose import alone adds about 170 MiB to every
    worker's resident memory.
    """
    with open(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:3] != b"\x00\x00\x08":
            raise DataNotFoundError(f"{path} is not an IDX file of bytes; delete it to refetch")
        shape = struct.unpack(f">{header[3]}I", f.read(4 * header[3]))
        buffer = bytearray(math.prod(shape))
        if f.readinto(buffer) != len(buffer):
            raise DataNotFoundError(f"{path} is truncated; delete it to refetch")
    return torch.frombuffer(buffer, dtype=torch.uint8).reshape(shape)


def split(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    spec: DataSpec,
) -> Dataset:
    """Hold out a seeded validation split; normalise with the training part's statistics."""
    n = len(train_labels)
    if spec.validation_size >= n:
        raise DataNotFoundError(
            f"data.validation_size={spec.validation_size} leaves none of the {n} training "
            "images for training; lower it"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed))
    val_idx = order[: spec.validation_size]
    train_idx = order[spec.validation_size :]
    if spec.train_size is not None:
        train_idx = train_idx[: spec.train_size]
    train_x = _flatten(train_images[train_idx])
    # Mean and standard deviation of the training pixels, exactly, from their histogram.
    counts = torch.bincount(train_x.reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    std = ((counts * (values - mean) ** 2).sum() / (total - 1)).sqrt()
    norm = {"scale": 1.0 / (255.0 * std.item()), "shift": -mean.item() / std.item()}
    # Training batches are gathered and normalised per step (nearly free); the validation and
    # test images are evaluated whole, every epoch, so they are normalised once, here.
    val = Split(_flatten(train_images[val_idx]), train_labels[val_idx].long(), **norm)
    test = Split(_flatten(test_images), test_labels.long(), **norm)
    return Dataset(
        train=Split(train_x, train_labels[train_idx].long(), **norm),
        val=val.normalised(),
        test=test.normalised(),
    )


def _flatten(images: torch.Tensor) -> torch.Tensor:
    return images.reshape(len(images), -1).to(torch.uint8).contiguous()
