"""EntryKey: typed (tier, digest) keys and their wire form."""

from __future__ import annotations

import pickle

import pytest

from adaptive_cache.keys import EntryKey


def test_wire_form_round_trips():
    key = EntryKey("tensor", "0123abcd")
    assert str(key) == "tensor-0123abcd"
    assert EntryKey.parse(str(key)) == key
    assert pickle.loads(pickle.dumps(key)) == key
    assert key.tier == "tensor" and key.digest == "0123abcd"


@pytest.mark.parametrize("name", ["tensor", "-abc", "Tensor-abc", "tensor-", "tensor-ab-cd", ""])
def test_parse_rejects_names_that_are_not_keys(name):
    with pytest.raises(ValueError, match="expected '<tier>-<digest>'"):
        EntryKey.parse(name)
