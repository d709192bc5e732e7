"""The sender's one thread: libcurl's multi interface driven with ``socket_action`` from an
epoll loop (``poll`` where there is no epoll), the way tornado's ``curl_httpclient`` does.

libcurl says through ``M_SOCKETFUNCTION`` which sockets to watch for what and through
``M_TIMERFUNCTION`` when it next needs to run; the loop waits on exactly those, tells libcurl
what became ready, and collects finished transfers with ``info_read``. ``multi.select`` is not
used: it is ``select(2)``, capped near 1,024 descriptors. Easy handles are kept on a free list
and reused, and the multi handle's connection cache keeps connections alive from one attempt
to the next, whichever handle makes it.

Work comes in two ways, both thread-safe: :meth:`SendLoop.submit` (a queue) and the
``source`` the owner gives (asked for up to as many requests as there is room for, whenever
it may have some: after :meth:`SendLoop.wake` and after every finished attempt). An attempt
whose host has no fresh checked DNS answer waits for :class:`~.addresses.Lookups` without
holding the loop. Results go to each request's ``done`` on this thread, and ``settled`` is
called once at the end of a turn of the loop in which attempts ended: an owner that passes
results on to another thread hands them over in one go instead of waking it per attempt.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pycurl

from ..urlrules import Lookup, UnresolvableHost, UrlRefused
from . import answers
from .addresses import Checked, Lookups, _AddressCache
from .attempts import OutboundSettings, Outcome, Request
from .failures import describe
from .handles import Defaults, Proxy, Transfer, options_for
from .poller import Poller, name_thread
from .targets import Target, Targets

log = logging.getLogger("chatbot_webhooks.sender")

_IN = select.POLLIN | select.POLLPRI
_OUT = select.POLLOUT
_ERR = select.POLLERR | select.POLLHUP
_WATCH = {pycurl.POLL_IN: _IN, pycurl.POLL_OUT: _OUT, pycurl.POLL_INOUT: _IN | _OUT}
#: Idle connections the multi handle keeps beyond one per attempt in flight.
_SPARE_CONNECTIONS = 64


class _Waiting:
    """An attempt waiting for its host's DNS answer."""

    __slots__ = ("request", "target", "started", "deadline")

    def __init__(self, request: Request, target: Target, started: float, deadline: float
                 ) -> None:
        self.request, self.target, self.started, self.deadline = (request, target, started,
                                                                  deadline)


class SendLoop:
    """The multi handle, its sockets, timer and free handles; :meth:`run` is the thread."""

    def __init__(self, settings: OutboundSettings, *, lookup: Lookup | None,
                 source: Callable[[int], list[Request]] | None,
                 settled: Callable[[], None] | None, proxy: Proxy | None,
                 ca_bundle: str, ca_is_dir: bool) -> None:
        self.settings = settings
        self.max_in_flight = settings.max_in_flight
        self._timeout = settings.timeout
        self._timeout_ms = int(settings.timeout * 1000)
        self._source = source
        self._settled = settled
        self._ended = False
        self._proxy = proxy
        self._defaults = Defaults()
        self._targets = Targets(allow_private=settings.allow_private,
                                require_https=settings.require_https)
        self._addresses = _AddressCache(lookup, allow_private=settings.allow_private)
        self._lookups = Lookups(self._addresses, self._resolved_one)
        #: Names need no lookup of ours when a proxy connects and no address rule applies.
        self._lookup_names = proxy is None or not settings.allow_private
        self._check = proxy is None and not settings.allow_private
        self._options = options_for(connect_timeout=min(settings.connect_timeout,
                                                        settings.timeout),
                                    user_agent=settings.user_agent, ca_bundle=ca_bundle,
                                    ca_is_dir=ca_is_dir, proxy=proxy)
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self.multi.setopt(pycurl.M_MAXCONNECTS, self.max_in_flight + _SPARE_CONNECTIONS)
        self._poller = Poller()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._wake_r, _IN)
        #: Descriptors in the poller -> the events watched; those libcurl stopped watching
        #: (an idle kept-alive connection) stay registered until an event or their close
        #: says otherwise (``_idle``): a reused connection costs no epoll_ctl call.
        self._watched: dict[int, int] = {}
        self._idle: set[int] = set()
        self._timer_at: float | None = None
        self._free: list[Transfer] = []
        self._all: list[Transfer] = []
        self._opened: list[socket.socket] = []
        self._submitted: deque[Request] = deque()
        self._resolved: deque[tuple[tuple[str, int], Future[Checked]]] = deque()
        self._waiting: dict[tuple[str, int], list[_Waiting]] = {}
        #: Attempts begun and not finished (in libcurl or waiting for a lookup).
        self.in_flight = 0
        self._pull = True
        self._asleep = False
        self._shut_down = False
        self.closing = False

    # -- other threads -------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        self._submitted.append(request)
        self.wake()

    def wake(self) -> None:
        """The source may have requests (or a lookup ended, or the loop is to stop)."""
        self._pull = True
        if self._asleep and not self._shut_down:
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already
            except OSError:
                pass  # closed meanwhile: nobody to wake

    def _resolved_one(self, key: tuple[str, int], future: Future[Checked]) -> None:
        self._resolved.append((key, future))
        self.wake()

    # -- the thread ----------------------------------------------------------------------
    def run(self) -> None:
        name_thread("webhook-sender")
        try:
            while not self.closing:
                try:
                    self._turn()
                except Exception:  # a bug must not stop every delivery of the process
                    log.exception("the sender's loop failed; it goes on")
                    time.sleep(0.01)
        finally:
            self._shut()

    def _turn(self) -> None:
        if self._resolved:
            self._take_answers()
        self._start()
        timeout = self._wait_time()
        self._asleep = True
        if self._submitted or self._resolved or (self._pull and self._source is not None
                                                 and self.in_flight < self.max_in_flight):
            timeout = 0.0
        events = self._poller.poll(timeout)
        self._asleep = False
        action = self.multi.socket_action
        for fd, mask in events:
            if fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            if fd in self._idle:  # an idle connection closed or spoke: libcurl looks at reuse
                self._forget(fd)
                continue
            flags = 0
            if mask & _IN:
                flags |= pycurl.CSELECT_IN
            if mask & _OUT:
                flags |= pycurl.CSELECT_OUT
            if mask & _ERR:
                flags |= pycurl.CSELECT_ERR
            action(fd, flags)
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            self._timer_at = None
            action(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()
        if self._opened:
            for sock in self._opened:
                sock.close()  # libcurl holds its own duplicate of each
            self._opened.clear()
        if self._waiting:
            self._expire_waiting()
        if self._ended and self._settled is not None:
            self._ended = False
            self._settled()

    def _wait_time(self) -> float:
        timeout = 1.0
        if self._timer_at is not None:
            timeout = min(timeout, max(0.0, self._timer_at - time.monotonic()))
        if self._waiting:
            first = min(w.deadline for ws in self._waiting.values() for w in ws)
            timeout = min(timeout, max(0.0, first - time.monotonic()))
        return timeout

    # -- libcurl's callbacks -------------------------------------------------------------
    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        watched = self._watched
        if what == pycurl.POLL_REMOVE:
            if fd in watched:
                self._idle.add(fd)
            return
        mask = _WATCH.get(what, _IN | _OUT)
        known = watched.get(fd)
        if fd in self._idle:
            # Kept registered while idle; but libcurl may have closed it meanwhile (epoll then
            # forgot it) and this may be a new socket with the same number: modify says.
            self._idle.discard(fd)
            known = None if known is None else -1
        elif known == mask:
            return
        try:
            if known is None:
                self._poller.register(fd, mask)
            else:
                self._poller.modify(fd, mask)
        except FileExistsError:
            self._poller.modify(fd, mask)
        except (FileNotFoundError, KeyError):
            self._poller.register(fd, mask)
        watched[fd] = mask

    def _forget(self, fd: int) -> None:
        """An idle descriptor had an event (the receiver closed it, most likely): stop
        watching it; libcurl finds it dead before any reuse."""
        if self._watched.pop(fd, None) is not None:
            self._idle.discard(fd)
            try:
                self._poller.unregister(fd)
            except (OSError, KeyError, ValueError):
                pass

    def _on_timer(self, timeout_ms: int) -> None:
        self._timer_at = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    # -- attempts ------------------------------------------------------------------------
    def _start(self) -> None:
        room = self.max_in_flight - self.in_flight
        submitted = self._submitted
        while room > 0 and submitted:
            self._begin(submitted.popleft())
            room = self.max_in_flight - self.in_flight
        if room > 0 and self._pull and self._source is not None:
            self._pull = False
            given = self._source(room)
            for request in given:
                self._begin(request)
            if len(given) >= room:
                self._pull = True  # there may be more

    def _begin(self, request: Request) -> None:
        started = time.monotonic()
        target = self._targets.get(request.url)
        if isinstance(target, str):
            self._deliver(request, _failed(started, f"refused: {target}"))
            return
        checked: Checked | None = None
        if not target.literal and self._lookup_names:
            checked = self._addresses.cached(target.host, target.port)
            if checked is None:
                key = (target.host, target.port)
                waiting = self._waiting.get(key)
                if waiting is None:
                    waiting = self._waiting[key] = []
                    self._lookups.start(target.host, target.port)
                waiting.append(_Waiting(request, target, started, started + self._timeout))
                self.in_flight += 1
                return
        self._launch(request, target, checked, started)

    def _launch(self, request: Request, target: Target, checked: Checked | None,
                started: float, fresh: bool = False) -> None:
        try:
            lines = self._defaults.build(request.headers, len(request.body))
        except ValueError as exc:
            self._deliver(request, _failed(started, f"invalid request: {exc}"))
            return
        left_ms = self._timeout_ms
        waited = time.monotonic() - started
        if waited > 0.001:  # a DNS lookup (or the sender's queue) took some of the budget
            left_ms = int((self._timeout - waited) * 1000)
            if left_ms <= 0:
                self._deliver(request, _failed(started, "timeout"))
                return
        transfer = self._free.pop() if self._free else self._new_transfer()
        try:
            transfer.begin(request, target, checked, lines, request.body, started, left_ms,
                           fresh)
            self.multi.add_handle(transfer.curl)
        except Exception as exc:  # out of descriptors or memory: this attempt fails, not all
            log.exception("an attempt could not be started")
            transfer.clear()
            self._free.append(transfer)
            self._deliver(request, _failed(started, f"internal error: {exc!r}"))
            return
        self.in_flight += 1

    def _new_transfer(self) -> Transfer:
        transfer = Transfer(self._options, self.settings.max_response_bytes, self._check,
                            self._opened)
        self._all.append(transfer)
        return transfer

    def _take_answers(self) -> None:
        while self._resolved:
            key, future = self._resolved.popleft()
            waiting = self._waiting.pop(key, [])
            self.in_flight -= len(waiting)
            error = future.exception() if not future.cancelled() else RuntimeError("stopped")
            for one in waiting:
                if error is None:
                    self._launch(one.request, one.target, future.result(), one.started)
                else:
                    self._deliver(one.request, _failed(one.started, _refusal_text(error)))

    def _expire_waiting(self) -> None:
        now = time.monotonic()
        for waiting in list(self._waiting.values()):
            late = [one for one in waiting if one.deadline <= now]
            if not late:
                continue
            waiting[:] = [one for one in waiting if one.deadline > now]
            self.in_flight -= len(late)
            for one in late:  # the lookup goes on; its answer is kept for the next attempts
                self._deliver(one.request, _failed(one.started, "timeout"))

    def _collect(self) -> None:
        multi = self.multi
        while True:
            queued, succeeded, failed = multi.info_read()
            for curl in succeeded:
                self._finish_safely(curl.transfer, 0, "")
            for curl, code, message in failed:
                self._finish_safely(curl.transfer, code, message)
            if not queued:
                return

    def _finish_safely(self, transfer: Transfer, code: int, message: str) -> None:
        """:meth:`_finish`, and should it fail, the attempt still ends with an outcome: its
        caller waits for one (a delivery job for every attempt it handed over)."""
        request, started = transfer.request, transfer.started
        try:
            self._finish(transfer, code, message)
        except Exception as exc:
            log.exception("a finished attempt could not be read")
            if transfer.request is request and request is not None:
                transfer.clear()
                self._free.append(transfer)
                self._deliver(request, _failed(started, f"internal error: {exc!r}"))

    def _finish(self, transfer: Transfer, code: int, message: str) -> None:
        curl = transfer.curl
        self.multi.remove_handle(curl)
        self.in_flight -= 1
        self._pull = True
        request, target = transfer.request, transfer.target
        assert target is not None
        status: int | None = None
        headers = transfer.headers
        if headers.endswith(b"\r\n\r\n") or answers.headers_complete(headers):
            status = curl.getinfo(pycurl.RESPONSE_CODE) or None
            if status is not None and status < 200:
                status = None  # only informational answers: no answer at all
        error: str | None = None
        if transfer.switched:
            error = "invalid response: 101 Switching Protocols without an answer"
        elif code and not (code == pycurl.E_WRITE_ERROR and transfer.capped):
            if transfer.refused is not None:
                error = transfer.refused
            else:
                os_errno = curl.getinfo(pycurl.OS_ERRNO)
                if self._may_resend(transfer, code, message):
                    checked = transfer.checked
                    started = transfer.started
                    transfer.clear()
                    self._free.append(transfer)
                    self._launch(request, target, checked, started, fresh=True)
                    return
                error = describe(code, message, os_errno, host=target.host,
                                 proxy=self._proxy is not None)
        if error is None and status is None:
            error = ("invalid response: no final answer" if transfer.headers
                     else "connection closed by receiver")
        outcome = Outcome(
            status=status,
            error=error,
            duration_ms=(time.monotonic() - transfer.started) * 1000.0,
            retry_after=(answers.retry_after(transfer.headers)
                         if status is not None and not 200 <= status < 300 else None),
            body_excerpt=answers.excerpt(transfer.body),
        )
        transfer.clear()
        self._free.append(transfer)
        self._deliver(request, outcome)

    def _may_resend(self, transfer: Transfer, code: int, message: str) -> bool:
        """Whether the POST could not be sent on a reused connection (the receiver had closed
        it): then it is sent once more, on a fresh one. Never once it went out."""
        return (code == pycurl.E_SEND_FAIL_REWIND and not transfer.resent
                and message.lower().startswith("send failure")
                and transfer.curl.getinfo(pycurl.NUM_CONNECTS) == 0)

    def _deliver(self, request: Request, outcome: Outcome) -> None:
        self._ended = True
        try:
            request.done(request, outcome)
        except Exception:
            log.exception("a delivery's result could not be handed back")

    # -- stopping ------------------------------------------------------------------------
    def _shut(self) -> None:
        """Fail what is left (so no caller waits for ever), then free libcurl's handles."""
        self._shut_down = True
        self._asleep = False
        left: list[tuple[Request, float]] = [(t.request, t.started) for t in self._all
                                             if t.request is not None]
        left += [(w.request, w.started) for ws in self._waiting.values() for w in ws]
        left += [(r, time.monotonic()) for r in self._submitted]
        self._waiting.clear()
        self._submitted.clear()
        for transfer in self._all:
            if transfer.request is not None:
                self.multi.remove_handle(transfer.curl)
        for request, started in left:
            self._deliver(request, _failed(started, "internal error: the sender was closed"))
        if self._ended and self._settled is not None:
            self._settled()
        self.in_flight = 0
        for transfer in self._all:
            transfer.close()
        self._all.clear()
        self._free.clear()
        self.multi.close()
        self._lookups.close()
        self._poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for sock in self._opened:
            sock.close()


def _refusal_text(error: BaseException) -> str:
    if isinstance(error, UnresolvableHost):
        return str(error)
    if isinstance(error, UrlRefused):
        return f"refused: {error}"
    return f"connection error: {type(error).__name__}"


def _failed(started: float, error: str) -> Outcome:
    return Outcome(status=None, error=error, duration_ms=(time.monotonic() - started) * 1000.0,
                   retry_after=None, body_excerpt="")
