"""Settings: one TOML file plus ``HOTLINE_<SECTION>__<KEY>`` environment overrides.

Validated once at start. Unknown keys are errors (a typo in a config file must not be
silently ignored in a centre that relies on it), and every error names the key and
what it accepts.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from config.errors import HotlineError

CONFIG_ENV = "HOTLINE_CONFIG"


class ConfigError(HotlineError):
    """The configuration file or environment holds a wrong key or value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatabaseSettings(Section):
    url: str = "sqlite:///var/hotline.db"
    """SQLAlchemy URL. SQLite (default, WAL mode) or postgresql+psycopg://…"""
    echo: bool = False


class StorageSettings(Section):
    root: Path = Path("var/recordings")
    max_sample_rate: int = Field(16000, ge=8000, le=48000)
    """Stored copies keep their rate up to this cap (Hz); above it they are resampled down."""


class TranscriptionSettings(Section):
    model_path: Path | None = None
    """A Vosk model folder. When unset, the first model under models_dir, then installed vosk-model-* packages."""
    models_dir: Path = Path("var/models")
    feed_rate: Literal["model", "native"] = "model"
    """'model': bring 8 kHz audio to the model's rate by linear interpolation (CER 0.19 vs 0.27 on 8 kHz speech, see
    transcription/engine.py); 'native': feed it as is and let Kaldi resample."""
    low_confidence: float = Field(0.6, ge=0.0, le=1.0)
    """Words below this confidence are marked for the reviewer."""
    processes: int = Field(1, ge=1, le=64)
    lease_seconds: int = Field(600, ge=10)
    """A running job whose lease expired is taken back: its worker is presumed dead."""
    max_attempts: int = Field(3, ge=1, le=100)
    backoff_seconds: int = Field(60, ge=0)
    poll_seconds: float = Field(2.0, gt=0)


_TIME = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class YearSchedule(Section):
    """One year's official schedule, for years the chinese-calendar package does not know."""

    holidays: dict[dt.date, str] = {}
    """Closed days with their holiday name, e.g. {"2027-10-01" = "National Day"}."""
    workdays: list[dt.date] = []
    """Adjusted working weekends (调休)."""


DEFAULT_HOURS: dict[str, list[str]] = {
    **{d: ["08:30-12:00", "14:30-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")},
    "sat": [],
    "sun": [],
}


class CalendarSettings(Section):
    timezone: str = "Asia/Shanghai"
    hours: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[str]] = DEFAULT_HOURS
    """Office hours per weekday as "HH:MM-HH:MM" spans. A weekday not given keeps its default
    (Mon-Fri 08:30-12:00 and 14:30-17:30, weekend closed); [] closes it. So setting only
    `sat` adds Saturday hours instead of silently closing the rest of the week."""
    adjusted_workday_hours: list[str] = ["08:30-12:00", "14:30-17:30"]
    """Hours on an adjusted working weekend day."""
    closed_days: dict[dt.date, str] = {}
    """Local extra closed days with a reason."""
    open_days: list[dt.date] = []
    """Local extra working days."""
    years: dict[str, YearSchedule] = {}
    """Official schedules for years the library does not cover, keyed by year ("2027")."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'Asia/Shanghai'") from None
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for spans in v.values():
            _check_spans(spans)
        return {**DEFAULT_HOURS, **v}

    @field_validator("adjusted_workday_hours")
    @classmethod
    def _adj(cls, v: list[str]) -> list[str]:
        return _check_spans(v)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _check_spans(spans: list[str]) -> list[str]:
    import re

    for s in spans:
        if not re.match(_TIME, s) or s[:5] >= s[6:]:
            raise ValueError(f"bad span {s!r}: expected 'HH:MM-HH:MM' with start before end")
    return spans


class SipSettings(Section):
    mode: Literal["trunk", "register"] = "trunk"
    """'trunk': accept INVITEs straight from trusted_peers; 'register': register to a PBX/provider."""
    bind_host: str = "127.0.0.1"
    bind_port: int = Field(5060, ge=0, le=65535)
    """UDP port for SIP; 0 picks a free one (tests)."""
    public_host: str = "127.0.0.1"
    """The address put in SDP and Contact: the one peers reach us on."""
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(20999, ge=1024, le=65535)
    registrar: str | None = None
    """host[:port] of the registrar in register mode."""
    username: str | None = None
    password: str | None = None
    register_expires: int = Field(300, ge=30, le=86400)
    trusted_peers: list[str] = ["127.0.0.1"]
    """Addresses or CIDR networks allowed to send INVITEs in trunk mode; others get 403.
    In register mode the registrar's address is allowed, plus these only when set explicitly."""



class VoicemailSettings(Section):
    max_seconds: int = Field(180, ge=5, le=3600)
    silence_seconds: float = Field(10.0, ge=1.0, le=120.0)
    """Recording stops after this much silence following speech."""
    silence_threshold: int = Field(500, ge=1, le=32767)
    """RMS of a 20 ms frame (16-bit linear) below which it counts as silence."""


class QueueSettings(Section):
    """Callers waiting for an operator in working hours (issue 5).

    Seconds are floats so tests can run a whole wait in a fraction of a second."""

    strategy: Literal["longest_idle", "ring_all"] = "longest_idle"
    """'longest_idle': offer a caller to the operator whose last call ended longest ago, one at a
    time; 'ring_all': ring every free operator at once, the first to answer takes the call."""
    ring_timeout_seconds: float = Field(20.0, gt=0, le=300)
    """How long an operator's phone rings before the caller is offered to the next one."""
    wrap_up_seconds: float = Field(30.0, ge=0, le=3600)
    """After a call the operator is in wrap-up (writing notes) this long before the next ring; 0 = none."""
    announce_seconds: float = Field(30.0, gt=0, le=3600)
    """The caller hears their position on entry and again every this many seconds."""
    max_wait_seconds: float = Field(120.0, gt=0, le=7200)
    """After waiting this long the caller is taken to voicemail."""
    hold_music: str = "builtin"
    """'builtin': a generated melody written by `hotline prompts build` as <[prompts] dir>/hold_music.wav;
    otherwise the path of an 8 kHz mono 16-bit WAV file to loop."""


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


PromptLanguage = Literal["zh", "en"]


class PromptsSettings(Section):
    dir: Path = Path("var/prompts")
    """Where `hotline prompts build` writes <lang>/<key>.wav and where the IVR reads them."""
    default_language: PromptLanguage = "zh"
    """The language a call starts in (menu key 9 switches)."""
    voices: dict[PromptLanguage, str] = {"zh": "cmn-latn-pinyin", "en": "en"}
    """espeak-ng voice per language. The Debian espeak-ng data has a partial Mandarin
    dictionary: with plain `cmn` many characters are spelled out as pinyin read in English,
    while `cmn-latn-pinyin` reads every character as Mandarin (measured with `espeak-ng -x`)."""
    speed: int = Field(150, ge=80, le=450)
    """espeak-ng speaking rate in words per minute (its default, 175, is fast on a phone line)."""

    @field_validator("voices")
    @classmethod
    def _voices(cls, v: dict[str, str]) -> dict[str, str]:
        return {"zh": "cmn-latn-pinyin", "en": "en", **v}


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["console", "json"] = "console"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOTLINE_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    transcription: TranscriptionSettings = TranscriptionSettings()
    calendar: CalendarSettings = CalendarSettings()
    sip: SipSettings = SipSettings()
    voicemail: VoicemailSettings = VoicemailSettings()
    queue: QueueSettings = QueueSettings()
    api: ApiSettings = ApiSettings()
    prompts: PromptsSettings = PromptsSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, which arrives as init kwargs.
        return (env_settings, init_settings)


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else key
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        msg = f"unknown key; accepted keys: {', '.join(known)}" if known else "unknown key"
    elif err["type"] == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    env = "HOTLINE_" + "__".join(p.upper() for p in loc)
    return f"{where}: {msg}  (file key {key!r}, environment {env})"


def _known_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        if get_origin(current) is dict:  # a table keyed by the user, e.g. [calendar.years."2027"]
            current = get_args(current)[1]
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    if not isinstance(current, type) or not issubclass(current, BaseModel):
        return []
    return sorted(current.model_fields)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file (argument, else $HOTLINE_CONFIG, else none) and the environment."""
    path = path or os.environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found (from --config or ${CONFIG_ENV})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    try:
        return Settings(**data)
    except ValidationError as e:
        lines = [_describe(err, Settings) for err in e.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except SettingsError as e:
        # pydantic-settings could not decode an environment value (a list or table that is
        # not valid JSON); without this it escaped as a traceback.
        raise ConfigError(f"invalid configuration: {e}: lists and tables in HOTLINE_* variables must be JSON, "
                          'e.g. HOTLINE_CALENDAR__OPEN_DAYS=\'["2026-10-03"]\'') from None
