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
    clock_start: dt.datetime | None = None
    """Run the service's clock from this instant instead of the OS time (it then advances in real
    time). For rehearsing holiday routing before a holiday, and for tests that must meet a chosen
    day; it moves open/closed decisions only, never stored timestamps. Leave unset in production."""

    @field_validator("clock_start")
    @classmethod
    def _aware_start(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("clock_start needs a UTC offset, e.g. 2026-10-01T10:00:00+08:00")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return check_zone(v)

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


def check_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'Asia/Shanghai'") from None
    return v


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
    no_media_seconds: float = Field(60.0, ge=0, le=86400)
    """End a call whose far end sent no RTP this long (not counting hold); 0 disables (ivr/call.py)."""
    registrar: str | None = None
    """host[:port] of the registrar in register mode."""
    username: str | None = None
    password: str | None = None
    register_expires: int = Field(300, ge=30, le=86400)
    trusted_peers: list[str] = ["127.0.0.1"]
    """Addresses or CIDR networks allowed to send INVITEs in trunk mode; others get 403.
    In register mode the registrar's address is allowed, plus these only when set explicitly."""
    outbound_proxy: str | None = None
    """host[:port] every outbound INVITE is sent to (with a Route header); unset: the registrar in
    register mode, the dialled URI's host in trunk mode."""
    dial_uri_template: str = "sip:{number}@127.0.0.1:5060"
    """How the dialer turns a phone number into a SIP URI; `{number}` is the digits."""

    @field_validator("dial_uri_template")
    @classmethod
    def _dial_template(cls, v: str) -> str:
        if "{number}" not in v or not v.lower().startswith(("sip:", "sips:")):
            raise ValueError('must be a sip: URI containing {number}, e.g. "sip:{number}@pbx.example"')
        try:
            v.format(number="1")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{number}} may be used in braces ({e})") from None
        return v



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
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Request bodies above this get 413 (aiohttp client_max_size)."""
    session_secret: str | None = None
    """Key for the encrypted session cookie: 32 bytes as url-safe base64, or the path of a file holding
    that text. Unset: generated once into <storage root>/session.key and kept there."""
    secure_cookies: bool = False
    """Send the session cookie only over HTTPS; turn on when staff reach the service through TLS."""
    session_hours: float = Field(12.0, gt=0, le=24 * 31)
    """A web login lasts this long (a shift), then the cookie no longer decrypts."""
    token_days: int = Field(30, ge=1, le=3650)
    """Default lifetime of API bearer tokens (POST /api/v1/auth/token, `hotline users token`)."""
    login_failures_per_user: int = Field(5, ge=1, le=1000)
    """Failed logins for one username before each further failure locks it for a while."""
    login_failures_per_address: int = Field(30, ge=1, le=100000)
    """The same for one client address (higher: a centre's staff may share one NAT address)."""
    login_lock_seconds: float = Field(2.0, gt=0, le=3600)
    """The first lock; it doubles with each further failure."""
    login_lock_max_seconds: float = Field(900.0, gt=0, le=86400)
    """The longest lock; failures older than this are forgotten."""


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


class CodeName(Section):
    """A configurable code list entry: the stable code is stored on cases, the name is shown."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    name: str = Field(min_length=1, max_length=80)


DEFAULT_CATEGORIES: list[dict[str, str]] = [
    {"code": "law_enforcement", "name": "执法不公、违法办案"},
    {"code": "misconduct", "name": "民警违法违纪、吃拿卡要"},
    {"code": "attitude", "name": "服务态度、工作作风"},
    {"code": "case_handling", "name": "报警求助与案件办理（不立案、拖延）"},
    {"code": "traffic", "name": "交通管理"},
    {"code": "household", "name": "户籍管理"},
    {"code": "id_card", "name": "居民身份证"},
    {"code": "exit_entry", "name": "出入境管理"},
    {"code": "public_order", "name": "治安管理（噪声、娱乐场所等）"},
    {"code": "fraud", "name": "电信网络诈骗"},
    {"code": "suggestion", "name": "意见建议"},
    {"code": "praise", "name": "表扬感谢"},
    {"code": "consultation", "name": "政策咨询"},
]

DEFAULT_UNITS: list[dict[str, str]] = [
    {"code": "traffic_police", "name": "市公安局交通警察支队"},
    {"code": "exit_entry", "name": "市公安局出入境管理支队"},
    {"code": "population", "name": "市公安局人口管理支队"},
    {"code": "public_order", "name": "市公安局治安管理支队"},
    {"code": "criminal", "name": "市公安局刑事侦查支队"},
    {"code": "anti_fraud", "name": "市反电信网络诈骗中心"},
    {"code": "discipline", "name": "市公安局督察支队"},
    {"code": "branch_east", "name": "城东分局"},
    {"code": "branch_west", "name": "城西分局"},
    {"code": "branch_south", "name": "城南分局"},
    {"code": "branch_north", "name": "城北分局"},
]


class HandlingForm(Section):
    """A handling form and its deadlines (defaults from the 12389 platform rules)."""

    name: str = Field(min_length=1, max_length=40)
    direct: bool = False
    """Answered by the centre itself (accepted → replied, no dispatch): consultations, emergency transfers."""
    sign_minutes: int = Field(10, ge=1, le=24 * 60)
    """Working minutes from receipt to sign and route (dispatch, answer directly, reject or discard)."""
    contact_minutes: int = Field(30, ge=0, le=24 * 60)
    """Working minutes from acceptance to the first contact with the caller; 0: no contact deadline."""
    reply_working_days: int = Field(5, ge=0, le=60)
    """Working days from acceptance to the reply for a general case; 0: no reply deadline."""
    complex_reply_working_days: int = Field(15, ge=0, le=60)
    """The same for a case marked complex."""
    final_days: int = Field(30, ge=0, le=366)
    """Calendar days from acceptance to closing, at most; 0: none."""


DEFAULT_HANDLING_FORMS: dict[str, dict[str, object]] = {
    "consultation": {"name": "咨询直接答复", "direct": True, "contact_minutes": 0, "reply_working_days": 0,
                     "complex_reply_working_days": 0, "final_days": 0},
    "emergency": {"name": "紧急事项直接转警", "direct": True, "contact_minutes": 0, "reply_working_days": 1,
                  "complex_reply_working_days": 1, "final_days": 30},
    "general": {"name": "一般转办", "direct": False},
}


class CasesSettings(Section):
    categories: list[CodeName] = [CodeName(**c) for c in DEFAULT_CATEGORIES]
    """The acceptance scope: a case can only be accepted with one of these categories."""
    units: list[CodeName] = [CodeName(**u) for u in DEFAULT_UNITS]
    """Responsible units cases are dispatched to."""
    handling_forms: dict[str, HandlingForm] = {k: HandlingForm(**v) for k, v in DEFAULT_HANDLING_FORMS.items()}  # type: ignore[arg-type]
    """Handling forms by code, each with its deadlines. Given in the file, the table replaces the defaults."""
    deadline_near_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """A deadline is "near" once less than this fraction of its allotted working time is left."""
    duplicate_days: int = Field(90, ge=1, le=3650)
    """Cases from the same number within this many days are suggested as duplicates."""
    duplicate_similarity: float = Field(0.5, ge=0.0, le=1.0)
    """Content similarity (0-1, jieba tokens + rapidfuzz) above which a case with the same address or unit is suggested."""
    duplicate_address_similarity: float = Field(0.8, ge=0.0, le=1.0)
    """Normalised addresses at least this similar count as the same address."""

    @field_validator("categories", "units")
    @classmethod
    def _unique(cls, v: list[CodeName]) -> list[CodeName]:
        codes = [c.code for c in v]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"codes listed twice: {', '.join(dup)}")
        if not v:
            raise ValueError("at least one entry is needed")
        return v

    @field_validator("handling_forms")
    @classmethod
    def _forms(cls, v: dict[str, HandlingForm]) -> dict[str, HandlingForm]:
        import re

        bad = [k for k in v if not re.match(r"^[a-z][a-z0-9_]{0,19}$", k)]
        if bad:
            raise ValueError(f"handling form codes must be lower-case identifiers: {', '.join(bad)}")
        if not v:
            raise ValueError("at least one handling form is needed")
        return v

    def category_names(self) -> dict[str, str]:
        return {c.code: c.name for c in self.categories}

    def unit_names(self) -> dict[str, str]:
        return {u.code: u.name for u in self.units}
class Open311Settings(Section):
    """The public Open311 GeoReport v2 interface (/open311/v2): reading is open, creating needs a key."""

    jurisdiction_id: str = Field("12389", min_length=1, max_length=40)
    """The only jurisdiction_id this service answers for (clients may omit it)."""
    api_keys: dict[str, str] = {}
    """Client name -> API key for POST requests.json (the name becomes the case's creator,
    "open311:<name>"). Keys are at least 24 characters; none configured: nobody may create."""

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for name, key in v.items():
            if not re.match(r"^[a-z0-9][a-z0-9_-]{0,39}$", name):
                raise ValueError(f"client name {name!r} must be a lower-case identifier (a-z, 0-9, _ -)")
            if len(key) < 24 or not key.isascii() or not key.isprintable():
                raise ValueError(f"the key of {name!r} must be at least 24 printable ASCII characters")
        if len(set(v.values())) != len(v):
            raise ValueError("two clients share one key")
        return v


class CampaignSettings(Section):
    """Defaults for new return-visit campaigns (each campaign keeps its own copy) and the engine's pace."""

    windows: list[str] = ["09:00-12:00", "14:30-20:00"]
    """Calling windows, local "HH:MM-HH:MM" spans in the campaign's time zone."""
    days: Literal["working_days", "every_day"] | list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = "working_days"
    """Which days: the calendar's working days (adjusted working weekends included), every day, or
    listed weekdays. Public holidays and local closed days are never calling days."""
    timezone: str | None = None
    """The zone the windows are read in; unset: [calendar] timezone."""
    max_attempts: int = Field(3, ge=1, le=20)
    retry_minutes: int = Field(120, ge=1, le=10080)
    """Wait after an unanswered attempt before the next one."""
    concurrency: int = Field(4, ge=1, le=200)
    """Lines one campaign may use at once."""
    max_lines: int = Field(8, ge=1, le=1000)
    """Lines all running campaigns together may use at once (the trunk's share for outbound calls);
    each campaign's own ``concurrency`` applies as well."""
    caller_id: str = "12389"
    ring_timeout: float = Field(30.0, ge=5.0, le=120.0)
    """Seconds an outbound call rings before it counts as no answer."""
    prompt_script: str = Field("return_visit", pattern=r"^[a-z][a-z0-9_]{0,39}$")
    """Prefix of the survey's prompt segments (<script>_intro, <script>_question, …)."""
    opt_out_key: str = Field("8", pattern=r"^[0-9*#]$")
    """The key a callee presses to be put on the do-not-call list (1-3 rate, 9 repeats, 0 operator)."""
    comment_seconds: int = Field(30, ge=0, le=300)
    """Longest spoken comment after the rating; 0 asks for none."""
    tick_seconds: float = Field(15.0, ge=1.0, le=600.0)
    """How often the scheduler looks for due targets."""

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one calling window is needed")
        return _check_spans(v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else check_zone(v)


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
    cases: CasesSettings = CasesSettings()
    campaigns: CampaignSettings = CampaignSettings()
    open311: Open311Settings = Open311Settings()
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
