"""The IVR's prompt segments: the catalogue, rendering with espeak-ng, and the start-up check.

Every sentence the IVR can say is a *segment* with a stable key; its file is
``<prompts dir>/<lang>/<key>.wav`` (8 kHz, mono, 16-bit PCM: what a G.711 call carries, so
playing it needs no resampling mid-call). Longer utterances are assembled from segments at
call time (``thank_you`` + ``message_number`` + ``digit_2`` + ``digit_0`` …), which is why
digits and case status words are segments of their own.

``hotline prompts build`` renders the catalogue with espeak-ng so a fresh install can take
calls; a centre replaces any file with a human recording of the same name. The build must
never destroy such a recording, so it keeps a manifest of the files it generated itself
(path → SHA-256 and what was rendered): a file whose hash is not in the manifest is
someone else's and is kept unless ``--force`` is given.

The IVR calls :func:`missing_prompts` (or the stricter :func:`prompt_problems`) at start so
a missing file stops the service with its name instead of failing in the middle of a call.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from config.errors import HotlineError
from config.settings import Settings
from ivr import hold_music
from recordings.audio import write_atomic

Lang = Literal["zh", "en"]
LANGUAGES: tuple[Lang, ...] = ("zh", "en")
SAMPLE_RATE = 8000
CHANNELS = 1
SAMPLE_WIDTH = 2
MANIFEST = ".generated.json"
"""In the prompts directory: the files this program wrote, so human recordings are never overwritten."""
LOCK = ".build.lock"

CASE_STATUSES = (
    "draft", "accepted", "assigned", "in_progress", "replied", "return_visit", "closed",
    "rejected", "discarded", "merged",
)
"""The case lifecycle of DESIGN.md §4; each has a status_<name> segment for self-service."""


class PromptError(HotlineError):
    """Prompts cannot be built (a tool is missing or failed) or are missing/unusable."""


@dataclass(frozen=True)
class Segment:
    """One prompt segment in every language.

    ``text`` is the script (what a human speaker records, what `prompts list` prints);
    ``tts`` replaces it for espeak-ng where the written form reads badly (a hotline number
    read as one large number); ``voice`` makes a segment speak another language's voice
    (the Chinese menu's "For English, press 9" is said in English).
    """

    key: str
    text: dict[Lang, str]
    purpose: str
    tts: dict[Lang, str] = field(default_factory=dict)
    voice: dict[Lang, Lang] = field(default_factory=dict)

    def spoken(self, lang: Lang) -> str:
        return self.tts.get(lang, self.text[lang])

    def voice_language(self, lang: Lang) -> Lang:
        return self.voice.get(lang, lang)


_DIGITS_ZH = "零幺二三四五六七八九"
"""Digit by digit, 1 as 幺 (yāo) the way Chinese telephone numbers are read, so it is not
mistaken for 七 on a poor line."""
_DIGITS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

MAX_COUNT = 20
"""Queue positions are read as words up to this ("第三位"); beyond it the caller hears "more than twenty"."""
_COUNT_ZH = "一二三四五六七八九十"
_COUNT_EN = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
             "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")


def _count_zh(n: int) -> str:
    """1..99 as spoken Chinese numerals (for positions: 第三位, 第十二位, 第二十位)."""
    tens, ones = divmod(n, 10)
    if tens == 0:
        return _COUNT_ZH[ones - 1]
    head = "" if tens == 1 else _COUNT_ZH[tens - 1]
    return head + "十" + (_COUNT_ZH[ones - 1] if ones else "")


_STATUS: dict[str, tuple[str, str]] = {
    "draft": ("等待受理", "waiting to be registered"),
    "accepted": ("已受理", "registered"),
    "assigned": ("已转交责任单位办理", "passed to the responsible unit"),
    "in_progress": ("正在办理中", "being handled"),
    "replied": ("已答复", "answered"),
    "return_visit": ("正在回访", "in the follow-up call stage"),
    "closed": ("已办结", "closed"),
    "rejected": ("不属于受理范围，未予受理", "not accepted, as it is outside the scope of this hotline"),
    "discarded": ("已撤销", "withdrawn"),
    "merged": ("已与相关案件合并办理", "merged with a related case"),
}


def _catalogue() -> tuple[Segment, ...]:
    s: list[Segment] = [
        Segment(
            "greeting",
            {"zh": "您好，这里是12389公安机关和队伍问题举报投诉热线。",
             "en": "Hello, this is the 12389 hotline for reports and complaints about public security organs and the police."},
            "first thing a caller hears",
            tts={"zh": "您好，这里是一二三八九公安机关和队伍问题举报投诉热线。",
                 "en": "Hello, this is the 1 2 3 8 9 hotline for reports and complaints about public security organs and the police."},
        ),
        Segment(
            "recording_notice",
            {"zh": "为了保证服务质量和接受监督，您的通话将被录音。",
             "en": "This call is recorded for quality and supervision."},
            "before anything is recorded",
        ),
        Segment(
            "menu",
            {"zh": "举报投诉请按1，查询案件办理进度请按2。",
             "en": "To make a report or complaint, press 1. To check the progress of a case, press 2."},
            "main menu, after the greeting and on invalid input",
        ),
        Segment(
            "menu_language",
            {"zh": "For English, press 9.", "en": "中文服务请按9。"},
            "language switch offer at the end of the menu, said in the other language",
            voice={"zh": "en", "en": "zh"},
        ),
        Segment(
            "closed",
            {"zh": "现在是非工作时间，人工服务暂停。",
             "en": "Our operators are not on duty at this time."},
            "schedule says closed (night, weekend), before voicemail",
        ),
        Segment(
            "holiday",
            {"zh": "现在是法定节假日，人工服务暂停。",
             "en": "Our operators are not on duty during the public holiday."},
            "schedule says closed for a public holiday, before voicemail",
        ),
        Segment(
            "closed_temporarily",
            {"zh": "人工服务暂时无法接通。",
             "en": "Our operators are temporarily unavailable."},
            "closed by manual override (meeting, drill, emergency), before voicemail",
        ),
        Segment(
            "no_operator",
            {"zh": "目前没有空闲的话务员，请您留言，我们会尽快处理。",
             "en": "No operator is available at the moment. Please leave a message and we will deal with it as soon as possible."},
            "open but nobody free (or queue overflow), before voicemail",
        ),
        Segment(
            "voicemail",
            {"zh": "请在提示音后说出您的姓名、电话、地址和具体情况，说完请按井号键。",
             "en": "After the tone, please say your name, phone number, address and what happened. "
                   "Press the hash key when you finish."},
            "voicemail guidance, followed by the tone",
        ),
        Segment(
            "thank_you",
            {"zh": "感谢您的来电，您的留言已记录。", "en": "Thank you for your call. Your message has been recorded."},
            "after a message",
        ),
        Segment(
            "message_number",
            {"zh": "您的留言编号是", "en": "Your message number is"},
            "followed by the number digit by digit",
        ),
        Segment(
            "repeat_number",
            {"zh": "再重复一遍，", "en": "Again,"},
            "before reading a number a second time",
        ),
        Segment(
            "enter_case_number",
            {"zh": "请输入案件编号，输入完毕请按井号键。",
             "en": "Please enter your case number, then press the hash key."},
            "case status self-service (menu key 2)",
        ),
        Segment(
            "case_status",
            {"zh": "您查询的案件目前", "en": "Your case is currently"},
            "followed by a status_* segment",
        ),
        Segment(
            "case_not_found",
            {"zh": "没有查到该案件编号，请核对后重新输入。",
             "en": "No case was found with that number. Please check it and try again."},
            "self-service lookup failed",
        ),
        Segment(
            "invalid_input",
            {"zh": "您的输入有误，请重新输入。", "en": "Sorry, that is not a valid entry. Please try again."},
            "unknown key or malformed input",
        ),
        Segment(
            "no_input",
            {"zh": "没有收到您的输入。", "en": "We did not receive any input."},
            "digit collection timed out",
        ),
        Segment(
            "goodbye",
            {"zh": "感谢您的来电，再见。", "en": "Thank you for calling. Goodbye."},
            "before the IVR hangs up",
        ),
        Segment(
            "queue_position",
            {"zh": "您现在排在第", "en": "You are number"},
            "queue: followed by a count_* segment and queue_position_end",
        ),
        Segment(
            "queue_position_end",
            {"zh": "位，请稍候，话务员将尽快为您服务。", "en": "in line. Please hold; an operator will be with you shortly."},
            "queue: after the position number",
        ),
        Segment(
            "queue_position_long",
            {"zh": "您前面还有二十位以上的来电，请耐心等候。",
             "en": "There are more than twenty callers ahead of you. Thank you for your patience."},
            "queue: position announcement beyond twenty",
        ),
        Segment(
            "queue_options",
            {"zh": "如需留言请按1，如需我们回电请按2。",
             "en": "To leave a message now, press 1. To be called back, press 2."},
            "queue: the keys a waiting caller may press, after each position announcement",
        ),
        Segment(
            "call_recorded",
            {"zh": "本次通话录音，用于服务质量监督。",
             "en": "This call is recorded for quality and supervision."},
            "queue: an operator answered; said to the caller before the two are connected",
        ),
        Segment(
            "callback_confirm",
            {"zh": "我们将回拨您的号码", "en": "We will call you back on"},
            "callback request (queue key 2): followed by the caller's number digit by digit",
        ),
        Segment(
            "callback_confirm_keys",
            {"zh": "确认请按1；如需回拨其他号码，请输入号码并以井号键结束。",
             "en": "If this is right, press 1. To be called on another number, key it in and press the hash key."},
            "callback request: after the number is read out",
        ),
        Segment(
            "callback_enter_number",
            {"zh": "请输入回拨号码，并以井号键结束。",
             "en": "Please key in the number we should call you back on, then press the hash key."},
            "callback request when the caller's number is unknown (withheld)",
        ),
        Segment(
            "callback_booked",
            {"zh": "已为您登记回电，我们会尽快与您联系。",
             "en": "Your callback is booked. We will call you as soon as possible."},
            "callback request stored; goodbye follows",
        ),
        Segment(
            "service_ending",
            {"zh": "系统正在维护，本次通话即将结束，您的留言已保存，请稍后再拨。",
             "en": "The service is closing for maintenance. Your message has been saved. Please call again later."},
            "graceful shutdown with calls in progress",
        ),
        # Return-visit survey (campaigns/survey.py reads <prompt_script>_<part>; "return_visit" is the default script).
        # The question names the keys: a centre that changes [campaigns] opt_out_key re-records it.
        Segment(
            "return_visit_intro",
            {"zh": "您好，这里是12389热线回访。关于您反映的问题，案件编号是",
             "en": "Hello, this is a follow-up call from the 12389 hotline about the matter you reported, case number"},
            "outbound return visit: first thing the callee hears, followed by the case number digit by digit",
            tts={"zh": "您好，这里是一二三八九热线回访。关于您反映的问题，案件编号是",
                 "en": "Hello, this is a follow-up call from the 1 2 3 8 9 hotline about the matter you reported, case number"},
        ),
        Segment(
            "return_visit_question",
            {"zh": "对办理结果满意请按1，基本满意请按2，不满意请按3。重听请按9，转人工服务请按0，今后不希望接到回访电话请按8。",
             "en": "If you are satisfied with how it was handled, press 1; basically satisfied, press 2; not satisfied, press 3. "
                   "To hear this again, press 9. For an operator, press 0. To receive no more follow-up calls, press 8."},
            "return visit rating question",
        ),
        Segment(
            "return_visit_comment",
            {"zh": "如有意见或建议，请在提示音后简要说明，说完请按井号键。",
             "en": "If you have a comment, please give it briefly after the tone and press the hash key when you finish."},
            "after a rating: optional short spoken comment",
        ),
        Segment(
            "return_visit_thanks",
            {"zh": "感谢您的评价，再见。", "en": "Thank you for your feedback. Goodbye."},
            "end of a return visit",
        ),
        Segment(
            "return_visit_opt_out",
            {"zh": "好的，今后不再给您拨打回访电话。再见。", "en": "We will not call you for follow-ups again. Goodbye."},
            "the callee pressed the opt-out key",
        ),
        Segment(
            "return_visit_transfer",
            {"zh": "正在为您转接人工服务，请稍候。", "en": "Connecting you to an operator, please hold."},
            "key 0 while the centre is open",
        ),
        Segment(
            "return_visit_operator_closed",
            {"zh": "目前没有可以接听的话务员，无法转接人工服务。", "en": "No operator is available at this time."},
            "key 0 while no operator can be offered (centre closed, nobody logged in); the question follows again",
        ),
        # Missed-call callback campaign (campaigns/callback_call.py reads <prompt_script>_<part>, script "callback").
        Segment(
            "callback_intro",
            {"zh": "您好，这里是12389热线，给您回电。",
             "en": "Hello, this is the 12389 hotline returning your call."},
            "outbound missed-call callback: first thing the callee hears",
            tts={"zh": "您好，这里是一二三八九热线，给您回电。",
                 "en": "Hello, this is the 1 2 3 8 9 hotline returning your call."},
        ),
        Segment(
            "callback_menu",
            {"zh": "现在与话务员通话请按1，留言请按2，重听请按9。",
             "en": "To talk to an operator now, press 1. To leave a message, press 2. To hear this again, press 9."},
            "callback menu after the intro",
        ),
        Segment(
            "callback_no_operator",
            {"zh": "目前没有可以接听的话务员，请您留言，我们会尽快处理。",
             "en": "No operator is available right now. Please leave a message and we will deal with it as soon as possible."},
            "key 1 while no operator is on duty (or none can be reached from this call): the message follows",
        ),
        Segment(
            "callback_transfer",
            {"zh": "正在为您转接话务员，请稍候。", "en": "Connecting you to an operator, please hold."},
            "key 1 while an operator is on duty",
        ),
    ]
    for d in range(10):
        s.append(Segment(f"digit_{d}", {"zh": _DIGITS_ZH[d], "en": _DIGITS_EN[d]}, "numbers read digit by digit"))
    for n in range(1, MAX_COUNT + 1):
        s.append(Segment(f"count_{n}", {"zh": _count_zh(n), "en": _COUNT_EN[n - 1]}, "queue position as a number word"))
    for status in CASE_STATUSES:
        zh, en = _STATUS[status]
        s.append(Segment(f"status_{status}", {"zh": zh, "en": en}, f"case status word for '{status}'"))
    return tuple(s)


CATALOGUE: tuple[Segment, ...] = _catalogue()
SEGMENTS: dict[str, Segment] = {seg.key: seg for seg in CATALOGUE}


def prompts_dir(settings: Settings) -> Path:
    return settings.prompts.dir


def prompt_path(settings: Settings, lang: Lang, key: str) -> Path:
    """Where the IVR finds a segment; KeyError for a key not in the catalogue (a typo in a flow)."""
    if key not in SEGMENTS:
        raise KeyError(f"no prompt segment {key!r}")
    return prompts_dir(settings) / lang / f"{key}.wav"


HOLD_MUSIC = "hold_music.wav"
"""The built-in hold music's file in the prompts directory (one for every language)."""
HOLD_MUSIC_SOURCE = "generated|ivr.hold_music|v1"
"""Manifest 'source' of the built-in melody: change it when the melody changes, to re-render."""


def hold_music_path(settings: Settings) -> Path:
    """The built-in file under the prompts directory, or the WAV a centre configured."""
    if settings.queue.hold_music == "builtin":
        return prompts_dir(settings) / HOLD_MUSIC
    return Path(settings.queue.hold_music)


def digit_keys(number: str) -> list[str]:
    """Segment keys that read a number digit by digit; other characters (e.g. '-') are skipped."""
    return [f"digit_{c}" for c in number if c.isdigit() and c.isascii()]


def _all_paths(settings: Settings, langs: Iterable[Lang] = LANGUAGES) -> Iterator[tuple[Lang, Segment, Path]]:
    for lang in langs:
        for seg in CATALOGUE:
            yield lang, seg, prompt_path(settings, lang, seg.key)


# -- checking ---------------------------------------------------------------------------


def wav_problem(path: Path) -> str | None:
    """Why a file cannot be played as a prompt, or None when it can."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, ch, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
    except (wave.Error, EOFError) as e:
        return f"not a PCM WAV file ({e})"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if (rate, ch, width) != (SAMPLE_RATE, CHANNELS, SAMPLE_WIDTH):
        return (f"{rate} Hz, {ch} channel(s), {8 * width}-bit: prompts must be {SAMPLE_RATE} Hz mono 16-bit "
                f"(convert with: ffmpeg -i IN -ar 8000 -ac 1 -c:a pcm_s16le {path.name})")
    if frames == 0:
        return "empty (no audio)"
    return None


def missing_prompts(settings: Settings, langs: Iterable[Lang] = LANGUAGES) -> list[Path]:
    """Catalogue files that do not exist, in catalogue order. The IVR calls this at start."""
    return [path for _, _, path in _all_paths(settings, langs) if not path.is_file()]


def prompt_problems(settings: Settings, langs: Iterable[Lang] = LANGUAGES) -> list[tuple[Path, str]]:
    """Missing files and files the IVR could not play (wrong format, empty), with the reason.

    Stricter than :func:`missing_prompts`: a human recording dropped in as 44.1 kHz stereo
    would otherwise be found only when a caller reaches it. A check of every language also
    checks the hold music (``[queue] hold_music``).
    """
    langs = tuple(langs)
    out: list[tuple[Path, str]] = []
    for _, _, path in _all_paths(settings, langs):
        if not path.is_file():
            out.append((path, "missing"))
        elif (why := wav_problem(path)) is not None:
            out.append((path, why))
    if set(langs) >= set(LANGUAGES):  # a check of some languages is about speech only
        music = hold_music_path(settings)
        if not music.is_file():
            out.append((music, "missing ([queue] hold_music)"))
        elif (why := wav_problem(music)) is not None:
            out.append((music, f"{why} ([queue] hold_music)"))
    return out


# -- building ---------------------------------------------------------------------------


@dataclass
class BuildReport:
    rendered: list[Path] = field(default_factory=list)
    up_to_date: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    """Files someone else put there (human recordings): left alone."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def _tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PromptError(f"{name} is not installed or not on PATH (needed {why}): install it, e.g. `apt-get install {name}`")
    return found


def _read_manifest(root: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        # Without a readable manifest every file looks human-made: they are kept, never lost.
        raise PromptError(f"{root / MANIFEST} is unreadable ({e}); remove it and rebuild with --force") from None
    files = data.get("files", {}) if isinstance(data, dict) else {}
    return files if isinstance(files, dict) else {}


def _write_manifest(root: Path, files: dict[str, dict[str, str]]) -> None:
    body = {"about": "files generated by `hotline prompts build`; others are human recordings and are kept",
            "files": dict(sorted(files.items()))}
    write_atomic(root / MANIFEST, json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Two builds at once would race on the manifest; the second one fails instead of waiting silently."""
    with (root / LOCK).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PromptError(f"another `hotline prompts build` is running on {root}") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _known_voices(espeak: str) -> set[str]:
    """Names `-v` accepts: languages and voice files (lower case) from `espeak-ng --voices`."""
    proc = subprocess.run([espeak, "--voices"], capture_output=True, timeout=60)
    names: set[str] = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.update({cols[1].lower(), cols[4].lower(), cols[4].rsplit("/", 1)[-1].lower()})
    return names


def _check_voices(espeak: str, voices: Iterable[str]) -> None:
    """espeak-ng silently speaks with its default voice when -v names no voice: refuse instead."""
    known = _known_voices(espeak)
    if not known:
        return  # an espeak-ng that does not list its voices: let it decide
    for voice in voices:
        if voice.split("+", 1)[0].lower() not in known:
            raise PromptError(f"espeak-ng has no voice {voice!r} ([prompts] voices); `espeak-ng --voices` lists those installed")


def _render(espeak: str, ffmpeg: str, voice: str, speed: int, text: str, dest: Path) -> None:
    """espeak-ng → its native WAV (22.05 kHz) → ffmpeg (band-limited resampling) → dest, atomically.

    ffmpeg rather than a naive rate conversion: espeak's output has energy up to 11 kHz that
    would alias into the telephone band. The bit-exact flags keep the header a plain 44 bytes.
    """
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".render.") as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        proc = subprocess.run([espeak, "-v", voice, "-s", str(speed), "-b", "1", "-w", str(raw)],
                              input=text.encode("utf-8"), capture_output=True, timeout=120)
        if proc.returncode != 0 or not raw.is_file():
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise PromptError(f"espeak-ng failed for {dest} (voice {voice!r}): {err[-1] if err else f'exit {proc.returncode}'}"
                              " — `espeak-ng --voices` lists the voices installed")
        proc = subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(raw), "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS),
             "-c:a", "pcm_s16le", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", str(out)],
            capture_output=True, timeout=120,
        )
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise PromptError(f"ffmpeg could not convert the rendering of {dest}: {err[-1] if err else proc.returncode}")
        if (why := wav_problem(out)) is not None:
            raise PromptError(f"the rendering of {dest} is unusable: {why}")
        write_atomic(dest, out.read_bytes())


def build_prompts(settings: Settings, langs: Iterable[Lang] = LANGUAGES, *, force: bool = False,
                  workers: int | None = None) -> BuildReport:
    """Render missing or outdated generated prompts; keep files someone else put there.

    For each catalogue file: absent → render; ours (its hash is in the manifest) → re-render
    only when what we would say changed (text, voice, speed); anyone else's → keep, unless
    ``force``. The manifest is rewritten after each file, so an interrupted build loses at
    most the knowledge that its last file was ours (it is then kept until ``--force``).
    A build of every language also generates the built-in hold music, under the same rule.
    """
    langs = tuple(langs)
    root = prompts_dir(settings)
    espeak = _tool("espeak-ng", "to render prompts")
    ffmpeg = _tool("ffmpeg", "to convert prompts to 8 kHz")
    _check_voices(espeak, {settings.prompts.voices[seg.voice_language(lang)] for lang in langs for seg in CATALOGUE})
    for lang in langs:
        (root / lang).mkdir(parents=True, exist_ok=True)
    report = BuildReport()
    with _build_lock(root):
        manifest = _read_manifest(root)
        todo: list[tuple[Path, str, str, str]] = []  # path, relative name, voice, text
        for lang, seg, path in _all_paths(settings, langs):
            rel = f"{lang}/{seg.key}.wav"
            voice = settings.prompts.voices[seg.voice_language(lang)]
            text = seg.spoken(lang)
            source = f"{voice}|{settings.prompts.speed}|{text}"
            entry = manifest.get(rel)
            if path.exists():
                ours = entry is not None and entry.get("sha256") == _sha256(path)
                if not ours and not force:
                    report.kept.append(path)
                    continue
                if ours and entry is not None and entry.get("source") == source and not force:
                    report.up_to_date.append(path)
                    continue
            todo.append((path, rel, voice, text))
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            futures = [(rel, path, voice, text, pool.submit(_render, espeak, ffmpeg, voice, settings.prompts.speed, text, path))
                       for path, rel, voice, text in todo]
            first_error: BaseException | None = None
            for rel, path, voice, text, fut in futures:
                # Record every rendering that finished, even after a failure, so none of our
                # files is later mistaken for a human recording.
                try:
                    fut.result()
                except Exception as e:  # noqa: BLE001 - re-raised below, after the bookkeeping
                    first_error = first_error or e
                    continue
                manifest[rel] = {"sha256": _sha256(path), "source": f"{voice}|{settings.prompts.speed}|{text}"}
                _write_manifest(root, manifest)
                report.rendered.append(path)
            if first_error is not None:
                raise first_error
        if settings.queue.hold_music == "builtin" and set(langs) >= set(LANGUAGES):
            _build_hold_music(root, manifest, report, force)
    return report


def _build_hold_music(root: Path, manifest: dict[str, dict[str, str]], report: BuildReport, force: bool) -> None:
    """Generate the built-in hold music under the same keep-human-files rule as the segments."""
    path = root / HOLD_MUSIC
    entry = manifest.get(HOLD_MUSIC)
    if path.exists():
        ours = entry is not None and entry.get("sha256") == _sha256(path)
        if not ours and not force:
            report.kept.append(path)
            return
        if ours and entry is not None and entry.get("source") == HOLD_MUSIC_SOURCE and not force:
            report.up_to_date.append(path)
            return
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(CHANNELS)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(hold_music.melody())
    write_atomic(path, buf.getvalue())
    manifest[HOLD_MUSIC] = {"sha256": _sha256(path), "source": HOLD_MUSIC_SOURCE}
    _write_manifest(root, manifest)
    report.rendered.append(path)
