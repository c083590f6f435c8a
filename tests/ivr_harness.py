"""The real IVR as a subprocess for the SIPp integration tests (tests/test_ivr_sipp.py).

``IvrService`` runs ``hotline serve --only ivr`` with a private configuration, all through
``HOTLINE_*`` variables:

* a temporary SQLite database, migrated to head before the start;
* a temporary storage root (the message store and its ``.live/`` directory);
* the prompts built ONCE per test session (``hotline prompts build``, espeak-ng) into a
  session temp directory and shared by every instance (fixture ``ivr_prompts``);
* ``[sip] bind_port = 0``: the kernel picks a free port, learnt from the log line
  ``ivr listening … port=N`` (no race with other tests on this shared machine).

``stop()`` sends SIGTERM and returns the exit code; ``kill()`` is SIGKILL (the crash tests);
``restart()`` starts again on the same database and storage. The log (stderr) is in a file,
``log()`` reads it for assertion messages. ``hotline(...)`` runs any other CLI command on the
same configuration, ``calls()`` is ``hotline calls list --json``.

The fixture factory ``ivr_service`` starts instances and, at teardown, stops them with SIGTERM
and checks they exit 0 — unless a test of the scope failed meanwhile: then the process is
killed (it may be wedged, and the failure is already reported with its log).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from config.db import upgrade

VENV_BIN = Path(sys.executable).parent
HOTLINE = str(VENV_BIN / "hotline")
_LISTENING = re.compile(r"ivr listening\b.*?\bport=(\d+)")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def clean_environ() -> dict[str, str]:
    """os.environ without any HOTLINE_* the developer may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}


def build_prompts(prompts_dir: Path) -> None:
    env = {**clean_environ(), "HOTLINE_PROMPTS__DIR": str(prompts_dir)}
    r = subprocess.run([HOTLINE, "prompts", "build"], env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"hotline prompts build exited {r.returncode}:\n{r.stdout}\n{r.stderr}")


class IvrService:
    """One `hotline serve --only ivr` with its own database and storage (see the module doc)."""

    def __init__(self, workdir: Path, prompts_dir: Path, overrides: Mapping[str, str] | None = None,
                 parts: tuple[str, ...] = ("ivr",)) -> None:
        self.workdir = workdir
        self.parts = parts
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{workdir}/hotline.db"
        self.storage = workdir / "storage"
        self.prompts_dir = prompts_dir
        self.env: dict[str, str] = {
            "HOTLINE_DATABASE__URL": self.db_url,
            "HOTLINE_STORAGE__ROOT": str(self.storage),
            "HOTLINE_TRANSCRIPTION__MODELS_DIR": str(workdir / "models"),
            "HOTLINE_PROMPTS__DIR": str(prompts_dir),
            "HOTLINE_SIP__BIND_HOST": "127.0.0.1",
            "HOTLINE_SIP__PUBLIC_HOST": "127.0.0.1",
            "HOTLINE_SIP__BIND_PORT": "0",
            **dict(overrides or {}),
        }
        upgrade(self.db_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.runs = 0
        self.log_path = workdir / "serve-0.log"
        self.returncodes: list[int] = []

    # ---------------------------------------------------------------- process

    def start(self, timeout: float = START_TIMEOUT) -> IvrService:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.log_path = self.workdir / f"serve-{self.runs}.log"
        self.runs += 1
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [HOTLINE, "serve", *(a for p in self.parts for a in ("--only", p))], env={**clean_environ(), **self.env}, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"hotline serve exited {self.proc.returncode} at start:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"hotline serve did not log 'ivr listening' within {timeout} s:\n{self.log()[-4000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (graceful: calls get a closing prompt, messages are stored); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"hotline serve did not stop within {timeout} s of SIGTERM:\n{self.log()[-4000:]}")
        code = self.proc.returncode
        self.returncodes.append(code)
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing runs after it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.returncodes.append(self.proc.returncode)

    def restart(self) -> IvrService:
        return self.start()

    def log(self) -> str:
        """This run's log (the serve process's stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        return "".join(
            (self.workdir / f"serve-{i}.log").read_text(errors="replace") for i in range(self.runs)
            if (self.workdir / f"serve-{i}.log").exists()
        )  # fmt: skip

    def describe(self, tail: int = 4000) -> str:
        state = "running" if self.running() else f"exited {self.proc.returncode if self.proc else None}"
        return f"hotline serve ({state}, port {self.port}) log tail:\n{self.all_logs()[-tail:]}"

    # ---------------------------------------------------------------- CLI on the same config

    def hotline(self, *args: str, check: bool = True, timeout: float = 600,
                extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**clean_environ(), **self.env, **dict(extra_env or {})}
        r = subprocess.run([HOTLINE, *args], env=env, capture_output=True, text=True, timeout=timeout,
                           cwd=self.workdir)  # fmt: skip
        if check and r.returncode != 0:
            raise AssertionError(f"hotline {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def calls(self, limit: int = 200) -> list[dict[str, Any]]:
        return json.loads(self.hotline("calls", "list", "--json", "--limit", str(limit)).stdout)

    def call(self, sip_call_id: str) -> dict[str, Any]:
        """The Call row (as `calls list --json`) of one SIP Call-ID; fails naming what there is."""
        rows = [c for c in self.calls() if c["sip_call_id"] == sip_call_id]
        assert len(rows) == 1, f"no single call {sip_call_id!r} in {self.calls()}\n{self.describe()}"
        return rows[0]

    def wait_call_ended(self, sip_call_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The Call row once the service has written its end (it does so right after the BYE)."""
        deadline = time.monotonic() + timeout
        row: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            rows = [c for c in self.calls() if c["sip_call_id"] == sip_call_id]
            row = rows[0] if rows else None
            if row is not None and row["disposition"] is not None and row["end_reason"] is not None:
                return row
            time.sleep(0.3)
        raise AssertionError(f"call {sip_call_id!r} not ended within {timeout} s: {row}\n{self.describe()}")

    @property
    def live_dir(self) -> Path:
        return self.storage / ".live"


@pytest.fixture(scope="session")
def ivr_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every prompt rendered once per session (espeak-ng, ~10 s), shared read-only by every instance."""
    d = tmp_path_factory.mktemp("ivr-prompts")
    build_prompts(d)
    return d


def _service_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     prompts: Path) -> Iterator[Callable[..., IvrService]]:
    made: list[IvrService] = []
    failed_before = request.session.testsfailed

    def make(overrides: Mapping[str, str] | None = None, *, start: bool = True,
             parts: tuple[str, ...] = ("ivr",)) -> IvrService:
        svc = IvrService(tmp_path_factory.mktemp("ivr"), prompts, overrides, parts)
        made.append(svc)
        return svc.start() if start else svc

    yield make
    failed = request.session.testsfailed > failed_before
    problems = []
    for svc in made:
        if not svc.running():
            continue
        if failed:
            svc.kill()
            continue
        code = svc.stop()
        if code != 0:
            problems.append(f"exit {code} on SIGTERM: {svc.describe()}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def ivr_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                ivr_prompts: Path) -> Iterator[Callable[..., IvrService]]:
    """Factory: ``ivr_service({"HOTLINE_VOICEMAIL__MAX_SECONDS": "6"})`` -> a started IvrService."""
    yield from _service_factory(request, tmp_path_factory, ivr_prompts)


@pytest.fixture(scope="module")
def ivr_service_module(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                       ivr_prompts: Path) -> Iterator[Callable[..., IvrService]]:
    """The same factory, its instances shared by a module (stopped after its last test)."""
    yield from _service_factory(request, tmp_path_factory, ivr_prompts)
