"""The soak test's readers, in a process of their own (``python -m tests.soak.readers URL TOKEN N``).

Their timings must be the API server's read latency, not the wait for the test process's GIL (held by the
bulk writers' threads and the in-process extraction): so the readers run here, a separate interpreter that
does nothing but read, in the quiet run and under load alike. The test drives this process through
:class:`ReaderProcess`: one JSON command a line on its stdin, one JSON answer a line on its stdout.

Commands: ``{"cmd": "batches", "ids": [...]}`` (the released batches to page), ``{"cmd": "start"}``,
``{"cmd": "stop"}`` (answers the reads since ``start``: each page's start on the shared ``time.monotonic``
clock and its duration, the counts of pages, of 404s (purged) and of 503s or no answer, every HTTP answer
seen and the readers' failures), ``{"cmd": "exit"}`` (or end of input).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from clickstream.client import ClickstreamClient, NotFoundError, UnavailableError

PAGE_LIMIT, PAGE_EVENTS = 50, 10
REPO_ROOT = Path(__file__).resolve().parents[2]


class Recorder(httpx.HTTPTransport):
    """A client transport that records every answer: (route, status or None, Retry-After)."""

    def __init__(self, answers: list[tuple[str, int | None, str | None]]) -> None:
        super().__init__()
        self.answers = answers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.answers.append((request.url.path, None, None))
            raise
        self.answers.append((request.url.path, response.status_code, response.headers.get("Retry-After")))
        return response


# ------------------------------------------------------------------------------------- in the reader process


class _Readers:
    """``n`` threads paging the batches they are given, timing each page."""

    def __init__(self, base_url: str, token: str, n: int) -> None:
        self.base_url, self.token, self.n = base_url, token, n
        self.batches: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reset()

    def _reset(self) -> None:
        self.reads: list[tuple[float, float]] = []  # (start on time.monotonic, seconds)
        self.answers: list[tuple[str, int | None, str | None]] = []
        self.pages = self.not_found = self.unavailable = 0
        self.failures: list[str] = []

    def _read(self, seed: int) -> None:
        rng = random.Random(seed)
        with ClickstreamClient(self.base_url, token=self.token, transport=Recorder(self.answers)) as client:
            while not self._stop.is_set():
                batches = list(self.batches)
                if not batches:
                    time.sleep(0.1)
                    continue
                batch_id, after = rng.choice(batches), 0
                for _ in range(5):  # up to 5 pages of a batch, then another batch
                    if self._stop.is_set():
                        return
                    t0, started = time.monotonic(), time.perf_counter()
                    try:
                        page = client.get_batch_sessions(batch_id, after, PAGE_LIMIT, PAGE_EVENTS)
                    except NotFoundError:  # purged meanwhile
                        self.not_found += 1
                        break
                    except (UnavailableError, httpx.TransportError):
                        self.unavailable += 1
                        time.sleep(0.3)
                        continue
                    self.reads.append((t0, time.perf_counter() - started))
                    self.pages += 1
                    if page.last_number is None or len(page.sessions) < PAGE_LIMIT:
                        break
                    after = page.last_number

    def start(self) -> None:
        self._stop.clear()
        self._reset()

        def run(seed: int) -> None:
            try:
                self._read(seed)
            except BaseException as err:
                self.failures.append(repr(err))

        self._threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(self.n)]
        for t in self._threads:
            t.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        if any(t.is_alive() for t in self._threads):
            self.failures.append("a reader did not stop within 60 s")
        self._threads = []
        return {
            "reads": self.reads,
            "answers": self.answers,
            "pages": self.pages,
            "not_found": self.not_found,
            "unavailable": self.unavailable,
            "failures": self.failures,
        }


def main(argv: list[str]) -> int:
    base_url, token, n = argv[0], argv[1], int(argv[2])
    readers = _Readers(base_url, token, n)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "batches":
            readers.batches = list(command["ids"])
        elif command["cmd"] == "start":
            readers.start()
        elif command["cmd"] == "stop":
            sys.stdout.write(json.dumps(readers.stop()) + "\n")
            sys.stdout.flush()
        elif command["cmd"] == "exit":
            break
    readers.stop()
    return 0


# ---------------------------------------------------------------------------------------- in the test process


class ReaderProcess:
    """The test's handle on the reader process: the batches to page, start, stop (returns the reads)."""

    def __init__(self, base_url: str, token: str, n: int) -> None:
        self.batches: list[str] = []
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.soak.readers", base_url, token, str(n)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _send(self, command: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()

    def add_batch(self, batch_id: str) -> None:
        self.batches.append(batch_id)
        self._send({"cmd": "batches", "ids": self.batches})

    def remove_batch(self, batch_id: str) -> None:
        self.batches.remove(batch_id)
        self._send({"cmd": "batches", "ids": self.batches})

    def start(self) -> None:
        self._send({"cmd": "start"})

    def stop(self) -> dict[str, Any]:
        self._send({"cmd": "stop"})
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise AssertionError(f"the reader process ended (exit code {self._proc.poll()})")
        result: dict[str, Any] = json.loads(line)
        result["answers"] = [tuple(a) for a in result["answers"]]
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send({"cmd": "exit"})
                self._proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(10)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
