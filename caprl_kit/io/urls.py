"""Media read from http(s) URLs, with every wait bounded and Ctrl-C honoured at once.

A manifest may name its media by URL. A server that accepts the connection and never answers must not hold a
run: each read has a connect timeout (``media.url_connect_timeout_s``: the TCP connection and TLS handshake) and a
read timeout (``media.url_read_timeout_s``: the longest wait for the answer or for its next bytes), and no read
takes more than ``media.max_file_bytes`` (a ``Content-Length`` above it is refused before reading, a body that
grows past it is cut off while streaming). A failure is a ``MediaError`` with a stable kind, a status row of its
item: ``url_timeout`` (no connection, or no bytes, within the timeout), ``url_error`` (refused connection, unknown
host, an HTTP error status, a dropped connection), ``file_not_found`` (HTTP 404 / 410), ``too_large``.

The blocking read runs in a daemon thread; the caller waits for it in short waits, so a Ctrl-C in the main thread
is seen within 0.1 s, and a decode thread whose ``decode_map`` ended early (``io.decode.cancelled``) stops waiting
at once: neither is held by a silent server, and a daemon thread never holds up the interpreter's exit (its socket
is shut down as the wait is abandoned).

Other remote filesystems (``s3://``, ``gs://``, ...) are read through fsspec under their own packages' timeouts,
with the same short, cancellable waits (``call_cancellable``); an http(s) file that fsspec opens (a Parquet or tar
input at a URL, read by row or byte range) gets the same timeouts through ``fsspec_options``.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from caprl_kit.errors import MediaError

T = TypeVar("T")
CHUNK = 1 << 16
POLL_S = 0.1


@dataclass(frozen=True)
class UrlLimits:
    """How long a URL read may wait: ``connect_s`` for the connection (TCP and TLS), ``read_s`` for each wait on
    the server (the answer's headers, then each chunk of its body)."""

    connect_s: float = 10.0
    read_s: float = 60.0


DEFAULT_LIMITS = UrlLimits()


def is_http(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def call_cancellable(fn: Callable[[], T], abort: Callable[[], None] | None = None) -> T:
    """``fn()`` in a daemon thread, waited for in short waits: a ``KeyboardInterrupt`` in the waiting thread, or
    the waiting decode thread's cancellation (``io.decode.cancelled``), ends the wait at once (``abort`` is then
    called to free what ``fn`` holds, best effort) and is raised; ``fn``'s own exception is re-raised."""
    from caprl_kit.io.decode import Cancelled, cancelled

    done = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="caprl-url").start()
    try:
        while not done.wait(POLL_S):
            if cancelled():
                raise Cancelled("the decode was cancelled")
    except BaseException:
        if abort is not None:
            abort()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def _connection_class(
    base: type[http.client.HTTPConnection], limits: UrlLimits, opened: list[http.client.HTTPConnection]
) -> Any:
    """``base`` whose socket connects within ``limits.connect_s`` and then waits at most ``limits.read_s`` per
    read; each connection is recorded in ``opened`` so an abandoned read can shut its socket."""

    def factory(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        kwargs["timeout"] = limits.connect_s
        conn = base(host, **kwargs)
        connect = conn.connect

        def timed_connect() -> None:
            connect()
            if conn.sock is not None:
                conn.sock.settimeout(limits.read_s)

        conn.connect = timed_connect  # type: ignore[method-assign]  # per-connection timeouts: the instance's connect is wrapped
        opened.append(conn)
        return conn

    return factory


def _opener(limits: UrlLimits, opened: list[http.client.HTTPConnection]) -> urllib.request.OpenerDirector:
    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_connection_class(http.client.HTTPConnection, limits, opened), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(
                _connection_class(http.client.HTTPSConnection, limits, opened),
                req,
                context=self._context,  # type: ignore[attr-defined]  # HTTPSHandler's own SSL context, not in typeshed
            )

    return urllib.request.build_opener(Http, Https)


def _shut(opened: list[http.client.HTTPConnection]) -> None:
    for conn in list(opened):
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the daemon thread blocked in recv


def _quoted(url: str) -> str:
    """Spaces and other characters a request line cannot hold, percent-encoded (an existing ``%XX`` is kept)."""
    return urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def _fetch(url: str, max_bytes: int, limits: UrlLimits, opened: list[http.client.HTTPConnection]) -> bytes:
    from caprl_kit.io.media import _check_size, _over_cap

    request = urllib.request.Request(_quoted(url), headers={"User-Agent": "caprl-kit", "Accept-Encoding": "identity"})
    with _opener(limits, opened).open(request) as resp:
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit():
            _check_size(int(length), max_bytes, url)
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = resp.read1(min(CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise _over_cap(url, max_bytes, length or "unknown")
        return b"".join(chunks)


def _media_error(exc: BaseException, url: str, limits: UrlLimits) -> MediaError | None:
    """The status row a failed URL read becomes (None: not a network failure)."""
    connect = f"no connection within media.url_connect_timeout_s={limits.connect_s:g} s"
    silent = (
        f"the server sent nothing for media.url_read_timeout_s={limits.read_s:g} s (it accepted the "
        "connection but does not answer)"
    )
    if isinstance(exc, urllib.error.HTTPError):
        what = f"HTTP {exc.code} {exc.reason}"
        return MediaError("file_not_found" if exc.code in (404, 410) else "url_error", url, what)
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return MediaError("url_timeout", url, connect)
        return MediaError("url_error", url, f"cannot connect: {reason}")
    if isinstance(exc, TimeoutError):
        return MediaError("url_timeout", url, silent)
    if isinstance(exc, (http.client.HTTPException, OSError, ValueError)):
        return MediaError("url_error", url, f"the read failed: {type(exc).__name__}: {exc}".rstrip(": "))
    return None


def read_url(url: str, max_bytes: int, limits: UrlLimits | None = None) -> bytes:
    """The body of an http(s) URL: at most ``max_bytes`` (``too_large`` above), every wait bounded by ``limits``,
    and the wait itself cancellable (module docstring). Failures are ``MediaError`` s naming ``url``."""
    limits = limits or DEFAULT_LIMITS
    opened: list[http.client.HTTPConnection] = []
    try:
        return call_cancellable(lambda: _fetch(url, max_bytes, limits, opened), abort=lambda: _shut(opened))
    except MediaError:
        raise
    except Exception as exc:  # a network failure is a status row; anything else is re-raised
        err = _media_error(exc, url, limits)
        if err is None:
            raise
        raise err from None
    finally:
        _shut(opened)


def fsspec_options(url: str, limits: UrlLimits | None = None) -> dict[str, Any]:
    """Storage options that bound fsspec's http(s) filesystem (aiohttp) by ``limits``; {} for other URLs."""
    if not is_http(url):
        return {}
    try:
        import aiohttp
    except ImportError:  # fsspec's http filesystem needs aiohttp: it will say so itself
        return {}
    limits = limits or DEFAULT_LIMITS
    timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=limits.connect_s, sock_read=limits.read_s)
    return {"client_kwargs": {"timeout": timeout}}
