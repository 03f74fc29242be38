"""Fixtures: a real `skiff server` process on a free loopback port, and a Python client for it."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]


def skiff_binary() -> str:
    return os.environ.get("SKIFF_BIN", str(ROOT / "target" / "debug" / "skiff"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `skiff server` child process with its own data directory."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="skiff-py-")
        self.port = free_port()
        self.proc = None
        self.start()

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.dir.name, "kubeconfig.yaml")

    def start(self):
        log = open(os.path.join(self.dir.name, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [skiff_binary(), "server", "--data-dir", self.dir.name, "--bind-address", "127.0.0.1",
             "--advertise-address", "127.0.0.1", "--https-port", str(self.port),
             # API-only tests: no kubelet (and no containerd outliving the killed server).
             "--disable-agent"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("skiff server exited: " + self.log())
            if os.path.exists(self.kubeconfig):
                try:
                    # /version answers once the API serves (what /readyz reports); the
                    # typed call works across client releases, unlike raw call_api.
                    client.VersionApi(self.api_client()).get_code()
                    return
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError("skiff server not ready: " + self.log())

    def log(self) -> str:
        try:
            return open(os.path.join(self.dir.name, "server.log")).read()
        except OSError:
            return ""

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=self.kubeconfig)

    def restart(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def core(server):
    return client.CoreV1Api(server.api_client())
