from __future__ import annotations

import pytest

import training.data as data


def test_lazy_exports_resolve() -> None:
    assert data.__all__ == sorted(data.__all__)
    for name in data.__all__:
        assert getattr(data, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = data.nope
