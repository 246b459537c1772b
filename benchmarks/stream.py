"""Stream score: each installation replayed through the daemon's own cycle, as it runs.

For every cycle the daemon's `Daemon.cycle` crops the window out of each frame of the
burst, reads it with the engine, votes (`plausibility.vote`) and judges
(`plausibility.judge` with the default rules from the config), and `Daemon.settle`
then does what the daemon does with the verdict. Nothing of that is re-implemented
here: `ReplayDaemon` only records what `on_new_value` would publish and the events.
MQTT, the history and the web page are off (they only carry the values).

A published value is wrong when it is not what the counter had reached in the cycle
it was published from; the wrong ones that are the next value, published while the
last drum was at least `scoring.LATE_ROLL` of the way there, are also counted apart
(late roll). Coverage is the share of the distinct values the counter showed during
the stream that were published (right) at some point.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.hardset import CycleShots, Stream
from benchmarks.scoring import BASELINE, Outcome, Recorder, baseline_read, late_roll
from edgemeter.config import Config, parse_config
from edgemeter.daemon import Cycle, Daemon
from edgemeter.notify import Notifier
from edgemeter.ocr import OcrEngine, Reading
from edgemeter.source import Frame, open_source
from edgemeter.state import StateStore
from edgemeter.window import DigitWindow, crop


class ReplayDaemon(Daemon):
    """The daemon, fed frames by the benchmark; what it would publish is kept."""

    def __init__(self, config: Config, engine: OcrEngine, state_dir: Path) -> None:
        source = open_source(config.camera, config.meter.digits, config.plausibility.burst)
        store = StateStore(state_dir / "state.json")
        super().__init__(config, engine, source, None, store, Notifier(""))
        self.published: list[int] = []
        self.events: list[str] = []

    def on_new_value(self, cycle: Cycle, raw_value: int) -> None:
        self.published.append(raw_value)
        super().on_new_value(cycle, raw_value)

    def on_event(self, cycle: Cycle, event: str) -> None:
        self.events.append(event)
        super().on_event(cycle, event)


def replay_config(stream: Stream, engine: str, state_dir: Path) -> Config:
    """The config a user of this installation would write (defaults for the rest)."""
    x, y, width, height = stream.window
    data: dict[str, Any] = {
        "meter": {"id": "bench", "digits": stream.style.digits},
        "camera": {"source": "simulated"},
        "window": {"x": x, "y": y, "width": width, "height": height},
        "ocr": {"engine": engine},
        "plausibility": {"burst": stream.burst},
        "state": {"path": str(state_dir / "state.json")},
        "mqtt": {"enabled": False},
        "history": {"enabled": False},
    }
    return parse_config(data, "benchmark")


@dataclass(frozen=True)
class Published:
    """A value the daemon published, and what the counter showed in that cycle."""

    installation: str
    sent: int
    truth: str
    value: float  # the counter's exact value

    @property
    def right(self) -> bool:
        return self.sent == int(self.truth)

    @property
    def late_roll(self) -> bool:
        reading = Reading(f"{self.sent:0{len(self.truth)}d}", (), ())
        return late_roll(Outcome(self.truth, reading, value=self.value))


@dataclass
class StreamScore:
    """What the daemon published over streams, against what the counter showed."""

    cycles: int = 0
    accepted: int = 0
    shown: set[tuple[str, int]] = field(default_factory=set)  # (installation, value)
    published: list[Published] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def rebaselines(self) -> int:
        """Escapes from a stuck value: after a wrong value, or a misread run."""
        return sum(event.startswith("rebaselined") for event in self.events)

    def _right(self) -> set[tuple[str, int]]:
        return {(p.installation, p.sent) for p in self.published if p.right}

    @property
    def missed(self) -> int:
        return len(self.shown - self._right())

    @property
    def wrong(self) -> int:
        return sum(not p.right for p in self.published)

    @property
    def wrong_late_roll(self) -> int:
        return sum(not p.right and p.late_roll for p in self.published)

    @property
    def coverage_pct(self) -> float:
        right = self._right() & self.shown
        return 100.0 * len(right) / len(self.shown) if self.shown else 0.0

    @property
    def accepted_pct(self) -> float:
        return 100.0 * self.accepted / self.cycles if self.cycles else 0.0

    def add(self, other: StreamScore) -> None:
        self.cycles += other.cycles
        self.accepted += other.accepted
        self.shown |= other.shown
        self.published += other.published
        self.events += other.events


@dataclass
class StreamResult:
    """One installation's replay: frame outcomes per path, stream score per engine."""

    outcomes: dict[str, list[Outcome]]
    scores: dict[str, StreamScore]


def replay(stream: Stream, engines: dict[str, OcrEngine], baseline: bool) -> StreamResult:
    """Replay `stream` through a fresh daemon per engine (and the baseline per frame)."""
    outcomes: dict[str, list[Outcome]] = {name: [] for name in engines}
    if baseline:
        outcomes[BASELINE] = []
    scores = {name: StreamScore() for name in engines}
    window = DigitWindow(*stream.window)
    digits = stream.style.digits
    with tempfile.TemporaryDirectory(prefix="edgemeter-bench-") as tmp:
        runs: dict[str, tuple[ReplayDaemon, Recorder]] = {}
        for name, engine in engines.items():
            state_dir = Path(tmp) / name
            state_dir.mkdir()
            recorder = Recorder(engine)
            daemon = ReplayDaemon(replay_config(stream, name, state_dir), recorder, state_dir)
            runs[name] = (daemon, recorder)
        for cycle_shots in stream:
            frames = [
                Frame(shot.image, shot.ts, "benchmark", truth=shot.truth)
                for shot in cycle_shots.shots
            ]

            def more(count: int, cycle_shots: CycleShots = cycle_shots) -> list[Frame]:
                return [
                    Frame(shot.image, shot.ts, "benchmark", truth=shot.truth)
                    for shot in stream.more_shots(cycle_shots, count)
                ]

            for name, (daemon, recorder) in runs.items():
                before = len(daemon.published)
                cycle = daemon.cycle(frames, more=more)
                daemon.settle(cycle)
                # A second burst's frames count in the stream, not in the single-frame
                # score: every engine is scored on the same frames.
                reads = recorder.take()[: len(frames)]
                if len(reads) != len(frames):
                    raise RuntimeError(f"{stream.label}: the window does not fit the frame")
                outcomes[name] += [
                    Outcome(f.truth or "", r, value=cycle_shots.value)
                    for f, r in zip(frames, reads, strict=True)
                ]
                score = scores[name]
                score.cycles += 1
                score.accepted += cycle.verdict.accepted
                score.shown.add((stream.label, int(cycle_shots.truth)))
                score.published += [
                    Published(stream.label, sent, cycle_shots.truth, cycle_shots.value)
                    for sent in daemon.published[before:]
                ]
            if baseline:
                outcomes[BASELINE] += [
                    Outcome(
                        f.truth or "",
                        baseline_read(crop(f.image, window), digits),
                        value=cycle_shots.value,
                    )
                    for f in frames
                ]
        for name, (daemon, _) in runs.items():
            scores[name].events = list(daemon.events)
    return StreamResult(outcomes, scores)
