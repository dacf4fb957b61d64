"""Real PostgreSQL and a real Kafka broker on loopback, for tests and the local run.

Nothing here is a stand-in: PostgreSQL comes from the Debian package (or the
`pgserver` wheel's bundled binaries), Kafka from the Maven Central jars that
`scripts/kafka/pom.xml` pulls. Usage from the shell:

    python -m scripts.servers fetch-kafka        # download the broker jars once
    python -m scripts.servers start DIR          # start both, print connection info as JSON
    python -m scripts.servers stop DIR           # stop both
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KAFKA_LIBS = Path(os.environ.get("KAFKA_LIBS_DIR", REPO / ".cache" / "kafka-libs"))
KAFKA_ADMIN_USER = "admin"
KAFKA_ADMIN_PASSWORD = "admin-secret"
PG_USER = "graphql"
PG_PASSWORD = "graphql-local"
PG_DATABASE = "graphql"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port BELOW the kernel's ephemeral range. A server that stops and starts again on the same
    port (outage tests, a second `dev.sh up`) must find it free: a port from the ephemeral range can be taken
    meanwhile by any client connection's local end."""
    low, _high = _ephemeral_range()
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        if port not in _HANDED_OUT and port_free(port):
            _HANDED_OUT.add(port)  # two calls in a row (broker + controller) never get the same port
            return port
    raise RuntimeError("no free port below the ephemeral range")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int, deadline: float, process: subprocess.Popen, what: str, log: Path) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}:\n{_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port}; see {log}:\n{_tail(log)}")


def wait_for(check, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None,
             log_offset: int = 0):
    """Poll `check` (e.g. a health endpoint) until true; fail early if `process` died, with the tail of what it
    wrote to `log` after `log_offset` (an appended log's earlier runs are not this failure)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = ""
            if log and log.exists():
                with log.open("rb") as handle:
                    handle.seek(log_offset)
                    tail = handle.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited with {process.returncode}\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process(pid: int, grace_seconds: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# --------------------------------------------------------------------------- PostgreSQL


class DataDirUnreachable(RuntimeError):
    """The `postgres` OS user cannot enter a folder above the data directory, and that folder is not ours."""


def make_dirs(path: Path) -> Path:
    """`mkdir -p` that returns the highest folder it created (`path` itself when it already existed)."""
    missing = [folder for folder in [path, *path.parents] if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else path


def make_reachable_for_postgres(path: Path, owned: Path) -> None:
    """Let the `postgres` OS user reach a data dir when running as root. Only folders at or below `owned` (made for
    this server) are opened up (o+x); a folder above it is the user's: refuse with the reason, never chmod it."""
    for folder in [path, *path.parents]:
        info = folder.stat()
        if info.st_mode & 0o001 or info.st_uid == _postgres_uid():
            continue
        if folder == owned or owned in folder.parents:
            folder.chmod(info.st_mode | 0o001)
            continue
        raise DataDirUnreachable(
            f"PostgreSQL runs as the `postgres` OS user, which cannot enter {folder} (mode "
            f"{info.st_mode & 0o777:o}); this is not a folder we created, so it is left alone: use a data "
            f"directory it can reach (e.g. --data /var/tmp/graphql-local), or open it yourself "
            f"(chmod o+x {folder})")


def _postgres_uid() -> int:
    import pwd

    return pwd.getpwnam("postgres").pw_uid


def postgres_bindir() -> Path:
    """Debian's server binaries first, then the pgserver wheel's bundled ones."""
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if debian:
        return debian[0].parent
    try:
        import pgserver  # type: ignore[import-not-found]

        return Path(pgserver.__file__).parent / "pginstall" / "bin"
    except ImportError as exc:
        raise RuntimeError(
            "no PostgreSQL server binaries: install the Debian package `postgresql` "
            "or the `pgserver` wheel (pip install pgserver)"
        ) from exc


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster in `data_dir`, listening on 127.0.0.1 only."""

    data_dir: Path
    port: int = 0
    # folders at or below this one were made for this server and may be opened up for `postgres` (default: data_dir)
    owned_root: Path | None = None
    # benchmarks: fsync, synchronous_commit, full_page_writes on, as production runs (the test suite trades them off)
    durable: bool = False
    # microseconds a commit waits (PostgreSQL's commit_delay): stands in for a replicated commit's round trip
    commit_delay_us: int = 0
    # server binaries of another major version (e.g. the pgserver wheel's PostgreSQL 16); default: postgres_bindir()
    bindir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    @property
    def pid(self) -> int:
        """The running postmaster's pid (the first line of its pid file), as KafkaBroker.pid is the broker's."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def _as_owner(self) -> list[str]:
        # initdb and postgres refuse to run as root
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def init(self) -> None:
        bindir = self.bindir or postgres_bindir()
        created = make_dirs(self.data_dir)
        if os.geteuid() == 0:
            owned = self.owned_root or created
            make_reachable_for_postgres(self.data_dir.parent, owned)
            shutil.chown(self.data_dir, "postgres", "postgres")
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(PG_PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            [*self._as_owner(), str(bindir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER,
             "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )
        pwfile.unlink()

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        pg_ctl = (self.bindir or postgres_bindir()) / "pg_ctl"
        status = subprocess.run([*self._as_owner(), str(pg_ctl), "-D", str(self.data_dir), "status"],
                                capture_output=True)
        return status.returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart on the same port); a no-op when already running."""
        bindir = self.bindir or postgres_bindir()
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        elif self.is_running():
            return
        if not self.port:
            self.port = free_port()
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        log.touch()
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
        durability = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on" if self.durable
                      else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        if self.commit_delay_us:
            durability += f" -c commit_delay={self.commit_delay_us} -c commit_siblings=0"
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                f"{durability} -c max_connections=200")
        subprocess.run(
            [*self._as_owner(), str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log),
             "-o", opts, "-w", "-t", str(int(timeout)), "start"],
            check=True, capture_output=True,
        )
        self._ensure_database(timeout)

    def _ensure_database(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        admin_url = f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres"
        while True:
            try:
                with psycopg.connect(admin_url, autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone()
                    if not exists:
                        conn.execute(f"CREATE DATABASE {PG_DATABASE}")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            [*self._as_owner(), str((self.bindir or postgres_bindir()) / "pg_ctl"), "-D", str(self.data_dir),
             "-m", "fast", "-w", "stop"],
            check=False, capture_output=True,
        )


# --------------------------------------------------------------------------- Kafka


def fetch_kafka_jars(quiet: bool = False) -> Path:
    """Pull the broker jars from Maven Central once; later calls reuse the cache."""
    if any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        return KAFKA_LIBS
    KAFKA_LIBS.mkdir(parents=True, exist_ok=True)
    for old in KAFKA_LIBS.glob("*.jar"):
        old.unlink()
    cmd = ["mvn", "-B", "-Dstyle.color=never", "-f", str(REPO / "scripts" / "kafka" / "pom.xml"),
           "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={KAFKA_LIBS}"]
    if quiet:
        cmd.insert(1, "-q")
    subprocess.run(cmd, check=True)
    return KAFKA_LIBS


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaBroker:
    """A single-node KRaft broker: SASL_PLAINTEXT + SCRAM-SHA-256, StandardAuthorizer, `admin` super user."""

    work_dir: Path
    port: int = 0
    controller_port: int = 0
    pid: int | None = None
    _process: subprocess.Popen | None = None
    # also a SASL_SSL listener, its certificate signed by a CA made for this broker (tls_ca: that CA's PEM file)
    tls: bool = False
    tls_port: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    @property
    def tls_ca(self) -> Path:
        return self.work_dir / "tls" / "ca.pem"

    def _write_tls_material(self) -> Path:
        """A CA and the broker's key + certificate (for 127.0.0.1), as the PEM keystore Kafka reads (KIP-651)."""
        from scripts.tls_material import make_ca, make_server_certificate

        folder = self.work_dir / "tls"
        if not (folder / "broker.pem").exists():
            folder.mkdir(parents=True, exist_ok=True)
            ca_key, ca_cert = make_ca("graphql-entrypoint test CA")
            self.tls_ca.write_bytes(ca_cert.pem)
            (folder / "broker.pem").write_bytes(make_server_certificate(ca_key, ca_cert, "127.0.0.1").pem_with_key)
        return folder / "broker.pem"

    def client_config(self, username: str = KAFKA_ADMIN_USER, password: str = KAFKA_ADMIN_PASSWORD) -> dict:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": username,
            "sasl.password": password,
        }

    def _write_config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{KAFKA_ADMIN_USER}" password="{KAFKA_ADMIN_PASSWORD}";',
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{KAFKA_ADMIN_USER};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(self.work_dir / "data"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # a transaction past its timeout is aborted within 1 s instead of 10: the writer's budget tests wait less
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "auto.create.topics.enable": "false",
            "log.cleaner.dedupe.buffer.size": "8388608",
            "num.partitions": "1",
        }
        if self.tls:
            props["listeners"] += f",SASL_SSL://127.0.0.1:{self.tls_port}"
            props["advertised.listeners"] += f",SASL_SSL://127.0.0.1:{self.tls_port}"
            props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
            props |= {"listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                      "listener.name.sasl_ssl.ssl.keystore.location": str(self._write_tls_material()),
                      "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config":
                          props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"]}
        path = self.work_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.work_dir / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.work_dir / 'broker.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.server.KafkaServer=INFO\n"
            "log4j.logger.kafka.server.BrokerServer=INFO\n"
        )
        return path

    def _java(self, *args: str) -> list[str]:
        return ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dlog4j.configuration=file:{self.work_dir / 'log4j.properties'}",
                "-cp", f"{fetch_kafka_jars(quiet=True)}/*", *args]

    def start(self, timeout: float = 90.0) -> None:
        """Start (or restart on the same ports); a no-op while this broker runs, as for PostgresServer.start.

        A second process would fail to bind, yet the port check would pass on the first one and its pid be lost."""
        if self._process is not None and self._process.poll() is None:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        first_start = not (self.work_dir / "data" / "meta.properties").exists()
        if not self.port:
            self.port, self.controller_port = free_port(), free_port()
        if self.tls and not self.tls_port:
            self.tls_port = free_port()
        ports = (self.port, self.controller_port, *([self.tls_port] if self.tls else []))
        for port in ports:  # a broker that cannot bind must not look ready
            if not port_free(port):
                raise RuntimeError(f"port {port} is already in use by another process; the broker cannot bind it")
        config = self._write_config()
        if first_start:
            subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "--config", str(config), "--cluster-id", _cluster_id(),
                           "--add-scram", f"SCRAM-SHA-256=[name={KAFKA_ADMIN_USER},password={KAFKA_ADMIN_PASSWORD}]"),
                check=True, capture_output=True,
            )
        out = (self.work_dir / "broker.out").open("ab")
        self._process = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pid = self._process.pid
        (self.work_dir / "broker.pid").write_text(str(self.pid))
        deadline = time.monotonic() + timeout
        _wait_for_port(self.port, deadline, self._process, "kafka broker", self.work_dir / "broker.out")
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.client_config())
        while True:
            try:
                admin.list_topics(timeout=2)
                return
            except Exception:  # noqa: BLE001 - any failure means "not ready yet"
                if time.monotonic() > deadline or (self._process and self._process.poll() is not None):
                    raise RuntimeError(f"kafka broker not ready:\n{_tail(self.work_dir / 'broker.out')}") from None

    def orphan_pid(self) -> int | None:
        """A broker an earlier process started on this work dir and left running (its pid file names a live JVM)."""
        path = self.work_dir / "broker.pid"
        if self._process is not None or not path.exists():
            return None
        pid = int(path.read_text() or 0)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"kafka.Kafka" in cmdline and str(self.work_dir).encode() in cmdline else None

    def stop(self) -> None:
        pid = self.pid
        if pid is None and (self.work_dir / "broker.pid").exists():
            pid = int((self.work_dir / "broker.pid").read_text())
        if pid is not None:
            _stop_process(pid)
        if self._process is not None:
            self._process.wait()
        self.pid, self._process = None, None
        (self.work_dir / "broker.pid").unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"fetch-kafka", "start", "stop"}:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "fetch-kafka":
        print(fetch_kafka_jars())
        return 0
    base = Path(argv[1] if len(argv) > 1 else REPO / ".local").resolve()
    pg, kafka = PostgresServer(base / "pg"), KafkaBroker(base / "kafka")
    if argv[0] == "start":
        pg.start()
        kafka.start()
        info = {"database_url": pg.url, "kafka_bootstrap": kafka.bootstrap, "kafka_pid": kafka.pid}
        (base / "servers.json").write_text(json.dumps(info))
        print(json.dumps(info))
    else:
        kafka.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
