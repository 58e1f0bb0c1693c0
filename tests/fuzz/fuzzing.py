"""The fuzz suite's shared pieces: the input strategies every parser is tried with, and the tally of how many
inputs each parser was given (printed by conftest.py at the end of the run)."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

TRIED: Counter[str] = Counter()  # parser -> inputs it was given (every process counts its own: run without -n)

# bounded and reproducible: the same inputs on every machine, the whole suite well under a minute on one core
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=25)

DEEP = 100_000
NASTY_JSON: list[bytes] = [
    b"", b" ", b"\n", b"\x00", b"null", b"true", b"0", b'""', b"[]", b"{}",
    b"[" * DEEP, b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP, b"{" * DEEP,
    b"1e400", b"-1e400", str(2**70).encode(), str(-(2**70)).encode(), b"NaN", b"Infinity", b"-Infinity",
    b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"\xfe\xff\x00{\x00}", b"\xff\xff\xff", b'"\\ud800"', b'"\xed\xa0\x80"',
    b'{"a": 1, "a": 2}', b"\x1f\x8b\x08\x00", b"PAR1", b"PAR1\x00\x00PAR1",
]
# values of every JSON type, with the ones parsers trip on: huge and non-finite numbers, lone surrogates, nesting
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([2**63, 2**70, -(2**70), 0, -1])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.sampled_from(["", "\ud800", "1e400", "2026-13-45", "1700000000", "\x00", "NaN"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def dumps(value) -> bytes:
    """JSON text of any value json_values draws (NaN and Infinity as Python writes them; lone surrogates kept)."""
    return json.dumps(value).encode("utf-8", "surrogatepass")


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Bytes near a valid file: cut at any length, one byte changed, a slice removed or doubled, bytes put in,
    a BOM in front, re-encoded as UTF-16."""
    n = len(valid)
    at = st.integers(0, max(n - 1, 0))
    return st.one_of(
        at.map(lambda i: valid[:i]),
        st.tuples(at, st.integers(0, 255)).map(lambda t: valid[:t[0]] + bytes([t[1]]) + valid[t[0] + 1:]),
        st.tuples(at, at).map(lambda t: valid[:min(t)] + valid[max(t):]),
        st.tuples(at, at).map(lambda t: valid[:max(t)] + valid[min(t):]),
        st.tuples(at, st.binary(min_size=1, max_size=16)).map(lambda t: valid[:t[0]] + t[1] + valid[t[0]:]),
        st.just(b"\xef\xbb\xbf" + valid),
        st.just(b"\xff\xfe" + valid.decode("utf-8", "replace").encode("utf-16-le")),
    )


def json_documents(valid: dict) -> st.SearchStrategy[bytes]:
    """JSON documents shaped like `valid`: a field dropped, given another value of any type or given twice, extra
    fields, or any value at all."""
    keys = sorted(valid)

    def replaced(t):
        key, value = t
        return dumps({**valid, key: value})

    def twice(t):
        key, value = t
        body = dumps(valid)
        return b"{" + dumps(key) + b":" + dumps(value) + (b"," if valid else b"") + body[1:]

    return st.one_of(
        st.tuples(st.sampled_from(keys), json_values).map(replaced),
        st.sampled_from(keys).map(lambda k: dumps({x: v for x, v in valid.items() if x != k})),
        st.tuples(st.sampled_from(keys), json_values).map(twice),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(lambda extra: dumps({**valid, **extra})),
        json_values.map(dumps),
    )


def nasty(valid: bytes, shaped: dict | None = None) -> st.SearchStrategy[bytes]:
    """Everything a parser of `valid`'s format is tried with."""
    parts = [st.binary(max_size=512), st.sampled_from(NASTY_JSON), mutations(valid)]
    if shaped is not None:
        parts.append(json_documents(shaped))
    return st.one_of(*parts)
