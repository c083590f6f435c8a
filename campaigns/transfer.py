"""Handing an answered campaign call to a live operator: return-visit key 0, callback key 1.

The campaign flows only ask two things of the process they run in: are operators on duty
(:data:`OperatorOpen`), and put this call in their queue (:data:`Transfer`). Both come from
the IVR (``Ivr.operator_open`` and ``Ivr.transfer``, wired in campaigns/service.py), so this
package holds no queue, SIP or media; a process without an operator queue passes None, and
the callee hears that no operator is available.

A transfer *ends the dialogue*: the callee waits in the queue like an inbound caller and
either talks to an operator or, when the wait ends without one, gets what an inbound caller
gets (a message, a booked callback); the IVR says goodbye. The flow then only writes down
what happened (:class:`Handover`), which the runner stores on the attempt and the target.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ivr.flows import CallPort, RecordOutcome

if TYPE_CHECKING:
    from campaigns.survey import SurveyResult

OPERATOR = "operator"
"""An operator talked with the callee (the result the campaign shows as transferred)."""
MESSAGE = "message"
"""The callee left a message: the queue's wait ended (or they chose it), or no operator could be offered."""
CALLBACK = "callback"
"""The callee booked a callback from the queue (key 2): a callback-list entry."""
ABANDONED = "abandoned"
"""The callee hung up while waiting for an operator (the callback list has the number)."""
CHOICES = (OPERATOR, MESSAGE, CALLBACK, ABANDONED)


@dataclass(frozen=True)
class Handover:
    choice: str
    """One of CHOICES."""
    message: RecordOutcome | None = None
    """The message recorded after the wait, if any."""


OperatorOpen = Callable[[], Awaitable[bool]]
"""Are operators on duty right now (open, and somebody logged in)?"""
Transfer = Callable[[CallPort], Awaitable[Handover]]
"""Queue the call for an operator until it ends (see the module docstring)."""


async def hand_over(call: CallPort, segment: str, operator_open: OperatorOpen | None, transfer: Transfer | None,
                    result: SurveyResult) -> bool:
    """The callee pressed the operator key. When an operator can be offered (this process can queue the call
    and operators are on duty), play ``segment`` ("transferring you"), queue the call and write how it ended
    on ``result``: True, the dialogue is over. False: none can be offered and the flow goes on."""
    result.operator_requested = True
    if transfer is None or operator_open is None or not await operator_open():
        return False
    await call.play([segment])
    handed = await transfer(call)
    result.choice, result.comment = handed.choice, handed.message
    return True
