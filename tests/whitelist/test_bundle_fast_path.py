"""The clean-row fast path of list parsing (issue 15) gives exactly what the collecting pass gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from whitelist.bundle import _clean_row_entry, _row_entry, _row_entry_collecting
from whitelist.errors import ValidationError
from whitelist.model import EntryStatus

cell = st.none() | st.sampled_from(["", " ", "cam 1", "=1+1", "-x", "@a", "\tx", "a\x01b", "门口", "x" * 300])
rows = st.fixed_dictionaries({
    "device_id": st.sampled_from(["34020000001320000001", " 34020000001320000002 ", "3402", "٣٤٠٢", None]),
    "password": st.none() | st.sampled_from(["", "  ", "pw", " pw "]) | st.integers(0, 3),
    "ip": st.none() | st.sampled_from(["", "10.0.0.7", "10.0.0.0/24;10.0.0.7", "10.0.0.1/24", "fd00::1",
                                       "010.0.0.1", "10.0.0.7,10.0.0.7", "bogus"]),
    "max_channels": st.none() | st.sampled_from(["", "4", "-1", "x", "0"]),
    "not_before": st.none() | st.sampled_from(["", "2026-01-01", "2027-01-01T00:00:00Z", "nope"]),
    "not_after": st.none() | st.sampled_from(["", "2026-06-01", "2026-01-01"]),
    "name": cell, "site": cell, "link": cell, "owner": cell, "contract_ref": cell,
    "manufacturer": cell, "model": cell,
})


@settings(max_examples=400)
@given(rows, st.sampled_from([EntryStatus.APPROVED, EntryStatus.PENDING]))
def test_fast_path_agrees_with_collecting_pass(row: dict[str, object], status: EntryStatus) -> None:
    slow_errors: list[ValidationError] = []
    slow = _row_entry_collecting(row, 7, "3402000000", status, slow_errors)
    fast = _clean_row_entry(row, 7, "3402000000", status)
    if fast is not None:
        assert fast == slow and slow_errors == []
    else:
        assert slow is None and slow_errors            # a refused row always has a named problem
    errors: list[ValidationError] = []
    assert _row_entry(row, 7, "3402000000", status, errors) == slow
    assert [(e.field, e.message, e.line) for e in errors] == [(e.field, e.message, e.line) for e in slow_errors]
