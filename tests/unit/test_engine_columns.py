"""The engine's typed column classes declare exactly the columns their specs create."""

from __future__ import annotations

import numpy as np
import pytest

from bangpae.engine.columns import Columns, DeviceColumns, OrderColumns, PersonColumns


@pytest.mark.parametrize("cls", [PersonColumns, DeviceColumns, OrderColumns])
def test_every_column_of_a_spec_is_declared_and_every_declared_column_is_made(
    cls: type[Columns],
) -> None:
    declared = {name for name in cls.__annotations__ if name != "SPEC"}
    assert declared == set(cls.SPEC)


@pytest.mark.parametrize("cls", [PersonColumns, DeviceColumns, OrderColumns])
def test_a_new_slot_holds_each_column_at_its_fill_and_dtype(cls: type[Columns]) -> None:
    cols = cls()
    assert [cols.add(), cols.add(), cols.add()] == [0, 1, 2]
    for name, (dtype, fill) in cls.SPEC.items():
        a = getattr(cols, name)
        assert a.dtype == np.dtype(dtype) and len(a) >= 3
        assert np.array_equal(a[:3], np.full(3, fill, dtype=dtype), equal_nan=a.dtype.kind == "f")
