"""ExactIndex: value -> ids, with replace-on-re-add and removal."""

from __future__ import annotations

import pytest

from bastion.index import ExactIndex

MD5_A = "9e107d9d372bb6826bd81d3542a419d6"
MD5_B = "e4d909c290d0fb1ca068ffaddf22cbd0"


def test_lookup_returns_every_id_holding_the_value() -> None:
    index = ExactIndex()
    index.add([3, 1, 2], [MD5_A, MD5_A, MD5_B])
    assert index.lookup(MD5_A) == [1, 3]
    assert index.lookup(MD5_B) == [2]
    assert index.lookup("0" * 32) == []
    assert len(index) == 3


def test_values_are_compared_exactly() -> None:
    index = ExactIndex()
    index.add([1], ["https://example.com/a"])
    assert index.lookup("https://example.com/A") == []
    assert index.lookup(MD5_A.upper()) == []


def test_remove_and_readd() -> None:
    index = ExactIndex()
    index.add([1, 2], [MD5_A, MD5_A])
    index.remove([1, 99])  # unknown ids ignored
    assert index.lookup(MD5_A) == [2]
    index.remove([2])
    assert index.lookup(MD5_A) == [] and len(index) == 0
    index.add([1], [MD5_A])
    assert index.lookup(MD5_A) == [1]


def test_adding_an_id_again_replaces_its_value() -> None:
    index = ExactIndex()
    index.add([1], [MD5_A])
    index.add([1], [MD5_B])
    assert index.lookup(MD5_A) == []
    assert index.lookup(MD5_B) == [1]
    assert len(index) == 1


def test_bad_input() -> None:
    index = ExactIndex()
    with pytest.raises(ValueError, match="2 ids but 1 values"):
        index.add([1, 2], [MD5_A])
    with pytest.raises(ValueError, match="item 1: value must be a hashable, non-None"):
        index.add([1, 2], [MD5_A, None])
    with pytest.raises(ValueError, match="item 0: value must be a hashable"):
        index.add([1], [["unhashable"]])
