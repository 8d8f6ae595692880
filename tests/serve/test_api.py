"""Every endpoint of ``sdeflow serve`` with good and bad input: the generations answer with
images and their NFE, every refusal is a 4xx JSON ``{"error": ...}`` naming what to fix, and
nothing outside the listed run folders can be read (ids, never paths)."""
import io
import time

import pytest
from PIL import Image

from .conftest import run_job, wait

MASK = [[1] * 4 + [0] * 4 for _ in range(8)]  # right half unknown


def refused(r, status: int, *words):
    assert r.status_code == status, (r.status_code, r.text)
    msg = r.json()["error"]
    for w in words:
        assert w in msg, msg
    return msg


def png(client, url: str) -> Image.Image:
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def png_file(size=(20, 12), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "white").save(buf, format="PNG")
    return buf.getvalue()


# --- the page and the listing -----------------------------------------------------------------

def test_the_page_and_its_files_are_served(client):
    assert "sdeflow playground" in client.get("/").text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200


@pytest.mark.parametrize("path", ["/static/../pyproject.toml", "/static/..%2f..%2fpyproject.toml",
                                  "/static/%2e%2e%2fapp.py", "/static/index.html/../../runs.py",
                                  "/static//etc/passwd", "/static/runs.py"])
def test_no_other_file_can_be_fetched(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "error" in r.json()


def test_the_listing_has_the_runs_and_the_exact_mixtures(client):
    runs = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(runs) == {"digits", "toy", "noguide", "exact-gmm", "exact-mixture"}
    assert runs["digits"]["kind"] == "image" and runs["digits"]["class_cond"]
    assert runs["toy"]["kind"] == "toy" and runs["toy"]["has_mixture"]
    assert runs["digits"]["schedule_files"] == ["tuned.json", "tuned_v3.json"]  # not notes.json
    assert client.get("/api/runs/toy").json()["T"] == 80.0


@pytest.mark.parametrize("run_id", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "/etc/passwd",
                                    "..%2foutside.json", "digits%2F..%2F..%2Foutside.json"])
def test_runs_are_ids_never_paths(client, run_id):
    r = client.get(f"/api/runs/{run_id}")
    assert r.status_code == 404 and "error" in r.json()
    r = client.post("/api/sample", json=dict(run=run_id.replace("%2F", "/").replace("%2f", "/")))
    refused(r, 404, "unknown run")


def test_options_and_status(client):
    opts = client.get("/api/options").json()
    assert "heun" in [s["name"] for s in opts["solvers"]] and "karras" in opts["schedules"]
    assert set(client.get("/api/status").json()) == {"jobs", "workers"}


# --- sample ------------------------------------------------------------------------------------

def test_sample_gives_a_grid_with_its_nfe_and_wall_time(client):
    job = run_job(client, "/api/sample", dict(run="digits", solver="heun", steps=4, n=9, seed=3,
                                              class_label=7, guidance=1.5))
    assert job["status"] == "done", job["error"]
    assert job["step"] == job["total"] == 4 and job["result"]["nfe"] > 0
    assert job["wall_seconds"] > 0 and job["result"]["seconds"] > 0
    img = png(client, job["images"]["grid"])
    assert img.size[0] >= 3 * 64  # 3 × 3 digits, each shown ≥ 64 px
    r = client.get(job["images"]["grid"] + "?download=1")
    assert "attachment" in r.headers["content-disposition"]


def test_the_default_solver_is_auto_on_the_budget(client):
    """No solver: ``auto`` with steps = the NFE budget (6 network evaluations, the solver
    ``auto_config`` picks for the run's dimension); a schedule with it is refused, and explore
    (paths of named solvers) does not take it."""
    import math

    from sdeflow.samplers.auto import auto_config
    job = run_job(client, "/api/sample", dict(run="digits", steps=6, n=2))
    assert job["status"] == "done", job["error"]
    dim = math.prod(client.get("/api/runs/digits").json()["shape"])
    assert (job["result"]["solver"], job["result"]["nfe"]) == (auto_config(None, 6, dim)["solver"], 6)
    refused(client.post("/api/sample", json=dict(run="digits", schedule="karras")), 400,
            "chooses its own schedule")
    refused(client.post("/api/explore", json=dict(run="toy", solvers=["auto"])), 400,
            "sample and compare")
    assert "auto" in [s["name"] for s in client.get("/api/options").json()["solvers"]]


def test_a_tuned_schedule_file_of_the_run_can_be_used(client):
    job = run_job(client, "/api/sample", dict(run="digits", schedule="file:tuned.json", n=2))
    assert job["status"] == "done", job["error"]
    assert job["result"]["solver"] == "ddim" and job["result"]["steps"] == 3


def test_dpm_solver_v3_takes_the_statistics_in_the_checkpoint_folder(client):
    """`sdeflow ems` wrote the digits run's statistics into its checkpoint folder: the solver
    menu's dpm_solver_v3 samples with them; a run without them is refused, naming the fix."""
    job = run_job(client, "/api/sample", dict(run="digits", solver="dpm_solver_v3", steps=4,
                                              schedule="ays", n=2))
    assert job["status"] == "done", job["error"]
    assert job["result"]["solver"] == "dpm_solver_v3" and job["result"]["nfe"] == 5
    assert "warning" not in job["result"]  # unconditional statistics, all classes in turn
    # statistics estimated without a class, used for one class with guidance: said in the result
    job = run_job(client, "/api/sample", dict(run="digits", solver="dpm_solver_v3", steps=4,
                                              class_label=1, guidance=2.0, n=2))
    assert job["status"] == "done", job["error"]
    assert "unconditional sampling, this run is class=1 guidance=2.0" in job["result"]["warning"]
    job = run_job(client, "/api/sample", dict(run="digits", schedule="file:tuned_v3.json", n=2))
    assert job["status"] == "done", job["error"]  # a tuned v3 schedule naming no statistics
    assert job["result"]["solver"] == "dpm_solver_v3"
    job = run_job(client, "/api/inpaint", dict(run="digits", image=2, mask=MASK, method="replace",
                                               solver="dpm_solver_v3", steps=4, samples=2))
    assert job["status"] == "done", job["error"]
    assert "this run is class=" in job["result"]["warning"]  # the test image's own class
    refused(client.post("/api/sample", json=dict(run="noguide", solver="dpm_solver_v3")), 400,
            "sdeflow ems", "noguide")
    refused(client.post("/api/explore", json=dict(run="exact-gmm", solvers=["dpm_solver_v3"])),
            400, "exact mixtures have none")


@pytest.mark.parametrize("schedule", ["file:../outside.json", "file:/etc/passwd",
                                      "file:%2e%2e/outside.json", "file:notes.json",
                                      "file:ckpt-00000005/config.json", "../karras"])
def test_schedule_files_come_only_from_the_runs_own_listing(client, schedule):
    refused(client.post("/api/sample", json=dict(run="digits", schedule=schedule)), 400,
            "schedule")


@pytest.mark.parametrize("body, status, words", [
    (dict(solver="nope"), 400, ["unknown solver 'nope'", "heun"]),
    (dict(schedule="nope"), 400, ["unknown schedule", "karras"]),
    (dict(steps=0), 422, ["steps"]),
    (dict(steps=5000), 422, ["steps", "1000"]),
    (dict(n=1000), 422, ["n"]),
    (dict(seed=-1), 422, ["seed"]),
    (dict(solver="rk45", steps=10), 400, ["adaptive"]),
    (dict(class_label=10), 400, ["[0, 10)"]),
    (dict(guidance=-1), 422, ["guidance"]),
    (dict(stepz=3), 422, ["stepz"]),
    (dict(run="toy"), 400, ["not an image model"]),
    (dict(run="noguide", class_label=1, guidance=2.0), 400, ["p_uncond"]),
])
def test_bad_sample_requests_are_refused_with_a_message(client, body, status, words):
    refused(client.post("/api/sample", json={"run": "digits", **body}), status, *words)


def test_a_body_that_is_not_json_is_refused(client):
    r = client.post("/api/sample", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]


# --- compare and explore ----------------------------------------------------------------------

def test_compare_puts_the_same_seeds_at_several_budgets_side_by_side(client):
    job = run_job(client, "/api/compare", dict(run="digits", solvers=["heun", "ddim"],
                                               steps=[2, 4], n=4))
    assert job["status"] == "done", job["error"]
    panels = job["result"]["panels"]
    assert [(p["solver"], p["steps"]) for p in panels] == [("heun", 2), ("heun", 4),
                                                            ("ddim", 2), ("ddim", 4)]
    assert panels[0]["nfe"] < panels[1]["nfe"]
    assert job["total"] == 12 and job["step"] == 12
    for p in panels:
        png(client, job["images"][p["image"]])


@pytest.mark.parametrize("body, status, words", [
    (dict(solvers=["heun", "ddim", "euler", "dpmpp_2m"], steps=[1, 2, 3]), 400, ["at most 8"]),
    (dict(solvers=[]), 422, ["solvers"]),
    (dict(steps=[0]), 422, ["steps"]),
    (dict(solvers=["nope"]), 400, ["unknown solver"]),
])
def test_bad_compare_requests_are_refused(client, body, status, words):
    refused(client.post("/api/compare", json={"run": "digits", **body}), status, *words)


@pytest.mark.parametrize("run", ["toy", "exact-gmm"])
def test_explore_shows_trajectories_with_nfe_and_error_against_the_exact_ode(client, run):
    job = run_job(client, "/api/explore", dict(run=run, t=1.0, solvers=["heun", "euler_maruyama"],
                                               steps=8, paths=16))
    assert job["status"] == "done", job["error"]
    rows = {r["solver"]: r for r in job["result"]["solvers"]}
    assert rows["heun"]["nfe"] == 16 and rows["euler_maruyama"]["nfe"] == 8
    assert rows["heun"]["rms_error_vs_exact_ode"] > 0
    assert rows["euler_maruyama"]["rms_error_vs_exact_ode"] is None  # an SDE has no ODE end
    assert job["result"]["reference"]["reference"].startswith("exact mixture")
    assert png(client, job["images"]["explore"]).size == (960, 640)


def test_explore_of_the_exact_mixture_converges_with_the_solver(client):
    """Heun is second order: 4× the steps cut its end-point error against rk45 by ≫ 4×."""
    errs = [run_job(client, "/api/explore", dict(run="exact-gmm", solvers=["heun"], steps=k,
                                                 paths=32))["result"]["solvers"][0]
            ["rms_error_vs_exact_ode"] for k in (8, 32)]
    assert errs[1] < errs[0] / 4


@pytest.mark.parametrize("body, status, words", [
    (dict(t=1000.0), 400, ["t must lie in", "80"]),
    (dict(t=0.0), 400, ["t must lie in"]),
    (dict(run="digits"), 400, ["not a 2-D toy model"]),
    (dict(solvers=["heun"] * 4), 422, ["solvers"]),
    (dict(paths=10_000), 422, ["paths"]),
])
def test_bad_explore_requests_are_refused(client, body, status, words):
    refused(client.post("/api/explore", json={"run": "toy", **body}), status, *words)


# --- inpaint, uploads and test images ---------------------------------------------------------

def test_test_images_are_listed_and_served(client):
    t = client.get("/api/runs/digits/test-images").json()
    assert t["count"] == 16 and len(t["labels"]) == 16
    assert png(client, t["urls"][3]).size == (8, 8)
    refused(client.get("/api/runs/digits/test-images/99.png"), 404, "0 … 15")
    refused(client.get("/api/runs/toy/test-images"), 400, "not an image model")


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_inpaint_keeps_the_known_pixels_and_fills_the_mask(client, method):
    job = run_job(client, "/api/inpaint", dict(run="digits", image=2, mask=MASK, method=method,
                                               steps=6, samples=2))
    assert job["status"] == "done", job["error"]
    assert job["result"]["nfe"] > 0 and job["step"] > 0
    before, after = png(client, job["images"]["before"]), png(client, job["images"]["after"])
    assert after.size[0] > before.size[0] // 2
    png(client, job["images"]["original"])


def test_an_uploaded_image_can_be_inpainted(client):
    r = client.post("/api/runs/digits/uploads", files={"file": ("x.png", png_file(), "image/png")})
    assert r.status_code == 201, r.text
    uid = r.json()["upload_id"]
    assert png(client, r.json()["url"]).size == (8, 8)
    job = run_job(client, "/api/inpaint", dict(run="digits", upload=uid, mask=MASK, steps=4,
                                               samples=1))
    assert job["status"] == "done", job["error"]
    refused(client.post("/api/inpaint", json=dict(run="noguide", upload=uid, mask=MASK)), 400,
            "was made for run 'digits'")


@pytest.mark.parametrize("data, status, words", [
    (b"this is not an image at all", 415, ["not an image"]),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 415, ["not an image"]),
    (b"", 400, ["empty"]),
    (b"\0" * (2 * 1024 * 1024 + 10), 413, ["at most"]),
])
def test_bad_uploads_are_refused(client, data, status, words):
    r = client.post("/api/runs/digits/uploads", files={"file": ("x.png", data, "image/png")})
    refused(r, status, *words)


def test_an_image_with_too_many_pixels_is_refused(client):
    big = png_file(size=(5000, 5000), mode="1")  # small file, 25 M pixels
    r = client.post("/api/runs/digits/uploads", files={"file": ("big.png", big, "image/png")})
    refused(r, 413, "pixels")


def test_uploads_need_the_file_field_and_an_image_run(client):
    refused(client.post("/api/runs/digits/uploads", data={"other": "x"}), 400, "'file'")
    refused(client.post("/api/runs/toy/uploads", files={"file": ("x.png", png_file())}), 400,
            "not an image model")
    refused(client.post("/api/runs/..%2ftoy/uploads", files={"file": ("x.png", png_file())}),
            404)
    refused(client.get("/api/uploads/..%2f..%2fetc.png"), 404)


@pytest.mark.parametrize("body, status, words", [
    (dict(mask=[[1] * 8] * 7), 400, ["8 rows of 8", "7 rows"]),
    (dict(mask=[[1] * 9] * 8), 400, ["8 rows of 8"]),
    (dict(mask=[[2] * 8] * 8), 400, ["[0, 1]"]),
    (dict(mask=None), 400, ["8 rows of 8"]),
    (dict(image=None), 400, ["exactly one of image"]),
    (dict(upload="deadbeef"), 400, ["exactly one of image"]),
    (dict(image=None, upload="deadbeef"), 404, ["unknown upload"]),
    (dict(image=99), 404, ["does not exist"]),
    (dict(method="colorize"), 400, ["RGB"]),
    (dict(method="smudge"), 422, ["method"]),
    (dict(solver="rk45"), 400, ["adaptive"]),
    (dict(samples=100), 422, ["samples"]),
    (dict(run="toy"), 400, ["not an image model"]),
])
def test_bad_inpaint_requests_are_refused(client, body, status, words):
    refused(client.post("/api/inpaint", json={"run": "digits", "image": 0, "mask": MASK, **body}),
            status, *words)


# --- jobs: queue, progress, cancel, the server stays responsive -------------------------------

def test_jobs_queue_per_model_and_cancel(client):
    long = dict(run="digits", solver="euler_maruyama", steps=1000, n=64)
    first = client.post("/api/sample", json=long).json()
    second = client.post("/api/sample", json=long).json()
    assert second["status"] == "queued" and second["ahead"] >= 1
    t0 = time.perf_counter()
    assert client.get("/api/status").status_code == 200  # answered while the model works
    assert time.perf_counter() - t0 < 2.0
    assert client.post(f"/api/jobs/{second['id']}/cancel").json()["status"] == "cancelled"
    while client.get(f"/api/jobs/{first['id']}").json()["step"] == 0:
        time.sleep(0.02)
    client.post(f"/api/jobs/{first['id']}/cancel")
    first = wait(client, first)
    assert first["status"] == "cancelled" and 0 < first["step"] < 1000
    assert wait(client, client.get(f"/api/jobs/{second['id']}").json())["step"] == 0


def test_unknown_jobs_and_images_are_404(client):
    refused(client.get("/api/jobs/nope"), 404, "unknown job")
    refused(client.post("/api/jobs/nope/cancel"), 404, "unknown job")
    job = run_job(client, "/api/sample", dict(run="digits", steps=2, n=1))
    refused(client.get(f"/api/jobs/{job['id']}/images/secret.png"), 404, "no image 'secret'")
    refused(client.get(f"/api/jobs/{job['id']}/images/..%2f..%2fgrid.png"), 404)


def test_a_full_queue_answers_429(run_dirs):
    from fastapi.testclient import TestClient

    from sdeflow.serve import create_app
    with TestClient(create_app([run_dirs / "digits"], exact=False, max_queue=1)) as c:
        long = dict(run="digits", solver="euler_maruyama", steps=1000, n=64)
        jobs = [c.post("/api/sample", json=long) for _ in range(3)]
        assert [r.status_code for r in jobs[:2]] == [202, 202]
        refused(jobs[2], 429, "queue", "full")
        for r in jobs[:2]:
            c.post(f"/api/jobs/{r.json()['id']}/cancel")


def test_auto_on_an_unconditional_run_takes_its_installed_schedule(tmp_path):
    """As `sdeflow sample` does: the page's `auto` on an unconditional run samples with the
    schedule `tune-steps --install` put in its checkpoint folder for that budget (and says
    which file), and keeps its own rule at any other budget."""
    from fastapi.testclient import TestClient

    from sdeflow.sde import get_sde
    from sdeflow.serve import create_app
    from sdeflow.train import TrainConfig
    from sdeflow.training import train
    from sdeflow.tuning import TunedSchedule, installed_path
    from tests.conftest import TINY_UNET
    run = tmp_path / "uncond"
    train(TrainConfig(data="digits", model="unet", model_kwargs=TINY_UNET, steps=2, batch_size=4,
                      tensorboard=False), run, progress=False)
    TunedSchedule(solver="ddim", steps=3, timesteps=[80.0, 5.0, 0.5, 0.002],
                  sde=get_sde("edm").config(), calibration_loss=0.1, start_loss=0.2,
                  start_schedule="karras").save(installed_path(run, 4))
    with TestClient(create_app([run], max_queue=4)) as client:
        job = run_job(client, "/api/sample", dict(run="uncond", steps=4, n=2))
        assert job["status"] == "done", job["error"]
        assert job["result"]["solver"] == "ddim"
        assert job["result"]["installed"] == str(installed_path(run, 4))
        job = run_job(client, "/api/sample", dict(run="uncond", steps=6, n=2))
        assert job["status"] == "done", job["error"]
        assert job["result"]["solver"] != "ddim" and "installed" not in job["result"]
        # a file: schedule with the default solver is that file, not the installed one
        (run / "mine.json").write_text(installed_path(run, 4).read_text())
        job = run_job(client, "/api/sample", dict(run="uncond", schedule="file:mine.json", n=2))
        assert job["status"] == "done", job["error"]
        assert job["result"]["solver"] == "ddim" and "installed" not in job["result"]


def test_auto_on_an_eps_run_takes_its_statistics(tmp_path):
    """As `sdeflow sample` does: once `sdeflow ems` wrote an ε-predicting run's statistics,
    the page's `auto` runs DPM-Solver-v3 on ``gits_trailing`` at 4–30 NFE, and its own iPNDM
    above."""
    from fastapi.testclient import TestClient

    from sdeflow.cli import main
    from sdeflow.serve import create_app
    from sdeflow.train import TrainConfig
    from sdeflow.training import train
    from tests.conftest import TINY_UNET
    run = tmp_path / "eps"
    train(TrainConfig(data="digits", model="unet", model_kwargs=TINY_UNET, steps=2, batch_size=4,
                      sde="vp", prediction="eps", loss="eps", precondition=None,
                      tensorboard=False), run, progress=False)
    assert main(["ems", str(run), "--num", "8", "--points", "5"]) == 0
    with TestClient(create_app([run], max_queue=4)) as client:
        job = run_job(client, "/api/sample", dict(run="eps", steps=6, n=2))
        assert job["status"] == "done", job["error"]
        assert (job["result"]["solver"], job["result"]["schedule"]) == ("dpm_solver_v3",
                                                                        "gits_trailing")
        job = run_job(client, "/api/sample", dict(run="eps", steps=31, n=2))
        assert job["status"] == "done", job["error"]
        assert job["result"]["solver"] == "ipndm"
