"""A real Triton Inference Server for the tests: the CPU ``tritonserver`` 2.51 of the nvidia-pytriton wheel.

``make triton-env`` (a prerequisite of ``make test``) runs ``python tests/triton_server.py install``,
which fills ``.triton/`` at the repository root:

- ``server/``: the nvidia-pytriton wheel's files (``pip --target``, without its dependencies:
  its numpy<2 pin would clash with the venv): ``tritonserver`` with the Python backend only, and
  the backend's stubs, of which the one whose ``libpython`` loads here is copied into
  ``backends/python/`` (the wheel leaves that to pytriton);
- ``site/``: numpy<2, Pillow and onnxruntime for that system Python: the stub embeds it, and
  the model code runs there, not in the venv (the stub is built against numpy 1.x; with numpy 2
  it answers "output tensor shape does not match size").

Tests start a server with :class:`TritonServer` (127.0.0.1, a free port, HTTP only) and always
stop it; without ``.triton/`` they skip, naming the command that installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from typing_extensions import Self

PYTRITON = "nvidia-pytriton==0.7.0"
STUB_SITE = ("numpy==1.26.4", "pillow==13.0.0", "onnxruntime==1.31.1")
ROOT = Path(__file__).resolve().parents[1] / ".triton"
TRITON = ROOT / "server" / "pytriton" / "tritonserver"
STARTUP_SECONDS = 120


@dataclass(frozen=True)
class TritonEnv:
    """An installed server: the binary, its backends folder and the stub's package folder."""

    binary: Path
    backends: Path
    site: Path
    python: str


def _stub_loads(stub: Path) -> bool:
    """Whether every library of ``stub`` resolves here, its libpython to the system's.

    The 3.13 stub brings its own libpython but no standard library for it, so a libpython from
    inside the wheel does not count. Asked of ``ldd``: this process may have a libpython loaded.
    """
    result = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, check=False)
    lines = result.stdout.splitlines()
    python = [ln for ln in lines if ln.strip().startswith("libpython")]
    return (result.returncode == 0 and not any("not found" in ln for ln in lines)
            and bool(python) and all(str(ROOT) not in ln for ln in python))


def _loadable_python(stubs: Path) -> str | None:
    """The newest X.Y among the wheel's stubs that runs on this machine's own libpythonX.Y."""
    versions = sorted((p.name for p in stubs.iterdir()), key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    return next((v for v in versions if _stub_loads(stubs / v / "triton_python_backend_stub")), None)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *args], check=True)


def install() -> None:
    """Install the server and the stub's packages into ``.triton/`` (replacing what is there)."""
    shutil.rmtree(ROOT, ignore_errors=True)
    _pip("--target", str(ROOT / "server"), PYTRITON)
    version = _loadable_python(TRITON / "python_backend_stubs")
    if version is None:
        raise SystemExit(f"no libpython of {sorted(p.name for p in (TRITON / 'python_backend_stubs').iterdir())} "
                         "loads here; install the system libpython3.X (e.g. apt-get install libpython3.11)")
    shutil.copy2(TRITON / "python_backend_stubs" / version / "triton_python_backend_stub", TRITON / "backends" / "python")
    _pip("--only-binary=:all:", "--python-version", version, "--target", str(ROOT / "site"), *STUB_SITE)
    (ROOT / "env.json").write_text(json.dumps({"python": version, "pytriton": PYTRITON, "site": list(STUB_SITE)}))
    print(f"{ROOT}: tritonserver from {PYTRITON}, Python backend stub for python{version}, {', '.join(STUB_SITE)}")


def find_env() -> TritonEnv | str:
    """The installed server, or why there is none (a skip reason naming the fix)."""
    record = ROOT / "env.json"
    if not record.is_file():
        return f"no Triton test server in {ROOT}; install it with `make triton-env`"
    python = json.loads(record.read_text())["python"]
    if not _stub_loads(TRITON / "backends" / "python" / "triton_python_backend_stub"):
        return (f"the Python backend stub's libraries (libpython{python}.so.1.0) do not all load here "
                "(see `ldd` of it); re-run `make triton-env`")
    return TritonEnv(TRITON / "bin" / "tritonserver", TRITON / "backends", ROOT / "site", python)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """``with TritonServer(env, repo, log) as server:`` a running server on ``server.url``; stopped on exit."""

    def __init__(self, env: TritonEnv, repo: Path, log: Path) -> None:
        self.env, self.repo, self.log = env, repo, log
        self.port = _free_port()
        self.url = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        args = [str(self.env.binary), f"--model-repository={self.repo}", f"--backend-directory={self.env.backends}",
                "--http-address=127.0.0.1", f"--http-port={self.port}", "--allow-grpc=false",
                "--allow-metrics=false", "--exit-on-error=false", "--strict-readiness=false"]
        env = {**os.environ, "PYTHONPATH": str(self.env.site)}
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_live()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_live(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self._proc.returncode}; log: {self.log}")
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2):
                    return  # ready (non-strict): every model finished loading or failing
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"tritonserver not ready after {STARTUP_SECONDS} s; log: {self.log}")

    def index(self) -> list[dict]:
        """The repository index: every model with its state and the reason it is not ready."""
        request = urllib.request.Request(f"http://{self.url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Terminate the server (kill it after 30 s) and reap it."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python tests/triton_server.py install")
    install()
