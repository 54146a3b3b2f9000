"""The event bus consumer ``EVENT_BUS_CONSUMER`` points at: edx-event-bus-redis's
``RedisEventConsumer`` with two differences, both about not losing events.

- **Resume from the group.** Upstream moves the consumer group to the stream's end (``$``) on
  every start unless ``check_backlog`` is passed, so whatever Studio published while the consumer
  was down or being redeployed would be skipped. Here ``check_backlog`` defaults to true: a new
  group reads the stream from its start (replays change nothing: ``signals.events`` orders writes
  by event time) and a restarted consumer continues from its group's last delivered message.
  ``--extra '{"check_backlog": false}'`` restores upstream's behaviour.
- **Undecodable messages** (garbage bytes, an unknown event type, an Avro payload that does not
  decode) are acknowledged and skipped by upstream too, and the loop goes on; but when the
  headers themselves are unreadable upstream logs "no event available" without the stream id.
  Here each one is logged with its stream id, as one line, and counted (``undecodable``).

Started as in any Open edX service::

    manage.py consume_events -t course-catalog-info-changed -g GROUP --extra '{"consumer_name": "NAME"}'
"""

from __future__ import annotations

import logging
from typing import Any

from edx_event_bus_redis import RedisEventConsumer
from edx_event_bus_redis.internal.message import RedisMessage, UnusableMessageError
from openedx_events.event_bus.avro.deserializer import deserialize_bytes_to_event_data
from openedx_events.tooling import OpenEdxPublicSignal

from observability.metrics import count_event

log = logging.getLogger("signals.consumer")


class UndecodableEvent(Exception):
    """A message whose headers were read but whose event type or Avro payload could not be."""


class _TrackedStream:
    """The consumer group stream, remembering the id of the last message it handed out (the
    upstream loop keeps the raw message to itself; an error report needs its id)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.last_id: bytes | None = None

    def _track(self, result: Any) -> Any:
        first = result[0] if isinstance(result, list) and result else result
        self.last_id = first[0] if isinstance(first, tuple) and first else None
        return result

    def read(self, *args: Any, **kwargs: Any) -> Any:
        self.last_id = None
        return self._track(self._stream.read(*args, **kwargs))

    def __getitem__(self, item: Any) -> Any:
        self.last_id = None
        return self._track(self._stream[item])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class CatalogEventConsumer(RedisEventConsumer):
    def __init__(
        self,
        topic: str,
        group_id: str,
        consumer_name: str,
        last_read_msg_id: str | None = None,
        check_backlog: bool = True,
        claim_msgs_older_than: int | None = None,
    ) -> None:
        super().__init__(
            topic,
            group_id,
            consumer_name,
            last_read_msg_id=last_read_msg_id,
            check_backlog=check_backlog,
            claim_msgs_older_than=claim_msgs_older_than,
        )

    def _create_consumer(self, db: Any, full_topic: str) -> Any:
        return _TrackedStream(super()._create_consumer(db, full_topic))

    def emit_signals_from_message(self, msg: RedisMessage) -> None:
        # Decoded once before the receivers run, so that an undecodable payload is told apart from
        # a receiver's failure (both reach record_event_consuming_error as a plain exception).
        try:
            signal = OpenEdxPublicSignal.get_signal_by_type(msg.event_metadata.event_type)
            deserialize_bytes_to_event_data(msg.event_data, signal)
        except Exception as exc:
            raise UndecodableEvent(f"{type(exc).__name__}: {exc}") from exc
        super().emit_signals_from_message(msg)

    def record_event_consuming_error(self, run_context: dict, error: Exception, maybe_message: Any) -> None:
        if isinstance(error, UnusableMessageError | UndecodableEvent):
            stream_id = self.consumer.last_id
            count_event("undecodable")
            log.error(
                "event bus: undecodable message %s on %s skipped (acknowledged; the consumer goes on): %s",
                stream_id.decode() if isinstance(stream_id, bytes) else stream_id,
                self.full_topic,
                error,
            )
        elif maybe_message is not None:
            count_event("receiver_error")
        super().record_event_consuming_error(run_context, error, maybe_message)


__all__ = ["CatalogEventConsumer", "UndecodableEvent"]
