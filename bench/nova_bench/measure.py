"""The run itself: bare and Nova interleaved per case, then load, memory, re-uploads."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from nova_bench.bare import bare_attempts, photo_cases, run_bare, scale_bounds
from nova_bench.client import NovaClient, nova_options
from nova_bench.common import APOD, JOB_TIMEOUT, XYLS_SIZE, case_key, log
from nova_bench.load import hammer, throughput
from nova_bench.memory import MemorySampler
from nova_bench.results import Results, Settings, machine_info
from nova_bench.stack import Stack
from nova_bench.warm import load_warm_engine, log_stage1, run_stage1, run_warm


def measure(settings: Settings, work_root: Path, sampler: MemorySampler) -> Results:
    results = Results(settings=settings)
    results.machine_before = machine_info()
    results.notes.append(
        "The machine is shared with other work; figures are noisy. Compare the load "
        "averages before and after, and prefer the ratios (bare and Nova runs are interleaved)."
    )
    started = time.perf_counter()
    engine = load_warm_engine(results) if settings.warm_engine else None
    log("warm-up: bare solve-field apod4 with a scale hint (not recorded)")
    run_bare(APOD / "apod4.jpg", scale_bounds("apod4", True), 2, work_root, sampler, "warm-up")
    stacks: list[Stack] = []
    try:
        stack, client = start_stack(work_root / "stack-1worker", 1, stacks, sampler)
        log("warm-up: Nova, apod4 star list as JSON x/y with a scale hint (not recorded)")
        sampler.label = "warm-up"
        warm_up(client)
        time_photos(results, client, work_root, sampler, engine)  # 1. bare and Nova interleaved
        time_star_list(results, client, work_root, sampler)
        time_reuploads(results, work_root, sampler, stacks)  # 2.
        time_hammered(results, stack, client, sampler)  # 3.
        time_throughput(results, stack, client, sampler)  # 4a. one worker
        results.server.update(stack.server_times(collect_job_ids(results)))
        for number in range(1, len(stack.worker_pids) + 1):
            sampler.unwatch(f"1w-worker{number}")
        log("stopping the 1-worker stack")
        stack.stop()
        time_more_workers(results, work_root, sampler, stacks)  # 4b/4c.
    finally:
        # Interrupted: do not wait for a running solve to finish.
        grace = 3.0 if sys.exc_info()[0] is not None else 20.0
        for each in stacks:
            each.stop(grace)
    results.machine_after = machine_info()
    results.total_seconds = time.perf_counter() - started
    return results


def start_stack(
    root: Path, workers: int, stacks: list[Stack], sampler: MemorySampler
) -> tuple[Stack, NovaClient]:
    """Start a stack (kept in ``stacks`` to be stopped), watch its workers' memory, log in."""
    stack = Stack(root, workers=workers)
    stacks.append(stack)
    log(f"starting nova up ({workers} worker{'s' if workers > 1 else ''}) on {stack.base}")
    stack.start()
    for number, pid in enumerate(stack.worker_pids, start=1):
        sampler.watch(f"{workers}w-worker{number}", pid)
    sampler.label = "idle"
    time.sleep(1.0)  # a few samples of the idle worker
    return stack, NovaClient(stack.base, stack.api_key)


def time_photos(
    results: Results, client: NovaClient, work_root: Path, sampler: MemorySampler, engine: Any
) -> None:
    """Photos, blind and hinted: bare, Nova, the warm path (and stage 1), interleaved."""
    for case in photo_cases(results.settings):
        image, key, bounds, photo = case.image, case.key, case.bounds, case.photo
        results.bare[key].append(
            bare_attempts(image, bounds, work_root, sampler, key, results.settings)
        )
        bare_wall = results.bare[key][-1]["wall_user"]
        sampler.label = f"nova {key}"
        record = client.timed_solve(image, nova_options(photo, case.hinted))
        record["photo"] = photo
        results.nova[key].append(record)
        sampler.label = f"warm {key}"
        results.warm[key].append(run_warm(image, photo, bounds, work_root, engine))
        log(
            f"{key:14} rep {case.rep + 1}: bare {bare_wall:7.2f} s   "
            f"Nova {record['wall']:7.2f} s ({record['status']})   "
            f"warm {results.warm[key][-1]['wall']:7.2f} s "
            f"({results.warm[key][-1]['wall'] / bare_wall:.2f}× bare)"
        )
        if case.hinted:
            sampler.label = f"stage 1 {photo}"
            results.stage1[photo].append(run_stage1(image, bounds, work_root))
            log_stage1(photo, results.stage1[photo][-1])


def time_star_list(
    results: Results, client: NovaClient, work_root: Path, sampler: MemorySampler
) -> None:
    """The star list, with a scale hint (and blind, it is cheap)."""
    xyls = APOD / "apod4.xyls"
    for mode in ("hinted", "blind"):
        key = case_key("apod4.xyls", mode)
        bounds = scale_bounds("apod4", mode == "hinted")
        for rep in range(results.settings.repeats):
            size = ["--width", str(XYLS_SIZE[0]), "--height", str(XYLS_SIZE[1])]
            bare = run_bare(xyls, bounds, 1, work_root, sampler, f"bare {key}", size)
            bare["wall_user"] = bare["wall_direct"] = bare["wall"]
            results.bare[key].append(bare)
            sampler.label = f"nova {key}"
            record = client.timed_solve(xyls, nova_options("apod4", mode == "hinted"))
            record["photo"] = "apod4"
            results.nova[key].append(record)
            log(
                f"{key:19} rep {rep + 1}: bare {bare['wall']:7.2f} s   "
                f"Nova {record['wall']:7.2f} s ({record['status']})"
            )


def time_reuploads(
    results: Results, work_root: Path, sampler: MemorySampler, stacks: list[Stack]
) -> None:
    """Identical re-uploads of the hinted photos, on a stack that reuses results (Nova's
    default): the first upload there solves, the next ones are answered from it."""
    reuse_stack = Stack(work_root / "stack-reuse", workers=1, reuse=True)
    stacks.append(reuse_stack)
    log(f"starting nova up (1 worker, reusing results) on {reuse_stack.base}")
    reuse_stack.start()
    reuse_client = NovaClient(reuse_stack.base, reuse_stack.api_key)
    for photo in results.settings.photos:
        key = case_key(photo, "hinted")
        first = reuse_client.timed_solve(APOD / f"{photo}.jpg", nova_options(photo, True))
        log(f"first upload {key:14}: Nova {first['wall']:7.2f} s (solved)")
        for rep in range(results.settings.repeats):
            sampler.label = f"nova {key}"
            record = reuse_client.timed_solve(APOD / f"{photo}.jpg", nova_options(photo, True))
            record["photo"] = photo
            results.reupload[key].append(record)
            log(f"re-upload {key:14} rep {rep + 1}: Nova {record['wall']:7.2f} s")


def time_hammered(
    results: Results, stack: Stack, client: NovaClient, sampler: MemorySampler
) -> None:
    """Status polls while a blind apod5 solve runs, then on the idle server."""
    settings = results.settings
    log(f"hammering GET /api/jobs/J with {settings.clients} clients during a blind apod5")
    sampler.label = "nova apod5 blind (hammered)"

    def during(job_id: int) -> dict[str, Any]:
        sampler.paused.set()
        try:
            return hammer(
                stack.web_port, f"/api/jobs/{job_id}", settings.clients, settings.hammer_seconds
            )
        finally:
            sampler.paused.clear()

    record = client.timed_solve(APOD / "apod5.jpg", {}, during_solve=during)
    record["photo"] = "apod5"
    results.hammered_job = record
    results.hammer_solving = record.get("during_solve", {})
    log(
        f"  during solve: {results.hammer_solving.get('rate', 0):.0f} req/s; "
        f"apod5 blind took {record['wall']:.2f} s ({record['status']})"
    )
    sampler.label = "idle"
    if record.get("job") is not None:
        results.hammer_idle = hammer(
            stack.web_port, f"/api/jobs/{record['job']}", settings.clients, settings.hammer_seconds
        )
        log(f"  idle server: {results.hammer_idle['rate']:.0f} req/s")


def time_throughput(
    results: Results, stack: Stack, client: NovaClient, sampler: MemorySampler
) -> None:
    """Batches of jobs through a stack's workers."""
    workers = stack.workers
    label = f"throughput {workers} worker{'s' if workers > 1 else ''}"
    for rep in range(results.settings.repeats):
        sampler.label = label
        batch = throughput(client, results.settings.throughput_jobs)
        results.throughput[workers].append(batch)
        log(f"{label} rep {rep + 1}: {batch['per_minute']:.1f} jobs/min")
    sampler.label = "idle"


def time_more_workers(
    results: Results, work_root: Path, sampler: MemorySampler, stacks: list[Stack]
) -> None:
    """Throughput with two and four workers (and memory per worker under load); four
    workers on this machine's two cores shows what oversubscribing costs."""
    stack: Stack | None = None
    for workers in (2, 4):
        if stack is not None:
            for number in range(1, len(stack.worker_pids) + 1):
                sampler.unwatch(f"{len(stack.worker_pids)}w-worker{number}")
            log(f"stopping the {len(stack.worker_pids)}-worker stack")
            stack.stop()
        stack, client = start_stack(work_root / f"stack-{workers}workers", workers, stacks, sampler)
        sampler.label = "warm-up"
        warm_up(client)
        time_throughput(results, stack, client, sampler)
        batches = results.throughput[workers]
        results.server.update(stack.server_times([j for b in batches for j in b["job_ids"]]))


def warm_up(client: NovaClient) -> None:
    from astropy.io import fits

    with fits.open(APOD / "apod4.xyls") as hdus:
        xs = [float(v) for v in hdus[1].data["X"]]
        ys = [float(v) for v in hdus[1].data["Y"]]
    options = {
        **nova_options("apod4", True),
        "image_width": XYLS_SIZE[0],
        "image_height": XYLS_SIZE[1],
    }
    subid = client.upload_star_list(xs, ys, options)
    deadline = time.perf_counter() + JOB_TIMEOUT
    job_id = client.wait_for_job(subid, deadline)
    if job_id is None:
        raise RuntimeError("the warm-up star list got no job")
    status = client.wait_until(job_id, ("success", "failure"), deadline)
    if status != "success":
        raise RuntimeError(f"the warm-up star list did not solve (job {job_id})")


def collect_job_ids(results: Results) -> list[int]:
    ids = []
    for group in (results.nova, results.reupload):
        for records in group.values():
            ids += [r["job"] for r in records if r.get("job") is not None]
    if results.hammered_job.get("job") is not None:
        ids.append(results.hammered_job["job"])
    ids += [j for batch in results.throughput[1] for j in batch["job_ids"]]
    return ids
