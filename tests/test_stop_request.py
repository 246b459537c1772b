"""The daemon's stop request, made from a signal handler of a real process.

A handler runs on the main thread between two bytecodes, wherever the loop is. With a
threading.Event the loop can be inside Event.wait, holding the Event's lock, and the
handler's Event.set then waits for that lock for ever: a daemon that never stops. A
child process here spins on the stop request's wait(0), the worst case, and must
answer each of many signals; then a long wait must end at a signal, not at its timeout.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

from replay import ROOT, daemon_env, kill_if_running

from edgemeter.daemon import StopRequest

SIGNALS = 300
ANSWER_S = 5.0
LONG_WAIT_S = 60.0

CHILD = textwrap.dedent(
    f"""
    import os, signal, sys, time
    from edgemeter.daemon import StopRequest

    stop = StopRequest()
    signal.signal(signal.SIGUSR1, lambda signum, frame: stop.set(signum))
    os.write(1, b"r")
    for _ in range({SIGNALS}):
        while not stop.wait(0):
            pass
        # The next request exists before the answer, so no signal finds the old one.
        old, stop = stop, StopRequest()
        old.close()
        os.write(1, b"a")
    started = time.monotonic()
    stop.wait({LONG_WAIT_S})
    os.write(1, f"{{stop.signal.name}} after {{time.monotonic() - started:.2f}} s\\n".encode())
    """
)


def read_some(process: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return os.read(process.stdout.fileno(), 100) if ready else b""


def test_every_signal_is_answered_even_inside_the_loops_own_wait() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, env=daemon_env(), cwd=ROOT
    )
    try:
        assert read_some(process, 30.0) == b"r"
        for sent in range(1, SIGNALS + 1):
            process.send_signal(signal.SIGUSR1)
            assert read_some(process, ANSWER_S) == b"a", f"no answer to signal {sent}: hung"
        time.sleep(0.2)  # into the long wait
        process.send_signal(signal.SIGUSR1)
        line = read_some(process, ANSWER_S).decode()
        assert line.startswith("SIGUSR1 after "), line
        assert float(line.split()[2]) < ANSWER_S
        assert process.wait(timeout=10) == 0
    finally:
        kill_if_running(process)


def test_wait_sleeps_its_timeout_without_a_request_and_not_at_all_after_one() -> None:
    stop = StopRequest()
    try:
        started = time.monotonic()
        assert stop.wait(0.05) is False
        assert time.monotonic() - started >= 0.05
        assert not stop.is_set() and stop.signal is None
        stop.set(signal.SIGTERM)
        started = time.monotonic()
        assert stop.wait(LONG_WAIT_S) is True
        assert time.monotonic() - started < ANSWER_S
        assert stop.is_set() and stop.signal is signal.SIGTERM
    finally:
        stop.close()


def test_a_signal_after_close_is_still_seen_and_writes_nowhere() -> None:
    stop = StopRequest()
    stop.close()
    reused, spare = os.pipe()  # likely takes the closed descriptors' numbers
    try:
        stop.set(signal.SIGTERM)
        assert stop.is_set() and stop.wait(LONG_WAIT_S) is True
        assert select.select([reused], [], [], 0)[0] == []
    finally:
        os.close(reused)
        os.close(spare)
