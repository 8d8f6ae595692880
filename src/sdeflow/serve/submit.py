"""From a checked request to a queued job: each panel's request is validated against its run
(:mod:`.requests`), turned into the work of :mod:`.generate` or :mod:`.explore`, and queued on
the run's worker. Uploaded images are kept here, in memory, by an id the server draws."""
from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

import torch

from .explore import Explore, explore_work
from .generate import Draw, Fill, compare_panels, compare_work, inpaint_work, sample_work, test_images
from .images import parse_mask, read_upload
from .jobs import Job, JobManager
from .requests import (CompareRequest, ExploreRequest, InpaintRequest, SampleRequest, check_class,
                       check_schedule, check_solver, solver_total)
from .runs import ApiError, Run, RunRegistry

__all__ = ["Server", "MAX_UPLOADS"]

#: uploads kept in memory (the oldest is forgotten first)
MAX_UPLOADS = 64


class Server:
    """The server's state: the listed runs, the jobs and the uploads."""

    def __init__(self, registry: RunRegistry, jobs: JobManager | None = None):
        self.registry = registry
        self.jobs = jobs or JobManager()
        self.uploads: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    # --- uploads and test images -----------------------------------------------------------
    def upload(self, run_id: str, data: bytes) -> str:
        """Check and keep an uploaded image for an image run; its id."""
        run = self.registry.get(run_id, "image")
        x = read_upload(data, run.shape)
        uid = secrets.token_hex(8)
        with self.lock:
            self.uploads[uid] = (run.id, x)
            while len(self.uploads) > MAX_UPLOADS:
                self.uploads.popitem(last=False)
        return uid

    def uploaded(self, upload_id: str) -> tuple[str, torch.Tensor]:
        with self.lock:
            if upload_id not in self.uploads:
                raise ApiError(404, f"unknown upload {upload_id!r} (upload the image again)")
            return self.uploads[upload_id]

    def test_image(self, run_id: str, index: int) -> tuple[torch.Tensor, int | None]:
        run = self.registry.get(run_id, "image")
        x, labels = test_images(run)
        if not 0 <= index < len(x):
            raise ApiError(404, f"test image {index} does not exist; there are {len(x)} "
                                f"(0 … {len(x) - 1})")
        return x[index], None if labels is None else int(labels[index])

    # --- the panels ---------------------------------------------------------------------------
    def _check_draw(self, run: Run, solver, steps, schedule, label, guidance) -> None:
        check_solver(run, solver, steps, allow_auto=True)
        check_schedule(run, schedule, solver)
        check_class(run, label, guidance)

    def sample(self, req: SampleRequest) -> Job:
        run = self.registry.get(req.run, "image")
        self._check_draw(run, req.solver, req.steps, req.schedule, req.class_label, req.guidance)
        d = Draw(req.solver, req.steps, req.schedule, req.seed, req.n, req.class_label,
                 req.guidance)
        return self.jobs.submit(run.id, "sample", sample_work(run, d),
                                solver_total(run, req.solver, req.steps, req.schedule))

    def compare(self, req: CompareRequest) -> Job:
        from ..samplers import get_solver
        run = self.registry.get(req.run, "image")
        for s in req.solvers:
            self._check_draw(run, s, None, req.schedule, req.class_label, req.guidance)
        panels = compare_panels(req.solvers, req.steps, lambda s: run.flag("KIND") != "cld"
                                and s != "auto" and get_solver(s).adaptive)
        base = Draw(req.solvers[0], None, req.schedule, req.seed, req.n, req.class_label,
                    req.guidance)
        totals = [solver_total(run, s, k, req.schedule) for s, k in panels]
        return self.jobs.submit(run.id, "compare", compare_work(run, panels, base),
                                None if None in totals else sum(totals))

    def explore(self, req: ExploreRequest) -> Job:
        run = self.registry.get(req.run, "toy")
        _, t_min, T = run.time_range()
        t = req.t if req.t is not None else min(max(0.5, t_min), T)
        if not t_min <= t <= T:
            raise ApiError(400, f"t must lie in [t_min, T] = [{t_min:g}, {T:g}], got {t:g}")
        for s in req.solvers:
            check_solver(run, s, None)
        e = Explore(t, list(req.solvers), req.steps, req.seed, req.paths)
        totals = [solver_total(run, s, req.steps, None) for s in req.solvers]
        return self.jobs.submit(run.id, "explore", explore_work(run, e),
                                None if None in totals else sum(totals))

    def inpaint(self, req: InpaintRequest) -> Job:
        run = self.registry.get(req.run, "image")
        if run.flag("KIND") != "score" or run.flag("task") is not None:
            raise ApiError(400, f"run {run.id!r} cannot inpaint: it needs an unconditional "
                                "(or class-conditional) score model without a task")
        if req.method == "colorize" and run.shape[0] != 3:
            raise ApiError(400, "colorize needs an RGB model; this one has "
                                f"{run.shape[0]} channel(s)")
        x, label = self._source(run, req)
        mask = None if req.method == "colorize" else parse_mask(req.mask, run.shape)
        default = "pc" if req.method != "repaint" else "ancestral"
        check_solver(run, req.solver or default, req.steps, fixed_grid=True)
        f = Fill(req.method, req.solver, req.steps, req.seed, req.samples, req.jump_length,
                 req.resamplings, label)
        total = None if req.method == "repaint" else \
            solver_total(run, req.solver or default, req.steps, None)
        return self.jobs.submit(run.id, "inpaint", inpaint_work(run, x, mask, f), total)

    def _source(self, run: Run, req: InpaintRequest):
        """(image, its class or None): a test image by index, or an upload by id."""
        if (req.image is None) == (req.upload is None):
            raise ApiError(400, "give exactly one of image (a test image's index) and upload "
                                "(an uploaded image's id)")
        if req.image is not None:
            return self.test_image(run.id, req.image)
        owner, x = self.uploaded(req.upload)
        if owner != run.id:
            raise ApiError(400, f"upload {req.upload!r} was made for run {owner!r}")
        return x, None
