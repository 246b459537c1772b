"""The plausibility judge: every rule, every rejection reason, and the escape hatches."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemeter.config import MeterConfig, PlausibilityConfig
from edgemeter.ocr import NoReading, Reading
from edgemeter.plausibility import (
    Memory,
    Rules,
    Verdict,
    judge,
    to_units,
    vote,
    worth_more_frames,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_rules(**overrides: object) -> Rules:
    settings_: dict[str, object] = {
        "digits": 6,
        "decimals": 0,
        "min_confidence": 0.6,
        "max_rate_per_hour": 100.0,
        "max_jump": None,
        "confirm_cycles": 3,
        "rebaseline_cycles": 10,
        "wrap": True,
    }
    settings_.update(overrides)
    return Rules(**settings_)  # type: ignore[arg-type]


def read(digits: str, *, confidence: float = 0.95, rolling: tuple[int, ...] = ()) -> Reading:
    """A reading of `digits`; `rolling` lists 1-based drum positions caught mid-roll."""
    return Reading(
        digits=digits,
        confidences=(confidence,) * len(digits),
        rolling=tuple(i + 1 in rolling for i in range(len(digits))),
    )


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def settled(value: int, minutes: float = 0) -> Memory:
    return Memory(value=value, accepted_at=at(minutes))


def run_cycles(
    memory: Memory, readings: list[Reading | NoReading], rules: Rules, start: float, step: float
) -> list[Verdict]:
    verdicts = []
    for i, reading in enumerate(readings):
        verdict = judge(memory, reading, at(start + i * step), rules)
        verdicts.append(verdict)
        memory = verdict.memory
    return verdicts


# --- form and confidence ---------------------------------------------------------------


def test_first_reading_is_accepted_with_an_event() -> None:
    verdict = judge(Memory(), read("012345"), T0, make_rules())

    assert verdict.accepted
    assert verdict.value == 12345
    assert verdict.event == "first reading: 012345"
    assert verdict.memory == Memory(value=12345, accepted_at=T0)


def test_first_reading_with_low_confidence_is_rejected() -> None:
    verdict = judge(Memory(), read("012345", confidence=0.3), T0, make_rules())

    assert not verdict.accepted
    assert verdict.reason is not None
    assert verdict.reason.startswith("low confidence:")
    assert verdict.memory == Memory()


def test_no_reading_is_rejected_with_its_reason_and_leaves_memory_alone() -> None:
    memory = settled(12345)

    verdict = judge(memory, NoReading("too dark"), at(1), make_rules())

    assert not verdict.accepted
    assert verdict.reason == "no reading: too dark"
    assert verdict.raw is None
    assert verdict.memory is memory


def test_wrong_digit_count_is_rejected() -> None:
    verdict = judge(settled(12345), read("12346"), at(1), make_rules())

    assert verdict.reason == "wrong digit count: got 5, want 6"
    assert verdict.raw == "12346"


@pytest.mark.parametrize("digits", ["01234a", "01234 ", "01234\u0661", "01234\u00b2"])
def test_characters_other_than_ascii_digits_are_rejected(digits: str) -> None:
    verdict = judge(settled(12345), read(digits), at(1), make_rules())

    assert not verdict.accepted
    assert verdict.reason is not None
    assert verdict.reason.startswith("not digits:")


def test_reading_with_missing_confidences_is_rejected_as_malformed() -> None:
    reading = Reading(digits="012346", confidences=(0.9,) * 5, rolling=(False,) * 6)

    verdict = judge(settled(12345), reading, at(1), make_rules())

    assert verdict.reason is not None
    assert verdict.reason.startswith("malformed reading:")


def test_low_confidence_names_the_weakest_digit() -> None:
    reading = Reading(
        digits="012346",
        confidences=(0.9, 0.9, 0.9, 0.9, 0.55, 0.41),
        rolling=(False,) * 6,
    )

    verdict = judge(settled(12345), reading, at(1), make_rules())

    assert verdict.reason == "low confidence: digit 6 at 0.41 < 0.60"


def test_nan_confidence_is_rejected() -> None:
    verdict = judge(settled(12345), read("012346", confidence=math.nan), at(1), make_rules())

    assert not verdict.accepted
    assert verdict.reason is not None
    assert verdict.reason.startswith("low confidence:")


# --- direction and rate ----------------------------------------------------------------


def test_decrease_is_rejected() -> None:
    verdict = judge(settled(12345), read("012340"), at(1), make_rules())

    assert not verdict.accepted
    assert verdict.reason == "decrease: 012340 < last accepted 012345"
    assert verdict.raw == "012340"


def test_small_increase_within_rate_is_accepted() -> None:
    verdict = judge(settled(12345), read("012346"), at(1), make_rules())

    assert verdict.accepted
    assert verdict.value == 12346
    assert verdict.event is None
    assert verdict.memory == Memory(value=12346, accepted_at=at(1))


def test_a_new_value_whose_last_drum_is_approaching_waits_for_a_second_cycle() -> None:
    # 12345.85 read as 12346: the last drum may still be rolling in.
    early = dataclasses.replace(read("012346"), approaching=True)

    verdicts = run_cycles(settled(12345), [early, early], make_rules(), start=1, step=1)

    assert not verdicts[0].accepted
    assert verdicts[0].reason is not None and "short of its digit" in verdicts[0].reason
    assert verdicts[0].memory.value == 12345
    assert verdicts[1].accepted and verdicts[1].value == 12346


def test_an_approaching_drum_on_the_accepted_value_is_taken_at_once() -> None:
    verdict = judge(
        settled(12346), dataclasses.replace(read("012346"), approaching=True), at(1), make_rules()
    )

    assert verdict.accepted and verdict.value == 12346


def test_an_approaching_value_seen_again_settled_is_taken_then() -> None:
    early = dataclasses.replace(read("012346"), approaching=True)

    verdicts = run_cycles(
        settled(12345), [early, NoReading("glare"), read("012346")], make_rules(), 1, 1
    )

    assert [v.accepted for v in verdicts] == [False, False, True]
    assert verdicts[2].value == 12346


def test_the_vote_keeps_an_approaching_flag_any_frame_raised() -> None:
    frames = [read("012346"), dataclasses.replace(read("012346"), approaching=True)]

    merged = vote([*frames, read("012346")])

    assert isinstance(merged, Reading) and merged.approaching


def test_rate_exceeded_is_rejected() -> None:
    verdict = judge(settled(12345), read("012845"), at(6), make_rules(max_rate_per_hour=100))

    assert not verdict.accepted
    assert verdict.reason == "rate: +500 in 0.10 h exceeds max_rate_per_hour=100"


def test_rate_allows_one_raw_unit_of_quantisation_slack() -> None:
    rules = make_rules(max_rate_per_hour=1.0)

    plus_one = judge(settled(12345), read("012346"), at(1), rules)
    plus_two = judge(settled(12345), read("012347"), at(1), rules)

    assert plus_one.accepted
    assert not plus_two.accepted


def test_rate_boundary_is_rate_times_elapsed_plus_slack() -> None:
    rules = make_rules(max_rate_per_hour=60.0)

    at_limit = judge(settled(12345), read("012406"), at(60), rules)
    beyond = judge(settled(12345), read("012407"), at(60), rules)

    assert at_limit.accepted
    assert not beyond.accepted


def test_rate_limit_is_in_display_units_when_the_counter_has_decimals() -> None:
    rules = make_rules(decimals=1, max_rate_per_hour=10.0)

    allowed = judge(settled(12345), read("012396"), at(30), rules)
    too_fast = judge(settled(12345), read("012397"), at(30), rules)

    assert allowed.accepted
    assert too_fast.reason == "rate: +5.2 in 0.50 h exceeds max_rate_per_hour=10"


def test_rate_rule_disabled_with_none_accepts_a_fast_increase() -> None:
    verdict = judge(settled(12345), read("099999"), at(1), make_rules(max_rate_per_hour=None))

    assert verdict.accepted
    assert verdict.value == 99999


def test_misread_digit_in_a_rising_stream_is_rejected_and_the_stream_continues() -> None:
    rules = make_rules(max_rate_per_hour=60.0)
    stream = [read("012346"), read("018346"), read("012347"), read("012248"), read("012348")]

    verdicts = run_cycles(settled(12345), list(stream), rules, start=1, step=1)

    assert [v.accepted for v in verdicts] == [True, False, True, False, True]
    assert verdicts[1].reason is not None
    assert verdicts[1].reason.startswith("rate: +6000")
    assert verdicts[3].reason == "decrease: 012248 < last accepted 012347"
    assert verdicts[-1].memory == Memory(value=12348, accepted_at=at(5))


# --- unchanged values ------------------------------------------------------------------


def test_unchanged_value_is_accepted_and_keeps_memory_identical() -> None:
    memory = settled(12345)

    verdict = judge(memory, read("012345"), at(30), make_rules())

    assert verdict.accepted
    assert verdict.value == 12345
    assert verdict.event is None
    assert verdict.memory is memory


def test_unchanged_value_keeps_the_time_it_was_first_accepted() -> None:
    # A slow counter idles for an hour, then moves by 2: judged over the hour, not 5 s.
    rules = make_rules(max_rate_per_hour=2.0)
    memory = settled(12345)
    for minute in range(5, 61, 5):
        memory = judge(memory, read("012345"), at(minute), rules).memory

    verdict = judge(memory, read("012347"), at(60) + timedelta(seconds=5), rules)

    assert memory.accepted_at == T0
    assert verdict.accepted


def test_unchanged_value_clears_a_pending_challenger() -> None:
    memory = Memory(
        value=12345, accepted_at=T0, challenger=19999, challenger_at=at(1), challenger_count=2
    )

    verdict = judge(memory, read("012345"), at(2), make_rules())

    assert verdict.accepted
    assert verdict.memory == Memory(value=12345, accepted_at=T0)


# --- wrap-around -----------------------------------------------------------------------


def test_wrap_around_at_the_maximum_is_accepted_as_an_increase() -> None:
    verdict = judge(settled(999998), read("000003"), at(60), make_rules())

    assert verdict.accepted
    assert verdict.value == 3
    assert verdict.event == "wrapped from 999998 to 000003 (+5 across the counter's maximum)"


def test_wrap_around_is_a_decrease_when_wrap_is_disabled() -> None:
    verdict = judge(settled(999998), read("000003"), at(60), make_rules(wrap=False))

    assert verdict.reason == "decrease: 000003 < last accepted 999998"


def test_wrap_around_must_respect_the_rate() -> None:
    verdict = judge(settled(999998), read("000500"), at(1), make_rules(max_rate_per_hour=100))

    assert not verdict.accepted
    assert verdict.reason is not None
    assert verdict.reason.startswith("rate: +502")


def test_small_value_far_from_the_maximum_is_not_a_wrap() -> None:
    rules = make_rules(max_rate_per_hour=None)

    verdict = judge(settled(500000), read("000010"), at(1), rules)

    assert verdict.reason == "decrease: 000010 < last accepted 500000"


def test_misread_leading_digit_near_the_maximum_is_not_a_wrap() -> None:
    rules = make_rules(max_rate_per_hour=None)

    verdict = judge(settled(912345), read("012346"), at(1), rules)

    assert not verdict.accepted


# --- big jumps and confirmation --------------------------------------------------------


def test_big_jump_is_accepted_only_after_confirm_cycles() -> None:
    rules = make_rules(max_rate_per_hour=None, max_jump=1000.0, confirm_cycles=3)

    verdicts = run_cycles(settled(12345), [read("014345")] * 3, rules, start=1, step=1)

    assert [v.accepted for v in verdicts] == [False, False, True]
    assert verdicts[0].reason == "unconfirmed jump: +2000 (1/3)"
    assert verdicts[1].reason == "unconfirmed jump: +2000 (2/3)"
    assert verdicts[2].event == (
        "confirmed jump: +2000 from 012345 to 014345 after 3 consistent cycles"
    )
    assert verdicts[2].memory == Memory(value=14345, accepted_at=at(3))


def test_big_jump_is_confirmed_by_consistently_rising_readings() -> None:
    rules = make_rules(max_rate_per_hour=None, max_jump=1000.0)
    stream = [read("014345"), read("014346"), read("014348")]

    verdicts = run_cycles(settled(12345), list(stream), rules, start=1, step=1)

    assert verdicts[-1].accepted
    assert verdicts[-1].value == 14348


def test_big_jump_confirmation_restarts_when_a_reading_disagrees() -> None:
    rules = make_rules(max_rate_per_hour=None, max_jump=1000.0)
    stream = [read("014345"), read("014345"), read("016999"), read("016999")]

    verdicts = run_cycles(settled(12345), list(stream), rules, start=1, step=1)

    assert [v.reason for v in verdicts] == [
        "unconfirmed jump: +2000 (1/3)",
        "unconfirmed jump: +2000 (2/3)",
        "unconfirmed jump: +4654 (1/3)",
        "unconfirmed jump: +4654 (2/3)",
    ]


def test_accepted_reading_clears_a_pending_jump() -> None:
    rules = make_rules(max_rate_per_hour=None, max_jump=1000.0)
    stream = [read("014345"), read("012346"), read("014345")]

    verdicts = run_cycles(settled(12345), list(stream), rules, start=1, step=1)

    assert verdicts[1].accepted
    assert verdicts[1].memory.challenger is None
    assert verdicts[2].reason == "unconfirmed jump: +1999 (1/3)"


def test_jump_within_the_limit_needs_no_confirmation() -> None:
    rules = make_rules(max_rate_per_hour=None, max_jump=1000.0)

    verdict = judge(settled(12345), read("013345"), at(1), rules)

    assert verdict.accepted


# --- the stuck-meter escape ------------------------------------------------------------


def test_stuck_meter_rebaselines_after_exactly_rebaseline_cycles() -> None:
    # 019999 was accepted by mistake; the true counter reads 012350 and rises.
    rules = make_rules(max_rate_per_hour=100.0, rebaseline_cycles=10)
    truth = [read(f"{12350 + i:06d}") for i in range(10)]

    verdicts = run_cycles(settled(19999), list(truth), rules, start=1, step=1)

    assert not any(v.accepted for v in verdicts[:9])
    assert verdicts[8].memory.challenger_count == 9
    assert verdicts[9].accepted
    assert verdicts[9].value == 12359
    assert verdicts[9].event is not None
    assert verdicts[9].event.startswith(
        "rebaselined from 019999 to 012359 after 10 consistent cycles: "
    )
    assert "decrease: 012359 < last accepted 019999" in verdicts[9].event
    assert verdicts[9].memory == Memory(value=12359, accepted_at=at(10))


def test_rebaseline_escapes_a_value_accepted_too_low() -> None:
    # Too low a value makes every true reading look too fast rather than a decrease.
    rules = make_rules(max_rate_per_hour=100.0, rebaseline_cycles=4)
    truth = [read("112345")] * 4

    verdicts = run_cycles(settled(12345), list(truth), rules, start=1, step=1)

    assert [v.accepted for v in verdicts] == [False, False, False, True]
    assert verdicts[3].event is not None
    assert verdicts[3].event.startswith("rebaselined from 012345 to 112345")


def test_a_replaced_counter_that_stands_still_is_rebaselined() -> None:
    rules = make_rules(rebaseline_cycles=5)

    verdicts = run_cycles(settled(54321), [read("000100")] * 5, rules, start=1, step=1)

    assert [v.accepted for v in verdicts] == [False] * 4 + [True]
    assert verdicts[-1].value == 100


def test_rebaseline_run_restarts_when_a_reading_breaks_it() -> None:
    rules = make_rules(rebaseline_cycles=4)
    stream = [read("012350"), read("012351"), read("012300"), read("012301"), read("012302")]

    verdicts = run_cycles(settled(19999), list(stream), rules, start=1, step=1)

    assert [v.memory.challenger_count for v in verdicts] == [1, 2, 1, 2, 3]
    assert not any(v.accepted for v in verdicts)


def test_rebaseline_run_is_broken_by_a_reading_too_fast_for_the_previous_one() -> None:
    rules = make_rules(max_rate_per_hour=60.0, rebaseline_cycles=4)
    stream = [read("012350"), read("012351"), read("012900")]

    verdicts = run_cycles(settled(19999), list(stream), rules, start=1, step=1)

    assert [v.memory.challenger_count for v in verdicts] == [1, 2, 1]


def test_no_reading_neither_extends_nor_breaks_the_run() -> None:
    rules = make_rules(rebaseline_cycles=4)
    stream: list[Reading | NoReading] = [
        read("012350"),
        read("012351"),
        NoReading("too dark"),
        NoReading("too dark"),
        read("012352"),
        read("012353"),
    ]

    verdicts = run_cycles(settled(19999), stream, rules, start=1, step=1)

    assert [v.memory.challenger_count for v in verdicts[:5]] == [1, 2, 2, 2, 3]
    assert [v.accepted for v in verdicts] == [False] * 5 + [True]


def test_low_confidence_reading_neither_extends_nor_breaks_the_run() -> None:
    rules = make_rules(rebaseline_cycles=3)
    stream = [read("012350"), read("000000", confidence=0.2), read("012351"), read("012352")]

    verdicts = run_cycles(settled(19999), list(stream), rules, start=1, step=1)

    assert [v.memory.challenger_count for v in verdicts[:3]] == [1, 1, 2]
    assert verdicts[3].accepted


def test_rejected_readings_never_move_the_accepted_value_or_its_time() -> None:
    memory = settled(12345)
    rules = make_rules(rebaseline_cycles=100)
    stream = [read("012000"), read("099999"), read("012100")]

    verdicts = run_cycles(memory, list(stream), rules, start=1, step=1)

    assert all((v.memory.value, v.memory.accepted_at) == (12345, T0) for v in verdicts)


# --- clock jumps -----------------------------------------------------------------------


def test_clock_going_backwards_still_accepts_an_unchanged_value() -> None:
    memory = settled(12345, minutes=60)

    verdict = judge(memory, read("012345"), at(0), make_rules())

    assert verdict.accepted
    assert verdict.memory is memory


def test_clock_going_backwards_accepts_an_increase_within_the_slack() -> None:
    verdict = judge(settled(12345, minutes=60), read("012346"), at(0), make_rules())

    assert verdict.accepted
    assert verdict.memory == Memory(value=12346, accepted_at=at(0))


def test_clock_going_backwards_sends_a_bigger_increase_through_confirmation() -> None:
    rules = make_rules(max_rate_per_hour=100.0, confirm_cycles=3)

    verdicts = run_cycles(settled(12345, 600), [read("012350")] * 3, rules, start=0, step=1)

    assert verdicts[0].reason == (
        "unconfirmed jump: +5 (1/3); clock is behind the last accepted time, elapsed time unknown"
    )
    assert [v.accepted for v in verdicts] == [False, False, True]
    assert verdicts[2].event is not None
    assert verdicts[2].event.startswith("confirmed jump: +5 from 012345 to 012350")


def test_value_without_a_recorded_time_needs_confirmation_to_move_far() -> None:
    verdict = judge(Memory(value=12345), read("012350"), T0, make_rules())

    assert verdict.reason is not None
    assert "no time recorded for the last accepted value" in verdict.reason


def test_clock_leaping_forward_caps_the_rate_window_at_a_day() -> None:
    rules = make_rules(max_rate_per_hour=100.0)
    year_later = T0 + timedelta(days=365)

    within_a_day = judge(settled(12345), read("014746"), year_later, rules)
    beyond_a_day = judge(settled(12345), read("014747"), year_later, rules)

    assert within_a_day.accepted
    assert beyond_a_day.reason == ("rate: +2402 in 24.00 h (capped) exceeds max_rate_per_hour=100")


def test_clock_leaping_forward_still_requires_jump_confirmation() -> None:
    rules = make_rules(max_rate_per_hour=100.0, max_jump=1000.0)

    verdict = judge(settled(12345), read("014345"), T0 + timedelta(days=365), rules)

    assert verdict.reason == "unconfirmed jump: +2000 (1/3)"


def test_naive_clock_is_refused_as_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        judge(settled(12345), read("012345"), datetime(2024, 5, 1, 12, 0), make_rules())


def test_clock_in_another_timezone_is_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    now = (T0 + timedelta(minutes=6)).astimezone(plus_two)

    verdict = judge(settled(12345), read("012355"), now, make_rules(max_rate_per_hour=100))

    assert verdict.accepted


# --- mid-roll --------------------------------------------------------------------------


def test_tens_drum_read_as_already_turned_is_resolved_to_the_reached_value() -> None:
    # 123459 -> 123460: the tens drum (digit 5) was taken for its arriving 6 while the
    # units drum still shows 9.
    memory = settled(123459)
    rules = make_rules(max_rate_per_hour=60.0)

    verdict = judge(memory, read("123469", rolling=(5,)), at(1), rules)

    assert verdict.accepted
    assert verdict.value == 123459
    assert verdict.raw == "123459"
    assert verdict.note == "mid-roll: read 123469 with digit 5 rolling; judged 123459"
    assert verdict.memory is memory


def test_carry_read_as_completed_is_resolved_by_borrowing_from_rolling_drums() -> None:
    # Both drums of the carry 123459 -> 123460 were read as arrived: 123460.
    rules = make_rules(max_rate_per_hour=1.0)

    verdict = judge(settled(123458), read("123460", rolling=(5, 6)), at(1), rules)

    assert verdict.accepted
    assert verdict.value == 123459
    assert verdict.raw == "123459"


def test_borrow_through_a_drum_not_seen_rolling_is_rejected() -> None:
    rules = make_rules(max_rate_per_hour=1.0)

    verdict = judge(settled(123458), read("123460", rolling=(6,)), at(1), rules)

    assert not verdict.accepted
    assert verdict.raw == "123460"


def test_rolling_value_that_is_plausible_as_read_is_taken_as_read() -> None:
    verdict = judge(settled(123455), read("123460", rolling=(5, 6)), at(60), make_rules())

    assert verdict.accepted
    assert verdict.value == 123460
    assert verdict.note is None


def test_mid_roll_is_never_resolved_below_the_last_accepted_value() -> None:
    verdict = judge(settled(123459), read("123449", rolling=(5,)), at(1), make_rules())

    assert verdict.reason == "decrease: 123449 < last accepted 123459"


def test_ambiguous_mid_roll_is_rejected_rather_than_guessed() -> None:
    # Lowering either rolling drum gives a plausible value; the read value is not.
    rules = make_rules(max_rate_per_hour=109.5)

    verdict = judge(settled(123400), read("123511", rolling=(4, 6)), at(60), rules)

    assert not verdict.accepted
    assert verdict.reason is not None
    assert verdict.reason.startswith("rate: +111 in 1.00 h")
    assert verdict.reason.endswith("; mid-roll ambiguous: 123411 or 123510")


# --- vote ------------------------------------------------------------------------------


def test_vote_merges_confidences_and_rolling_of_the_agreeing_frames() -> None:
    a = Reading("012345", (0.9, 0.7, 0.9, 0.9, 0.9, 0.5), (False,) * 6)
    b = Reading("012345", (0.8, 0.9, 0.9, 0.9, 0.9, 0.6), (False,) * 5 + (True,))

    result = vote([a, NoReading("glare"), b])

    # Two of three frames make the majority: each digit gets the lower of their two.
    assert result == Reading("012345", (0.8, 0.7, 0.9, 0.9, 0.9, 0.5), (False,) * 5 + (True,))


def test_vote_gives_each_digit_the_confidence_a_majority_of_the_burst_reaches() -> None:
    # One frame sure of the last digit, two unsure: the burst is unsure (it was a drum
    # 0.8 of the way to the next digit, read as that digit by one lucky frame).
    frames = [Reading("015560", (0.9,) * 5 + (conf,), (False,) * 6) for conf in (0.52, 0.92, 0.39)]

    result = vote(frames)

    assert isinstance(result, Reading)
    assert result.confidences[-1] == 0.52
    verdict = judge(Memory(), result, T0, make_rules())
    assert not verdict.accepted
    assert verdict.reason is not None and "low confidence" in verdict.reason


def test_vote_abstains_when_one_frame_read_something_else() -> None:
    result = vote([read("012345"), read("012346"), read("012345")])

    assert result == NoReading("burst disagreed: 012345 x2, 012346 x1")


def test_vote_takes_a_frame_below_the_gate_as_unread_not_as_a_dissent() -> None:
    unsure = Reading("012346", (0.95,) * 5 + (0.41,), (False,) * 6)

    result = vote([read("012345"), unsure, read("012345")], gate=0.6)

    assert isinstance(result, Reading)
    assert result.digits == "012345"
    assert vote([read("012345"), unsure, read("012345")]) == NoReading(
        "burst disagreed: 012345 x2, 012346 x1"
    )


def test_vote_needs_a_majority_of_frames_at_or_above_the_gate() -> None:
    # One lucky frame sure of a drum 0.8 of the way to the next digit, two unsure.
    frames = [Reading("015560", (0.9,) * 5 + (conf,), (False,) * 6) for conf in (0.52, 0.92, 0.39)]

    result = vote(frames, gate=0.6)

    assert result == NoReading(
        "burst short of a majority: 015560 x1, unread x2 (read below min_confidence 0.6 x2)"
    )
    verdict = judge(Memory(), result, T0, make_rules())
    assert not verdict.accepted


def test_vote_majority_counts_unread_frames_in_the_burst() -> None:
    result = vote([read("012345"), NoReading("glare"), read("012345")])

    assert isinstance(result, Reading)
    assert result.digits == "012345"


def test_vote_reports_a_disagreeing_burst() -> None:
    result = vote([read("012345"), read("012346"), NoReading("glare")])

    assert result == NoReading("burst disagreed: 012345 x1, 012346 x1, unread x1")


def test_vote_needs_a_strict_majority() -> None:
    result = vote([read("012345"), read("012345"), read("012346"), read("012346")])

    assert result == NoReading("burst disagreed: 012345 x2, 012346 x2")


def test_a_burst_of_sure_frames_short_of_a_majority_is_worth_more_frames() -> None:
    unsure = Reading("012346", (0.95,) * 5 + (0.41,), (False,) * 6)

    assert worth_more_frames([read("012345"), NoReading("glare"), unsure], 0.6)
    # Settled already, or nothing sure, or a sure dissent: more frames cannot help.
    assert not worth_more_frames([read("012345"), NoReading("glare"), read("012345")], 0.6)
    assert not worth_more_frames([unsure, NoReading("glare"), NoReading("dark")], 0.6)
    assert not worth_more_frames([read("012345"), read("012346"), NoReading("glare")], 0.6)


def test_vote_of_a_single_frame_is_that_frame() -> None:
    assert vote([read("012345")]) == read("012345")


def test_vote_of_an_unread_burst_keeps_the_reasons() -> None:
    result = vote([NoReading("too dark"), NoReading("too dark"), NoReading("no window")])

    assert result == NoReading("burst unread: too dark x2, no window x1")


def test_vote_of_an_empty_burst_is_no_reading() -> None:
    assert isinstance(vote([]), NoReading)


# --- rules, units, memory --------------------------------------------------------------


def test_rules_come_from_the_config() -> None:
    rules = Rules.from_config(
        MeterConfig(digits=7, decimals=2),
        PlausibilityConfig(
            min_confidence=0.7,
            max_rate_per_hour=5.0,
            max_jump=10.0,
            confirm_cycles=4,
            rebaseline_cycles=12,
            wrap=False,
        ),
    )

    assert rules == Rules(
        digits=7,
        decimals=2,
        min_confidence=0.7,
        max_rate_per_hour=5.0,
        max_jump=10.0,
        confirm_cycles=4,
        rebaseline_cycles=12,
        wrap=False,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"digits": 0}, "digits: must be at least 1"),
        ({"decimals": 7}, "decimals: must be between 0 and digits"),
        ({"min_confidence": 1.5}, "min_confidence: must be between 0 and 1"),
        ({"max_rate_per_hour": -1.0}, "max_rate_per_hour: must be a non-negative"),
        ({"max_jump": math.inf}, "max_jump: must be a non-negative"),
        ({"confirm_cycles": 0}, "confirm_cycles: must be at least 1"),
        ({"rebaseline_cycles": 0}, "rebaseline_cycles: must be at least 1"),
    ],
)
def test_rules_refuse_nonsense(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_rules(**overrides)


@pytest.mark.parametrize(
    ("raw", "decimals", "units"),
    [(12345, 1, 1234.5), (12345, 0, 12345.0), (7, 3, 0.007), (10, 1, 1.0), (0, 2, 0.0)],
)
def test_to_units_applies_the_decimals_exactly(raw: int, decimals: int, units: float) -> None:
    assert to_units(raw, decimals) == units


def test_memory_round_trips_through_a_dict() -> None:
    memory = Memory(
        value=12345, accepted_at=T0, challenger=19999, challenger_at=at(1), challenger_count=3
    )

    assert Memory.from_dict(memory.to_dict()) == memory


def test_memory_dict_is_plain_json_types() -> None:
    memory = Memory(value=12345, accepted_at=T0)

    assert memory.to_dict() == {
        "value": 12345,
        "accepted_at": "2024-05-01T12:00:00+00:00",
        "challenger": None,
        "challenger_at": None,
        "challenger_count": 0,
    }


def test_memory_from_a_partial_dict_takes_defaults() -> None:
    assert Memory.from_dict({"value": 12345}) == Memory(value=12345)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"value": "12345"}, r"memory\.value: expected a non-negative integer"),
        ({"value": -1}, r"memory\.value: expected a non-negative integer"),
        ({"value": True}, r"memory\.value: expected a non-negative integer"),
        ({"value": 1.5}, r"memory\.value: expected a non-negative integer"),
        ({"value": 1, "accepted_at": "yesterday"}, r"memory\.accepted_at: expected an ISO"),
        ({"value": 1, "accepted_at": "2024-05-01T12:00:00"}, r"memory\.accepted_at"),
        ({"value": 1, "accepted_at": 1714564800}, r"memory\.accepted_at"),
        ({"value": 1, "colour": "red"}, r"unknown key\(s\) colour"),
        ({"accepted_at": "2024-05-01T12:00:00+00:00"}, "value is not"),
        ({"value": 1, "challenger": 5}, "challenger and challenger_at must be set together"),
        (
            {"value": 1, "challenger": 5, "challenger_at": "2024-05-01T12:00:00+00:00"},
            r"challenger_count: must be 0 without a challenger and at least 1",
        ),
        ({"value": 1, "challenger_count": 2}, "challenger_count"),
    ],
)
def test_memory_from_dict_names_what_is_wrong(content: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Memory.from_dict(content)


def test_memory_from_something_not_a_mapping_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected an object"):
        Memory.from_dict([1, 2, 3])  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------

times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]),
)
counts = st.integers(min_value=0, max_value=10**7)


@st.composite
def memories(draw: st.DrawFn) -> Memory:
    value = draw(st.none() | counts)
    if value is None:
        return Memory()
    accepted_at = draw(st.none() | times)
    if draw(st.booleans()):
        return Memory(value=value, accepted_at=accepted_at)
    return Memory(
        value=value,
        accepted_at=accepted_at,
        challenger=draw(counts),
        challenger_at=draw(times),
        challenger_count=draw(st.integers(min_value=1, max_value=50)),
    )


confidences = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.0, 1.0)
any_reading = st.builds(NoReading, st.text(max_size=20)) | st.builds(
    Reading,
    digits=st.text(max_size=8) | st.text("0123456789", min_size=6, max_size=6),
    confidences=st.lists(confidences, max_size=8).map(tuple),
    rolling=st.lists(st.booleans(), max_size=8).map(tuple),
)
any_rules = st.builds(
    Rules,
    digits=st.integers(1, 8),
    decimals=st.just(0) | st.integers(0, 1),
    min_confidence=st.floats(0.0, 1.0),
    max_rate_per_hour=st.none() | st.floats(0.0, 1e6),
    max_jump=st.none() | st.floats(0.0, 1e6),
    confirm_cycles=st.integers(1, 5),
    rebaseline_cycles=st.integers(1, 12),
    wrap=st.booleans(),
)


@given(memory=memories(), reading=any_reading, now=times, rules=any_rules)
def test_judge_never_raises_and_always_explains_a_rejection(
    memory: Memory, reading: Reading | NoReading, now: datetime, rules: Rules
) -> None:
    verdict = judge(memory, reading, now, rules)

    assert verdict.accepted == (verdict.value is not None)
    assert verdict.accepted or verdict.reason
    assert Memory.from_dict(verdict.memory.to_dict()) == verdict.memory


@given(memory=memories())
def test_memory_round_trips_through_to_dict_and_from_dict(memory: Memory) -> None:
    assert Memory.from_dict(memory.to_dict()) == memory


# A 4-digit counter makes wraps, repeats and collisions frequent enough to matter.
SMALL_RULES = make_rules(
    digits=4, max_rate_per_hour=120.0, max_jump=50.0, confirm_cycles=2, rebaseline_cycles=4
)
cycle = st.tuples(
    st.integers(0, 9999),
    st.sampled_from([0.9, 0.9, 0.9, 0.3]),
    st.lists(st.booleans(), min_size=4, max_size=4).map(tuple),
    # Mostly forward steps in minutes, sometimes a clock step back, sometimes a leap.
    st.sampled_from([0.5, 1.0, 1.0, 5.0, 60.0, -30.0, 60.0 * 24 * 30]),
)


@settings(max_examples=300)
@given(start=st.integers(0, 9999), cycles=st.lists(cycle, max_size=40))
def test_accepted_values_never_decrease_except_by_wrap_or_rebaseline(
    start: int, cycles: list[tuple[int, float, tuple[bool, ...], float]]
) -> None:
    memory = settled(start)
    now = T0
    last = start
    for value, confidence, rolling, step in cycles:
        now += timedelta(minutes=step)
        reading = Reading(f"{value:04d}", (confidence,) * 4, rolling)
        verdict = judge(memory, reading, now, SMALL_RULES)
        if verdict.accepted:
            assert verdict.value is not None
            explained = verdict.event is not None and (
                "wrap" in verdict.event or verdict.event.startswith("rebaselined")
            )
            assert verdict.value >= last or explained
            last = verdict.value
        else:
            assert (verdict.memory.value, verdict.memory.accepted_at) == (
                memory.value,
                memory.accepted_at,
            )
        memory = verdict.memory


@given(memory=memories(), now=times)
def test_no_reading_never_changes_memory(memory: Memory, now: datetime) -> None:
    verdict = judge(memory, NoReading("dark"), now, make_rules())

    assert verdict.memory is memory


# --- a simulated honest counter with misreads ------------------------------------------


def burst_of(true_value: int, rng: random.Random) -> list[Reading]:
    """Three frames of the counter; in 15% of bursts one frame misreads one digit.

    That is ~5% of frames misread, one at most per burst: what the vote must absorb.
    Two frames misread identically in one burst defeat any majority vote; the
    whole-cycle misread test below shows what the judge alone catches.
    """
    frames = [f"{true_value:06d}"] * 3
    if rng.random() < 0.15:
        frame = rng.randrange(3)
        digits = list(frames[frame])
        position = rng.randrange(6)
        digits[position] = rng.choice([d for d in "0123456789" if d != digits[position]])
        frames[frame] = "".join(digits)
    return [Reading(digits, (0.95,) * 6, (False,) * 6) for digits in frames]


@pytest.mark.parametrize("seed", range(1, 11))
def test_honest_counter_with_misread_frames_never_publishes_a_wrong_value(seed: int) -> None:
    rng = random.Random(seed)
    rules = make_rules(max_rate_per_hour=60.0, max_jump=50.0)
    true_value = 12345.0
    memory = Memory()
    accepted: list[tuple[int, int]] = []
    seen: set[int] = set()
    for minute in range(1000):
        true_value += rng.uniform(0.0, 0.8)  # slower than the 60/h limit
        shown = math.floor(true_value)
        seen.add(shown)
        verdict = judge(memory, vote(burst_of(shown, rng)), at(minute), rules)
        memory = verdict.memory
        if verdict.accepted:
            assert verdict.value is not None
            accepted.append((verdict.value, shown))

    wrong = [(got, truth) for got, truth in accepted if got != truth]
    assert wrong == []
    assert len({got for got, _ in accepted}) > len(seen) // 2


@pytest.mark.parametrize("seed", range(1, 6))
def test_two_frames_misread_alike_in_one_burst_are_not_published(seed: int) -> None:
    """Correlated misreads (the same glare on two frames) with one honest frame."""
    rng = random.Random(seed)
    rules = make_rules(max_rate_per_hour=60.0, max_jump=50.0)
    memory = Memory()
    true_value = 12345
    for minute in range(300):
        true_value += rng.choice([0, 0, 1])
        misread = f"{true_value + rng.choice([1, 2, 3]):06d}"
        frames = [misread, misread, f"{true_value:06d}"]
        rng.shuffle(frames)
        burst = [Reading(d, (0.95,) * 6, (False,) * 6) for d in frames]
        verdict = judge(memory, vote(burst), at(minute), rules)
        memory = verdict.memory
        assert not verdict.accepted or verdict.value == true_value


@pytest.mark.parametrize("seed", range(1, 11))
def test_honest_counter_with_whole_cycle_misreads_of_big_digits_never_goes_wrong(
    seed: int,
) -> None:
    # Glare for a whole burst defeats the vote; the judge alone must catch misreads of
    # any digit but the last (a last-digit misread within the slack is the vote's job).
    rng = random.Random(seed)
    rules = make_rules(max_rate_per_hour=60.0, max_jump=50.0)
    true_value = 12345.0
    memory = Memory()
    wrong = []
    for minute in range(1000):
        true_value += rng.uniform(0.0, 0.8)
        shown = math.floor(true_value)
        digits = list(f"{shown:06d}")
        if minute > 0 and rng.random() < 0.05:
            position = rng.randrange(5)
            digits[position] = rng.choice([d for d in "0123456789" if d != digits[position]])
        verdict = judge(memory, read("".join(digits)), at(minute), rules)
        memory = verdict.memory
        if verdict.accepted and verdict.value != shown:
            wrong.append((verdict.value, shown))

    assert wrong == []


def test_rebaseline_memory_is_a_fresh_acceptance() -> None:
    rules = make_rules(rebaseline_cycles=1)

    verdict = judge(settled(19999), read("012350"), at(1), rules)

    assert verdict.accepted
    assert verdict.memory == Memory(value=12350, accepted_at=at(1))
