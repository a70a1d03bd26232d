"""Code that reads and builds wire messages, as ``mypy --strict`` sees it
(checked by tests/test_typing.py; never imported or run): each field has its
schema type, and a constructor takes the fields in wire order."""

from __future__ import annotations

from rsc._core import envelope
from rsc._core.messages import Message, ResultDelivery, SpawnRequest


def task_of(msg: Message) -> int | None:
    if type(msg) is SpawnRequest:
        reveal_type(msg.remote_task_id)  # noqa: F821 - mypy's own
        reveal_type(msg.budget)  # noqa: F821
        reveal_type(msg.capability)  # noqa: F821
        return msg.remote_task_id
    return None


def decoded(body: bytes) -> Message:
    return envelope.decode(body)


ok = ResultDelivery("w1", 1, 7, 0, b"out", 1200)
wrong = ResultDelivery("w1", 1, "seven", 0, b"out", 1200)  # the only error mypy reports here
