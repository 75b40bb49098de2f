"""Pure parts of ingest: dedup decisions, in-order acks, device state merging."""

from __future__ import annotations

from ingest.acks import DONE_TICKET, AckTracker, Ticket
from ingest.dead_letters import PAYLOAD_CAP_BYTES, DeadLetter, as_params
from ingest.dedup import DONE, Claim, classify
from ingest.device_state import merge
from ingest.mqtt_source import receive_maximum
from ingest.validate import DeviceUpdate, Rejection

TOKEN = b"ingest-a-0|boot2"


def test_dedup_classification() -> None:
    assert classify(None, "ingest-a-0", TOKEN) is Claim.NEW
    assert classify(TOKEN, "ingest-a-0", TOKEN) is Claim.OWN_PENDING
    assert classify(DONE, "ingest-a-0", TOKEN) is Claim.DUPLICATE
    assert classify(b"ingest-b-0|boot9", "ingest-a-0", TOKEN) is Claim.DUPLICATE
    # Same client id, older boot: a crashed run left it unfinished, take it over.
    assert classify(b"ingest-a-0|boot1", "ingest-a-0", TOKEN) is Claim.TAKEOVER
    # A prefix of our id is somebody else.
    assert classify(b"ingest-a|boot1", "ingest-a-0", TOKEN) is Claim.DUPLICATE


def test_acks_go_out_in_arrival_order_once_durable() -> None:
    acked: list[str] = []
    tracker: AckTracker[str] = AckTracker(acked.extend)
    first, second = Ticket(2), Ticket(1)
    tracker.track("m1", first)
    tracker.track("m2", second)
    tracker.track("m3-dup-of-m1", first)
    tracker.track("m4-dup-done", DONE_TICKET)
    second.complete()
    assert tracker.release() == 0  # m1 still gates the rest
    first.complete()
    assert tracker.release() == 0  # published but not stored yet
    first.complete()
    assert tracker.release() == 4
    assert acked == ["m1", "m2", "m3-dup-of-m1", "m4-dup-done"]
    assert len(tracker) == 0


def test_acks_of_a_shared_ticket_go_out_as_runs_without_reordering() -> None:
    runs: list[list[str]] = []
    tracker: AckTracker[str] = AckTracker(lambda run: runs.append(list(run)))
    batch = Ticket(1)
    for message, ticket in [("a", batch), ("b", batch), ("c-dup", DONE_TICKET), ("d", batch)]:
        tracker.track(message, ticket)
    assert len(tracker) == 4
    assert tracker.release() == 0  # "c-dup" is done, but "a" and "b" come first
    batch.complete()
    assert tracker.release() == 4
    assert runs == [["a", "b"], ["c-dup"], ["d"]]
    assert len(tracker) == 0


def test_device_updates_merge_latest_wins_and_keeps_known_values() -> None:
    merged = merge(
        [
            DeviceUpdate("w1", 1000, online=True, seq=1, battery=90),
            DeviceUpdate("w1", 2000, online=True, seq=2),
            DeviceUpdate("d1", 1500, online=True, seq=5),
            DeviceUpdate("w1", 3000, online=False),
        ]
    )
    assert merged["w1"] == DeviceUpdate("w1", 3000, online=False, seq=2, battery=90)
    assert merged["d1"].seq == 5


def test_dead_letter_payload_is_capped_and_text_has_no_nul() -> None:
    letter = DeadLetter(
        1_764_000_000_000,
        "cw/v1/dev/w1/telemetry",
        Rejection("oversized", "too big\x00", "w1"),
        b"x" * (PAYLOAD_CAP_BYTES * 2),
    )
    _, topic, device_id, reason, detail, payload = as_params(letter)
    assert isinstance(payload, bytes) and len(payload) == PAYLOAD_CAP_BYTES
    assert isinstance(detail, str) and "\x00" not in detail and "truncated" in detail
    assert (topic, device_id, reason) == ("cw/v1/dev/w1/telemetry", "w1", "oversized")


def test_receive_maximum_covers_several_batches_within_protocol_limit() -> None:
    assert receive_maximum(500) == 4000
    assert receive_maximum(1) == 1000
    assert receive_maximum(100_000) == 65535


def test_dead_letters_kept_per_device_and_in_all_per_window() -> None:
    from ingest.dead_letters import DeadLetterLimit

    now = [0.0]
    limit = DeadLetterLimit(per_device=3, total=5, window_s=60, clock=lambda: now[0])
    assert [limit.keep("A") for _ in range(5)] == [True, True, True, False, False]
    assert [limit.keep("B") for _ in range(3)] == [True, True, False]  # 5 in all
    assert limit.keep("C") is False
    now[0] = 60.0  # a new window
    assert [limit.keep("A") for _ in range(4)] == [True, True, True, False]
    assert limit.keep("C") is True
