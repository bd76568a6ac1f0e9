"""Small real pieces for the team-hub tests (and the benchmarks): a PEFT LoRA folder of any
size, a real ``loramgr serve`` in a subprocess, and a TCP proxy that cuts a connection.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[2]


def write_synthetic_adapter(folder: Path, *, megabytes: float, seed: int = 0, hidden: int = 1024, rank: int = 16,
                            base: str = "synthetic/base-model") -> Path:
    """A valid PEFT LoRA folder (q_proj + v_proj of enough layers) of about ``megabytes`` MB,
    with random float32 factors. No model is needed: the hub reads only config and header."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per_layer = 2 * 2 * rank * hidden * 4  # two modules, A (r x h) and B (h x r), float32
    layers = max(1, math.ceil(megabytes * 1_000_000 / per_layer))
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, hidden), dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((hidden, rank), dtype=np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"],
              "base_model_name_or_path": base, "task_type": "CAUSAL_LM", "lora_dropout": 0.0, "bias": "none"}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``loramgr serve`` in a subprocess on 127.0.0.1, polled until it answers ``/api/info``.

    ``env`` adds variables (e.g. ``TMPDIR``); ``cwd`` is its working folder. ``stop`` ends it
    with SIGTERM, ``kill`` with SIGKILL (a crash); ``start`` again reuses home and port.
    """

    def __init__(self, home: Path, *, database_url: str | None = None, args: tuple = (), env: dict | None = None,
                 cwd: Path | None = None, port: int | None = None):
        self.home, self.database_url, self.args = Path(home), database_url, [str(a) for a in args]
        self.extra_env, self.cwd = dict(env or {}), cwd
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = self.home.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAMGR_")}
        env.update(LORAMGR_HOME=str(self.home), PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        if self.database_url:
            env["LORAMGR_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> "LiveServer":
        command = [sys.executable, "-c", "from loramgr.cli import main; main()", "serve", "--port", str(self.port),
                   "--no-access-log", *self.args]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, env=self.environment(), cwd=self.cwd, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"loramgr serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/info", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"loramgr serve did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None


class CuttingProxy:
    """A TCP proxy to ``127.0.0.1:upstream_port`` that, ``cuts`` times, drops a connection once
    it has passed ``cut_after`` bytes from the server: a network cut in the middle of a pull.
    ``requests`` holds what clients sent (to check that a resume asked for a ``Range``)."""

    def __init__(self, upstream_port: int, *, cut_after: int, cuts: int = 1):
        self.upstream_port, self.cut_after, self.cuts_left = upstream_port, cut_after, cuts
        self.cuts_done = 0
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._to_server, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._to_client, args=(upstream, client), daemon=True).start()

    def _to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    self.requests.append(data)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        passed = 0
        try:
            while data := upstream.recv(65536):
                with self._lock:
                    cut = self.cuts_left > 0 and passed + len(data) > self.cut_after
                    if cut:
                        self.cuts_left -= 1
                        self.cuts_done += 1
                if cut:
                    client.sendall(data[:self.cut_after - passed])
                    break
                client.sendall(data)
                passed += len(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def saw_request_header(self, header: bytes) -> bool:
        with self._lock:
            return header.lower() in b"".join(self.requests).lower()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
