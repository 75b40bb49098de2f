"""frame_body must read every frame's body exactly as FastStream's parser does."""

from __future__ import annotations

import asyncio

from faststream.redis.parser import BinaryMessageFormatV1
from hypothesis import given
from hypothesis import strategies as st

from carewatch.bus import redis_frame
from carewatch.bus_batch_reader import entry_body, frame_body, read_reply

texts = st.text(max_size=40)
# FastStream writes a header's length in characters, so its own parser misreads a frame
# with a non-ASCII header (and returns the whole frame); frame_body never reads them.
ascii_texts = st.text(st.characters(max_codepoint=127), max_size=40)


def _faststream_frame(body: bytes, headers: dict[str, str], correlation_id: str) -> bytes:
    return asyncio.run(
        BinaryMessageFormatV1.encode(
            message=body, reply_to=None, headers=headers, correlation_id=correlation_id
        )
    )


@given(st.binary(max_size=2000), st.dictionaries(ascii_texts, ascii_texts, max_size=4), ascii_texts)
def test_faststream_frames_give_the_parsers_body(
    body: bytes, headers: dict[str, str], correlation_id: str
) -> None:
    frame = _faststream_frame(body, headers, correlation_id)
    assert frame_body(frame) == BinaryMessageFormatV1.parse(frame)[0] == body


@given(st.binary(max_size=200), st.dictionaries(texts, texts, max_size=4), texts)
def test_non_ascii_headers_still_give_the_body(
    body: bytes, headers: dict[str, str], correlation_id: str
) -> None:
    assert frame_body(_faststream_frame(body, headers, correlation_id)) == body


@given(st.binary(max_size=2000), texts)
def test_ingest_frames_give_their_body(body: bytes, correlation_id: str) -> None:
    assert frame_body(redis_frame(body, correlation_id)) == body


@given(st.binary(max_size=300))
def test_anything_else_is_read_as_the_parser_reads_it(raw: bytes) -> None:
    """Raw bytes (almost never a V1 head) and a V1 head with random offsets: no
    exception, and what is not a whole V1 frame gets exactly the parser's answer."""
    head = BinaryMessageFormatV1.IDENTITY_HEADER + b"\x00\x01"
    for frame in (raw, head + raw):
        body = frame_body(frame)
        assert isinstance(body, bytes)
        if not frame.startswith(head):
            assert body == BinaryMessageFormatV1.parse(frame)[0]


def test_a_legacy_json_envelope_still_parses() -> None:
    envelope = b'{"data": "{\\"v\\":1}", "headers": {"correlation_id": "x"}}'
    assert frame_body(envelope) == b'{"v":1}'


def test_a_read_reply_gives_ids_and_bodies_in_either_protocol() -> None:
    ours = [b"__data__", redis_frame(b'{"n":1}', "c1")]
    other = [b"x", b"1", b"__data__", redis_frame(b"first", "c2"), b"__data__", b"last"]
    entries = [[b"1-0", ours], [b"2-0", other], [b"3-0", [b"x", b"1"]], [b"4-0", None]]
    expected = (
        [b"1-0", b"2-0", b"3-0", b"4-0"],
        [b'{"n":1}', frame_body(b"last"), frame_body(b""), frame_body(b"")],
    )
    assert read_reply({b"s": entries}) == expected  # RESP3: a map of stream to entries
    assert read_reply([[b"s", entries]]) == expected  # RESP2
    assert read_reply(None) == ([], [])
    # what redis-py's parser made of the same entry (a dict of its fields) reads alike
    assert entry_body(dict(zip(other[::2], other[1::2], strict=True))) == expected[1][1]
