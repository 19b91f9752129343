"""Extra local Kafka clusters for tests: a SASL_SSL broker and a three-node cluster.

Each is started once per session by `deploy/kafka/start` (its own ports, data under the
checkout's `.kafka/`) and stopped with its data wiped at the end. `ScramAdmin` adds users
and ACLs on the secure broker as the admin that `start --secure` made.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.support.kafka import ROOT

START_SECONDS = 180
PORT_RANGE = range(29100, 29900, 10)  # blocks of 10 loopback ports for the extra clusters


def free_ports(count: int, env_name: str) -> int:
    """The first port of `count` consecutive free loopback ports: `env_name` if set, else
    the first free block in 29100-29899 (checkouts running side by side get their own)."""
    if os.environ.get(env_name):
        return int(os.environ[env_name])
    for base in PORT_RANGE:
        if all(_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} free loopback ports in 29100-29899")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LocalCluster:
    """Nodes `deploy/kafka/start` runs on loopback ports from `port` up."""

    port: int  # then the controller on port+1; node i on port+2i, its controller port+2i+1
    brokers: int = 1
    secure: bool = False
    home: Path = ROOT / ".kafka"
    bootstrap: str = ""

    @property
    def ports(self) -> list[int]:
        return [self.port + 2 * i for i in range(self.brokers)]

    @property
    def tls_dir(self) -> Path:
        return self.home / f"tls-{self.port}"

    def _env(self, port: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOPIC_"))}
        env.update(
            KAFKA_PORT=str(port or self.port),
            KAFKA_CONTROLLER_PORT=str(self.port + 1),
            KAFKA_HOME_DIR=str(self.home),
            KAFKA_HEAP="-Xmx512m -Xms128m",
            KAFKA_NUM_PARTITIONS="4",
            KAFKA_INTERNAL_PARTITIONS="4",
        )
        return env

    def start(self) -> str:
        """Start (or restart the dead nodes of) the cluster; returns the bootstrap list."""
        args = [str(ROOT / "deploy/kafka/start"), "--brokers", str(self.brokers)]
        if self.secure:
            args.append("--secure")
        done = subprocess.run(
            args, env=self._env(), capture_output=True, text=True, timeout=START_SECONDS
        )
        assert done.returncode == 0, f"deploy/kafka/start failed:\n{done.stderr[-3000:]}"
        self.bootstrap = done.stdout.strip().splitlines()[-1]
        return self.bootstrap

    def stop(self) -> None:
        """Stop every node (all at once) and delete its data."""
        stopping = [
            subprocess.Popen(
                [str(ROOT / "deploy/kafka/stop"), "--wipe"],
                env={**self._env(port), "KAFKA_STOP_TIMEOUT": "10"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in self.ports
        ]
        for process in stopping:
            process.wait(timeout=90)

    def kill_node(self, index: int) -> int:
        """kill -9 one node; returns its pid."""
        pid = int((self.home / f"kafka-{self.ports[index]}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        return pid

    def admin_env(self) -> dict[str, str]:
        """The admin's client settings, as `start --secure` printed them."""
        lines = (self.tls_dir / "client.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)


def client_env(cluster: LocalCluster, user: str, password_file: Path) -> dict[str, str]:
    """Settings for a SASL_SSL client of `cluster` logging in as `user`."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "KAFKA_SSL_CAFILE": str(cluster.tls_dir / "ca.pem"),
    }


@dataclass(frozen=True)
class Acl:
    """Allow `operations` on a resource (LITERAL name, or PREFIXED with `prefixed`)."""

    resource: ResourceType
    name: str
    operations: tuple[AclOperation, ...]
    prefixed: bool = False


@dataclass
class ScramAdmin:
    """Users and ACLs on the secure cluster, made as its admin."""

    cluster: LocalCluster
    _client: AdminClient | None = field(default=None, init=False)

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            env = self.cluster.admin_env()
            self._client = AdminClient(
                {
                    "bootstrap.servers": self.cluster.bootstrap,
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": "admin",
                    "sasl.password": Path(env["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
                    "ssl.ca.location": env["KAFKA_SSL_CAFILE"],
                }
            )
        return self._client

    def add_user(self, user: str, password: str) -> None:
        credential = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        upsert = UserScramCredentialUpsertion(user, credential, password.encode())
        for future in self.client.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)

    def allow(self, user: str, acls: Iterable[Acl]) -> None:
        bindings = [
            AclBinding(
                acl.resource,
                acl.name,
                ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
                f"User:{user}",
                "*",
                operation,
                AclPermissionType.ALLOW,
            )
            for acl in acls
            for operation in acl.operations
        ]
        for future in self.client.create_acls(bindings).values():
            future.result(timeout=30)
