"""SIPp test support: RTP pcaps from WAV files, the voicemail caller scenarios, a runner.

What the SIP integration tests use to drive the running service with a real peer
(SIPp, Debian package ``sip-tester``) over loopback:

* ``make_rtp_pcap``: a classic libpcap file of G.711 RTP (20 ms packets) made from an 8 kHz
  16-bit mono WAV (other formats are resampled with ffmpeg first), optionally with RFC 4733
  telephone-events for keypad digits and trailing silence. SIPp's ``play_pcap_audio`` replays
  it with the capture's timing, rewriting addresses and ports (not the RTP header).
  ``read_pcap`` / ``read_rtp_pcap`` read such files back.
* ``tests/sipp/vm_*.xml`` / ``uac_*.xml``: caller scenarios; ``SCENARIOS`` lists their keys.
  Their XML attributes (timeouts, pauses) hold ``[key]`` placeholders that SIPp itself does not
  expand there (SIPp 3.6.1 expands ``-key`` values in message text and in ``play_pcap_audio``
  only), so ``render_scenario`` writes a copy with every key filled in, and ``run_sipp`` /
  ``start_sipp`` always run such a copy. By hand:
  ``python tests/sipp_support.py render vm_leave_message.xml /tmp/x.xml pcap=/tmp/m.pcap``.
* ``run_sipp`` (blocking) and ``start_sipp`` (in the background, e.g. a UAS or registrar that
  the service talks to) with traces in a private directory, and ``SippResult`` to read what
  happened: exit code, successful / failed calls from the statistics CSV, and the SIP messages
  each way (did the peer send BYE, the SDP of its 200 OK, ...).
* ``RtpCapture``: a UDP socket in a thread that keeps what arrives (point an SDP at it).

Playing a pcap needs a raw socket (root or CAP_NET_RAW): ``pcap_play_skip_reason``.
Nothing here asserts on timing; durations only bound how long a peer waits.
"""

from __future__ import annotations

from typing import Any

import atexit
import collections
import functools
import hashlib
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python tests/sipp_support.py ...` from anywhere
    sys.path.insert(0, str(ROOT))

from ivr.media.dtmf import EVENT_CHARS, TelephoneEvent  # noqa: E402
from ivr.media.g711 import FRAME_SAMPLES, PCMA, PCMU, SAMPLE_RATE, alaw_encode, ulaw_encode  # noqa: E402
from ivr.media.rtp import RtpPacket  # noqa: E402

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
APT_PACKAGE = "sip-tester"
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
"""20 ms: one RTP packet of G.711 at 8 kHz."""

# --------------------------------------------------------------------------- SIPp binary


def sipp_binary() -> str | None:
    """The sipp executable: ``$HOTLINE_SIPP`` if set, else ``sipp`` on PATH."""
    explicit = os.environ.get("HOTLINE_SIPP")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("sipp")


@functools.lru_cache(maxsize=8)
def _sipp_version_of(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"SIPp\s+(v\S+?)\.?\s*$", out.stdout + out.stderr, re.MULTILINE)
    return m.group(1) if m else None


def sipp_version() -> str | None:
    """E.g. ``v3.6.1-SCTP-PCAP-RTPSTREAM`` (the build flags say pcap play and rtp_stream are in)."""
    exe = sipp_binary()
    return None if exe is None else _sipp_version_of(exe)


def sipp_available() -> bool:
    return sipp_skip_reason() is None


def sipp_skip_reason() -> str | None:
    """Why SIPp tests cannot run here, naming the package to install; None when they can."""
    if sipp_binary() is None:
        return (
            f"SIPp is not installed: the SIP integration tests need it "
            f"(apt-get install -y {APT_PACKAGE}; or set HOTLINE_SIPP to the sipp binary)"
        )
    if sipp_version() is None:
        return f"`{sipp_binary()} -v` does not report a SIPp version (reinstall {APT_PACKAGE})"
    return None


def pcap_play_skip_reason() -> str | None:
    """Why SIPp cannot play pcaps here (it needs PCAP support and a raw socket); None when it can."""
    why = sipp_skip_reason()
    if why:
        return why
    version = sipp_version() or ""
    if "PCAP" not in version:
        return f"SIPp {version} was built without pcap play (play_pcap_audio); install Debian's {APT_PACKAGE}"
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        return "SIPp's play_pcap_audio needs a raw socket: run the tests as root or give sipp CAP_NET_RAW"
    s.close()
    return None


requires_sipp = pytest.mark.skipif(not sipp_available(), reason=sipp_skip_reason() or "")
requires_pcap_play = pytest.mark.skipif(pcap_play_skip_reason() is not None, reason=pcap_play_skip_reason() or "")

# --------------------------------------------------------------------------- ports


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=4096)
"""Ports these helpers gave out lately in this process. A port picked for SIPp stays unbound until SIPp
starts, and the kernel may offer the same port to the next pick meanwhile: seen in CI as a phone whose media
port equalled its SIP port ("Unable to bind audio RTP socket ... Address already in use")."""


def _kernel_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now (the kernel's pick), and not given out lately by these helpers."""
    for _ in range(200):
        p = _kernel_port(host)
        if p not in _HANDED_OUT:
            _HANDED_OUT.append(p)
            return p
    raise RuntimeError(f"no fresh free UDP port on {host}")


def free_media_port(host: str = "127.0.0.1") -> int:
    """An even port p with p .. p+3 free and not given out lately: SIPp binds its media port p and p+2
    (RTCP neighbours spared)."""
    for _ in range(200):
        p = _kernel_port(host) & ~1
        if p + 3 > 65535 or p < 1024 or any(q in _HANDED_OUT for q in range(p, p + 4)):
            continue
        socks: list[socket.socket] = []
        try:
            for q in range(p, p + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, q))
            _HANDED_OUT.extend(range(p, p + 4))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no four free consecutive UDP ports on {host}")


def udp_bound(port: int, host: str = "127.0.0.1") -> bool:
    """Whether some socket is bound to UDP `host`:`port` (from /proc/net/udp, without touching the port)."""
    want_port = f"{port:04X}"
    want_ip = socket.inet_aton(host)[::-1].hex().upper()
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume yes
    for line in lines:
        ip, _, p = line.split()[1].partition(":")
        if p == want_port and ip in (want_ip, "00000000"):
            return True
    return False


def wait_udp_bound(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> bool:
    """Wait until something listens on UDP `host`:`port` (a server sipp has started); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if udp_bound(port, host):
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------- audio in


def load_pcm_8k(wav_path: str | os.PathLike[str]) -> bytes:
    """16-bit little-endian mono PCM at 8 kHz from a WAV, resampled with ffmpeg when it is not that."""
    wav_path = Path(wav_path)
    try:
        with wave.open(str(wav_path), "rb") as w:
            if w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1 and w.getsampwidth() == 2:
                return w.readframes(w.getnframes())
    except wave.Error:
        pass  # e.g. WAVE_FORMAT_EXTENSIBLE or 32-bit: the `wave` module cannot read it, ffmpeg can
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError(f"{wav_path} is not 8 kHz 16-bit mono and ffmpeg is not installed to resample it")
    with tempfile.TemporaryDirectory(prefix="pcm8k-") as tmp:
        out = Path(tmp) / "8k.wav"
        subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav_path), "-ac", "1", "-ar", str(SAMPLE_RATE),
             "-c:a", "pcm_s16le", str(out)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with wave.open(str(out), "rb") as w:
            return w.readframes(w.getnframes())


def wav_duration(wav_path: str | os.PathLike[str]) -> float:
    return len(load_pcm_8k(wav_path)) / (2 * SAMPLE_RATE)


# --------------------------------------------------------------------------- pcap out

_PCAP_GLOBAL = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
PCAP_EPOCH = 1_700_000_000
"""Capture time of the first packet (seconds); SIPp uses only the gaps between packets."""
PCAP_SRC = ("10.12.38.9", 16000)
PCAP_DST = ("10.12.38.1", 20000)
"""Addresses and ports in the file: SIPp replaces them with its media address and the peer's SDP one."""


@dataclass(frozen=True)
class RtpPcapInfo:
    path: Path
    packets: int
    """All RTP packets (audio and telephone-event)."""
    audio_packets: int
    event_packets: int
    payload_type: int
    duration: float
    """Seconds of RTP timeline the file covers: packets x 20 ms (one packet per 20 ms slot)."""
    audio_seconds: float
    """Seconds of the WAV that went in (before padding to whole packets, digits and silence)."""
    digits: tuple[tuple[float, str], ...]
    """(offset in seconds, as placed on the 20 ms grid, key)."""
    ssrc: int


def _ip_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_frame(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ident: int) -> bytes:
    """Ethernet II + IPv4 + UDP around `payload`, with correct IP and UDP checksums."""
    s_ip, d_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    udp_len = 8 + len(payload)
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len)
    udp_nosum = struct.pack("!HHHH", src[1], dst[1], udp_len, 0)
    udp_sum = _ip_checksum(pseudo + udp_nosum + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, udp_sum)
    ip_nosum = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, socket.IPPROTO_UDP,
                           0, s_ip, d_ip)  # fmt: skip
    ip = ip_nosum[:10] + struct.pack("!H", _ip_checksum(ip_nosum)) + ip_nosum[12:]
    eth = bytes.fromhex("020000000001") + bytes.fromhex("020000000002") + struct.pack("!H", 0x0800)
    return eth + ip + udp + payload


def _event_code(key: str) -> int:
    k = key.upper()
    if len(k) != 1 or k not in EVENT_CHARS:
        raise ValueError(f"{key!r} is not a keypad key (one of {EVENT_CHARS})")
    return EVENT_CHARS.index(k)


def make_rtp_pcap(
    wav_path: str | os.PathLike[str] | None,
    pcap_path: str | os.PathLike[str],
    *,
    payload_type: int = PCMU,
    digits: Sequence[tuple[float, str]] = (),
    trailing_silence: float = 0.0,
    dtmf_pt: int = 101,
    digit_ms: int = 100,
    ssrc: int = 0x12389ACE,
    first_seq: int = 4711,
    first_timestamp: int = 160_000,
) -> RtpPcapInfo:
    """Write `pcap_path`: the WAV as G.711 RTP, one packet per 20 ms, plus keypad digits and silence.

    * Audio: `payload_type` 0 (PCMU) or 8 (PCMA), 160 samples a packet, the last one padded
      with silence; timestamps advance 160 a packet and the capture times 20 ms (exactly).
      `wav_path` None means no speech (only digits and silence).
    * `digits`: (offset in seconds from the start, key in ``0-9*#A-D``), each placed on the
      nearest 20 ms slot. A press is RFC 4733 telephone-event packets (payload type `dtmf_pt`)
      in the audio's place: ``digit_ms / 20`` packets with the same RTP timestamp (the slot's)
      and growing duration, the first with the marker bit, then the end packet three times
      (RFC 4733 2.5.1.4), each packet its own sequence number and 20 ms slot. Audio resumes
      after them; a digit beyond the audio is preceded by silence. Presses must not overlap.
    * `trailing_silence`: seconds of encoded silence after everything else.

    Every slot carries exactly one packet, so packets = duration / 20 ms.
    """
    if payload_type not in (PCMU, PCMA):
        raise ValueError(f"payload_type must be 0 (PCMU) or 8 (PCMA), not {payload_type}")
    if not 96 <= dtmf_pt <= 127:
        raise ValueError(f"dtmf_pt must be dynamic (96-127), not {dtmf_pt}")
    if digit_ms < 20:
        raise ValueError(f"digit_ms must be at least one packet (20 ms), not {digit_ms}")
    if trailing_silence < 0:
        raise ValueError("trailing_silence must not be negative")
    encode = ulaw_encode if payload_type == PCMU else alaw_encode
    pcm = load_pcm_8k(wav_path) if wav_path is not None else b""
    audio_samples = len(pcm) // 2
    frame_bytes = FRAME_SAMPLES * 2
    n_audio = math.ceil(len(pcm) / frame_bytes)
    pcm += b"\0" * (n_audio * frame_bytes - len(pcm))
    silence = encode(b"\0" * frame_bytes)

    # slot -> (payload type, payload, marker, timestamp slot)
    slots: dict[int, tuple[int, bytes, bool, int]] = {}
    placed: list[tuple[float, str]] = []
    updates = max(1, round(digit_ms / 20))
    busy_until = 0
    for offset, key in sorted(digits, key=lambda d: d[0]):
        if offset < 0:
            raise ValueError(f"digit {key!r} at negative offset {offset}")
        event = _event_code(key)
        start = round(offset / FRAME_SECONDS)
        if start < busy_until:
            raise ValueError(f"digit {key!r} at {offset} s overlaps the previous press (each takes {updates + 3} x 20 ms)")
        for j in range(updates):
            ev = TelephoneEvent(event, end=False, duration=FRAME_SAMPLES * (j + 1))
            slots[start + j] = (dtmf_pt, ev.serialize(), j == 0, start)
        end_ev = TelephoneEvent(event, end=True, duration=FRAME_SAMPLES * updates).serialize()
        for j in range(3):
            slots[start + updates + j] = (dtmf_pt, end_ev, False, start)
        busy_until = start + updates + 3
        placed.append((start * FRAME_SECONDS, key))

    total = max(n_audio, busy_until) + round(trailing_silence / FRAME_SECONDS)
    frames = []
    audio_count = event_count = 0
    for k in range(total):
        if k in slots:
            pt, payload, marker, ts_slot = slots[k]
            event_count += 1
        else:
            pt = payload_type
            payload = encode(pcm[k * frame_bytes : (k + 1) * frame_bytes]) if k < n_audio else silence
            marker, ts_slot = k == 0, k
            audio_count += 1
        rtp = RtpPacket(
            payload_type=pt,
            sequence=(first_seq + k) & 0xFFFF,
            timestamp=(first_timestamp + FRAME_SAMPLES * ts_slot) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=payload,
            marker=marker,
        ).serialize()
        frame = _udp_frame(rtp, PCAP_SRC, PCAP_DST, ident=k)
        t_us = k * 20_000
        frames.append(_PCAP_RECORD.pack(PCAP_EPOCH + t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame)

    pcap_path = Path(pcap_path)
    tmp = pcap_path.with_name(pcap_path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(_PCAP_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        f.writelines(frames)
    tmp.replace(pcap_path)
    return RtpPcapInfo(
        path=pcap_path,
        packets=total,
        audio_packets=audio_count,
        event_packets=event_count,
        payload_type=payload_type,
        duration=total * FRAME_SECONDS,
        audio_seconds=audio_samples / SAMPLE_RATE,
        digits=tuple(placed),
        ssrc=ssrc,
    )


def cached_rtp_pcap(cache_dir: str | os.PathLike[str], wav_path: str | os.PathLike[str] | None, **kw: object) -> Path:
    """`make_rtp_pcap` into `cache_dir`, once per (WAV file and its mtime/size, arguments)."""
    h = hashlib.sha256()
    stem = "silence"
    if wav_path is not None:
        p = Path(wav_path).resolve()
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        stem = p.stem
    h.update(repr(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items())).encode())
    out = Path(cache_dir) / f"{stem}-{h.hexdigest()[:16]}.pcap"
    if not out.exists():
        make_rtp_pcap(wav_path, out, **kw)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def rtp_pcaps(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Factory fixture: ``rtp_pcaps(wav, payload_type=8, digits=[(3.0, "#")])`` -> cached pcap path.

    Generated into a session temp directory, never into the source tree. Import it into a test
    module (``from sipp_support import rtp_pcaps``) to use it there.
    """
    cache = tmp_path_factory.mktemp("rtp-pcaps")

    def make(wav_path: str | os.PathLike[str] | None, **kw: object) -> Path:
        return cached_rtp_pcap(cache, wav_path, **kw)

    return make


# --------------------------------------------------------------------------- pcap in


@dataclass(frozen=True)
class PcapRecord:
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    """The UDP payload."""


def read_pcap(path: str | os.PathLike[str]) -> list[PcapRecord]:
    """UDP datagrams over IPv4 in a classic pcap (Ethernet or Linux cooked), any byte order, us or ns."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a pcap header")
    magic_le = struct.unpack_from("<I", data)[0]
    for endian in "<>":
        magic = struct.unpack_from(f"{endian}I", data)[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {magic_le:#x})")
    frac = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack_from(f"{endian}I", data, 20)[0]
    if linktype not in (1, 113):
        raise ValueError(f"{path}: link type {linktype} is neither Ethernet (1) nor Linux cooked (113)")
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, _orig = struct.unpack_from(f"{endian}IIII", data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        l2 = 14 if linktype == 1 else 16
        if len(frame) < l2 + 28 or frame[l2 - 2 : l2] != b"\x08\x00":
            continue
        ip = frame[l2:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            continue
        total_len = struct.unpack_from("!H", ip, 2)[0]
        sport, dport, ulen = struct.unpack_from("!HHH", ip, ihl)
        payload = ip[ihl + 8 : min(ihl + ulen, total_len)]
        out.append(
            PcapRecord(sec + sub * frac, (socket.inet_ntoa(ip[12:16]), sport), (socket.inet_ntoa(ip[16:20]), dport), payload)
        )
    return out


def read_rtp_pcap(path: str | os.PathLike[str]) -> list[tuple[float, RtpPacket]]:
    """(capture time, parsed RTP) for every datagram of a pcap."""
    return [(r.time, RtpPacket.parse(r.payload)) for r in read_pcap(path)]


def pcap_duration(path: str | os.PathLike[str]) -> float:
    """From the first packet to 20 ms after the last one (what SIPp takes to play it)."""
    recs = read_pcap(path)
    return 0.0 if not recs else recs[-1].time - recs[0].time + FRAME_SECONDS


# --------------------------------------------------------------------------- RTP capture


class RtpCapture:
    """A UDP socket on `host` (a free port unless given) keeping every datagram that arrives, in a thread.

    Use as a context manager; ``packets`` holds (arrival monotonic time, source, bytes).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()[:2]
        self.packets: list[tuple[float, tuple[str, int], bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-capture-{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets.append((time.monotonic(), addr, data))

    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for _, _, d in list(self.packets)]

    def wait_quiet(self, quiet: float = 1.0, limit: float = 30.0) -> None:
        """Return once nothing arrived for `quiet` seconds (or after `limit`): the sender has stopped."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            last = self.packets[-1][0] if self.packets else None
            if last is not None and time.monotonic() - last >= quiet:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> RtpCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class ScenarioSpec:
    keys: Mapping[str, object]
    """Key -> default; ``REQUIRED`` for keys without one."""
    doc: str = ""


REQUIRED = object()
_CALLER_KEYS: dict[str, object] = {"caller": "13800138000", "offer_pts": "0 8 101"}

SCENARIOS: dict[str, ScenarioSpec] = {
    "vm_leave_message": ScenarioSpec(
        {"pcap": REQUIRED, "bye_wait_ms": 120_000, **_CALLER_KEYS},
        "plays pcap, waits bye_wait_ms (from the ACK) for the IVR's BYE; fails without one",
    ),
    "vm_leave_message_bye": ScenarioSpec(
        {"pcap": REQUIRED, "hangup_ms": None, **_CALLER_KEYS},
        "plays pcap, BYEs itself after hangup_ms (default: pcap length + 1 s) unless the IVR BYEs first",
    ),
    "vm_hangup_midway": ScenarioSpec(
        {"pcap": REQUIRED, "hangup_ms": 5_000, **_CALLER_KEYS},
        "plays pcap, BYEs after hangup_ms; a BYE from the IVR before that fails the call",
    ),
    "vm_no_audio": ScenarioSpec(
        {"bye_wait_ms": 240_000, **_CALLER_KEYS},
        "sends no RTP, waits bye_wait_ms for the IVR's BYE; fails without one",
    ),
    "vm_early_hash": ScenarioSpec(
        {"pcap": REQUIRED, "bye_wait_ms": 60_000, **_CALLER_KEYS},
        "plays a pcap ending in '#', waits bye_wait_ms for the IVR's BYE; fails without one",
    ),
    "vm_hold_silent": ScenarioSpec(
        {"pcap": REQUIRED, "quiet_ms": 1_000, "hold_ms": 5_000, "bye_wait_ms": 30_000, **_CALLER_KEYS},
        "plays pcap, holds (sendonly) hold_ms, resumes, sends nothing; waits for the IVR's BYE, fails on one during hold",
    ),
    "uac_options": ScenarioSpec({"caller": "13800138000"}, "OPTIONS -> 200"),
    "uas_campaign": ScenarioSpec(
        {"pcap1": REQUIRED, "pcap3": REQUIRED, "hangup_ms": 1_500, "cancel_wait_ms": 60_000, "bye_wait_ms": 120_000},
        "campaign citizens: the called number's last digit picks answer+1, answer+3, answer+hang up, 486, no answer, 404",
    ),
    "uas_test_answer": ScenarioSpec(
        {"rtp_ip": "127.0.0.1", "rtp_port": REQUIRED, "answer_pt": 0, "answer_codec": None, "bye_after_ms": 3_000},
        "stand-in IVR for the self-tests: answers with SDP at rtp_ip:rtp_port, BYEs after bye_after_ms",
    ),
}

SIPP_KEYWORDS = frozenset(
    "service remote_ip remote_port transport local_ip local_ip_type local_port media_ip media_ip_type media_port "
    "call_id call_number cseq branch pid len peer_tag_param routes next_url server_ip client_ip auto_media_port "
    "tdmmap fill users userid timestamp date sipp_version clock_tick authentication media_port_ rtpstream_audio_port "
    "rtpstream_video_port branch_ last_message".split()
)
_KEY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BAD_VALUE = re.compile(r'[\[\]<>&"\r\n]')


def scenario_path(scenario: str | os.PathLike[str]) -> Path:
    """A path as given, else a file of tests/sipp/ (``.xml`` optional)."""
    p = Path(scenario)
    if p.exists():
        return p
    name = p.name if p.name.endswith(".xml") else p.name + ".xml"
    q = SIPP_DIR / name
    if not q.exists():
        raise FileNotFoundError(f"no SIPp scenario {scenario!r} (looked in {SIPP_DIR})")
    return q


def scenario_keys(scenario: str | os.PathLike[str], keys: Mapping[str, object] | None = None) -> dict[str, str]:
    """The keys of a scenario of ours with defaults filled in; missing required keys raise ValueError."""
    name = Path(scenario).name.removesuffix(".xml")
    given = dict(keys or {})
    spec = SCENARIOS.get(name)
    merged: dict[str, object] = {}
    if spec is not None:
        for k, default in spec.keys.items():
            if k in given:
                merged[k] = given.pop(k)
            elif default is REQUIRED:
                raise ValueError(f"scenario {name} needs key {k!r} (keys: {', '.join(spec.keys)})")
            else:
                merged[k] = default
        unknown = sorted(given)
        if unknown:
            raise ValueError(f"scenario {name} has no key(s) {unknown} (keys: {', '.join(spec.keys)})")
        if name == "vm_leave_message_bye" and merged.get("hangup_ms") is None:
            merged["hangup_ms"] = int(pcap_duration(str(merged["pcap"])) * 1000) + 1000
        if name == "uas_test_answer" and merged.get("answer_codec") is None:
            merged["answer_codec"] = {0: "PCMU", 8: "PCMA"}[int(str(merged["answer_pt"]))]
    else:
        merged = given
    out = {}
    for k, v in merged.items():
        if not _KEY_NAME.match(k) or k in SIPP_KEYWORDS:
            raise ValueError(f"{k!r} cannot be a scenario key (lower-case name, not a SIPp keyword)")
        s = str(v)
        if _BAD_VALUE.search(s):
            raise ValueError(f"value of key {k!r} has a character that cannot go into SIPp XML: {s!r}")
        out[k] = s
    return out


def render_scenario(
    scenario: str | os.PathLike[str], dest: str | os.PathLike[str], keys: Mapping[str, object] | None = None
) -> Path:
    """Copy a scenario to `dest` with each ``[key]`` of `keys` (defaults filled in) replaced by its value."""
    src = scenario_path(scenario)
    values = scenario_keys(src, keys)
    text = src.read_text(encoding="iso-8859-1")
    for k, v in values.items():
        text = text.replace(f"[{k}]", v)
    spec = SCENARIOS.get(src.stem)
    if spec is not None:
        left = [k for k in spec.keys if f"[{k}]" in text]
        if left:
            raise ValueError(f"{src.name}: keys {left} were not filled in")
    dest = Path(dest)
    dest.write_text(text, encoding="iso-8859-1")
    return dest


# --------------------------------------------------------------------------- traces


@dataclass(frozen=True)
class SipTraceMessage:
    direction: str
    """``sent`` or ``received`` (from SIPp's point of view)."""
    stamp: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str | None:
        """The request method; None for a response."""
        return None if self.is_response else self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        return int(self.first_line.split()[1]) if self.is_response else None

    @property
    def headers(self) -> dict[str, list[str]]:
        """Lower-case header name -> values (compact forms not expanded)."""
        out: dict[str, list[str]] = {}
        for line in self.text.split("\n\n", 1)[0].split("\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                out.setdefault(k.strip().lower(), []).append(v.strip())
        return out

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def cseq_method(self) -> str | None:
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""


_TRACE_SEP = re.compile(r"^-{20,} (\S+ \S+)\s*$", re.MULTILINE)
_TRACE_HEAD = re.compile(r"^\s*\S+ message (sent|received)\b[^\n]*\n", re.IGNORECASE)


def parse_message_trace(text: str) -> list[SipTraceMessage]:
    """The messages of a SIPp ``-trace_msg`` log, in order (retransmissions included)."""
    text = text.replace("\r\n", "\n")
    out = []
    marks = list(_TRACE_SEP.finditer(text))
    for i, m in enumerate(marks):
        chunk = text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        head = _TRACE_HEAD.match(chunk.lstrip("\n"))
        if not head:
            continue
        msg = chunk.lstrip("\n")[head.end() :].strip("\n")
        out.append(SipTraceMessage(head.group(1).lower(), m.group(1), msg.rstrip() + "\n"))
    return out


@dataclass(frozen=True)
class SdpMedia:
    ip: str | None
    port: int
    payload_types: tuple[int, ...]
    rtpmap: dict[int, str]


def parse_sdp_audio(sdp: str) -> SdpMedia | None:
    """Address, port and formats of the first audio stream of an SDP body."""
    ip = None
    media: SdpMedia | None = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("c=") and media is None:
            ip = line.split()[-1]
        elif line.startswith("m=audio"):
            parts = line.split()
            media = SdpMedia(ip, int(parts[1]), tuple(int(p) for p in parts[3:] if p.isdigit()), {})
        elif line.startswith("c=") and media is not None:
            media = SdpMedia(line.split()[-1], media.port, media.payload_types, media.rtpmap)
        elif line.startswith("a=rtpmap:") and media is not None:
            pt, _, codec = line[len("a=rtpmap:") :].partition(" ")
            media.rtpmap[int(pt)] = codec
        elif line.startswith("m=") and media is not None:
            break
    return media


# --------------------------------------------------------------------------- running

_LIVE: set[subprocess.Popen[bytes]] = set()


def _stop_process(proc: subprocess.Popen[bytes]) -> bool:
    """End `proc` (SIGTERM, then SIGKILL); True if it was still running."""
    running = proc.poll() is None
    if running:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _LIVE.discard(proc)
    return running


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        _stop_process(proc)


@dataclass
class SippResult:
    scenario: Path
    """The rendered scenario that ran."""
    cmd: list[str]
    returncode: int
    """SIPp: 0 all calls succeeded, 1 at least one failed, 97 ended by an internal command, 99 no call
    processed (normal exit), 255/-1 fatal; negative: killed by that signal (e.g. after `wait` timed out)."""
    workdir: Path
    stat_csv: Path
    message_log: Path
    error_log: Path
    stdout_path: Path
    stderr_path: Path
    successful: int | None = None
    failed: int | None = None
    timed_out: bool = False
    """The process outlived the Python-side wait and was stopped."""
    stopped: bool = False
    """We ended the process (``stop()`` while it ran, or after a timed-out ``wait()``). SIPp exits 0
    on SIGTERM, so its exit code then says nothing; ``ok`` is False."""
    stats: dict[str, str] = field(default_factory=dict)
    """The last row of the statistics CSV (column -> text)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failed and not self.timed_out and not self.stopped

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def errors(self) -> str:
        """SIPp's error log (unexpected messages, timeouts, aborts): empty when there were none."""
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def messages(self) -> list[SipTraceMessage]:
        if not self.message_log.exists():
            return []
        return parse_message_trace(self.message_log.read_text(errors="replace"))

    def received(self, what: str | int | None = None) -> list[SipTraceMessage]:
        """Messages SIPp received: all, a request method (``"BYE"``) or a status code (``200``)."""
        return [m for m in self.messages() if m.direction == "received" and _matches(m, what)]

    def sent(self, what: str | int | None = None) -> list[SipTraceMessage]:
        return [m for m in self.messages() if m.direction == "sent" and _matches(m, what)]

    @property
    def bye_received(self) -> bool:
        """The peer hung up (sent BYE)."""
        return bool(self.received("BYE"))

    @property
    def bye_sent(self) -> bool:
        """SIPp hung up (sent BYE)."""
        return bool(self.sent("BYE"))

    def answer(self) -> SipTraceMessage | None:
        """The first 2xx SIPp received to its INVITE."""
        for m in self.received():
            if m.is_response and m.cseq_method == "INVITE" and (m.status or 0) // 100 == 2:
                return m
        return None

    @property
    def answer_sdp(self) -> str | None:
        a = self.answer()
        return a.body if a is not None and a.body.strip() else None

    def answer_media(self) -> SdpMedia | None:
        sdp = self.answer_sdp
        return parse_sdp_audio(sdp) if sdp else None

    def describe(self) -> str:
        """For assertion messages: what ran and how it ended, with the error log's tail."""
        lines = [
            f"sipp exit {self.returncode}{' (outlived the wait)' if self.timed_out else ''}"
            f"{' (stopped by us)' if self.stopped else ''}: "
            f"successful={self.successful} failed={self.failed}",
            "cmd: " + " ".join(self.cmd),
            "messages: " + ", ".join(f"{m.direction[0]}:{m.first_line.split(' SIP/2.0')[0]}" for m in self.messages()),
        ]
        if self.errors.strip():
            lines.append("errors: " + self.errors.strip()[-2000:])
        if self.stderr.strip():
            lines.append("stderr: " + self.stderr.strip()[-2000:])
        return "\n".join(lines)


def _matches(m: SipTraceMessage, what: str | int | None) -> bool:
    if what is None:
        return True
    if isinstance(what, int):
        return m.status == what
    return m.method == what.upper()


def _read_stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = [r for r in path.read_text(errors="replace").splitlines() if r.strip()]
    if len(rows) < 2:
        return {}
    head = rows[0].split(";")
    return dict(zip(head, rows[-1].split(";"), strict=False))


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class SippProcess:
    """A running sipp; ``wait()`` gives its ``SippResult``; ``stop()`` (or leaving ``with``) ends it."""

    def __init__(self, proc: subprocess.Popen[bytes], result: SippResult, timeout: float) -> None:
        self.proc = proc
        self._result = result
        self._timeout = timeout

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def live(self) -> SippResult:
        """The result as it is being written: its message log can be read while SIPp runs."""
        return self._result

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to exit (by default its own -timeout plus a grace), stopping it if it outlives that."""
        try:
            self.proc.wait(timeout=self._timeout + 15 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self._result.timed_out = True
        return self.stop()

    def stop(self) -> SippResult:
        """End sipp if it still runs (the result then has ``stopped``) and read its statistics."""
        r = self._result
        if _stop_process(self.proc):
            r.stopped = True
        r.returncode = self.proc.returncode
        r.stats = _read_stats(r.stat_csv)
        r.successful = _int_or_none(r.stats.get("SuccessfulCall(C)"))
        r.failed = _int_or_none(r.stats.get("FailedCall(C)"))
        return r

    def __enter__(self) -> SippProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _default_timeout(keys: Mapping[str, str]) -> float:
    waits = [int(v) / 1000 for k, v in keys.items() if k.endswith("_ms") and v.isdigit()]
    return max([30.0, *(w + 30.0 for w in waits)])


def start_sipp(
    scenario: str | os.PathLike[str],
    target_host: str | None = None,
    target_port: int | None = None,
    *,
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    media_port: int | None = None,
    calls: int = 1,
    rate: float = 1.0,
    limit: int | None = None,
    pcap: str | os.PathLike[str] | None = None,
    keys: Mapping[str, object] | None = None,
    timeout: float | None = None,
    service: str = "12389",
    workdir: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
) -> SippProcess:
    """Start sipp in the background (no ``-bg``: it is our child) with traces in `workdir`.

    With a target it is a client (UAC scenarios) calling ``sip:<service>@target``; without, a
    server waiting on `local_ip`:`local_port` (both must then be known to the peer, so pass
    `local_port`). `pcap` fills key ``pcap``; `keys` fill ``[key]`` placeholders (see
    ``SCENARIOS``). `timeout` (seconds, default: the longest ``*_ms`` key + 30 s, at least 30 s)
    is SIPp's global ``-timeout`` with ``-timeout_error``: reaching it fails the run.
    """
    exe = sipp_binary()
    if exe is None:
        raise RuntimeError(sipp_skip_reason())
    src = scenario_path(scenario)
    all_keys: dict[str, object] = dict(keys or {})
    if pcap is not None:
        all_keys["pcap"] = str(Path(pcap).resolve())
    values = scenario_keys(src, all_keys)
    if timeout is None:
        timeout = _default_timeout(values)
    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"sipp-{src.stem}-"))
    wd.mkdir(parents=True, exist_ok=True)
    rendered = render_scenario(src, wd / src.name, values)
    local_port = local_port or free_udp_port(local_ip)
    media_port = media_port or free_media_port(local_ip)
    result = SippResult(
        scenario=rendered,
        cmd=[],
        returncode=-1,
        workdir=wd,
        stat_csv=wd / "stats.csv",
        message_log=wd / "messages.log",
        error_log=wd / "errors.log",
        stdout_path=wd / "stdout.txt",
        stderr_path=wd / "stderr.txt",
    )
    cmd = [exe]
    if target_host is not None:
        cmd.append(f"{target_host}:{target_port}" if target_port else target_host)
    cmd += ["-sf", str(rendered), "-i", local_ip, "-p", str(local_port), "-mi", local_ip, "-mp", str(media_port)]
    cmd += ["-cp", str(free_udp_port(local_ip)), "-s", service, "-m", str(calls), "-nostdin", "-aa"]
    if rate >= 1:
        cmd += ["-r", f"{rate:g}"]
    else:
        cmd += ["-r", "1", "-rp", str(max(1, round(1000 / rate)))]
    if limit is not None:
        cmd += ["-l", str(limit)]
    cmd += ["-timeout", f"{math.ceil(timeout)}s", "-timeout_error"]
    cmd += ["-trace_err", "-error_file", str(result.error_log)]
    cmd += ["-trace_stat", "-stf", str(result.stat_csv), "-fd", "1"]
    cmd += ["-trace_msg", "-message_file", str(result.message_log)]
    cmd += list(extra_args)
    result.cmd = cmd
    with open(result.stdout_path, "wb") as out, open(result.stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=wd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    _LIVE.add(proc)
    sp = SippProcess(proc, result, timeout)
    if target_host is None:  # a server: ready once its SIP port is bound (or it died trying)
        deadline = time.monotonic() + 10
        while proc.poll() is None and not udp_bound(local_port, local_ip) and time.monotonic() < deadline:
            time.sleep(0.02)
    return sp


def run_sipp(scenario: str | os.PathLike[str], target_host: str, target_port: int, **options: Any) -> SippResult:
    """Run a client scenario against `target_host`:`target_port` to the end; options as ``start_sipp``."""
    with start_sipp(scenario, target_host, target_port, **options) as p:
        return p.wait()


def iter_scenarios() -> Iterator[Path]:
    yield from sorted(SIPP_DIR.glob("*.xml"))


def _main(argv: list[str]) -> int:
    usage = (
        "usage: python tests/sipp_support.py render SCENARIO OUT.xml [key=value ...]\n"
        "       python tests/sipp_support.py pcap WAV OUT.pcap [payload_type=0|8] [digits=3.0:#,4.0:1] [trailing_silence=S]"
    )
    if len(argv) >= 3 and argv[0] == "render":
        kv = dict(a.split("=", 1) for a in argv[3:])
        print(render_scenario(argv[1], argv[2], kv))
        return 0
    if len(argv) >= 3 and argv[0] == "pcap":
        kv = dict(a.split("=", 1) for a in argv[3:])
        digits = [(float(t), k) for t, k in (d.split(":", 1) for d in kv.pop("digits", "").split(",") if d)]
        info = make_rtp_pcap(
            argv[1], argv[2], payload_type=int(kv.pop("payload_type", 0)), digits=digits,
            trailing_silence=float(kv.pop("trailing_silence", 0)),
        )  # fmt: skip
        print(info)
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
