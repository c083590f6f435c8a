"""Fake operators for the queue tests: an in-memory roster and phones scripted per operator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ivr.queue import Operator, Waiting
from test_flows import ScriptedCall


@dataclass(eq=False)
class FakeLeg:
    operator: int
    hung_up: bool = False

    async def hangup(self) -> None:
        self.hung_up = True


@dataclass
class Phone:
    """What an operator's phone does when it rings: 'answer', 'decline', 'ignore' (rings until
    cancelled), 'manual' (the test answers by setting `pick_up`)."""

    behaviour: str = "answer"
    pick_up: asyncio.Event = field(default_factory=asyncio.Event)
    rings: list[int | None] = field(default_factory=list)
    """call ids this phone was rung for."""
    cancelled: int = 0
    legs: list[FakeLeg] = field(default_factory=list)


class FakeRoster:
    """Presence in memory: `order` is the longest-idle order of free operators."""

    def __init__(self, order: list[int], logged_in: int | None = None) -> None:
        self.order = list(order)
        self.busy: set[int] = set()
        self.refuse_claim: set[int] = set()
        self._logged_in = len(order) if logged_in is None else logged_in
        self.released: list[tuple[int, bool]] = []

    async def available(self) -> list[Operator]:
        return [Operator(u) for u in self.order if u not in self.busy]

    async def logged_in(self) -> int:
        return self._logged_in

    async def claim(self, operator: Operator, call_id: int | None) -> bool:
        if operator.user_id in self.busy or operator.user_id in self.refuse_claim:
            return False
        self.busy.add(operator.user_id)
        return True

    async def release(self, operator: Operator, *, wrap_up: bool = True) -> None:
        self.busy.discard(operator.user_id)
        self.released.append((operator.user_id, wrap_up))
        # Just finished a call: idle the shortest, so last in line.
        self.order.remove(operator.user_id)
        self.order.append(operator.user_id)


class Phones:
    def __init__(self, **behaviour: str) -> None:
        self.phones = {int(k[2:]): Phone(v) for k, v in behaviour.items()}  # op1="answer" → 1
        self.log: list[tuple[int, int | None]] = []

    def __getitem__(self, user_id: int) -> Phone:
        return self.phones[user_id]

    async def ring(self, op: Operator, w: Waiting) -> FakeLeg | None:
        phone = self.phones[op.user_id]
        phone.rings.append(w.call_id)
        self.log.append((op.user_id, w.call_id))
        try:
            if phone.behaviour == "decline":
                await asyncio.sleep(0)
                return None
            if phone.behaviour in ("ignore", "manual"):
                await phone.pick_up.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            phone.cancelled += 1
            raise
        leg = FakeLeg(op.user_id)
        phone.legs.append(leg)
        return leg


class QueuedCall(ScriptedCall):
    """A scripted caller for the waiting flow: test_flows' ScriptedCall plus hold music.

    `keys_at`: digits typed while a prompt plays ({prompt key: digits}, once each);
    `keys_in_music`: digits typed during the n-th stretch of hold music (0-based);
    `hang_up_in_music`: the caller hangs up during that stretch of music.
    Music lasts the seconds asked (tests use fractions of a second) unless a key comes.
    `played` holds prompt keys only (no language), with "<music>" for each stretch.
    """

    def __init__(self, keys_at: dict[str, str] | None = None, keys_in_music: dict[int, str] | None = None,
                 hang_up_in_music: int | None = None) -> None:
        super().__init__(keys_at)
        self.keys_in_music = dict(keys_in_music or {})
        self.hang_up_in_music = hang_up_in_music
        self.played: list[str] = []  # type: ignore[assignment]
        self.music_stretches: list[float] = []
        self.music_cut = 0
        """Stretches of music stopped early by an operator answering."""

    async def play(self, keys, *, interrupt: bool = False) -> str | None:  # type: ignore[no-untyped-def]
        for k in keys:
            if self._ended or (interrupt and self.queue):
                break
            self.played.append(k)
            self.queue += self.keys_at.pop(k, "")
        await asyncio.sleep(0)  # a real prompt yields to the loop; the queue's tasks run meanwhile
        return self.queue[:1] if interrupt and self.queue else None

    async def music(self, seconds: float) -> str | None:
        n = len(self.music_stretches)
        self.music_stretches.append(seconds)
        self.played.append("<music>")
        if self.queue:
            return self.queue[0]
        if n == self.hang_up_in_music:
            self._ended = True
            return None
        if n in self.keys_in_music:
            self.queue += self.keys_in_music.pop(n)
            return self.queue[0]
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.music_cut += 1
            raise
        return None


def seed_operators(sessions: Any, ids: Iterable[int], sip_host: str = "pbx") -> None:
    """Operator rows with fixed ids, so presence and callback tests can name users 1, 2, 7 … (no password use).

    Operator `i` is reached at ``sip:<1000 + i>@<sip_host>``: bench/bridge.py points them all at
    one SIPp UAS (``127.0.0.1:PORT``), which answers whatever user is called."""
    from cases.users import User
    from config.db import transaction

    with transaction(sessions) as s:
        s.add_all(User(id=i, username=f"operator{i}", password_hash="-", role="operator",
                       sip_uri=f"sip:{1000 + i}@{sip_host}") for i in ids)
