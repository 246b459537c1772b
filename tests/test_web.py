"""The status page: the real server on 127.0.0.1:<free port>, spoken to over HTTP.

Every test talks to a started `WebServer` with urllib (bounded timeouts, loopback
only). The history is a real `History` in a temp directory. The browser tests drive
Debian's Chromium headless through Playwright and save a screenshot to tmp_path.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgemeter import simulate
from edgemeter.config import HistoryConfig, HttpConfig
from edgemeter.history import History
from edgemeter.web import REJECTIONS_KEPT, Board, WebError, WebServer

TIMEOUT_S = 5.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL_REASON = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
JUMP_REASON = "jump of +54.3 km in 5 s exceeds max_jump 10"
PASSWORD = "s3cret-Pa55word"


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


# Loopback only, never through a proxy that the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(
    url: str, method: str = "GET", auth: tuple[str, str] | None = None, data: bytes | None = None
) -> Answer:
    request = urllib.request.Request(url, method=method, data=data)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with OPENER.open(request, timeout=TIMEOUT_S) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        with err:
            return Answer(err.code, err.headers, err.read())


def meter_jpeg(value: float = 12345.6) -> bytes:
    """A simulated camera frame with the digit window and cells drawn, as the daemon does."""
    frame = simulate.render(
        simulate.default_style(), value, simulate.Conditions(), np.random.default_rng(1)
    )
    image = frame.image.copy()
    x, y, w, h = frame.window
    cv2.rectangle(image, (x, y), (x + w, y + h), (0, 200, 0), 3)
    for cx, cy, cw, ch in frame.cells:
        cv2.rectangle(image, (cx, cy), (cx + cw, cy + ch), (0, 160, 255), 1)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return meter_jpeg()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


@pytest.fixture
def board(jpeg: bytes, now: datetime) -> Board:
    """A board as the daemon leaves it after a few cycles."""
    board = Board()
    board.update_frame(jpeg, now - timedelta(seconds=2))
    board.update_accepted(12345.6, "123456", "km", now - timedelta(minutes=3), 0.93)
    board.add_rejection("123999", JUMP_REASON, now - timedelta(minutes=9))
    board.add_rejection("12<b>45", EVIL_REASON, now - timedelta(minutes=1))
    return board


@pytest.fixture
def history(tmp_path: Path, now: datetime) -> Iterator[History]:
    """A real history: 49 accepted readings half an hour apart, the newest 10 min ago."""
    store = History(tmp_path / "state", HistoryConfig())
    for i in reversed(range(49)):
        value = 12345.0 - i * 0.9 - (i % 5) * 0.2
        ts = now - timedelta(minutes=30 * i + 10)
        store.record_accepted(ts, value, f"{round(value):06d}", 0.9)
    store.record_rejected(now - timedelta(hours=5), "12x45", "confidence 0.31 below 0.6")
    store.record_rejected(now - timedelta(hours=2), None, "no digits found in the window")
    yield store
    store.close()


Serve = Callable[..., WebServer]


@pytest.fixture
def serve(board: Board) -> Iterator[Serve]:
    """serve(config=None, board=board, history=None) -> a started WebServer on a free port."""
    servers: list[WebServer] = []

    def start(
        config: HttpConfig | None = None,
        board: Board = board,
        history: History | None = None,
        meter_name: str = "Car <odometer>",
    ) -> WebServer:
        server = WebServer(
            config or HttpConfig(enabled=True, port=0), board, history, meter_name, "km"
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def url(server: WebServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


# --- the page and the endpoints --------------------------------------------------


def test_page_shows_reading_and_escaped_rejections(serve: Serve) -> None:
    server = serve()

    answer = fetch(url(server))

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    page = answer.text
    assert "12\u202f345.6 km" in page
    assert "123456" in page and "93%" in page
    assert JUMP_REASON in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x" in page
    assert "12&lt;b&gt;45" in page
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>" not in page
    assert "Car &lt;odometer&gt;" in page
    assert page.index("12&lt;b&gt;45") < page.index("123999")  # newest rejection first
    assert 'src="/frame.jpg?t=' in page
    # Works with no internet: nothing is loaded from anywhere else.
    assert "https://" not in page and "http://" not in page and "//cdn" not in page
    assert "script-src 'sha256-" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"


def test_page_before_first_cycle_says_so(serve: Serve) -> None:
    server = serve(board=Board())

    page = fetch(url(server)).text

    assert "No frame yet." in page
    assert "No accepted reading yet." in page
    assert "No rejections." in page
    assert "History is off" in page


def test_frame_jpg_is_the_latest_frame_never_cached(serve: Serve, jpeg: bytes) -> None:
    empty = Board()
    server = serve(board=empty)
    before = fetch(url(server, "/frame.jpg"))

    empty.update_frame(jpeg, datetime.now(UTC))
    after = fetch(url(server, "/frame.jpg"))

    assert before.status == 404
    assert before.headers["Cache-Control"] == "no-store"
    assert after.status == 200
    assert after.headers["Content-Type"] == "image/jpeg"
    assert after.headers["Cache-Control"] == "no-store"
    assert after.body == jpeg and after.body[:2] == b"\xff\xd8"


def test_status_json_has_reading_ages_and_rejections(serve: Serve, now: datetime) -> None:
    server = serve()

    answer = fetch(url(server, "/api/status.json"))

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    status = answer.json()
    reading = status["reading"]
    assert reading["value"] == 12345.6
    assert reading["raw"] == "123456"
    assert reading["unit"] == "km"
    assert reading["confidence"] == 0.93
    assert reading["ts"] == iso(now - timedelta(minutes=3))
    assert reading["age_s"] >= 180
    assert status["frame"]["age_s"] >= 2
    assert [r["reason"] for r in status["rejections"]] == [EVIL_REASON, JUMP_REASON]
    assert status["rejections"][0]["raw"] == "12<b>45"


def test_history_json_since_and_kind(serve: Serve, history: History, now: datetime) -> None:
    server = serve(history=history)
    since = iso(now - timedelta(hours=3))

    recent = fetch(url(server, f"/api/history.json?since={since}")).json()
    rejected = fetch(url(server, "/api/history.json?since=2d&kind=rejected")).json()
    default = fetch(url(server, "/api/history.json")).json()
    plus = (now - timedelta(hours=3)).astimezone(timezone(timedelta(hours=1))).isoformat()
    unencoded = fetch(url(server, f"/api/history.json?since={plus}")).json()
    bad_since = fetch(url(server, "/api/history.json?since=yesterday"))
    bad_kind = fetch(url(server, "/api/history.json?kind=accepted,drop"))

    kinds = [e["kind"] for e in recent["entries"]]
    assert kinds == ["accepted"] * 2 + ["rejected"] + ["accepted"] * 4
    assert recent["entries"][-1]["ts"] == iso(now - timedelta(minutes=10))
    assert recent["entries"][-1]["value"] == 12345.0
    assert recent["truncated"] is False
    assert unencoded["entries"] == recent["entries"]  # "+01:00" sent as is: "+" is a space
    assert [e["reason"] for e in rejected["entries"]] == [
        "confidence 0.31 below 0.6",
        "no digits found in the window",
    ]
    assert len(default["entries"]) == 48 + 2  # the last 24 h
    assert "frame" not in default["entries"][0]  # a file path on the Pi is not shown
    assert bad_since.status == 400
    assert "since:" in bad_since.json()["error"]
    assert bad_kind.status == 400
    assert "kind:" in bad_kind.json()["error"]


def test_history_json_without_history_is_404(serve: Serve) -> None:
    server = serve(history=None)

    answer = fetch(url(server, "/api/history.json"))

    assert answer.status == 404
    assert "history is off" in answer.json()["error"]


def test_plot_is_an_inline_svg_from_history(serve: Serve, history: History) -> None:
    server = serve(history=history)

    page = fetch(url(server)).text

    polyline = page.split('<polyline class="line" points="', 1)[1].split('"', 1)[0]
    assert len(polyline.split()) == 49
    assert "49 accepted readings in the last 7 days" in page


def test_restarted_page_shows_history_until_the_first_cycle(
    serve: Serve, history: History, now: datetime
) -> None:
    server = serve(board=Board(), history=history)

    status = fetch(url(server, "/api/status.json")).json()

    assert status["reading"]["ts"] == iso(now - timedelta(minutes=10))
    assert status["reading"]["value"] == 12345.0
    assert [r["reason"] for r in status["rejections"]] == [
        "no digits found in the window",
        "confidence 0.31 below 0.6",
    ]


def test_board_keeps_the_last_rejections_newest_first(now: datetime) -> None:
    board = Board()

    for i in range(REJECTIONS_KEPT + 5):
        board.add_rejection(str(i), f"reason {i}", now + timedelta(seconds=i))

    kept = board.snapshot().rejections
    assert len(kept) == REJECTIONS_KEPT == 20
    assert kept[0].reason == "reason 24" and kept[-1].reason == "reason 5"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_writes_are_refused(serve: Serve, method: str) -> None:
    server = serve()

    answers = [
        fetch(url(server, path), method=method, data=b"{}")
        for path in ("/", "/frame.jpg", "/api/status.json", "/api/history.json")
    ]

    assert [a.status for a in answers] == [405] * 4


def test_unknown_path_is_404_with_the_same_headers(serve: Serve) -> None:
    server = serve()

    answer = fetch(url(server, "/etc/passwd"))

    assert answer.status == 404
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")


# --- login -------------------------------------------------------------------------


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "http-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


def test_login_required_when_configured(
    serve: Serve, password_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = HttpConfig(enabled=True, port=0, username="meter", password_file=str(password_file))
    server = serve(config)

    anonymous = fetch(url(server))
    right = fetch(url(server), auth=("meter", PASSWORD))
    wrong_password = fetch(url(server), auth=("meter", PASSWORD + "x"))
    wrong_user = fetch(url(server), auth=("admin", PASSWORD))
    api_anonymous = fetch(url(server, "/api/status.json"))
    frame_anonymous = fetch(url(server, "/frame.jpg"))
    garbage = urllib.request.Request(url(server), headers={"Authorization": "Basic %%%"})
    with pytest.raises(urllib.error.HTTPError) as garbage_answer:
        OPENER.open(garbage, timeout=TIMEOUT_S)
    garbage_answer.value.close()

    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith('Basic realm="edgemeter"')
    assert right.status == 200 and "12\u202f345.6 km" in right.text
    assert wrong_password.status == 401
    assert wrong_user.status == 401
    assert api_anonymous.status == 401 and frame_anonymous.status == 401
    assert garbage_answer.value.code == 401
    assert "12\u202f345.6" not in anonymous.text
    assert "web login refused" in caplog.text
    assert PASSWORD not in caplog.text
    assert base64.b64encode(f"meter:{PASSWORD}".encode()).decode() not in caplog.text


def test_beyond_loopback_without_login_is_refused(board: Board) -> None:
    # Config validation refuses this too; the server must not rely on it.
    server = WebServer(HttpConfig(enabled=True, bind="0.0.0.0", port=0), board, None, "m", "km")

    with pytest.raises(WebError, match=r"http.bind: '0.0.0.0' reaches beyond this machine"):
        server.start()


def test_unreadable_password_file_names_the_file(board: Board, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    config = HttpConfig(enabled=True, port=0, username="meter", password_file=str(missing))
    server = WebServer(config, board, None, "m", "km")

    with pytest.raises(WebError, match=rf"http.password_file: cannot read {missing}"):
        server.start()


# --- start and stop -------------------------------------------------------------------


def test_port_in_use_is_a_clear_error(board: Board) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = WebServer(HttpConfig(enabled=True, port=port), board, None, "m", "km")

        with pytest.raises(WebError) as error:
            server.start()

    assert str(error.value) == f"http.port {port} is in use: choose another"


def test_stop_closes_the_port_and_is_safe_twice(board: Board) -> None:
    server = WebServer(HttpConfig(enabled=True, port=0), board, None, "m", "km")
    server.stop()  # before start: nothing to do
    server.start()
    address = url(server)
    assert fetch(address).status == 200

    server.stop()
    server.stop()

    with pytest.raises(urllib.error.URLError):
        OPENER.open(address, timeout=TIMEOUT_S)


# --- a real browser -------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; FAILS (not skips) when missing."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is not installed: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: pip install -e '.[dev]' (or pip install playwright)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
def test_browser_shows_reading_frame_and_ages(
    serve: Serve, history: History, chromium: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = serve(history=history)
    page = chromium.new_page(viewport={"width": 1100, "height": 1000})
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(url(server), wait_until="load", timeout=15_000)
    # The inline script runs (its CSP hash matches) and writes the ages.
    expect(page.locator("#reading time").first).to_have_text("3 min ago", timeout=10_000)
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    assert page.inner_text("#value") == "12\u202f345.6 km"
    assert page.eval_on_selector("#frame", "img => img.complete && img.naturalWidth") > 0
    assert EVIL_REASON in page.inner_text("#rejections")
    assert dialogs == []  # the reason's markup stayed text
    assert page.locator("#plot polyline").count() == 1
    assert errors == []


@pytest.mark.slow
def test_browser_page_follows_the_board_with_a_login(
    serve: Serve, board: Board, chromium: Any, password_file: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    config = HttpConfig(enabled=True, port=0, username="meter", password_file=str(password_file))
    server = serve(config)
    context = chromium.new_context(http_credentials={"username": "meter", "password": PASSWORD})
    page = context.new_page()
    page.goto(url(server), wait_until="load", timeout=15_000)
    first_frame = page.get_attribute("#frame", "src")

    board.update_accepted(12350.0, "123500", "km", datetime.now(UTC), 0.97)
    board.update_frame(meter_jpeg(12350.0), datetime.now(UTC))
    # The page refreshes itself every few seconds, without a reload.
    expect(page.locator("#value")).to_have_text("12\u202f350 km", timeout=15_000)
    expect(page.locator("#frame")).not_to_have_attribute("src", first_frame, timeout=15_000)
    page.screenshot(path=str(tmp_path / "refreshed.png"), full_page=True)

    assert page.eval_on_selector("#frame", "img => img.complete && img.naturalWidth") > 0
    assert page.locator("#reading time").first.inner_text().endswith(" s ago")
    context.close()
