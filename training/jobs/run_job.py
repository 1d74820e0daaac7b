"""``python -m training run-job ID``: run one queued job in this process.

Claim it (a Conflict means another process has it, or its use case is busy: exit quietly),
heartbeat on a thread, run the kind's ``main(config)`` with the job's overrides, feed every
step's metrics and progress to the store, and finish the job with what it registered.

A cancelled or failed job registers nothing: single runs publish only after training, and a
``round`` trains both its models unregistered and publishes them together at the end (as an
MLflow or TRL user expects of a failed run: no half-made model is visible). A job stopped by
SIGTERM without a cancel (its worker shutting down) goes back to the queue while attempts remain.

Under ``torchrun`` every process runs this. Rank 0 alone claims the job, heartbeats, reports
progress, metrics and logs, and publishes; the other ranks get the job from it and only join
the training (they never write to the store). When rank 0 ends a job early (cancelled, failed,
lease lost) it exits without waiting for the others; their next collective operation then
fails and they exit too, so torchrun never waits on a job that is over.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.base.checkpoint import resolve_device
from core.errors import Conflict, NotFound
from core.job_spec import Stage, plan_job, reward_adapter, with_source
from core.registry import Manifest, Registry
from core.settings import Settings
from core.store import Job, JobKind, JobState, Store
from core.training_config import PolicyConfig
from training.distributed import World, close_world, init_world
from training.gates import check_gates, promote
from training.jobs import metric_names
from training.jobs.reporter import JobReporter
from training.jobs.watch import StoreLogHandler, Watch
from training.run import RunResult

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job ran but must end failed (e.g. the reward model missed its gates)."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: str, settings: Settings) -> int:
    """Run job ``job_id``; the exit status (0 also when another process had the job)."""
    world = init_world(resolve_device(settings.device))
    if not world.is_main:
        return join_job(settings, world)
    with Store.from_settings(settings) as store:
        try:
            job = store.job_queries.claim(job_id, worker_name())
        except (Conflict, NotFound) as e:
            log.info("not running job %s: %s", job_id, e)
            world.broadcast_object(None)
            close_world(world)
            return 0
        world.broadcast_object(job)
        reporter = JobReporter(store, job.id, job.attempts)
        handler = StoreLogHandler()
        logging.getLogger().addHandler(handler)
        watch = Watch(reporter, settings.job_heartbeat_seconds, handler)
        previous = signal.signal(signal.SIGTERM, watch.terminate)
        watch.start()
        try:
            log.info("job %s (%s, %s) attempt %d started", job.id, job.kind, job.use_case, job.attempts)
            return _run_and_finish(job, settings, store, reporter, watch, world)
        finally:
            signal.signal(signal.SIGTERM, previous)
            watch.stop()
            logging.getLogger().removeHandler(handler)


def join_job(settings: Settings, world: World) -> int:
    """A process other than rank 0: take the job rank 0 claimed (None: it claimed none) and
    train alongside it."""
    job: Job | None = world.broadcast_object(None)
    if job is None:
        close_world(world)
        return 0
    try:
        execute(job, settings, None, None, world)
    except Exception as e:  # rank 0 ended the job early, or this process failed
        log.warning("process %d leaves job %s: %s: %s", world.rank, job.id, type(e).__name__, e)
        return 1
    close_world(world)
    return 0


def _run_and_finish(
    job: Job, settings: Settings, store: Store, reporter: JobReporter, watch: Watch, world: World
) -> int:
    def finish(state: JobState, **outcome: Any) -> None:
        # The job's last log lines go to the store first: once it has ended, its attempt no
        # longer holds it and the store refuses them.
        watch.flush()
        reporter.finish(state, **outcome)

    try:
        result = execute(job, settings, store, watch, world)
    except JobFailed as e:
        log.error("job %s failed: %s", job.id, e)
        finish(JobState.FAILED, result=jsonable(e.result), error=str(e))
        return 1
    except Exception as e:
        stop = watch.stopped_by(e)
        if stop is None:
            log.exception("job %s failed", job.id)
            finish(JobState.FAILED, error=f"{type(e).__name__}: {e}")
            return 1
        if stop.lost:
            log.warning("job %s: %s", job.id, stop)
            return 0
        if stop.cancelled or store.jobs.get(job.id).cancel_requested:
            log.info("job %s cancelled; nothing registered", job.id)
            finish(JobState.CANCELLED)
            return 0
        log.warning("job %s stopped: %s", job.id, stop)
        watch.flush()
        reporter.give_up(str(stop))
        return 1
    watch.check()  # a lease lost while publishing: the other attempt decides
    log.info("job %s succeeded", job.id)
    finish(JobState.SUCCEEDED, result=jsonable(result))
    close_world(world)  # the other ranks wait here once their training is done
    return 0


def execute(
    job: Job, settings: Settings, store: Store | None, watch: Watch | None, world: World = World()
) -> dict[str, Any]:
    """Run the job's stages; the job's result (registered versions, metrics, promotion).

    ``store`` and ``watch`` are None on ranks other than 0: they train, report nothing and
    get an empty result."""
    from core.base.folders import base_model_info
    from core.registry import open_registry

    registry = open_registry(settings, base_model_info(settings))
    stages = plan_job(job.kind, job.use_case, job.params, job_id=job.id)
    if job.kind == JobKind.ROUND:
        return run_round(job, stages, settings, store, registry, watch, world)
    stage = stages[0]
    steps = Steps(watch, stage.config.train_steps)
    run = _main(stage, settings, registry, steps.sink(stage.algorithm, offset=0))
    if run is None:
        return {}
    return {
        "versions": [version_entry(run.manifest)] if run.manifest is not None else [],
        "metrics": scalars(run.metrics),
        "promotion": run.promotion.to_dict() if run.promotion is not None else None,
        "production_moved": bool(run.promotion and run.promotion.production),
    }


def run_round(
    job: Job,
    stages: list[Stage],
    settings: Settings,
    store: Store | None,
    registry: Registry,
    watch: Watch | None,
    world: World = World(),
) -> dict[str, Any]:
    """Snapshot the feedback, train the reward model and then the policy on it, unregistered;
    then publish both, and promote each whose gates pass. Rank 0 takes the snapshot and
    publishes; every rank trains."""
    snapshot = world.broadcast_object(take_snapshot(store, job.use_case) if store else None)
    assert snapshot is not None  # rank 0's, on every rank
    rm_stage, policy_stage = (with_source(s, f"snapshot:{snapshot['id']}") for s in stages)
    result: dict[str, Any] = {"snapshot": snapshot}
    rm_name = reward_adapter(job.use_case)
    at_start = {name: _production(registry, name) for name in (rm_name, job.use_case)}
    steps = Steps(watch, rm_stage.config.train_steps + policy_stage.config.train_steps)
    with tempfile.TemporaryDirectory(prefix=f"loraloop-{job.id}-") as tmp:
        rm_config = dataclasses.replace(
            rm_stage.config, register=False, output_dir=str(Path(tmp) / rm_name)
        )
        rm = _main(
            Stage("reward", rm_config), settings, registry,
            steps.sink("reward", offset=0, prefix="reward_model/"),
        )
        failed = [g for g in check_gates(rm_config.gates, rm.metrics) if not g.passed] if rm else []
        # The policy stage needs the reward model on every rank (the folder of ``rm``, None
        # on ranks other than 0, which get a copy; None everywhere when it missed its gates).
        rm_folder = share_folder(
            world, None if rm is None or failed else rm.folder, Path(tmp) / "from-rank-0" / rm_name
        )
        if rm is not None:
            result["reward_model"] = {"metrics": scalars(rm.metrics)}
        if failed:
            names = ", ".join(f"{g.gate} ({g.metric}={g.value}, needs {g.threshold})" for g in failed)
            raise JobFailed(f"the reward model missed its gates: {names}", result)
        if rm_folder is None:
            raise JobFailed("rank 0 stopped the round: the reward model missed its gates", {})
        assert isinstance(policy_stage.config, PolicyConfig)  # plan_job's second stage
        policy_config = dataclasses.replace(
            policy_stage.config,
            register=False,
            output_dir=str(Path(tmp) / job.use_case),
            reward=str(rm_folder),
        )
        policy = _main(
            Stage(policy_stage.algorithm, policy_config), settings, registry,
            steps.sink(policy_stage.algorithm, offset=rm_config.train_steps),
        )
        if rm is None or policy is None or watch is None:
            return {}  # a rank other than 0: it trained; rank 0 publishes
        assert policy.folder is not None and rm.folder is not None  # both were kept unregistered
        watch.check()  # the last moment a cancel keeps the registry untouched
        rm_manifest = registry.publish(
            rm.folder, rm_name, "reward", metrics=rm.metrics, lineage=rm.lineage
        )
        rm_promotion = promote(
            registry, rm_name, rm_manifest.version, rm_config.gates, rm.metrics,
            requested=rm_config.promote, expected_production=at_start[rm_name],
        )
        lineage = dict(policy.lineage, reward_adapter=rm_manifest.ref, snapshot=result["snapshot"])
        manifest = registry.publish(
            policy.folder, job.use_case, "policy", metrics=policy.metrics, lineage=lineage
        )
        promotion = promote(
            registry, job.use_case, manifest.version, policy_config.gates, policy.metrics,
            requested=policy_config.promote, expected_production=at_start[job.use_case],
        )
    result["reward_model"].update(version_entry(rm_manifest), promotion=rm_promotion.to_dict())
    result["policy"] = dict(
        version_entry(manifest),
        algorithm=policy_stage.algorithm,
        parent_version=policy.lineage.get("parent_version"),
        metrics=scalars(policy.metrics),
        promotion=promotion.to_dict(),
    )
    result["versions"] = [version_entry(rm_manifest), version_entry(manifest)]
    result["gates"] = [dataclasses.asdict(g) for g in promotion.gates]
    result["gates_passed"] = promotion.gates_passed
    result["production_moved"] = promotion.production
    return result


def take_snapshot(store: Store, use_case: str) -> dict[str, Any]:
    snapshot = store.snapshots.create(use_case)
    log.info("snapshot %s: %d pairs, sha256 %s", snapshot.id, snapshot.row_count, snapshot.sha256)
    return {"id": snapshot.id, "sha256": snapshot.sha256, "rows": snapshot.row_count}


def share_folder(world: World, folder: Path | None, copy: Path) -> Path | None:
    """Rank 0's adapter ``folder`` on every rank: the others write a copy of its files to
    ``copy`` (the nodes of a multi-node run share no disk). None everywhere when rank 0 has
    none."""
    if not world.distributed:
        return folder
    files = world.broadcast_object(
        {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder else None
    )
    if files is None or world.is_main:
        return folder
    copy.mkdir(parents=True)
    for name, data in files.items():
        (copy / Path(name).name).write_bytes(data)
    return copy


class Steps:
    """Turns a run's progress records into the job's step count and metric series, and is
    where a cancel stops the run (at the next step). Without a watch (ranks other than 0)
    there is no sink: those ranks report nothing."""

    def __init__(self, watch: Watch | None, total: int):
        self.watch = watch
        self.total = total

    def sink(
        self, algorithm: str, *, offset: int, prefix: str = ""
    ) -> Callable[[dict[str, Any]], None] | None:
        if self.watch is None:
            return None
        watch, reporter = self.watch, self.watch.reporter

        def on_metrics(record: dict[str, Any]) -> None:
            watch.check()
            step = offset + int(record["step"])
            values = metric_names.series(algorithm, record, prefix)
            if values:
                reporter.metrics(step, values)
            if record.get("phase") == "train":
                reporter.steps(min(step, self.total), self.total)

        return on_metrics


def _main(
    stage: Stage, settings: Settings, registry: Registry, sink: Callable[[dict[str, Any]], None] | None
) -> RunResult | None:
    """The stage's ``main(config)``: its result on rank 0, None on the other ranks."""
    main = importlib.import_module(f"training.{stage.algorithm}").main
    run: RunResult | None = main(stage.config, settings=settings, registry=registry, on_metrics=sink)
    return run


def _production(registry: Registry, adapter: str) -> int | None:
    try:
        return registry.aliases(adapter).get("production")
    except NotFound:
        return None


def version_entry(manifest: Manifest) -> dict[str, Any]:
    return {"adapter": manifest.adapter, "version": manifest.version, "ref": manifest.ref,
            "kind": manifest.kind}


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run's metrics (curves and tables left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool | None)}


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None (the store keeps strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
