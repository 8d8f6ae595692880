"""Jobs: every generation is queued, run in a worker thread and polled, never on the event
loop. One worker per model runs its jobs one at a time in order (a model's ``nfe`` counter and
its memory are not shared between two generations); a job reports progress after each solver
step and is cancelled by raising :class:`Cancelled` from that same report."""
from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .runs import ApiError

__all__ = ["Job", "JobManager", "Cancelled"]

log = logging.getLogger("sdeflow.serve")

#: what a user's request can raise inside a job: its message is shown on the page
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)


class Cancelled(Exception):
    """Raised from a job's progress report once its cancel flag is set."""


@dataclass
class Job:
    """One queued generation: ``work(job) -> (result dict, {name: PNG bytes})``."""

    id: str
    key: str
    kind: str
    work: Callable = field(repr=False)
    total: int | None = None
    seq: int = 0
    status: str = "queued"  # queued → running → done | error | cancelled
    step: int = 0
    result: dict | None = None
    images: dict = field(default_factory=dict, repr=False)
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_flag: threading.Event = field(default_factory=threading.Event, repr=False)

    def progress(self, advance: int = 1) -> None:
        """Count ``advance`` steps done; raise :class:`Cancelled` if cancel was asked."""
        if self.cancel_flag.is_set():
            raise Cancelled
        self.step += advance

    def callback(self, t=None, x=None) -> None:
        """``sdeflow.sample``'s ``callback(t, x)``: one step done."""
        self.progress()

    @property
    def finished_ok(self) -> bool:
        return self.status in ("done", "error", "cancelled")

    def to_json(self, ahead: int = 0) -> dict:
        images = {n: f"/api/jobs/{self.id}/images/{n}.png" for n in self.images}
        wall = None if self.started is None else (self.finished or time.time()) - self.started
        return dict(id=self.id, run=self.key, kind=self.kind, status=self.status,
                    step=self.step, total=self.total, ahead=ahead, error=self.error,
                    result=self.result, images=images, wall_seconds=wall)


class JobManager:
    """Queues by model key, a daemon worker thread per key, and the job table (the newest
    ``keep`` finished jobs are kept for polling; at most ``max_queue`` wait per model)."""

    def __init__(self, max_queue: int = 64, keep: int = 500):
        self.max_queue, self.keep = max_queue, keep
        self.jobs: dict[str, Job] = {}
        self.queues: dict[str, queue.Queue] = {}
        self.lock = threading.Lock()
        self.counter = itertools.count()

    def submit(self, key: str, kind: str, work: Callable, total: int | None = None) -> Job:
        """Queue ``work`` on the worker of model ``key`` (429 when its queue is full)."""
        with self.lock:
            waiting = sum(1 for j in self.jobs.values() if j.key == key and j.status == "queued")
            if waiting >= self.max_queue:
                raise ApiError(429, f"the queue of {key!r} is full ({waiting} jobs waiting); "
                                    "try again when some have finished")
            seq = next(self.counter)
            job = Job(id=f"{seq}-{secrets.token_hex(4)}", key=key, kind=kind, work=work,
                      total=total, seq=seq)
            self.jobs[job.id] = job
            self._forget_old()
            q = self.queues.get(key)
            if q is None:
                q = self.queues[key] = queue.Queue()
                threading.Thread(target=self._worker, args=(q,), daemon=True,
                                 name=f"sdeflow-serve-{key}").start()
        q.put(job)
        return job

    def _forget_old(self) -> None:
        done = [j for j in self.jobs.values() if j.finished_ok]
        for j in sorted(done, key=lambda j: j.seq)[:max(0, len(done) - self.keep)]:
            del self.jobs[j.id]

    def _worker(self, q: queue.Queue) -> None:
        while True:
            job = q.get()
            if job is None:
                return
            if job.cancel_flag.is_set():
                continue
            self._run(job)

    @staticmethod
    def _run(job: Job) -> None:
        job.status, job.started = "running", time.time()
        try:
            job.result, job.images = job.work(job)
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except USER_ERRORS as e:
            job.status, job.error = "error", " ".join(str(e).split()) or type(e).__name__
        except Exception as e:  # a bug: keep the server up, log the traceback
            log.exception("job %s failed", job.id)
            job.status, job.error = "error", f"internal error: {type(e).__name__}: {e}"
        finally:
            job.finished = time.time()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"unknown job {job_id!r} (finished jobs are kept for a while)")
        return job

    def ahead(self, job: Job) -> int:
        """Jobs of the same model that run before ``job``."""
        if job.status != "queued":
            return 0
        return sum(1 for j in list(self.jobs.values()) if j.key == job.key and j.seq < job.seq
                   and j.status in ("queued", "running"))

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued one never starts, a running one stops at its next step."""
        job = self.get(job_id)
        job.cancel_flag.set()
        if job.status == "queued":
            job.status, job.finished = "cancelled", time.time()
        return job

    def status(self) -> dict:
        counts: dict = {}
        for j in list(self.jobs.values()):
            counts[j.status] = counts.get(j.status, 0) + 1
        return dict(jobs=counts, workers=sorted(self.queues))

    def shutdown(self) -> None:
        for q in self.queues.values():
            q.put(None)
