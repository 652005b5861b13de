"""Run a job off the host's UI thread and hand its events back to the UI thread.

Host UIs must never freeze, and host APIs (bpy, nuke) may only be called from their main
thread. A :class:`BackgroundJob` talks to the server on a worker thread and puts events on a
queue; the host drains it from its main-thread timer (``bpy.app.timers``, Nuke's
``executeInMainThread``) with :meth:`poll`. Cancel is safe from any thread.

    job = BackgroundJob(address, request)
    job.start()
    ... every 0.1 s on the main thread:
    for event in job.poll():
        if event.kind == "progress": ui.progress(event.progress.fraction)
        elif event.kind == "done":   ui.load(event.result)
        elif event.kind == "error":  ui.report(event.error)
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

from . import errors
from .client import Client, JobResult, Progress
from .curve import keys_for


@dataclass
class Event:
    kind: str                      # "accepted" | "progress" | "done" | "error"
    progress: Progress | None = None
    result: JobResult | None = None
    error: errors.BodyDoubleError | None = None
    job_id: str | None = None

    @property
    def final(self) -> bool:
        return self.kind in ("done", "error")


class BackgroundJob:
    def __init__(self, address: str, request: Any, timeout: float = 10.0, client_name: str = "bodydouble-host",
                 curve_certs: tuple[str, str] = ("", "")):
        self.address = address
        self.curve_certs = curve_certs   # (server public, client secret) certificate files; empty: the environment's
        self.request = request
        self.timeout = timeout
        self.client_name = client_name
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.latest: Progress | None = None
        self.finished = False
        self._job = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bodydouble-job", daemon=True)

    def start(self) -> "BackgroundJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask for a stop; the job ends with an ``error`` event whose error is JobCancelled."""
        self._cancel.set()
        job = self._job
        if job is not None:
            threading.Thread(target=self._cancel_remote, args=(job,), daemon=True).start()

    def poll(self) -> list[Event]:
        """Events since the last poll; call from the host's main thread."""
        out = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return out
            if event.kind == "progress":
                self.latest = event.progress
            if event.final:
                self.finished = True
            out.append(event)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- worker thread -----------------------------------------------------------------------
    @staticmethod
    def _cancel_remote(job) -> None:
        try:
            job.cancel()
        except errors.BodyDoubleError:
            pass  # the final event tells the host what happened

    def _run(self) -> None:
        client = None
        try:
            # Keys are read here, not by the host: an unreadable certificate is reported like any failed connection.
            client = Client(self.address, timeout=self.timeout, name=self.client_name, curve=keys_for(*self.curve_certs))
            client.connect()
            if self._cancel.is_set():
                raise errors.JobCancelled("cancelled before it was sent")
            self._job = job = client.submit(self.request)
            if self._cancel.is_set():
                self._cancel_remote(job)
            announced = False
            for progress in job.events():
                if not announced and job.job_id:
                    self.events.put(Event("accepted", job_id=job.job_id))
                    announced = True
                self.events.put(Event("progress", progress=progress, job_id=job.job_id))
            self.events.put(Event("done", result=job.wait(), job_id=job.job_id))
        except errors.BodyDoubleError as exc:
            self.events.put(Event("error", error=exc))
        except Exception as exc:  # a host must always get a final event
            self.events.put(Event("error", error=errors.BodyDoubleError(f"{type(exc).__name__}: {exc}")))
        finally:
            if client is not None:
                client.close()
