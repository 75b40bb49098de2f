"""Hostile input shared by the property tests: arbitrary JSON values, and JSON text
json.dumps would never write."""

from __future__ import annotations

from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

# JSON text json.dumps would not write: non-standard constants, overflowing numbers,
# nesting past any recursion limit, escapes of lone surrogates and control characters.
RAW_VALUES = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    str(2**64),
    str(2**53 + 1),
    str(-(10**30)),
    "9" * 5000,
    "[" * 3000 + "]" * 3000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    '"\\ud800"',
    '"\\u0000"',
    '"\u202e\u0301\U0001f600"',
    "0x10",
    "01",
    "+1",
    ".5",
    "true",
    '"1"',
    "[]",
    "{}",
)
