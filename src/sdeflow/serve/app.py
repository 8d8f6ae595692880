"""The HTTP routes of ``sdeflow serve``: the page, the run listing, the panels' job endpoints
and the pictures. Every handler is quick — generations are queued as jobs (:mod:`.jobs`) and
polled — and every refusal is a 4xx JSON ``{"error": message}``. Files are served only from a
fixed list (the page's three files); runs, images and jobs are addressed by ids."""
from __future__ import annotations

import contextlib
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .images import MAX_UPLOAD_BYTES, grid_png
from .jobs import JobManager
from .requests import MAX_IMAGES, MAX_STEPS, CompareRequest, ExploreRequest, InpaintRequest, SampleRequest
from .runs import ApiError, RunRegistry
from .submit import Server

__all__ = ["create_app", "STATIC_FILES"]

#: the only files the server sends from disk: name → media type
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _errors(app: FastAPI) -> None:
    """Every error as ``{"error": message}``: refusals, bad bodies (422), unknown routes."""
    @app.exception_handler(ApiError)
    def api_error(request, e: ApiError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    def invalid(request, e: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: "
                 f"{err['msg']}" for err in e.errors()]
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(HTTPException)
    def http_error(request, e: HTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)


def _pages(app: FastAPI) -> None:
    page = _static("index.html")

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            raise ApiError(404, f"no static file {name!r}")
        return Response(_static(name), media_type=STATIC_FILES[name])


def _png(data: bytes, download: str | None = None) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{download}"'} if download else {}
    return Response(data, media_type="image/png", headers=headers)


def _runs(app: FastAPI, server: Server) -> None:
    @app.get("/api/runs")
    def runs():
        return server.registry.listing()

    @app.get("/api/runs/{run_id}")
    def run(run_id: str):
        return server.registry.get(run_id).info()

    @app.get("/api/options")
    def options():
        from ..samplers import get_solver, list_solvers
        from ..schedules import list_schedules
        solvers = [dict(name=s, kind=get_solver(s).kind, adaptive=get_solver(s).adaptive,
                        default_steps=get_solver(s).default_steps,
                        description=get_solver(s).description) for s in list_solvers()]
        solvers.insert(0, dict(name="auto", kind="auto", adaptive=False, default_steps=20,
                               description="solver, schedule and final step chosen for the "
                                           "budget: steps = network evaluations (default 20)"))
        return dict(solvers=solvers, schedules=list_schedules(), max_steps=MAX_STEPS,
                    max_images=MAX_IMAGES, max_upload_bytes=MAX_UPLOAD_BYTES)

    @app.get("/api/runs/{run_id}/test-images")
    def test_images(run_id: str):
        from .generate import test_images as held_out
        x, labels = held_out(server.registry.get(run_id, "image"))
        return dict(count=len(x), labels=None if labels is None else labels.tolist(),
                    urls=[f"/api/runs/{run_id}/test-images/{i}.png" for i in range(len(x))])

    @app.get("/api/runs/{run_id}/test-images/{index}.png")
    def test_image(run_id: str, index: int):
        return _png(grid_png(server.test_image(run_id, index)[0][None], min_size=8))

    @app.post("/api/runs/{run_id}/uploads", status_code=201)
    async def upload(run_id: str, request: Request):
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_UPLOAD_BYTES + 64 * 1024:
            raise ApiError(413, f"the upload has {size} bytes; at most {MAX_UPLOAD_BYTES} "
                                "are accepted")
        server.registry.get(run_id, "image")
        async with request.form(max_files=1, max_fields=4) as form:
            f = form.get("file")
            if f is None or isinstance(f, str):
                raise ApiError(400, "send the image as the multipart form field 'file'")
            data = await f.read(MAX_UPLOAD_BYTES + 1)
        uid = await run_in_threadpool(server.upload, run_id, data)
        return dict(upload_id=uid, url=f"/api/uploads/{uid}.png")

    @app.get("/api/uploads/{upload_id}.png")
    def uploaded(upload_id: str):
        return _png(grid_png(server.uploaded(upload_id)[1][None], min_size=8))


def _jobs(app: FastAPI, server: Server) -> None:
    @app.post("/api/sample", status_code=202)
    def sample(req: SampleRequest):
        return _job(server, server.sample(req))

    @app.post("/api/compare", status_code=202)
    def compare(req: CompareRequest):
        return _job(server, server.compare(req))

    @app.post("/api/explore", status_code=202)
    def explore(req: ExploreRequest):
        return _job(server, server.explore(req))

    @app.post("/api/inpaint", status_code=202)
    def inpaint(req: InpaintRequest):
        return _job(server, server.inpaint(req))

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str):
        return _job(server, server.jobs.get(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        return _job(server, server.jobs.cancel(job_id))

    @app.get("/api/jobs/{job_id}/images/{name}.png")
    def image(job_id: str, name: str, download: bool = False):
        job = server.jobs.get(job_id)
        if name not in job.images:
            raise ApiError(404, f"job {job_id} has no image {name!r}; it has "
                                f"{sorted(job.images) or 'none yet'}")
        return _png(job.images[name], f"sdeflow-{job.kind}-{job_id}-{name}.png"
                    if download else None)

    @app.get("/api/status")
    def status():
        return server.jobs.status()


def _job(server: Server, job) -> dict:
    return job.to_json(server.jobs.ahead(job))


def create_app(paths=(), *, registry: RunRegistry | None = None, exact: bool = True,
               max_queue: int = 64) -> FastAPI:
    """The web app serving the runs in ``paths`` (run folders, or folders of runs) and, with
    ``exact``, the exact 2-D mixtures; ``max_queue`` jobs may wait per model."""
    server = Server(registry or RunRegistry(paths, exact=exact), JobManager(max_queue))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.jobs.shutdown()
    app = FastAPI(title="sdeflow serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.server = server
    _errors(app)
    _pages(app)
    _runs(app, server)
    _jobs(app, server)
    return app
