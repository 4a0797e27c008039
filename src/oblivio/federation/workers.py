"""The federation's background work inside ``oblivio serve``: push, pull, announce, retry.

Threads, all stopped by one event: the *pusher* drains the outbox (per-row exponential
backoff with full jitter, and a peer that cannot be reached is left alone until its delay
passes); the *puller* pulls from each active peer holding a token at least every poll interval
and at once when that peer announces something, and retries unverified records; the
*listener* keeps one Server-Sent Events subscription per peer. All state is in the database,
so a restarted node resumes where it stopped (outbox rows, pull cursors). A fourth thread, the
*prober*, runs due probes of peers a belief tombstone went to and stores reputations as they
recover (noncompliance.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Final

from oblivio.core.errors import OblivioError
from oblivio.federation.propagation import Federation
from oblivio.federation.transport import PeerRefusedError, PeerUnreachableError

log = logging.getLogger("oblivio.federation")
TICK: Final = 0.2
"""Seconds between checks of the stop event and of due work."""
RETRY_UNVERIFIED_EVERY: Final = timedelta(seconds=5)
REFRESH_REPUTATIONS_EVERY: Final = timedelta(minutes=10)
WAKE_SETTLE: Final = 0.05
"""Seconds the pusher waits after a wake-up before reading the outbox."""


class FederationWorkers:
    """The threads of one node's federation."""

    def __init__(self, federation: Federation, clock: Callable[[], datetime]) -> None:
        self.federation = federation
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pull_now: set[str] = set()
        self._pull_lock = threading.Lock()
        self._pulled_at: dict[str, datetime] = {}
        self._listeners: dict[str, threading.Thread] = {}

    def start(self) -> None:
        """Start the pusher, the puller, the listener and the prober."""
        self.federation.resume()
        for name, target in (
            ("oblivio-federation-push", self._push_loop),
            ("oblivio-federation-pull", self._pull_loop),
            ("oblivio-federation-listen", self._listen_loop),
            ("oblivio-federation-probe", self._probe_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to stop and wait a little for them."""
        self._stop.set()
        self.federation.wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _guarded(self, what: str, work: Callable[[], object]) -> None:
        try:
            work()
        except (OblivioError, OSError) as e:
            log.warning("federation %s: %s", what, e)

    # -- push ---------------------------------------------------------------------------------

    def _push_loop(self) -> None:
        blocked: dict[str, datetime] = {}
        while not self._stop.is_set():
            if self.federation.wake.is_set():
                # Woken from inside the transaction that writes the rows: let it commit.
                self._stop.wait(WAKE_SETTLE)
            self.federation.wake.clear()
            worked = False
            try:
                due = self.federation.due()
            except OblivioError as e:
                log.warning("federation outbox: %s", e)
                due = []
            for delivery in due:
                if self._stop.is_set():
                    return
                until = blocked.get(delivery.peer)
                if until is not None and until > self._clock():
                    continue
                try:
                    delay = self.federation.deliver(delivery)
                except OblivioError as e:
                    log.warning("federation delivery of %s: %s", delivery.record_id, e)
                    continue
                worked = True
                if delay is not None:
                    blocked[delivery.peer] = self._clock() + delay
            if not worked:
                self.federation.wake.wait(TICK * 5)

    # -- pull ---------------------------------------------------------------------------------

    def request_pull(self, peer: str) -> None:
        """Pull from ``peer`` at the next tick (it announced a record)."""
        with self._pull_lock:
            self._pull_now.add(peer)

    def _pull_loop(self) -> None:
        retried_at = self._clock() - RETRY_UNVERIFIED_EVERY
        while not self._stop.wait(TICK):
            now = self._clock()
            with self._pull_lock:
                asked, self._pull_now = self._pull_now, set()
            try:
                peers = self.federation.peers.every("active")
            except OblivioError as e:
                log.warning("federation peers: %s", e)
                continue
            for peer in peers:
                if peer.token is None:
                    continue
                last = self._pulled_at.get(peer.name)
                if (
                    peer.name in asked
                    or last is None
                    or now - last >= (self.federation.settings.poll_interval)
                ):
                    self._pulled_at[peer.name] = now
                    self._guarded(f"pull from {peer.name}", partial(self._pull, peer.name))
            if now - retried_at >= RETRY_UNVERIFIED_EVERY:
                retried_at = now
                self._guarded("retry of unverified records", self.federation.retry_unverified)

    def _pull(self, name: str) -> None:
        peer = self.federation.peers.find(name)
        if peer is not None and peer.state == "active":
            self.federation.pull_from(peer)

    # -- announce -----------------------------------------------------------------------------

    def _listen_loop(self) -> None:
        while not self._stop.wait(TICK * 5):
            try:
                peers = self.federation.peers.every("active")
            except OblivioError:
                continue
            for peer in peers:
                running = self._listeners.get(peer.name)
                if peer.token is None or (running is not None and running.is_alive()):
                    continue
                thread = threading.Thread(
                    target=self._listen,
                    args=(peer.name,),
                    name=f"oblivio-federation-events-{peer.name}",
                    daemon=True,
                )
                self._listeners[peer.name] = thread
                thread.start()

    def _listen(self, name: str) -> None:
        failures = 0
        while not self._stop.is_set():
            peer = self.federation.peers.find(name)
            if peer is None or peer.state != "active" or peer.token is None:
                return
            try:
                for event in self.federation.client.events(peer.url, peer.token):
                    failures = 0
                    if self._stop.is_set():
                        return
                    if event in ("open", "tombstone_new", "revocation_new"):
                        self.request_pull(name)
            except (PeerUnreachableError, PeerRefusedError) as e:
                log.info("federation announce stream of %s: %s", name, e)
            failures += 1
            self._stop.wait(min(30.0, float(2 ** min(failures, 5))))

    # -- probe --------------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        noncompliance = self.federation.noncompliance
        refreshed_at: datetime | None = None
        while not self._stop.wait(TICK * 5):
            now = self._clock()
            if refreshed_at is None or now - refreshed_at >= REFRESH_REPUTATIONS_EVERY:
                refreshed_at = now
                self._guarded("reputation refresh", noncompliance.refresh)
            try:
                due = noncompliance.due()
            except OblivioError as e:
                log.warning("federation probes: %s", e)
                continue
            for probe in due:
                if self._stop.is_set():
                    return
                self._guarded(
                    f"probe of {probe.peer} for {probe.tombstone_id}",
                    partial(noncompliance.run, probe),
                )
