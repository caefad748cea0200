"""WatchJob without a thread per watcher: one notifier thread reads the store for every
watched job, and the watchers are coroutines on the server's event loop.

Why: the synchronous gRPC server runs a streaming handler on one of its pool threads for
the stream's whole life, so N watchers held N threads, and a few hundred idle dashboards
could take every thread the API had. Here a watcher costs a coroutine and a subscription.

* :class:`WatchHub` keeps one :class:`JobFeed` per watched job. Its notifier thread waits on
  the manager's change signal (``wait_for_change``: every store write; a 1 s poll as backstop),
  reads each watched job's new events once — one query per job, however many watch it — and
  hands them to the loop, which wakes that job's watchers.
* A feed buffers the last :data:`FEED_KEEP` events. A watcher behind the buffer (a replay
  with ``after_seq``, or a slow reader) pages through the store itself, through the thread
  pool, :data:`PAGE` events at a time, then follows the buffer.
* A job's stream ends after its terminal state event: the notifier marks the feed final only
  once it has read every event written up to that state (they are written in one transaction).
* Each event is converted to its message once, for all watchers, and the watchers are woken
  :data:`WAKE_CHUNK` at a time, one chunk per turn of the event loop: a burst of a thousand
  sends at a round boundary interleaves with the other calls (a GetJob waits for a chunk,
  not for the whole burst).
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from coordinator.store import TERMINAL, Event

PAGE = 64          # events read from the store at a time by a watcher replaying history
FEED_KEEP = 512    # newest events a feed keeps for its watchers
POLL_S = 1.0       # the notifier's backstop when no write wakes it
WAKE_CHUNK = 32    # watchers woken per turn of the event loop


@dataclass
class JobFeed:
    """One watched job's newest events, each already converted to its message once for all its
    watchers (seqs are gap-free, so the buffer is indexed by seq)."""

    job_id: str
    base: int                                   # the buffer holds every event with seq > base
    events: list = field(default_factory=list)  # (seq, message), seq = base + 1, base + 2, ...
    final: bool = False                         # the terminal state event is in the buffer (or before base)
    watchers: int = 0
    waiting: dict = field(default_factory=dict)  # futures of the watchers waiting for news (a set, in order)

    @property
    def last(self) -> int:
        return self.events[-1][0] if self.events else self.base

    def after(self, seq: int) -> list | None:
        """Buffered messages after ``seq``; None when ``seq`` is older than the buffer."""
        if seq < self.base:
            return None
        return self.events[seq - self.base:]

    def publish(self, events: list, final: bool) -> None:
        """On the loop: append what the notifier read (``(seq, message)``), wake the watchers."""
        fresh = [e for e in events if e[0] > self.last]  # a notifier pass may re-read what is here
        gap = bool(fresh) and fresh[0][0] != self.last + 1
        if gap:  # never leave a hole (not expected: reads start at .last); the next pass reads again
            fresh = []
        self.events.extend(fresh)
        if len(self.events) > FEED_KEEP:
            drop = len(self.events) - FEED_KEEP
            self.base = self.events[drop - 1][0]
            del self.events[:drop]
        self.final = self.final or (final and not gap)
        if fresh or self.final:
            self.wake()

    def wait(self) -> asyncio.Future:
        """A future that a later :meth:`wake` resolves (made and queued on the loop, right
        after the caller looked: no wake-up can fall between)."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[fut] = None
        return fut

    def wake(self) -> None:
        batch, self.waiting = list(self.waiting), {}
        _wake_chunks(batch, 0)


def _wake_chunks(batch: list, start: int) -> None:
    for fut in batch[start:start + WAKE_CHUNK]:
        if not fut.done():
            fut.set_result(None)
    if start + WAKE_CHUNK < len(batch):  # the rest at the next turn: other calls' callbacks go first
        asyncio.get_running_loop().call_soon(_wake_chunks, batch, start + WAKE_CHUNK)


class WatchHub:
    """Feeds of the watched jobs and the notifier thread that fills them (module docstring)."""

    def __init__(self, manager, loop: asyncio.AbstractEventLoop, pool, convert=lambda ev: ev):
        self.m, self.loop, self.pool, self.convert = manager, loop, pool, convert
        self.feeds: dict[str, JobFeed] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "WatchHub":
        self._thread = threading.Thread(target=self._notify_loop, name="rpc-watch-notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.m.notify()
        if self._thread is not None:
            self._thread.join(10)
        for feed in list(self.feeds.values()):
            try:
                self.loop.call_soon_threadsafe(feed.wake)
            except RuntimeError:  # the loop is closed already
                pass

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self.m.stopping

    # ----- the notifier ------------------------------------------------------------------------
    def _notify_loop(self) -> None:
        behind = False  # a job had more new events than one read: read again at once
        while not self.stopping:
            if not behind:
                self.m.wait_for_change(POLL_S)
            if self.stopping:
                return
            with self._lock:
                feeds = [(f, f.last, f.final) for f in self.feeds.values()]
            behind = False
            for feed, last, final in feeds:
                if final:
                    continue
                try:
                    events, done = self._read(feed.job_id, last)
                except Exception:  # noqa: BLE001 - a store hiccup: the next pass reads again
                    continue
                behind = behind or len(events) >= FEED_KEEP
                if events or done:
                    messages = [(ev.seq, self.convert(ev)) for ev in events]  # once, for every watcher
                    try:
                        self.loop.call_soon_threadsafe(feed.publish, messages, done)
                    except RuntimeError:  # the loop is closed: the server is stopping
                        return

    def _read(self, job_id: str, last: int) -> tuple[list[Event], bool]:
        """New events after ``last`` and whether the job has ended (read after its events, then
        the events again: the final ones are committed with the terminal state)."""
        events = self.m.events(job_id, last, limit=FEED_KEEP)
        if len(events) == FEED_KEEP:
            return events, False  # more to come: the next pass (no wait when there is news)
        rec = self.m.record(job_id)
        if rec is None or rec.state not in TERMINAL:
            return events, False
        tail = self.m.events(job_id, events[-1].seq if events else last, limit=FEED_KEEP)
        return events + tail, True

    # ----- the watchers (coroutines on the loop) -------------------------------------------------
    async def in_pool(self, fn, *args):
        return await self.loop.run_in_executor(self.pool, fn, *args)

    async def subscribe(self, job_id: str) -> JobFeed:
        feed = self.feeds.get(job_id)
        if feed is None:
            base = await self.in_pool(self.m.last_seq, job_id)
            feed = self.feeds.get(job_id)  # another watcher may have made it meanwhile
            if feed is None:
                feed = JobFeed(job_id, base)
                with self._lock:
                    self.feeds[job_id] = feed
                self.m.notify()  # read its state now, not at the next write
        feed.watchers += 1
        return feed

    def unsubscribe(self, feed: JobFeed) -> None:
        feed.watchers -= 1
        if feed.watchers <= 0:
            with self._lock:
                if self.feeds.get(feed.job_id) is feed:
                    del self.feeds[feed.job_id]

    async def follow(self, job_id: str, after: int):
        """The job's events after ``after``, to its end, as messages (``convert``)."""
        feed = await self.subscribe(job_id)
        try:
            while not self.stopping:
                events = feed.after(after)
                if events is None:
                    page = await self.in_pool(self.m.events, job_id, after, PAGE)
                    events = [(ev.seq, self.convert(ev)) for ev in page]
                if events:
                    for seq, message in events:
                        yield message
                        after = seq
                    continue
                if feed.final and after >= feed.last:
                    return
                news = feed.wait()
                try:
                    await asyncio.wait_for(news, timeout=POLL_S * 5)
                except asyncio.TimeoutError:
                    pass
                finally:
                    feed.waiting.pop(news, None)  # timed out or cancelled: not left behind
        finally:
            self.unsubscribe(feed)
