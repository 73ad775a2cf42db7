"""User events (``POST /events``): what a valid one is, and how it moves an item's counters.

An event is ``{"user_id", "item_id", "event": "impression"|"click"|"conversion", "timestamp"}``
(epoch seconds; the server's clock when left out). Each is one row of the click log the offline
hotness reads: an ``impression`` is a display that was not clicked, a ``click`` or ``conversion`` a
display that was (post a display's outcome once). Clicks and conversions also append the item to the
user's history. Every event adds its forward-decayed weight to the item's counters
(:class:`~tfrs_recsys.serving.stores.base.StoreMeta`), and the item's hotness is recomputed with
the offline formula (:func:`tfrs_recsys.data.ctr_features.smoothed_hotness`) under the Beta prior
frozen at the last publish.
"""
from __future__ import annotations

import dataclasses
import math
import unicodedata
from typing import Iterable, Sequence

import numpy as np

from tfrs_recsys.data.ctr_features import decay_weights, smoothed_hotness
from tfrs_recsys.data.splits import SECONDS_PER_DAY
from tfrs_recsys.serving.stores.base import StoreMeta

KINDS = ("impression", "click", "conversion")
HISTORY_KINDS = ("click", "conversion")
MAX_BATCH = 1000
MAX_AHEAD_SECONDS = SECONDS_PER_DAY
EARLIEST_TIMESTAMP = 946_684_800  # 2000-01-01: an earlier epoch second is a unit mistake, not an event
MAX_ID_CHARS = 256  # user and item ids are stored as keys and members: bound them
# Forward weights are 2 ** (half-lives since the counters' time): past this, publish again.
MAX_HALF_LIVES_AHEAD = 900.0


class EventError(ValueError):
    """A rejected event batch; ``field`` names the offending field (e.g. ``events[3].event``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class Event:
    """One validated event."""

    user_id: str
    item_id: str
    kind: str
    timestamp: float

    @property
    def enters_history(self) -> bool:
        """Whether the item joins the user's history (a click or a conversion)."""
        return self.kind in HISTORY_KINDS


def _id(record: dict, key: str, where: str) -> str:
    """The id, stripped as training and ``/recommend`` read ids."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise EventError(f"{where}.{key}", "missing or empty; give the id as a non-empty string")
    text = str(value).strip()
    if len(text) > MAX_ID_CHARS:
        raise EventError(f"{where}.{key}", f"is {len(text)} characters long; ids have at most {MAX_ID_CHARS}")
    if problem := id_problem(text):
        raise EventError(f"{where}.{key}", problem)
    return text


def id_problem(text: str) -> str | None:
    """Why an id cannot be stored and asked for again (``GET /recommend/<id>``), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no answer naming it could be written
        return "is not valid Unicode text (a lone surrogate); send UTF-8 text"
    if any(unicodedata.category(c) == "Cc" for c in text):
        return "holds a control character (NUL, a line break, a tab): no URL or log line can name it"
    return None


def parse_events(payload, now: float, *, max_batch: int = MAX_BATCH) -> list[Event]:
    """Validates a ``POST /events`` body: one event, a list, or ``{"events": [...]}``.

    Args:
      payload: The decoded JSON.
      now: The server's clock (epoch seconds).
      max_batch: The most events one request may carry.

    Returns:
      The events, in order.

    Raises:
      EventError: The first bad field (nothing of the batch is to be applied).
    """
    if isinstance(payload, dict) and "events" in payload:
        payload, where = payload["events"], "events"
    elif isinstance(payload, dict):
        payload, where = [payload], "event"
    else:
        where = "events"
    if not isinstance(payload, list):
        raise EventError(where, "must be a list of event objects")
    if not payload:
        raise EventError(where, "is empty; post at least one event")
    if len(payload) > max_batch:
        raise EventError(where, f"holds {len(payload)} events, more than the limit of {max_batch}; "
                                "split the batch")
    events = []
    for i, record in enumerate(payload):
        at = f"{where}[{i}]" if where == "events" else where
        if not isinstance(record, dict):
            raise EventError(at, "must be an object with user_id, item_id, event, timestamp")
        user, item = _id(record, "user_id", at), _id(record, "item_id", at)
        kind = record.get("event")
        if kind not in KINDS:
            raise EventError(f"{at}.event", f"{kind!r} is not one of {list(KINDS)}")
        stamp = record.get("timestamp", now)
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or abs(stamp) > 1e300 or not \
                math.isfinite(stamp):  # an integer of 400 digits is no time, and no float either
            shown = repr(stamp) if len(repr(stamp)) <= 40 else repr(stamp)[:40] + "..."
            raise EventError(f"{at}.timestamp", f"{shown} is not a number of epoch seconds")
        if stamp > now + MAX_AHEAD_SECONDS:
            raise EventError(f"{at}.timestamp", f"{stamp:.6g} is {(stamp - now) / 3600:.3g} h ahead of the "
                                                f"server's clock ({now:.0f}); at most 24 h ahead is accepted")
        if stamp < EARLIEST_TIMESTAMP:
            raise EventError(f"{at}.timestamp", f"{stamp:.6g} is before 2000-01-01 ({EARLIEST_TIMESTAMP}); "
                                                "give epoch seconds")
        # counted at the server's clock at the latest: a client's clock ahead cannot move the store's
        events.append(Event(user, item, kind, float(min(stamp, now))))
    return events


def increments(events: Iterable[Event], meta: StoreMeta) -> dict[str, tuple[float, float, float]]:
    """What the events add to each item's ``(impressions, clicks, interactions)`` counters.

    Args:
      events: Validated events.
      meta: The live version's meta (counters' time, half-lives).

    Returns:
      ``item -> (impressions, clicks, interactions)`` to add, forward-decayed to ``meta.as_of``.

    Raises:
      EventError: An event is so far past ``meta.as_of`` that its weight would overflow.
    """
    out: dict[str, list[float]] = {}
    half_life, events = min(meta.hot_half_life_days, meta.feature_half_life_days), list(events)
    for index, event in enumerate(events):
        ages = (meta.as_of - event.timestamp) / SECONDS_PER_DAY
        if -ages / half_life > MAX_HALF_LIVES_AHEAD:
            field = f"events[{index}].timestamp" if len(events) > 1 else "event.timestamp"
            raise EventError(field, (
                f"{event.timestamp:.0f} is {-ages / 365.25:.1f} years after the store's data ends "
                f"({meta.as_of:.0f}): past {MAX_HALF_LIVES_AHEAD:.0f} half-lives of {half_life:g} days an "
                "event cannot be weighed against the published counters; publish a store built from a log "
                f"that reaches within {MAX_HALF_LIVES_AHEAD * half_life / 365.25:.0f} years of the events, "
                "or send each event's own time"))
        hot = float(decay_weights(ages, meta.hot_half_life_days))
        clicked = float(event.enters_history)
        sums = out.setdefault(event.item_id, [0.0, 0.0, 0.0])
        sums[0] += hot
        sums[1] += hot * clicked
        sums[2] += float(decay_weights(ages, meta.feature_half_life_days)) * clicked
    return {item: tuple(sums) for item, sums in out.items()}


def hotness(impressions: float, clicks: float, meta: StoreMeta) -> float:
    """The hot list's score of an item: the offline hotness of its counters at ``meta.as_of``."""
    return float(smoothed_hotness(impressions, clicks, meta.prior_strength, meta.prior_mean)[1])


def hotness_feature(interactions: Sequence[float], meta: StoreMeta, clock: float) -> np.ndarray:
    """The ranker's ``item_hotness``: ``log1p`` of the decayed interactions as of ``clock`` (the
    store's newest event, at least ``meta.as_of``), as the offline feature store computes it."""
    age = (max(clock, meta.as_of) - meta.as_of) / SECONDS_PER_DAY
    decay = decay_weights(age, meta.feature_half_life_days)
    return np.log1p(np.asarray(interactions, np.float64) * decay)


def staleness_warning(meta: StoreMeta, now: float, half_lives: float = 52.0) -> str | None:
    """What to say when the store's data ends long before ``now``, else None.

    Counters are decayed with a half-life ``h``: an event ``d`` days after the data ends weighs
    ``2 ** (d / h)`` events of its last day, so past a year of weekly half-lives one event at the server's
    clock outweighs the whole published history (and the hot list's prior) and tops the hot list.

    Args:
      meta: The live version's meta (the data's end ``as_of``, the half-lives).
      now: The time events are stamped with (the server's clock).
      half_lives: How many half-lives past ``as_of`` are said.

    Returns:
      The warning, or None.
    """
    half_life = min(meta.hot_half_life_days, meta.feature_half_life_days)
    days = (now - meta.as_of) / SECONDS_PER_DAY
    if days / half_life <= half_lives:
        return None
    return (f"the store's data ends {days:.0f} days before this machine's clock ({meta.as_of:.0f}): an event "
            f"stamped now weighs 2^{days / half_life:.0f} times an event of the data's last day (half-life "
            f"{half_life:g} days), so one click outweighs the published counters. Publish a store built from "
            "recent data, or send events with their own times (timestamp)")
