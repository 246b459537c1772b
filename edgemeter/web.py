"""The local status page: what the daemon sees, read-only, over HTTP.

Served when `http.enabled: true`. The daemon thread puts the latest drawn frame, the
last accepted reading and the last rejections on a `Board` each cycle; the web thread
renders a snapshot of it, plus a plot of the value over time read from `History`.

Routes (GET and HEAD only; anything else is 405):
  /                   the page: frame, reading with its age, rejections, plot
  /frame.jpg          the latest frame (404 until the first one), never cached
  /api/status.json    reading, frame time, rejections, with ages in seconds
  /api/history.json   history entries, oldest first, `?since=` an ISO-8601 time or
                      an age such as 7d or 12h (default: 24h), optionally
                      `&kind=accepted,rejected,event`; at most 5000 entries: when
                      `truncated` is true, ask again from the last entry's ts

What it does not do: change anything. There is no config editing, no control of the
daemon, no form. Beyond loopback it asks for a login (HTTP basic auth; the password
comes from `http.password_file`), and it refuses to start without one even if the
config validation was bypassed.

Why bottle on wsgiref: bottle is one pure-Python file (~200 kB) with no dependencies,
maintained since 2009 (0.13.x in 2024-25), packaged in Debian and Raspberry Pi OS as
python3-bottle. It gives routing, request parsing, basic-auth header parsing and
error responses, so no HTTP is parsed here by hand. It runs on the standard library's
wsgiref server with one thread per request (socketserver.ThreadingMixIn): nothing
more to install, a few MB of RAM on a Pi Zero 2 W, and a clean, bounded
`shutdown()`. This page serves one or two viewers polling every few seconds;
waitress or a reverse proxy would add weight and buy nothing here. Flask (four
dependencies) and aiohttp/FastAPI (compiled wheels, an event loop) are heavier for
the same page.

The page needs no internet: no CDN, no framework, no external asset. The plot is an
SVG polyline drawn here; a few lines of inline JavaScript (allowed by its hash in the
Content-Security-Policy, nothing else may run) compute "3 min ago" in the browser and
refresh the page's parts every few seconds without reloading it.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import bottle

from edgemeter.config import HttpConfig, SecretError, read_secret
from edgemeter.history import KINDS, Entry, History, HistoryError, parse_since

log = logging.getLogger(__name__)

# How many rejections the board and the page keep.
REJECTIONS_KEPT = 20
# The page polls this often; the JSON says so too, for other clients.
REFRESH_S = 5
# The plot covers this span; older entries are not read at all.
PLOT_SPAN = timedelta(days=7)
# More points than pixels buy nothing and cost CPU on a Pi Zero.
PLOT_POINTS = 400
# Reading a week of history is the expensive part of a page: once per this, at most.
PLOT_CACHE_S = 30.0
# /api/history.json answers at most this many entries per request.
HISTORY_JSON_LIMIT = 5000
HISTORY_JSON_DEFAULT_SPAN = timedelta(hours=24)
TEXT = "text/plain; charset=utf-8"
# A slow or stalled client holds one thread at most this long.
CLIENT_TIMEOUT_S = 10.0
# stop() returns within about this (the serve loop polls for its stop flag).
POLL_S = 0.25
STOP_TIMEOUT_S = 5.0


class WebError(Exception):
    """The page cannot be served as configured; the message says what to change."""


# --- what the page reads ---------------------------------------------------------


@dataclass(frozen=True)
class AcceptedReading:
    value: float
    raw: str
    unit: str
    ts: datetime
    confidence: float


@dataclass(frozen=True)
class Rejection:
    raw: str | None
    reason: str
    ts: datetime


@dataclass(frozen=True)
class BoardState:
    """A frozen copy of the board, for rendering without holding its lock."""

    frame: bytes | None
    frame_ts: datetime | None
    accepted: AcceptedReading | None
    rejections: tuple[Rejection, ...]  # newest first

    @property
    def empty(self) -> bool:
        return self.accepted is None and not self.rejections


class Board:
    """What the daemon shows: updated by the daemon thread each cycle, read by the web thread.

    Thread-safe: every method takes one lock for a few assignments; the JPEG is kept
    as the daemon's bytes object (immutable), never copied.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: bytes | None = None
        self._frame_ts: datetime | None = None
        self._accepted: AcceptedReading | None = None
        self._rejections: deque[Rejection] = deque(maxlen=REJECTIONS_KEPT)

    def update_frame(self, jpeg: bytes, ts: datetime) -> None:
        """The latest frame, with the digit window and cells already drawn on it."""
        with self._lock:
            self._frame = bytes(jpeg)
            self._frame_ts = _aware(ts)

    def update_accepted(
        self, value: float, raw: str, unit: str, ts: datetime, confidence: float
    ) -> None:
        reading = AcceptedReading(float(value), raw, unit, _aware(ts), float(confidence))
        with self._lock:
            self._accepted = reading

    def add_rejection(self, raw: str | None, reason: str, ts: datetime) -> None:
        """Keep a rejection; only the last REJECTIONS_KEPT are kept."""
        rejection = Rejection(raw, reason, _aware(ts))
        with self._lock:
            self._rejections.appendleft(rejection)

    def snapshot(self) -> BoardState:
        with self._lock:
            return BoardState(self._frame, self._frame_ts, self._accepted, tuple(self._rejections))


def seed_board(board: Board, history: History, unit: str) -> None:
    """Fill an empty board from history, so a restarted daemon's page is not blank.

    If the daemon has put something on the board already, the board is left alone.
    """
    if not board.snapshot().empty:
        return
    for entry in reversed(history.latest("rejected", REJECTIONS_KEPT)):  # newest on top
        board.add_rejection(entry.raw, entry.reason or "rejected", entry.ts)
    for entry in history.latest("accepted", 1):
        if entry.value is not None:
            confidence = entry.confidence or 0.0
            board.update_accepted(entry.value, entry.raw or "", unit, entry.ts, confidence)


# --- the server ----------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # socket timeout: a stalled client frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: the Authorization header is never logged.
        log.debug("web request client=%s %s", self.client_address[0], format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung request never holds up the daemon's exit
    allow_reuse_address = True  # restart at once after a stop (TIME_WAIT)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's FQDN: that can stall for
        # seconds on a Pi with no network. The name is only used for SERVER_NAME.
        socketserver.TCPServer.server_bind(self)  # SO_REUSEADDR, bind, real address
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or times out is not a server problem.
        log.debug("web connection error client=%s", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebServer:
    """Serves the board and history on http.bind:http.port, in a daemon thread."""

    def __init__(
        self,
        config: HttpConfig,
        board: Board,
        history: History | None,
        meter_name: str,
        unit: str,
    ) -> None:
        self._config = config
        self._board = board
        self._history = history
        self._meter_name = meter_name
        self._unit = unit
        self._credentials: tuple[bytes, bytes] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._plot_lock = threading.Lock()
        self._plot_cache: tuple[float, str] | None = None
        self._app = self._make_app()

    @property
    def port(self) -> int:
        """The port really bound (http.port 0 picks a free one), or the configured one."""
        return self._server.server_port if self._server is not None else self._config.port

    @property
    def url(self) -> str:
        host = self._config.bind
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Bind and serve in a daemon thread; WebError if the config cannot work."""
        if self._server is not None:
            return
        self._credentials = self._load_credentials()
        if self._history is not None:
            try:
                seed_board(self._board, self._history, self._unit)
            except HistoryError as err:  # the page works without the seed
                log.warning("web history not read error=%s", err)
        server = self._bind()
        server.set_app(self._app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_S},
            name="edgemeter-web",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        log.info(
            "web serving url=%s login=%s",
            self.url,
            "basic" if self._credentials else "none",
        )

    def stop(self) -> None:
        """Stop serving within about STOP_TIMEOUT_S; safe to call twice or before start."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        # shutdown() waits for serve_forever's loop; run it aside so stop() stays bounded.
        threading.Thread(target=server.shutdown, name="edgemeter-web-stop", daemon=True).start()
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("web stop timed out after=%ss", STOP_TIMEOUT_S)
        server.server_close()
        log.info("web stopped")

    # -- start-up ----------------------------------------------------------------

    def _load_credentials(self) -> tuple[bytes, bytes] | None:
        cfg = self._config
        if cfg.username is None and cfg.password_file is None:
            if _reaches_beyond(cfg.bind):
                raise WebError(
                    f"http.bind: {cfg.bind!r} reaches beyond this machine, so the page needs a"
                    " login: set http.username and http.password_file (or bind 127.0.0.1)"
                )
            return None
        if cfg.username is None or cfg.password_file is None:
            raise WebError("http.username and http.password_file: set both for a login, or neither")
        password = _read_password(cfg.password_file)
        return cfg.username.encode("utf-8"), password.encode("utf-8")

    def _bind(self) -> _Server:
        cfg = self._config
        cls = _Server6 if ":" in cfg.bind else _Server
        try:
            return cls((cfg.bind, cfg.port), _Handler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise WebError(f"http.port {cfg.port} is in use: choose another") from err
            if err.errno == errno.EACCES:
                raise WebError(
                    f"http.port {cfg.port}: ports below 1024 need root; choose 1024 or above"
                ) from err
            if err.errno == errno.EADDRNOTAVAIL:
                raise WebError(
                    f"http.bind: {cfg.bind!r} is not an address of this machine"
                ) from err
            raise WebError(f"http: cannot listen on {cfg.bind}:{cfg.port}: {err}") from err

    # -- the application -----------------------------------------------------------

    def _make_app(self) -> Any:
        app = bottle.Bottle(catchall=True)
        app.add_hook("before_request", self._require_login)
        # bottle's own refusals (404, 405): plain text with the same headers as ours.
        app.default_error_handler = _error_page
        routes: dict[str, Callable[[], Any]] = {
            "/": self._page,
            "/frame.jpg": self._frame,
            "/api/status.json": self._status,
            "/api/history.json": self._history_json,
            "/favicon.svg": _favicon,
        }
        for path, callback in routes.items():
            # GET routes answer HEAD too; every other method gets 405 from bottle.
            app.route(path, method="GET", callback=_logged(callback))
        return app

    def _require_login(self) -> None:
        expected = self._credentials
        if expected is None:
            return
        given = bottle.request.auth
        user, password = given if given else ("", "")
        # Both compared in constant time, both always compared: no early exit to time.
        user_ok = hmac.compare_digest(str(user).encode("utf-8"), expected[0])
        password_ok = hmac.compare_digest(str(password or "").encode("utf-8"), expected[1])
        if user_ok & password_ok:
            return
        if given:
            log.info("web login refused client=%s", bottle.request.remote_addr)
        raise _answer(
            "login required\n",
            401,
            TEXT,
            {"WWW-Authenticate": 'Basic realm="edgemeter", charset="UTF-8"'},
        )

    def _page(self) -> Any:
        now = datetime.now(UTC)
        body = render_page(
            self._board.snapshot(),
            meter_name=self._meter_name,
            unit=self._unit,
            plot=self._plot(now),
            now=now,
        )
        return _answer(body, 200, "text/html; charset=utf-8")

    def _frame(self) -> Any:
        state = self._board.snapshot()
        if state.frame is None:
            return _answer("no frame yet\n", 404, TEXT)
        return _answer(state.frame, 200, "image/jpeg")

    def _status(self) -> Any:
        now = datetime.now(UTC)
        payload = status_payload(self._board.snapshot(), self._meter_name, self._unit, now)
        return _json_response(payload)

    def _history_json(self) -> Any:
        if self._history is None:
            return _json_response({"error": "history is off (history.enabled: false)"}, 404)
        now = datetime.now(UTC)
        query = bottle.request.query
        try:
            text = query.get("since")
            # An unencoded "+01:00" in a URL arrives as " 01:00": take it as meant.
            text = re.sub(r" (\d\d:?\d\d)$", r"+\1", text) if text else text
            since = parse_since(text, now) if text else now - HISTORY_JSON_DEFAULT_SPAN
            kinds = _parse_kinds(query.get("kind"))
        except ValueError as err:
            return _json_response({"error": str(err)}, 400)
        try:
            rows = self._history.entries(since=since, kinds=kinds, limit=HISTORY_JSON_LIMIT)
        except HistoryError as err:
            log.warning("web history not read error=%s", err)
            return _json_response({"error": str(err)}, 503)
        return _json_response(
            {
                "since": _iso(since),
                "kinds": list(kinds) if kinds else list(KINDS),
                "entries": [_entry_json(e) for e in rows],
                "truncated": len(rows) >= HISTORY_JSON_LIMIT,
            }
        )

    def _plot(self, now: datetime) -> str:
        if self._history is None:
            return '<p class="muted">History is off (history.enabled: false).</p>'
        history = self._history
        with self._plot_lock:
            cached = self._plot_cache
            if cached is not None and time.monotonic() - cached[0] < PLOT_CACHE_S:
                return cached[1]
            try:
                rows = history.entries(since=now - PLOT_SPAN, kinds=("accepted",))
            except HistoryError as err:
                log.warning("web history not read error=%s", err)
                return f'<p class="muted">History could not be read: {_e(err)}</p>'
            svg = render_plot([(e.ts, e.value) for e in rows], self._unit)
            self._plot_cache = (time.monotonic(), svg)
            return svg


def _logged(callback: Callable[[], Any]) -> Callable[[], Any]:
    """One log line for an unexpected error, instead of bottle's traceback on stderr."""

    def wrapper() -> Any:
        try:
            return callback()
        except bottle.HTTPResponse:
            raise
        except Exception as err:
            log.exception("web error path=%s error=%s", bottle.request.path, err)
            return _answer("internal error: see the edgemeter log\n", 500, TEXT)

    return wrapper


def _favicon() -> Any:
    # Served here so that browsers do not ask for /favicon.ico (a 404 in every log).
    return _answer(FAVICON, 200, "image/svg+xml", {"Cache-Control": "max-age=86400"})


def _answer(
    body: str | bytes, status: int, content_type: str, extra: dict[str, str] | None = None
) -> Any:
    """A response with the security headers; nothing here is cached unless it says so."""
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-store",
        **_security_headers(),
        **(extra or {}),
    }
    return bottle.HTTPResponse(body, status, headers)


def _security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def _error_page(error: Any) -> str:
    for name, value in _security_headers().items():
        bottle.response.set_header(name, value)
    bottle.response.set_header("Content-Type", TEXT)
    return f"{error.status_line}\n"


def _json_response(payload: dict[str, Any], status: int = 200) -> Any:
    return _answer(
        json.dumps(payload, ensure_ascii=False), status, "application/json; charset=utf-8"
    )


def _read_password(path: str) -> str:
    """The page's password from its file; never logged."""
    try:
        return read_secret(path, "http.password_file")
    except SecretError as err:
        raise WebError(str(err)) from err


def _reaches_beyond(host: str) -> bool:
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: it may resolve to anything


# --- JSON ------------------------------------------------------------------------


def status_payload(state: BoardState, meter_name: str, unit: str, now: datetime) -> dict[str, Any]:
    reading = state.accepted
    return {
        "meter": meter_name,
        "unit": unit,
        "now": _iso(now),
        "refresh_s": REFRESH_S,
        "reading": None
        if reading is None
        else {
            "value": reading.value,
            "raw": reading.raw,
            "unit": reading.unit,
            "confidence": reading.confidence,
            "ts": _iso(reading.ts),
            "age_s": _age_s(reading.ts, now),
        },
        "frame": None
        if state.frame_ts is None
        else {"ts": _iso(state.frame_ts), "age_s": _age_s(state.frame_ts, now)},
        "rejections": [
            {"raw": r.raw, "reason": r.reason, "ts": _iso(r.ts), "age_s": _age_s(r.ts, now)}
            for r in state.rejections
        ],
    }


def _entry_json(entry: Entry) -> dict[str, Any]:
    # The entry's frame path is a file on the Pi: not the page's business.
    return {
        "ts": _iso(entry.ts),
        "kind": entry.kind,
        "value": entry.value,
        "raw": entry.raw,
        "confidence": entry.confidence,
        "reason": entry.reason,
    }


def _parse_kinds(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kind: must be a comma-separated list of {', '.join(KINDS)}")
    return kinds


def _aware(ts: datetime) -> datetime:
    """The daemon's times are UTC; a naive one is taken as UTC rather than local."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _iso(ts: datetime) -> str:
    return _aware(ts).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _age_s(ts: datetime, now: datetime) -> float:
    return round(max(0.0, (now - _aware(ts)).total_seconds()), 1)


# --- HTML --------------------------------------------------------------------------


def _e(text: object) -> str:
    """Every dynamic string goes through here: OCR and plausibility text included."""
    return escape(str(text), quote=True)


def format_value(value: float, unit: str) -> str:
    """12345.6 -> '12 345.6 km', thousands split by a narrow no-break space."""
    text = f"{int(value):,}" if float(value).is_integer() else f"{value:,.6f}".rstrip("0")
    grouped = text.replace(",", "\u202f")
    return f"{grouped} {unit}".strip()


def _local(ts: datetime, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    """A time in the Pi's own time zone: the meter and its reader are in the same room."""
    return _aware(ts).astimezone().strftime(fmt).strip()


def _time(ts: datetime) -> str:
    """A <time> that the page's script turns into '3 min ago' (exact time on hover)."""
    local = _e(_local(ts))
    return f'<time datetime="{_e(_iso(ts))}" data-age title="{local}">at {local}</time>'


PLOT_TIME = "%d %b %H:%M"


def render_plot(points: Sequence[tuple[datetime, float | None]], unit: str) -> str:
    """The value over time as an inline SVG polyline (no script, no external asset).

    The SVG stretches to its box (preserveAspectRatio none, strokes that do not
    scale), and the labels are HTML beside it, so they stay readable on a phone.
    """
    data = sorted((_aware(ts).timestamp(), float(v)) for ts, v in points if v is not None)
    if len(data) < 2:
        return '<p class="muted">Not enough accepted readings yet for a plot.</p>'
    count = len(data)
    if count > PLOT_POINTS:
        step = (count - 1) / (PLOT_POINTS - 1)
        data = [data[round(i * step)] for i in range(PLOT_POINTS)]
    t0, t1 = data[0][0], data[-1][0]
    lo, hi = min(v for _, v in data), max(v for _, v in data)
    span_t, span_v = (t1 - t0) or 1.0, (hi - lo) or 1.0
    width, height, pad = 1000.0, 300.0, 6.0  # user units; pad keeps the line off the edges

    def xy(t: float, v: float) -> str:
        x = (t - t0) / span_t * width
        y = height / 2 if hi == lo else pad + (hi - v) / span_v * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    coords = [xy(t, v) for t, v in data]
    first_ts, last_ts = datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC)
    label = f"{format_value(lo, unit)} to {format_value(hi, unit)}, {_local(first_ts)} to"
    return (
        '<div class="chart">'
        f'<div class="ylab"><span>{_e(format_value(hi, unit))}</span>'
        f"<span>{_e(format_value(lo, unit))}</span></div>"
        f'<svg class="plot" viewBox="0 0 {width:.0f} {height:.0f}" preserveAspectRatio="none"'
        f' role="img" aria-label="{_e(f"{label} {_local(last_ts)}")}">'
        f'<polyline class="line" points="{" ".join(coords)}"/>'
        # A zero-length path with round caps: a dot that the stretching cannot squash.
        f'<path class="dot" d="M{coords[-1]} l0,0"/>'
        "</svg>"
        f'<div class="xlab"><span>{_e(_local(first_ts, PLOT_TIME))}</span>'
        f"<span>{_e(_local(last_ts, PLOT_TIME))}</span></div>"
        "</div>"
        f'<p class="muted small">{count} accepted readings in the last'
        f" {PLOT_SPAN.days} days.</p>"
    )


def _reading_html(state: BoardState) -> str:
    reading = state.accepted
    if reading is None:
        return '<p class="muted">No accepted reading yet.</p>'
    since = sum(1 for r in state.rejections if r.ts > reading.ts)
    facts = [
        ("Accepted", _time(reading.ts)),
        ("Digits read", f'<span class="mono">{_e(reading.raw)}</span>'),
        ("Confidence", _e(f"{reading.confidence:.0%}")),
        ("Rejected since", _e(f"{since}+" if since == REJECTIONS_KEPT else since)),
    ]
    if state.frame_ts is not None:
        facts.append(("Last frame", _time(state.frame_ts)))
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return (
        f'<p class="value" id="value">{_e(format_value(reading.value, reading.unit))}</p>'
        f'<dl class="facts">{rows}</dl>'
    )


def _rejections_html(state: BoardState) -> str:
    if not state.rejections:
        return '<p class="muted">No rejections.</p>'
    rows = "".join(
        f'<tr><td class="when">{_time(r.ts)}</td>'
        f'<td class="mono">{_e(r.raw) if r.raw is not None else "—"}</td>'
        f"<td>{_e(r.reason)}</td></tr>"
        for r in state.rejections
    )
    return (
        "<table><thead><tr><th>When</th><th>Read</th><th>Why rejected</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _frame_html(state: BoardState) -> str:
    if state.frame is None or state.frame_ts is None:
        return '<p class="placeholder" id="frame">No frame yet.</p>'
    stamp = int(state.frame_ts.timestamp() * 1000)
    return (
        f'<img id="frame" src="/frame.jpg?t={stamp}"'
        ' alt="The latest camera frame, with the digit window drawn on it">'
    )


def _frame_caption(state: BoardState) -> str:
    if state.frame_ts is None:
        return ""
    return f"frame {_time(state.frame_ts)}"


STYLE = """
:root { color-scheme: light dark; --bg: #f4f5f7; --card: #fff; --fg: #1b1f24;
  --muted: #5f6b7a; --line: #dde1e6; --accent: #0b6bcb; --bad: #b42318;
  --gutter: max(16px, calc((100% - 1100px) / 2 + 16px)); }
@media (prefers-color-scheme: dark) { :root { --bg: #15181c; --card: #1e2227;
  --fg: #e8eaed; --muted: #9aa4b1; --line: #333a42; --accent: #5aa9ff; --bad: #ff8a80; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { padding: 14px var(--gutter); border-bottom: 1px solid var(--line);
  background: var(--card); display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; }
header h1 { margin: 0; font-size: 1.25rem; }
main { max-width: 1100px; margin: 0 auto; padding: 16px;
  display: grid; gap: 16px; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; min-width: 0; }
h2 { margin: 0 0 8px; font-size: .8rem; letter-spacing: .06em; text-transform: uppercase;
  color: var(--muted); }
.wide { grid-column: 1 / -1; }
.value { margin: 4px 0; font-size: 2.6rem; font-weight: 650;
  font-variant-numeric: tabular-nums; }
.muted, .small { color: var(--muted); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 6px 16px;
  margin: 14px 0 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; }
.small { font-size: .85rem; margin: 4px 0 0; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
#frame { display: block; width: 100%; height: auto; border-radius: 6px; background: #000; }
.placeholder { display: grid; place-items: center; min-height: 180px; margin: 0;
  border: 1px dashed var(--line); border-radius: 6px; color: var(--muted); }
table { width: 100%; border-collapse: collapse; font-size: .92rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 600; }
td.when, td.mono { white-space: nowrap; }
td.when { color: var(--muted); }
.chart { display: grid; grid-template-columns: max-content minmax(0, 1fr);
  column-gap: 10px; font-size: .8rem; color: var(--muted); }
.ylab { display: flex; flex-direction: column; justify-content: space-between;
  text-align: right; white-space: nowrap; }
.xlab { grid-column: 2; display: flex; justify-content: space-between; padding-top: 4px; }
.plot { display: block; width: 100%; height: 220px; overflow: visible;
  border-left: 1px solid var(--muted); border-bottom: 1px solid var(--muted);
  background: linear-gradient(var(--line) 1px, transparent 1px) 0 0 / 100% 25%; }
.plot .line { fill: none; stroke: var(--accent); stroke-width: 2.5;
  stroke-linejoin: round; stroke-linecap: round; vector-effect: non-scaling-stroke; }
.plot .dot { stroke: var(--accent); stroke-width: 9; stroke-linecap: round;
  vector-effect: non-scaling-stroke; }
@media (max-width: 760px) { .plot { height: 160px; } }
#offline { margin: 0; padding: 8px var(--gutter); background: var(--bad); color: #fff; }
footer { max-width: 1100px; margin: 0 auto; padding: 0 16px 20px; color: var(--muted);
  font-size: .85rem; }
footer a { color: inherit; }
@media (max-width: 760px) { main { grid-template-columns: 1fr; } }
"""

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect x="1" y="7" width="30" height="18" rx="4" fill="#1b1f24"/>'
    '<rect x="5" y="11" width="6" height="10" fill="#fff"/>'
    '<rect x="13" y="11" width="6" height="10" fill="#fff"/>'
    '<rect x="21" y="11" width="6" height="10" fill="#0b6bcb"/></svg>'
)

# Refresh the live parts from a fresh copy of this page: the server renders (and
# escapes) everything, the script only moves nodes and writes "… ago" as text.
SCRIPT = """
"use strict";
(function () {
  var offset = 0, busy = false;
  function sync(doc) {
    var now = Date.parse(doc.body.getAttribute("data-now"));
    if (!isNaN(now)) { offset = now - Date.now(); }
  }
  function ago(iso) {
    var s = Math.max(0, (Date.now() + offset - Date.parse(iso)) / 1000);
    if (s < 60) { return Math.floor(s) + " s ago"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    if (s < 129600) { return Math.round(s / 3600) + " h ago"; }
    return Math.round(s / 86400) + " d ago";
  }
  function ages() {
    document.querySelectorAll("time[data-age]").forEach(function (t) {
      t.textContent = ago(t.getAttribute("datetime"));
    });
  }
  function swapFrame(doc) {
    var cur = document.getElementById("frame"), next = doc.getElementById("frame");
    if (!cur || !next || cur.outerHTML === next.outerHTML) { return; }
    if (next.tagName !== "IMG") { cur.replaceWith(document.importNode(next, true)); return; }
    var img = document.importNode(next, true);
    img.addEventListener("load", function () {
      var now = document.getElementById("frame");
      if (now) { now.replaceWith(img); }
    });
  }
  function refresh() {
    if (busy) { return; }
    busy = true;
    var opts = { cache: "no-store", credentials: "same-origin" };
    if (window.AbortSignal && AbortSignal.timeout) { opts.signal = AbortSignal.timeout(4000); }
    fetch(location.pathname, opts).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      var doc = new DOMParser().parseFromString(text, "text/html");
      sync(doc);
      document.querySelectorAll("[data-live]").forEach(function (el) {
        var fresh = doc.getElementById(el.id);
        if (fresh) { el.replaceChildren.apply(el, Array.from(fresh.childNodes)); }
      });
      swapFrame(doc);
      document.getElementById("offline").hidden = true;
      ages();
    }).catch(function () {
      document.getElementById("offline").hidden = false;
    }).finally(function () { busy = false; });
  }
  sync(document);
  ages();
  setInterval(ages, 1000);
  setInterval(refresh, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_S * 1000))


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


# Only this page's own script and style may run: text read off a meter never can.
CSP = (
    "default-src 'none'; img-src 'self'; connect-src 'self';"
    f" script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)};"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def render_page(state: BoardState, *, meter_name: str, unit: str, plot: str, now: datetime) -> str:
    """The whole page; every dynamic string is escaped here or by the helpers above."""
    title = _e(meter_name)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title} · edgemeter</title>"
        '<link rel="icon" href="/favicon.svg" type="image/svg+xml">'
        f"<style>{STYLE}</style></head>"
        f'<body data-now="{_e(_iso(now))}">'
        f'<header><h1>{title}</h1><span class="muted">edgemeter · {_e(unit)}</span></header>'
        '<p id="offline" hidden>Cannot reach edgemeter: the values below may be stale.</p>'
        "<main>"
        '<section class="frame"><h2>Camera</h2>'
        f"{_frame_html(state)}"
        f'<p class="small" id="frame-caption" data-live>{_frame_caption(state)}</p></section>'
        "<section><h2>Last accepted reading</h2>"
        f'<div id="reading" data-live>{_reading_html(state)}</div></section>'
        '<section class="wide"><h2>Value over time</h2>'
        f'<div id="plot" data-live>{plot}</div></section>'
        f'<section class="wide"><h2>Last rejections</h2>'
        f'<div id="rejections" data-live>{_rejections_html(state)}</div></section>'
        "</main>"
        f"<footer>Read-only. Refreshes every {REFRESH_S} s. JSON:"
        ' <a href="/api/status.json">status</a>,'
        ' <a href="/api/history.json">history</a>.</footer>'
        f"<script>{SCRIPT}</script>"
        "</body></html>\n"
    )
