"""DatasetSource: how a wrapped dataset's samples are named and identified."""

from __future__ import annotations

import os

import pytest
import torch

from adaptive_cache.dataset_source import DatasetSource, box, unbox
from tests.adaptive_cache.torchvision_import import torchvision_or_skip
from tests.adaptive_cache.wrapped import TensorPairs, write_class_folders


def _touch(path, content: bytes, bump_ns: int = 0) -> None:
    path.write_bytes(content)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))


def test_the_datasets_own_cache_key_is_the_whole_identity():
    class Keyed(TensorPairs):
        version = "a"

        def cache_key(self, i):
            return f"{self.version}/{i}"

    ds = Keyed()
    src = DatasetSource(ds)
    assert src.identity_from == "cache_key"
    first = (src.sample_id(2), src.identity(2))
    ds.version = "b"
    assert (src.sample_id(2), src.identity(2)) != first
    assert src.sample_id(2) != src.sample_id(3)


def test_image_folder_samples_are_identified_by_their_files(tmp_path):
    tv = torchvision_or_skip()
    root = write_class_folders(tmp_path / "photos", per_class=2)
    src = DatasetSource(tv.datasets.ImageFolder(root))
    assert src.identity_from == "files in .samples"
    path = root / "cat" / "cat0.png"
    before = src.identity(0)
    assert str(path) in before and before != src.identity(1)
    _touch(path, path.read_bytes() + b"\0", bump_ns=10**9)
    assert src.identity(0) != before
    item = unbox(src.load(0))
    assert item[1] == 0 and type(item) is tuple


def test_paths_inside_records_and_items_count(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1")
    b.write_bytes(b"22")

    class Records(torch.utils.data.Dataset):
        def __init__(self):
            self.files = [{"image": str(a), "label": "cat"}, {"image": b, "label": "dog"}]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return i

    src = DatasetSource(Records())
    assert src.identity_from == "files in .files"
    assert src.identity(0).startswith(f"{a}:1:") and src.identity(1).startswith(f"{b}:2:")

    items = DatasetSource([(str(a), 3), "not a file"], load=lambda r: r)
    assert items.identity_from == "items"
    assert items.identity(0).startswith(f"{a}:1:")
    assert items.identity(1) == "'not a file'"  # no file: the item itself
    assert unbox(items.load(1)) == "not a file"


def test_without_keys_or_files_the_class_and_length_identify():
    src = DatasetSource(TensorPairs(5))
    assert src.identity_from == "class and length"
    assert src.identity(0) == src.identity(4) != DatasetSource(TensorPairs(6)).identity(0)
    assert src.sample_id(0) != src.sample_id(4)


def test_a_bare_tensor_is_boxed_away_from_the_top_level():
    t = torch.zeros(2)
    sample = box(t)
    assert not isinstance(next(iter(sample.values())), torch.Tensor) and unbox(sample) is t


def test_what_is_not_a_map_style_dataset_is_refused():
    with pytest.raises(TypeError, match="map-style"):
        DatasetSource(iter([1, 2]))
    with pytest.raises(TypeError, match="load must be callable"):
        DatasetSource([1], load=3)
