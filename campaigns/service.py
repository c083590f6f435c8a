"""The campaigns part of `hotline serve` (``--only scheduler``): the APScheduler engine dialling
through the IVR of the same process.

A campaign call is an ordinary outbound call of the IVR (same SIP server, media clock, Call
rows), so the scheduler needs the IVR's dialer *in this process*: `hotline serve --only
scheduler` without ``--only ivr`` is refused at start with a message that says so, rather
than running a scheduler that would fail every attempt.

The runner's clock is ``ctx.now`` (the service clock): a rehearsal clock (``[calendar]
clock_start``) puts the whole engine inside or outside a calling window, which is how the
SIPp tests and a rehearsal before a holiday check when it dials.

Live operators (return-visit key 0, callback key 1) are the IVR's too: whether they are on
duty and the queue a callee is put in (``Ivr.operator_open`` / ``Ivr.transfer``), adapted here
to what the flows read (campaigns/transfer.py), so the campaign code never sees the queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from config.context import Context
from config.errors import HotlineError
from config.logs import get_logger
from ivr import live
from ivr.call import LiveCall
from ivr.dialer import DialResult
from ivr.dialer import Dialer as IvrDialer
from ivr.flows import CallPort, FlowResult

from campaigns.runner import Runner
from campaigns.scheduler import CampaignScheduler
from campaigns.transfer import ABANDONED, CALLBACK, MESSAGE, OPERATOR, Handover, OperatorOpen, Transfer

log = get_logger("campaigns.service")

DISPOSITION = "campaign"


class NeedsIvr(HotlineError):
    """The scheduler part was asked for without the IVR part it dials through."""


class CampaignDialer:
    """The IVR's dialer as the runner sees it: answered calls are "campaign" calls, a return visit's comment a
    "campaign" recording, a callback's message a "voicemail" one."""

    def __init__(self, dialer: IvrDialer) -> None:
        self.dialer = dialer

    async def dial(self, number: str, *, ring_timeout: float, caller_id: str, purpose: str = "return_visit") -> DialResult:
        # A callback call's message is a citizen's message like an inbound one: stored as a voicemail
        # so transcription makes a draft case of it.
        kind = live.VOICEMAIL if purpose == "callback" else live.CAMPAIGN
        return await self.dialer.dial(number, ring_timeout=ring_timeout, caller_id=caller_id,
                                      disposition=DISPOSITION, record_kind=kind)


def check_parts(parts: tuple[str, ...] | list[str]) -> None:
    if "scheduler" in parts and "ivr" not in parts:
        raise NeedsIvr("the scheduler dials through the IVR of the same process: run "
                       "`hotline serve --only ivr --only scheduler` (or plain `hotline serve`)")


CHOICE_OF = {"operator": OPERATOR, "voicemail": MESSAGE, "callback": CALLBACK}
"""The IVR's disposition of a call handed to the queue → the campaign's choice (anything else: abandoned)."""


def queue_transfer(transfer: Callable[[LiveCall], Awaitable[FlowResult]]) -> Transfer:
    """The IVR's transfer (``Ivr.transfer``) as the campaign flows call it."""

    async def queued(call: CallPort) -> Handover:
        assert isinstance(call, LiveCall), "campaign calls come from the IVR's dialer"
        result = await transfer(call)
        return Handover(CHOICE_OF.get(result.disposition, ABANDONED), result.record)

    return queued


async def start_scheduler(ctx: Context, dialer: IvrDialer, *, operator_open: OperatorOpen | None = None,
                          transfer: Callable[[LiveCall], Awaitable[FlowResult]] | None = None) -> CampaignScheduler:
    """Recover attempts a killed process left open, then start ticking (see campaigns/scheduler.py).

    ``operator_open`` and ``transfer`` are the IVR's (see the module docstring); without them a
    callee who asks for an operator hears that none is available."""
    settings = ctx.settings.campaigns
    runner = Runner(ctx, CampaignDialer(dialer), clock=ctx.now, operator_open=operator_open,
                    transfer=queue_transfer(transfer) if transfer is not None else None)
    scheduler = CampaignScheduler(ctx.engine, runner, tick_seconds=settings.tick_seconds,
                                  timezone=settings.timezone or ctx.settings.calendar.timezone)
    await scheduler.start()
    log.info("campaign scheduler started", tick_seconds=settings.tick_seconds, clock=ctx.now().isoformat())
    return scheduler
