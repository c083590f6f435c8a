#!/usr/bin/env python3
"""The campaign engine against SIPp (not a test): N targets, a concurrency cap, how close the engine stays to it.

For each run (default: 10 targets, then 1,000, both with cap 20) a fresh ``hotline serve --only ivr
--only scheduler`` (temporary SQLite database and storage, prompts built once, tick 1 s) dials one
SIPp UAS (tests/sipp/uas_campaign.xml) that answers every call at once and hangs up after
``--hold-ms`` (numbers ending in 5), so each call is a real INVITE / 200 / ACK / RTP / BYE and the
survey's intro is playing when the callee hangs up. The campaign calls all day, every day.

Printed per run:

* wall time from the start of the campaign to the last target settled, and calls per second;
* scheduler overhead per call: ``dispatch`` = the attempt row written (claim) -> the Call row
  created by the dialer; ``settle`` = the Call row ended -> the attempt closed. These are the
  engine's own costs around the dial (p50 / p99 / max, ms); SIP and the callee are outside them;
* achieved concurrency from the Call rows (start -> end): the peak and the time-weighted mean
  while the campaign ran, against the cap; and the peak SIPp itself saw (calls open at once in
  its message trace, by order of messages);
* outcomes (all should be "answered").

    .venv/bin/python bench/dialer.py                       # 10 and 1,000 targets, cap 20
    .venv/bin/python bench/dialer.py --targets 10,200 --cap 20 --hold-ms 3000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import select  # noqa: E402

from campaigns.lifecycle import create_campaign, transition  # noqa: E402
from campaigns.models import CampaignAttempt, CampaignTarget  # noqa: E402
from campaigns.targets import add_targets, preview  # noqa: E402
from cases.models import Case, CaseEvent  # noqa: E402
from config.db import make_engine, session_factory, transaction, utcnow  # noqa: E402
from config.settings import CampaignSettings  # noqa: E402
from ivr.models import Call  # noqa: E402
from ivr_harness import IvrService, build_prompts  # noqa: E402
from sipp_support import free_media_port, free_udp_port, make_rtp_pcap, start_sipp  # noqa: E402


def seed(db_url: str, n: int, cap: int) -> int:
    sessions = session_factory(make_engine(db_url))
    now = utcnow()
    with transaction(sessions) as s:
        cases = []
        for i in range(n):
            case = Case(number=f"20260901-{i + 1:04d}", channel="phone", status="replied", content="bench",
                        complainant_phone=f"138{i:07d}5", received_at=now)
            s.add(case)
            cases.append(case)
        s.flush()
        s.add_all(CaseEvent(case_id=c.id, actor="bench", action="reply", from_status="in_progress",
                            to_status="replied", at=now) for c in cases)
        campaign = create_campaign(s, CampaignSettings(), name=f"bench {n}", created_by="bench",
                                   calendar_timezone="Asia/Shanghai", windows=["00:00-24:00"], days="every_day",
                                   concurrency=cap, max_attempts=1, retry_minutes=1)
        assert add_targets(s, campaign, preview(s, cases)) == n
        transition(s, campaign, "scheduled")
        return campaign.id


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def concurrency(intervals: list[tuple[float, float]]) -> tuple[int, float]:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    now = peak = 0
    area, last = 0.0, events[0][0] if events else 0.0
    for t, step in events:
        area += now * (t - last)
        last = t
        now += step
        peak = max(peak, now)
    span = (max(b for _, b in intervals) - min(a for a, _ in intervals)) if intervals else 1.0
    return peak, area / span if span > 0 else 0.0


def sipp_peak(messages: list) -> int:  # type: ignore[type-arg]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, m in enumerate(messages):
        cid = m.header("Call-ID")
        if cid is None:
            continue
        if m.direction == "received" and m.method == "INVITE":
            first.setdefault(cid, i)
        last[cid] = i
    peak, _mean = concurrency([(float(first[c]), last[c] + 0.5) for c in first])
    return peak


def run(n: int, cap: int, hold_ms: int, prompts: Path, work: Path) -> None:
    pcap = work / "key1.pcap"
    make_rtp_pcap(None, pcap, digits=[(1.0, "1")])
    port = free_udp_port()
    sipp = start_sipp("uas_campaign", local_port=port, media_port=free_media_port(), calls=n + 100,
                      keys={"pcap1": pcap, "pcap3": pcap, "hangup_ms": hold_ms}, workdir=work / f"sipp-{n}",
                      timeout=3600)
    svc = IvrService(work / f"svc-{n}", prompts, {
        "HOTLINE_SIP__DIAL_URI_TEMPLATE": f"sip:{{number}}@127.0.0.1:{port}",
        "HOTLINE_CAMPAIGNS__TICK_SECONDS": "1",
        "HOTLINE_CAMPAIGNS__RING_TIMEOUT": "10",
    }, parts=("ivr", "scheduler"))
    seed(svc.db_url, n, cap)
    sessions = session_factory(make_engine(svc.db_url))
    t0 = time.monotonic()
    svc.start()
    try:
        while True:
            with sessions() as s:
                left = s.scalar(select(CampaignTarget.id).where(CampaignTarget.state.in_(("pending", "dialing"))).limit(1))
            if left is None:
                break
            if not svc.running():
                raise SystemExit(f"service died:\n{svc.describe()}")
            time.sleep(0.5)
        wall = time.monotonic() - t0
        time.sleep(1.0)  # let the last Call rows close
    finally:
        svc.stop()
        result = sipp.stop()
    with sessions() as s:
        rows = s.execute(select(CampaignAttempt, Call).join(Call, Call.id == CampaignAttempt.call_id)).all()
        outcomes: dict[str, int] = {}
        for a in s.scalars(select(CampaignAttempt)):
            outcomes[a.outcome or "open"] = outcomes.get(a.outcome or "open", 0) + 1
    dispatch = [(c.started_at - a.started_at).total_seconds() * 1000 for a, c in rows]
    settle = [(a.ended_at - c.ended_at).total_seconds() * 1000 for a, c in rows if c.ended_at and a.ended_at]
    intervals = [(c.started_at.timestamp(), c.ended_at.timestamp()) for _, c in rows if c.ended_at]
    peak, mean = concurrency(intervals)
    durations = [b - a for a, b in intervals]
    print(f"\n== {n} targets, cap {cap}, callee hangs up after {hold_ms} ms ==")
    print(f"wall {wall:.1f} s for {n} calls ({n / wall:.2f} calls/s); call length p50 {statistics.median(durations):.2f} s")
    print(f"dispatch (claim -> Call row)  ms: p50 {pct(dispatch, .5):.1f}  p99 {pct(dispatch, .99):.1f}  max {max(dispatch):.1f}")
    print(f"settle (call end -> attempt closed) ms: p50 {pct(settle, .5):.1f}  p99 {pct(settle, .99):.1f}  "
          f"max {max(settle):.1f}  (negative: the runner closed the attempt before the IVR closed the Call row)")
    print(f"concurrency: peak {peak} / cap {cap}; time-weighted mean {mean:.1f} ({100 * mean / cap:.0f} % of the cap); "
          f"peak SIPp saw {sipp_peak(result.messages())}")
    print(f"outcomes: {outcomes}; SIPp successful {result.successful} failed {result.failed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="10,1000", help="comma-separated target counts")
    ap.add_argument("--cap", type=int, default=20)
    ap.add_argument("--hold-ms", type=int, default=3000, help="the callee hangs up this long after answering")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dialer-") as tmp:
        work = Path(tmp)
        prompts = work / "prompts"
        print("building prompts (espeak-ng) ...", flush=True)
        build_prompts(prompts)
        for n in (int(x) for x in args.targets.split(",")):
            run(n, args.cap, args.hold_ms, prompts, work)


if __name__ == "__main__":
    main()
