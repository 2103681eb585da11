"""The run itself: bare and Nova interleaved per case, then load, memory, re-uploads."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from nova_bench.bare import bare_attempts, run_bare, scale_bounds
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

    stack = Stack(work_root / "stack-1worker", workers=1)
    stacks = [stack]
    try:
        log(f"starting nova up (1 worker) on {stack.base}")
        stack.start()
        for number, pid in enumerate(stack.worker_pids, start=1):
            sampler.watch(f"1w-worker{number}", pid)
        sampler.label = "idle"
        time.sleep(1.0)  # a few samples of the idle worker
        client = NovaClient(stack.base, stack.api_key)
        log("warm-up: Nova, apod4 star list as JSON x/y with a scale hint (not recorded)")
        sampler.label = "warm-up"
        warm_up(client)

        # 1. photos, blind and hinted: bare and Nova interleaved.
        for photo in settings.photos:
            image = APOD / f"{photo}.jpg"
            for mode in ("blind", "hinted"):
                key = case_key(photo, mode)
                bounds = scale_bounds(photo, mode == "hinted")
                for rep in range(settings.repeats):
                    results.bare[key].append(
                        bare_attempts(image, bounds, work_root, sampler, key, settings)
                    )
                    bare_wall = results.bare[key][-1]["wall_user"]
                    sampler.label = f"nova {key}"
                    record = client.timed_solve(image, nova_options(photo, mode == "hinted"))
                    record["photo"] = photo
                    results.nova[key].append(record)
                    sampler.label = f"warm {key}"
                    results.warm[key].append(run_warm(image, photo, bounds, work_root, engine))
                    log(
                        f"{key:14} rep {rep + 1}: bare {bare_wall:7.2f} s   "
                        f"Nova {record['wall']:7.2f} s ({record['status']})   "
                        f"warm {results.warm[key][-1]['wall']:7.2f} s "
                        f"({results.warm[key][-1]['wall'] / bare_wall:.2f}× bare)"
                    )
                    if mode == "hinted":
                        sampler.label = f"stage 1 {photo}"
                        results.stage1[photo].append(run_stage1(image, bounds, work_root))
                        log_stage1(photo, results.stage1[photo][-1])

        # The star list, with a scale hint (and blind, it is cheap).
        xyls = APOD / "apod4.xyls"
        for mode in ("hinted", "blind"):
            key = case_key("apod4.xyls", mode)
            bounds = scale_bounds("apod4", mode == "hinted")
            for rep in range(settings.repeats):
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

        # 2. identical re-uploads of the hinted photos, on a stack that reuses results
        # (Nova's default): the first upload there solves, the next ones are answered from it.
        reuse_stack = Stack(work_root / "stack-reuse", workers=1, reuse=True)
        stacks.append(reuse_stack)
        log(f"starting nova up (1 worker, reusing results) on {reuse_stack.base}")
        reuse_stack.start()
        reuse_client = NovaClient(reuse_stack.base, reuse_stack.api_key)
        for photo in settings.photos:
            key = case_key(photo, "hinted")
            first = reuse_client.timed_solve(APOD / f"{photo}.jpg", nova_options(photo, True))
            log(f"first upload {key:14}: Nova {first['wall']:7.2f} s (solved)")
            for rep in range(settings.repeats):
                sampler.label = f"nova {key}"
                record = reuse_client.timed_solve(APOD / f"{photo}.jpg", nova_options(photo, True))
                record["photo"] = photo
                results.reupload[key].append(record)
                log(f"re-upload {key:14} rep {rep + 1}: Nova {record['wall']:7.2f} s")

        # 3. status polls while a blind apod5 solve runs, then on the idle server.
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
                stack.web_port,
                f"/api/jobs/{record['job']}",
                settings.clients,
                settings.hammer_seconds,
            )
            log(f"  idle server: {results.hammer_idle['rate']:.0f} req/s")

        # 4a. throughput with one worker.
        for rep in range(settings.repeats):
            sampler.label = "throughput 1 worker"
            batch = throughput(client, settings.throughput_jobs)
            results.throughput[1].append(batch)
            log(f"throughput 1 worker rep {rep + 1}: {batch['per_minute']:.1f} jobs/min")
        sampler.label = "idle"
        results.server.update(stack.server_times(collect_job_ids(results)))
        for number in range(1, len(stack.worker_pids) + 1):
            sampler.unwatch(f"1w-worker{number}")
        log("stopping the 1-worker stack")
        stack.stop()

        # 4b/4c. throughput with two and four workers (and memory per worker under load);
        # four workers on this machine's two cores shows what oversubscribing costs.
        for workers in (2, 4):
            if workers > 2:
                for number in range(1, len(stack.worker_pids) + 1):
                    sampler.unwatch(f"{len(stack.worker_pids)}w-worker{number}")
                log(f"stopping the {len(stack.worker_pids)}-worker stack")
                stack.stop()
            stack = Stack(work_root / f"stack-{workers}workers", workers=workers)
            stacks.append(stack)
            log(f"starting nova up ({workers} workers) on {stack.base}")
            stack.start()
            for number, pid in enumerate(stack.worker_pids, start=1):
                sampler.watch(f"{workers}w-worker{number}", pid)
            sampler.label = "idle"
            time.sleep(1.0)
            client = NovaClient(stack.base, stack.api_key)
            sampler.label = "warm-up"
            warm_up(client)
            for rep in range(settings.repeats):
                sampler.label = f"throughput {workers} workers"
                batch = throughput(client, settings.throughput_jobs)
                results.throughput[workers].append(batch)
                rate = batch["per_minute"]
                log(f"throughput {workers} workers rep {rep + 1}: {rate:.1f} jobs/min")
            sampler.label = "idle"
            results.server.update(
                stack.server_times([j for b in results.throughput[workers] for j in b["job_ids"]])
            )
    finally:
        # Interrupted: do not wait for a running solve to finish.
        grace = 3.0 if sys.exc_info()[0] is not None else 20.0
        for each in stacks:
            each.stop(grace)
    results.machine_after = machine_info()
    results.total_seconds = time.perf_counter() - started
    return results


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
