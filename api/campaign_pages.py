"""The campaign page for campaign staff: list, create (with a start time and a weekly or monthly
repeat), preview, start/pause/resume/cancel, live progress, next runs and the do-not-call list.

The page is a thin client of the JSON API (api/campaigns.py): it renders the frame, and its
script calls the API with the session cookie and the CSRF token from <meta name="csrf-token">,
polling progress every few seconds. So the page can do nothing the API would refuse, and the
API's validation messages are what staff read.

The repeat is a simple choice (once / weekly on a weekday at HH:MM / monthly on day D at HH:MM)
that the script turns into the crontab expression the API validates; days are 1 to 28 so a
monthly campaign runs every month (cron skips months without a 29th to 31st). Next runs come
from the API in the centre's time zone and are shown as they come, whatever the browser's zone.

Its words are kept here (not in api/messages.py, which the other pages share) as one small
table per language, passed to the template as ``ct``.
"""

from __future__ import annotations

from aiohttp import web

from api.campaigns import ROLES
from api.context import CTX
from api.openapi import Routes
from api.pages import LANGS, page_lang, render_page

routes = Routes("campaign pages")

POLL_SECONDS = 3
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Cron weekdays by name: APScheduler 3 reads 0 as Monday where crontab reads it as Sunday (campaigns/scheduler.py)."""
TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "回访任务", "list": "任务列表", "create": "新建回访任务", "name": "名称", "since": "答复起始日",
        "until": "答复截止日（不含）", "windows": "呼叫时段", "concurrency": "并发线路", "max_attempts": "最多呼叫次数",
        "retry_minutes": "重拨间隔（分钟）", "submit": "创建", "state": "状态", "progress": "进度",
        "preview": "预览", "start": "开始", "pause": "暂停", "resume": "继续", "cancel": "取消", "export": "导出 CSV",
        "targets": "目标", "done": "完成", "pending": "待呼", "failed": "失败", "dropped": "剔除",
        "contact_rate": "接通率", "transferred": "转人工", "ratings": "满意度（1/2/3/无）", "dnc": "免打扰名单", "phone": "号码", "reason": "原因",
        "add": "加入", "remove": "移除", "none": "暂无任务", "created": "已创建", "drop_reasons": "剔除原因",
        "source": "呼叫对象", "source_cases": "已答复案件（回访）", "source_callbacks": "未接来电回拨名单（回拨）",
        "days": "呼叫日", "days_working": "工作日（节假日除外）", "days_every": "每天（节假日除外）", "caller_id": "主叫号码",
        "start_at": "开始时间（不填则立即）", "repeat": "重复", "repeat_none": "不重复", "repeat_weekly": "每周",
        "repeat_monthly": "每月", "weekday": "星期", "day_of_month": "日期（1–28 日）", "at_time": "时间",
        "schedule": "计划", "next_runs": "下次运行", "job_waiting": "调度器尚未接手", "job_scheduled": "调度器已排定",
        "from": "开始于",
        "mon": "周一", "tue": "周二", "wed": "周三", "thu": "周四", "fri": "周五", "sat": "周六", "sun": "周日",
    },
    "en": {
        "title": "Return-visit campaigns", "list": "Campaigns", "create": "New campaign", "name": "Name",
        "since": "Replied from", "until": "Replied before", "windows": "Calling windows", "concurrency": "Lines",
        "max_attempts": "Max attempts", "retry_minutes": "Retry after (minutes)", "submit": "Create", "state": "State",
        "progress": "Progress", "preview": "Preview", "start": "Start", "pause": "Pause", "resume": "Resume",
        "cancel": "Cancel", "export": "Export CSV", "targets": "Targets", "done": "Done", "pending": "Pending",
        "failed": "Failed", "dropped": "Dropped", "contact_rate": "Contact rate", "transferred": "To an operator", "ratings": "Ratings (1/2/3/none)",
        "dnc": "Do-not-call list", "phone": "Number", "reason": "Reason", "add": "Add", "remove": "Remove",
        "none": "No campaigns yet", "created": "Created", "drop_reasons": "Dropped, by reason",
        "source": "Who to call", "source_cases": "Cases replied (return visit)",
        "source_callbacks": "Callback list (missed-call callback)",
        "days": "Calling days", "days_working": "Working days (never holidays)",
        "days_every": "Every day (never holidays)", "caller_id": "Caller ID",
        "start_at": "Start at (empty: at once)", "repeat": "Repeat", "repeat_none": "Once", "repeat_weekly": "Weekly",
        "repeat_monthly": "Monthly", "weekday": "Weekday", "day_of_month": "Day (1–28)", "at_time": "At",
        "schedule": "Schedule", "next_runs": "Next runs", "job_waiting": "not yet taken up by the scheduler",
        "job_scheduled": "scheduler's next run", "from": "from",
        "mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat", "sun": "Sun",
    },
}


def campaign_text(lang: str) -> dict[str, str]:
    return TEXT.get(lang, TEXT[LANGS[0]])


@routes.get("/campaigns", summary="Campaign page", roles=ROLES, document=False)
async def campaigns_page(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return await render_page(request, "campaigns.html", {
        "ct": campaign_text(page_lang(request)), "poll_ms": POLL_SECONDS * 1000, "defaults": ctx.settings.campaigns,
        "weekdays": WEEKDAYS,
        # The centre's UTC offset now, for the dates typed in the form (China keeps one offset all year).
        "tz_offset": ctx.now().astimezone(ctx.settings.calendar.tz).isoformat()[-6:],
    })
