"""Real ``oblivio`` processes for tests and benchmarks: free loopback ports, polling, the command
line in a process of its own, and ``oblivio serve`` started, killed and stopped by PID.

Every process test (federation, witnesses, health, the console) and the federation benchmark
use these; a test stops only the processes it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

OBLIVIO = (sys.executable, "-m", "oblivio")
"""The command line, run by the interpreter running the tests."""
DEADLINE = 180.0
"""Seconds a poll waits at most by default: generous, the machine is shared."""


class NotSeenError(AssertionError):
    """What a poll waited for did not happen within its deadline."""


def wait_until(
    what: str, probe: Callable[[], bool], *, deadline: float = DEADLINE, every: float = 0.1
) -> bool:
    """Poll ``probe`` until it holds; False when ``deadline`` seconds pass first."""
    until = time.monotonic() + deadline
    while not probe():
        if time.monotonic() > until:
            return False
        time.sleep(every)
    return True


def poll(
    what: str, probe: Callable[[], bool], *, deadline: float = DEADLINE, every: float = 0.1
) -> None:
    """Poll ``probe`` until it holds; fail the test when ``deadline`` seconds pass first."""
    if not wait_until(what, probe, deadline=deadline, every=every):
        raise NotSeenError(f"{what}: not seen within {deadline:.0f} s")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def oblivio(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the command line in a process of its own; the caller checks the exit code."""
    return subprocess.run(
        [*OBLIVIO, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def cli(home: Path, *args: str) -> str:
    """Run ``oblivio --home HOME ARGS…``, which must succeed; its standard output, stripped."""
    done = oblivio("--home", str(home), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class ServerExitedError(AssertionError):
    """An ``oblivio serve`` process ended while a test waited for it to answer."""


@dataclass
class Served:
    """A node home served by an ``oblivio serve`` process on loopback, restartable on the same
    port; its standard error is appended to ``log``."""

    name: str
    home: Path
    port: int
    admin: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client of this node; with the admin key unless ``headers`` say otherwise."""
        return httpx.Client(base_url=self.url, headers=headers or self.admin, timeout=60)

    def start(self, *extra: str, deadline: float = DEADLINE) -> None:
        """Start serving and wait until ``GET /v1/health`` answers 200."""
        with self.log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [*OBLIVIO, "serve", "--home", str(self.home), "--port", str(self.port), *extra],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise ServerExitedError(f"{self.name} exited: {self.log.read_text()}")
            try:
                return httpx.get(self.url + "/v1/health", timeout=10).status_code == 200
            except httpx.TransportError:
                return False

        poll(f"{self.name} answering", up, deadline=deadline, every=0.2)

    def kill(self) -> None:
        """SIGKILL, by PID: no shutdown code runs."""
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        """SIGTERM, by PID, and SIGKILL if it has not ended within 30 s."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.kill()
            self.process = None
