"""Plausibility: decide whether a reading may become the published value.

`judge` is a pure function of (memory, reading, clock, rules) -> verdict. It holds the
daemon's first promise: a wrong value is never accepted on the strength of one frame.
A mechanical roller counter only moves forwards, one drum at a time, no faster than
the thing it measures; a reading that breaks that physics is rejected with a stable,
greppable reason. `vote` turns a short burst of frames into one reading, so a single
misread frame never reaches the judge as a value.

What it does:

- Form: exactly `digits` ASCII digits, one confidence and one rolling flag per digit,
  every confidence at least `min_confidence`. The first reading ever is accepted only
  if it passes these checks.
- No decrease, except across the wrap at 10**digits when `wrap` is set: a small value
  just after one near the maximum is an increase, judged like any other increase. A
  wrap is only believed within 1% of the range (no single misread digit can fake one).
- No increase faster than `max_rate_per_hour`, measured from the time the last value
  was first accepted, with one raw unit of slack: the drums show the floor of the true
  value, so a counter at 12345.9 may legitimately show 12346 a moment later.
- An increase larger than `max_jump` waits until `confirm_cycles` consecutive cycles
  show the same value or a consistent rising one.
- Approaching: a new value whose last drum stands just short of its digit
  (`Reading.approaching`) is taken only when a second cycle shows it. Real drums often
  rest a tenth short of their digit, but a drum still rolling in looks the same a
  moment before it gets there, and taking it then publishes the next value too early.
  Waiting costs one cycle for such values; the very first reading is not held back.
- Mid-roll: when the value as read is implausible but lowering one rolling drum by one
  (with the carry borrowing only from drums that are themselves rolling) gives the one
  plausible value >= the last accepted, that value is judged instead. Anything more
  ambiguous is rejected: abstaining costs one cycle, guessing can publish a wrong value.

Memory and the stuck-meter escape: a rejected reading never moves the accepted value
or its time. If one wrong value were accepted (or the counter replaced), every later
correct reading would look implausible forever. Rejected readings therefore form a
run in `Memory.challenger*`: each one that is >= the previous challenger and within
the rate and jump limits of it, measured from the challenger's own time, extends the
run; any other rejected reading restarts it at 1. After `rebaseline_cycles`
consecutive consistent cycles the judge re-baselines to the latest one and says so in
`Verdict.event`. A NoReading, or a reading rejected for its form or confidence,
neither extends nor breaks the run (a dark frame must not reset the escape); an
accepted reading clears it.

Clock jumps: a Pi without an RTC boots with a stale clock that NTP later corrects.

- Time going backwards (now < accepted_at) makes the elapsed time unknown, never
  negative: an unchanged value is still accepted, an increase of one raw unit (the
  quantisation slack) is accepted, anything larger must be confirmed like a big jump.
- Time leaping forwards would let the rate rule allow anything, so the elapsed time it
  uses is capped at 24 h; `max_jump` confirmation applies regardless. A counter that
  truly moved more than 24 h of its maximum rate while the daemon was away is
  recovered by the re-baseline escape, with an event saying so.

`accepted_at` is the time a value was first accepted, not refreshed while the value
stays unchanged. Refreshing it would measure a slow counter's next step against a few
seconds: a meter idle for an hour that then shows +2 would be judged at 2 units in 5 s.

What it does not do: I/O, logging, persisting the memory (state.py), deciding whether
to republish an unchanged value, or reading the clock (the caller passes `now`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from edgemeter.config import MeterConfig, PlausibilityConfig
from edgemeter.ocr import NoReading, Reading

# Longest elapsed time the rate rule will credit: beyond it a clock leap (or a long
# outage) would make any jump look plausible.
RATE_WINDOW_CAP = timedelta(hours=24)
# The drums show floor(true value): two readings an instant apart may differ by one.
QUANTISATION_SLACK = 1
# A wrap is only believed when it crosses the maximum by less than 1% of the range: a
# single misread digit changes the value by at least 10% of the range in that region.
WRAP_WINDOW_DIVISOR = 100
# Float rounding must never turn an exactly-allowed increase into a rejection.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Rules:
    """The plausibility settings, in raw counter units where it matters."""

    digits: int
    decimals: int
    min_confidence: float
    max_rate_per_hour: float | None
    max_jump: float | None
    confirm_cycles: int
    rebaseline_cycles: int
    wrap: bool

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.digits < 1:
            problems.append(f"digits: must be at least 1, got {self.digits}")
        if not 0 <= self.decimals <= max(self.digits, 0):
            problems.append(f"decimals: must be between 0 and digits, got {self.decimals}")
        if not 0.0 <= self.min_confidence <= 1.0:
            problems.append(f"min_confidence: must be between 0 and 1, got {self.min_confidence}")
        for name, limit in (
            ("max_rate_per_hour", self.max_rate_per_hour),
            ("max_jump", self.max_jump),
        ):
            if limit is not None and not (math.isfinite(limit) and limit >= 0):
                problems.append(f"{name}: must be a non-negative number or null, got {limit}")
        for name, cycles in (
            ("confirm_cycles", self.confirm_cycles),
            ("rebaseline_cycles", self.rebaseline_cycles),
        ):
            if cycles < 1:
                problems.append(f"{name}: must be at least 1, got {cycles}")
        if problems:
            raise ValueError("plausibility rules: " + "; ".join(problems))

    @classmethod
    def from_config(cls, meter: MeterConfig, plausibility: PlausibilityConfig) -> Rules:
        return cls(
            digits=meter.digits,
            decimals=meter.decimals,
            min_confidence=plausibility.min_confidence,
            max_rate_per_hour=plausibility.max_rate_per_hour,
            max_jump=plausibility.max_jump,
            confirm_cycles=plausibility.confirm_cycles,
            rebaseline_cycles=plausibility.rebaseline_cycles,
            wrap=plausibility.wrap,
        )

    @property
    def modulus(self) -> int:
        """The value at which the counter rolls over to all zeros."""
        return int(10**self.digits)

    @property
    def scale(self) -> int:
        """Raw units per display unit: config amounts are in display units."""
        return int(10**self.decimals)

    @property
    def raw_rate_per_hour(self) -> float | None:
        if self.max_rate_per_hour is None:
            return None
        return self.max_rate_per_hour * self.scale

    @property
    def raw_jump(self) -> float | None:
        if self.max_jump is None:
            return None
        return self.max_jump * self.scale


@dataclass(frozen=True)
class Memory:
    """Everything the judge needs to remember between cycles; persisted by state.py."""

    value: int | None = None
    accepted_at: datetime | None = None
    challenger: int | None = None
    challenger_at: datetime | None = None
    challenger_count: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "accepted_at": _iso(self.accepted_at),
            "challenger": self.challenger,
            "challenger_at": _iso(self.challenger_at),
            "challenger_count": self.challenger_count,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Memory:
        """Rebuild a Memory from `to_dict` output; ValueError names the bad key."""
        if not isinstance(d, Mapping):
            raise ValueError(f"memory: expected an object, got {type(d).__name__}")
        known = {"value", "accepted_at", "challenger", "challenger_at", "challenger_count"}
        unknown = sorted(str(key) for key in d if key not in known)
        if unknown:
            raise ValueError(f"memory: unknown key(s) {', '.join(unknown)}")
        value = _count_field(d, "value", optional=True)
        challenger = _count_field(d, "challenger", optional=True)
        count = _count_field(d, "challenger_count", optional=False)
        memory = cls(
            value=value,
            accepted_at=_time_field(d, "accepted_at"),
            challenger=challenger,
            challenger_at=_time_field(d, "challenger_at"),
            challenger_count=count if count is not None else 0,
        )
        if memory.value is None and (
            memory.accepted_at is not None or memory.challenger is not None
        ):
            raise ValueError("memory: accepted_at or challenger is set but value is not")
        if (memory.challenger is None) != (memory.challenger_at is None):
            raise ValueError("memory: challenger and challenger_at must be set together")
        if (memory.challenger is None) != (memory.challenger_count == 0):
            raise ValueError(
                "memory.challenger_count: must be 0 without a challenger and at least 1 "
                f"with one, got {memory.challenger_count}"
            )
        return memory


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    value: int | None
    raw: str | None
    reason: str | None
    event: str | None
    memory: Memory
    # How the judged digits were derived when they differ from the OCR's, e.g. a
    # mid-roll resolution; informational, for the debug log.
    note: str | None = None


def to_units(raw: int, decimals: int) -> float:
    """The counter value in display units: to_units(12345, 1) == 1234.5."""
    return float(Decimal(raw).scaleb(-decimals))


def judge(memory: Memory, reading: Reading | NoReading, now: datetime, rules: Rules) -> Verdict:
    """Accept or reject one reading taken at `now` (tz-aware), given what came before."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"judge: now must be timezone-aware (UTC), got naive {now.isoformat()}")
    if isinstance(reading, NoReading):
        return _rejected(memory, None, f"no reading: {reading.reason}")
    problem = _form_problem(reading, rules)
    if problem is not None:
        # An untrustworthy reading says nothing about the counter: it must neither
        # extend nor break a challenger run.
        return _rejected(memory, reading.digits, problem)

    value = int(reading.digits)
    if memory.value is None:
        return Verdict(
            accepted=True,
            value=value,
            raw=reading.digits,
            reason=None,
            event=f"first reading: {reading.digits}",
            memory=Memory(value=value, accepted_at=now),
        )

    assessment = _assess(memory.value, memory.accepted_at, value, now, rules)
    if assessment.outcome == "accept":
        if reading.approaching and value not in (memory.value, memory.challenger):
            # At rest a tenth short, or still rolling in: the next cycle tells.
            return Verdict(
                accepted=False,
                value=None,
                raw=reading.digits,
                reason=f"last drum just short of its digit: {reading.digits} waits a cycle",
                event=None,
                memory=_extend_run(memory, value, now, rules),
            )
        return _accepted(memory, value, now, assessment, raw=reading.digits, rules=rules)

    candidates = _mid_roll_candidates(memory.value, memory.accepted_at, reading, now, rules)
    if len(candidates) == 1:
        candidate, position, candidate_assessment = candidates[0]
        judged = _digits(candidate, rules)
        note = f"mid-roll: read {reading.digits} with digit {position + 1} rolling; judged {judged}"
        return _accepted(
            memory, candidate, now, candidate_assessment, raw=judged, rules=rules, note=note
        )

    run = _extend_run(memory, value, now, rules)
    count = run.challenger_count
    last = _digits(memory.value, rules)
    if assessment.outcome == "confirm" and count >= rules.confirm_cycles:
        across = ", across the wrap" if assessment.wrapped else ""
        return Verdict(
            accepted=True,
            value=value,
            raw=reading.digits,
            reason=None,
            event=(
                f"confirmed jump: +{_units(assessment.delta, rules)} from {last} to "
                f"{reading.digits} after {count} consistent cycles{across}"
            ),
            memory=Memory(value=value, accepted_at=now),
        )

    if assessment.outcome == "confirm":
        reason = (
            f"unconfirmed jump: +{_units(assessment.delta, rules)} ({count}/{rules.confirm_cycles})"
        )
        if assessment.reason is not None:
            reason += f"; {assessment.reason}"
    else:
        reason = assessment.reason or "implausible"
    if candidates:
        resolved = " or ".join(_digits(c, rules) for c, _, _ in candidates)
        reason += f"; mid-roll ambiguous: {resolved}"

    if count >= rules.rebaseline_cycles:
        return Verdict(
            accepted=True,
            value=value,
            raw=reading.digits,
            reason=None,
            event=(
                f"rebaselined from {last} to {reading.digits} after {count} consistent "
                f"cycles: readings kept disagreeing with the last accepted value ({reason})"
            ),
            memory=Memory(value=value, accepted_at=now),
        )
    return Verdict(
        accepted=False, value=None, raw=reading.digits, reason=reason, event=None, memory=run
    )


def vote(readings: Sequence[Reading | NoReading], gate: float = 0.0) -> Reading | NoReading:
    """The reading a strict majority of a burst's frames agree on, else NoReading.

    Every frame that was read must agree: a burst in which one frame read something
    else abstains. Misreads are not independent (the same glare or the same half-turned
    drum fools several frames alike), so a dissenting frame is a sign that the agreeing
    ones may be fooled too; the next cycle is only seconds away.

    A frame whose weakest digit is below `gate` (the judge's min_confidence) counts as
    unread: the engine withheld it, so its digits are a guess, not a dissent.
    """
    if not readings:
        return NoReading("burst empty: no frames")
    groups: dict[str, list[Reading]] = {}
    unread: dict[str, int] = {}
    for frame in readings:
        if isinstance(frame, NoReading):
            why = frame.reason
        elif not frame.confidence >= gate:  # NaN too
            why = f"read below min_confidence {gate:g}"
        else:
            groups.setdefault(frame.digits, []).append(frame)
            continue
        unread[why] = unread.get(why, 0) + 1
    if len(groups) == 1:
        (group,) = groups.values()
        if 2 * len(group) > len(readings):
            return _merge(group, len(readings))
    if not groups:
        return NoReading("burst unread: " + ", ".join(f"{r} x{n}" for r, n in unread.items()))
    # sorted() is stable: ties keep the order the frames came in.
    ranked = sorted(groups.items(), key=lambda item: -len(item[1]))
    tally = [f"{digits} x{len(group)}" for digits, group in ranked]
    if unread:
        tally.append(f"unread x{sum(unread.values())}")
    if len(groups) == 1:
        reasons = ", ".join(f"{r} x{n}" for r, n in unread.items())
        return NoReading(f"burst short of a majority: {', '.join(tally)} ({reasons})")
    return NoReading("burst disagreed: " + ", ".join(tally))


# --- internals -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Assessment:
    """How one candidate value relates to a reference value and time."""

    outcome: Literal["accept", "reject", "confirm"]
    delta: int = 0
    wrapped: bool = False
    reason: str | None = None


def _assess(
    last: int, since: datetime | None, value: int, now: datetime, rules: Rules
) -> _Assessment:
    """Judge `value` at `now` against `last` seen at `since` by the physics alone."""
    increase = _increase(last, value, rules)
    if increase is None:
        return _Assessment(
            "reject",
            reason=f"decrease: {_digits(value, rules)} < last accepted {_digits(last, rules)}",
        )
    delta, wrapped = increase
    if delta == 0:
        # Time never makes an unchanged value implausible, whatever the clock did.
        return _Assessment("accept")
    rate = rules.raw_rate_per_hour
    if rate is not None:
        if since is None or now < since:
            if delta > QUANTISATION_SLACK:
                why = (
                    "no time recorded for the last accepted value"
                    if since is None
                    else "clock is behind the last accepted time"
                )
                return _Assessment("confirm", delta, wrapped, f"{why}, elapsed time unknown")
        else:
            span = now - since
            capped = span > RATE_WINDOW_CAP
            hours = min(span, RATE_WINDOW_CAP).total_seconds() / 3600
            if delta > rate * hours + QUANTISATION_SLACK + _EPSILON:
                limit = rules.max_rate_per_hour
                return _Assessment(
                    "reject",
                    delta,
                    wrapped,
                    f"rate: +{_units(delta, rules)} in {hours:.2f} h"
                    f"{' (capped)' if capped else ''} exceeds max_rate_per_hour="
                    f"{_number(limit if limit is not None else 0.0)}",
                )
    jump = rules.raw_jump
    if jump is not None and delta > jump + _EPSILON:
        return _Assessment("confirm", delta, wrapped)
    return _Assessment("accept", delta, wrapped)


def _increase(last: int, value: int, rules: Rules) -> tuple[int, bool] | None:
    """(increase, crossed the wrap) from `last` to `value`, or None for a decrease."""
    if value >= last:
        return value - last, False
    # `last` beyond the modulus means the digit count changed under a stored value:
    # no wrap can explain that; the re-baseline escape will.
    if rules.wrap and last < rules.modulus:
        delta = value + rules.modulus - last
        if delta <= max(1, rules.modulus // WRAP_WINDOW_DIVISOR):
            return delta, True
    return None


def _mid_roll_candidates(
    last: int, since: datetime | None, reading: Reading, now: datetime, rules: Rules
) -> list[tuple[int, int, _Assessment]]:
    """Plausible values the reading could mean if one rolling drum was read one too high.

    The OCR reports the digit leaving the window, but a drum more than half-way through
    can still be taken for the arriving one. Lowering a drum that shows 0 borrows from
    its neighbour, as the carry 123459 -> 123460 turns both at once; that is only
    believed when every drum the borrow changes is itself seen rolling.
    """
    found: list[tuple[int, int, _Assessment]] = []
    value = int(reading.digits)
    for position, rolling in enumerate(reading.rolling):
        if not rolling:
            continue
        candidate = value - 10 ** (rules.digits - 1 - position)
        if candidate < last:
            continue
        shown = _digits(candidate, rules)
        changed = [i for i, digit in enumerate(shown) if digit != reading.digits[i]]
        if not all(reading.rolling[i] for i in changed):
            continue
        assessment = _assess(last, since, candidate, now, rules)
        if assessment.outcome == "accept":
            found.append((candidate, position, assessment))
    return found


def _extend_run(memory: Memory, value: int, now: datetime, rules: Rules) -> Memory:
    """Memory with `value` as the latest challenger, extending the run if consistent."""
    count = 1
    if memory.challenger is not None:
        # Consistent means: what the judge would accept directly if the challenger
        # had been the accepted value, measured from the challenger's own time.
        relation = _assess(memory.challenger, memory.challenger_at, value, now, rules)
        if relation.outcome == "accept":
            count = memory.challenger_count + 1
    return replace(memory, challenger=value, challenger_at=now, challenger_count=count)


def _accepted(
    memory: Memory,
    value: int,
    now: datetime,
    assessment: _Assessment,
    *,
    raw: str,
    rules: Rules,
    note: str | None = None,
) -> Verdict:
    if value == memory.value:
        # Unchanged: keep the memory identical (no SD write) and keep accepted_at at
        # the first acceptance, so the rate rule measures the counter's real pace.
        kept = memory
        if memory.challenger is not None or memory.accepted_at is None:
            kept = Memory(value=value, accepted_at=memory.accepted_at or now)
        return Verdict(True, value, raw, None, None, kept, note)
    event = None
    if assessment.wrapped and memory.value is not None:
        event = (
            f"wrapped from {_digits(memory.value, rules)} to {raw} "
            f"(+{_units(assessment.delta, rules)} across the counter's maximum)"
        )
    return Verdict(True, value, raw, None, event, Memory(value=value, accepted_at=now), note)


def _rejected(memory: Memory, raw: str | None, reason: str) -> Verdict:
    return Verdict(accepted=False, value=None, raw=raw, reason=reason, event=None, memory=memory)


def _form_problem(reading: Reading, rules: Rules) -> str | None:
    digits = reading.digits
    if len(digits) != rules.digits:
        return f"wrong digit count: got {len(digits)}, want {rules.digits}"
    # str.isdigit() admits superscripts and other scripts' digits; the drums do not.
    if not all(ch in "0123456789" for ch in digits):
        return f"not digits: got {digits!r}"
    if len(reading.confidences) != len(digits) or len(reading.rolling) != len(digits):
        return (
            f"malformed reading: {len(reading.confidences)} confidences and "
            f"{len(reading.rolling)} rolling flags for {len(digits)} digits"
        )
    weak = [
        (position, confidence)
        for position, confidence in enumerate(reading.confidences)
        if not confidence >= rules.min_confidence  # NaN fails here too
    ]
    if weak:
        position, confidence = min(
            weak, key=lambda item: item[1] if not math.isnan(item[1]) else -math.inf
        )
        return (
            f"low confidence: digit {position + 1} at {confidence:.2f} < {rules.min_confidence:.2f}"
        )
    return None


def worth_more_frames(readings: Sequence[Reading | NoReading], gate: float) -> bool:
    """Whether more frames could settle a burst the vote leaves unsettled: every frame
    read at the gate agrees, but they are no majority (the others were unread: glare,
    a shake, a dark frame). A dissent is not: more frames would not make it agree."""
    sure = {r.digits for r in readings if isinstance(r, Reading) and r.confidence >= gate}
    return len(sure) == 1 and isinstance(vote(readings, gate), NoReading)


def _merge(group: Sequence[Reading], burst: int) -> Reading:
    """One reading from frames that agree on the digits (a strict majority of `burst`).

    Each digit gets the confidence that a strict majority of the burst reaches, not the
    best frame's: one lucky frame must not carry a digit that the others barely saw (a
    drum most of the way to the next digit reads as that digit now and then).
    """
    first = group[0]
    size = len(first.digits)
    if any(len(r.confidences) != size or len(r.rolling) != size for r in group):
        return first  # malformed: the judge rejects it with a reason
    majority = burst // 2 + 1
    return Reading(
        digits=first.digits,
        confidences=tuple(
            sorted((_finite_or_zero(r.confidences[i]) for r in group), reverse=True)[majority - 1]
            for i in range(size)
        ),
        rolling=tuple(any(r.rolling[i] for r in group) for i in range(size)),
        approaching=any(r.approaching for r in group),
    )


def _finite_or_zero(confidence: float) -> float:
    return confidence if math.isfinite(confidence) else 0.0


def _digits(raw: int, rules: Rules) -> str:
    """The raw value as the drums show it, leading zeros included."""
    return str(raw).zfill(rules.digits)


def _units(raw_delta: int, rules: Rules) -> str:
    return format(Decimal(raw_delta).scaleb(-rules.decimals), "f")


def _number(value: float) -> str:
    # YAML may hand over an int; show 100, not 100.0, in either case.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _count_field(d: Mapping[str, object], key: str, *, optional: bool) -> int | None:
    raw = d.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        kind = "a non-negative integer or null" if optional else "a non-negative integer"
        raise ValueError(f"memory.{key}: expected {kind}, got {raw!r}")
    return raw


def _time_field(d: Mapping[str, object], key: str) -> datetime | None:
    raw = d.get(key)
    if raw is None:
        return None
    expected = f"memory.{key}: expected an ISO-8601 time with a UTC offset or null, got {raw!r}"
    if not isinstance(raw, str):
        raise ValueError(expected)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as err:
        raise ValueError(expected) from err
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(expected)
    return moment.astimezone(UTC)
