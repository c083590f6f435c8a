"""The operator's console: my presence, the live screen pop, a new case from the call, the callback list.

Operators only (presence and the screen pop are an operator's own; supervisors watch
everyone through /api/v1/operators). Like the campaign page, this is a thin client of the
JSON API (api/operators.py): the handler renders the frame, and its script calls the API
with the session cookie and the CSRF token from <meta name="csrf-token">:

* presence: GET/PUT /api/v1/operators/me/presence, with buttons for the three states an
  operator chooses (available, away, offline); busy and wrap-up are shown when the queue
  sets them, read again on every call event and every few seconds (wrap-up ends by itself);
* the screen pop: an EventSource on /api/v1/operators/me/events. ringing / connected show
  the caller's number and the previous cases from it; ended says so and keeps the caller
  shown until the next call. "New case from this call" posts /api/v1/calls/{id}/case and
  opens the draft's review page (prefilled with the number, linked to the call) in another
  tab, so the console keeps its stream during the call. The tab is opened in the click
  itself and pointed at the case once created: a window opened after an await is a popup
  browsers block;
* the open callback list (claim, then done with an outcome) and today's queue figures,
  polled every few seconds.

So the page can do nothing the API would refuse, and the API's messages are what the
operator reads. Its words are kept here as one table per language (``ct``), like the
campaign page's, and handed to the script as JSON.
"""

from __future__ import annotations

from aiohttp import web

from api.auth import USER
from api.context import CTX
from api.openapi import Routes
from api.operators import OPERATOR
from api.pages import LANGS, page_lang, render_page, translator
from cases.callbacks import OUTCOMES
from cases.lifecycle import STATUSES

routes = Routes("pages")

POLL_SECONDS = 5
"""Presence (wrap-up ends on a timer), the callback list and the queue figures are read this often."""
TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "接线台", "presence": "我的状态", "my_phone": "我的话机", "no_phone": "未配置话机地址，无法接听来电",
        "state.available": "空闲", "state.busy": "通话中", "state.wrap_up": "话后整理", "state.away": "暂离",
        "state.offline": "离线", "set.available": "空闲", "set.away": "暂离", "set.offline": "离线",
        "wrap_up_until": "整理至", "stream.on": "来电提醒已连接", "stream.off": "来电提醒中断，正在重连…",
        "call": "当前来电", "no_call": "暂无来电", "call_id": "通话编号",
        "kind.ringing": "振铃中", "kind.connected": "通话中", "kind.ended": "已结束",
        "reason.no_answer": "未接听", "reason.declined": "已拒接", "reason.failed": "话机呼叫失败",
        "reason.answered_elsewhere": "已由其他接线员接听", "reason.caller_left": "来电人已挂机",
        "reason.not_available": "话机不可用", "reason.hangup": "通话结束",
        "caller": "来电号码", "withheld": "未显示号码", "previous": "该号码的历史案件（最近的在前）",
        "no_previous": "该号码没有历史案件", "number": "案件编号", "status": "状态", "received": "受理时间",
        "content": "诉求内容", "new_case": "由此来电新建案件", "case_opened": "已新建案件", "call_log": "本次来电经过",
        "callbacks": "回拨名单", "no_callbacks": "暂无待回拨的来电", "phone": "号码", "when": "时间", "why": "原因",
        "calls": "来电次数", "why.abandoned": "排队时挂机", "why.requested": "要求回拨", "claim": "认领",
        "done": "完成", "claimed": "我已认领", "outcome.reached": "已联系上", "outcome.no_answer": "无人接听",
        "outcome.busy": "占线", "outcome.invalid_number": "号码无效", "outcome.not_needed": "无需回拨",
        "stats": "今日排队", "within_15s": "15秒内接听", "average_wait": "平均等待", "abandonment": "放弃率",
        "seconds": "秒",
    },
    "en": {
        "title": "Operator console", "presence": "My presence", "my_phone": "My phone",
        "no_phone": "No phone address set: calls cannot reach you",
        "state.available": "available", "state.busy": "on a call", "state.wrap_up": "wrap-up", "state.away": "away",
        "state.offline": "offline", "set.available": "Available", "set.away": "Away", "set.offline": "Offline",
        "wrap_up_until": "wrap-up until", "stream.on": "Call alerts connected",
        "stream.off": "Call alerts lost, reconnecting…",
        "call": "Current call", "no_call": "No call yet", "call_id": "Call",
        "kind.ringing": "ringing", "kind.connected": "connected", "kind.ended": "ended",
        "reason.no_answer": "not answered", "reason.declined": "declined", "reason.failed": "your phone could not be rung",
        "reason.answered_elsewhere": "answered by another operator", "reason.caller_left": "the caller hung up",
        "reason.not_available": "your phone was unavailable", "reason.hangup": "call over",
        "caller": "Caller", "withheld": "number withheld", "previous": "Previous cases from this number (most recent first)",
        "no_previous": "No previous cases from this number", "number": "Case number", "status": "Status",
        "received": "Received", "content": "Content", "new_case": "New case from this call", "case_opened": "Case opened",
        "call_log": "This call",
        "callbacks": "Callback list", "no_callbacks": "Nobody to call back", "phone": "Number", "when": "When",
        "why": "Why", "calls": "Calls", "why.abandoned": "hung up while queued", "why.requested": "asked for a callback",
        "claim": "Claim", "done": "Done", "claimed": "claimed by me", "outcome.reached": "reached",
        "outcome.no_answer": "no answer", "outcome.busy": "busy", "outcome.invalid_number": "invalid number",
        "outcome.not_needed": "not needed",
        "stats": "Queue today", "within_15s": "answered within 15 s", "average_wait": "average wait",
        "abandonment": "abandonment rate", "seconds": "s",
    },
}


def console_text(lang: str) -> dict[str, str]:
    """The page's words, with the case statuses of the shared table (previous cases show theirs)."""
    t = translator(lang)
    return {**TEXT.get(lang, TEXT[LANGS[0]]), **{f"status.{s}": t(f"status.{s}") for s in STATUSES}}


@routes.get("/console", summary="Operator console (page)", roles=OPERATOR, document=False)
async def console_page(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return await render_page(request, "console.html", {
        "ct": console_text(page_lang(request)),
        "me": request[USER],
        "outcomes": OUTCOMES,
        "poll_ms": POLL_SECONDS * 1000,
        # Times from the API are UTC: the script shows them on the centre's clock, whatever the browser's zone.
        "tz_name": ctx.settings.calendar.tz.key,
    })
