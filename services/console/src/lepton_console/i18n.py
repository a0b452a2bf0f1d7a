# ruff: noqa: RUF001 - Chinese text is written with its own full-width punctuation.
"""Every string of the console's pages, in English and Simplified Chinese.

:data:`CATALOGUES` maps a language tag to its messages; both hold the same keys (a test checks).
Placeholders are ``str.format`` fields (``{count}``).
"""

from __future__ import annotations

from collections.abc import Callable

EN: dict[str, str] = {
    "app.title": "Lepton console",
    "skip": "Skip to content",
    "nav.label": "Main",
    "nav.datasets": "Datasets",
    "nav.events": "Events",
    "nav.signed_in": "Tenant {tenant} · role {role}",
    "signout": "Sign out",
    "lang.switch": "中文",
    "lang.switch_label": "Switch the language to Simplified Chinese",
    "signin.title": "Sign in",
    "signin.intro": "Sign in with a Lepton API key. It stays on the console's server and is forgotten when you "
    "sign out or after {hours} hours unused.",
    "signin.key": "API key",
    "signin.submit": "Sign in",
    "signin.wrong_key": "That API key was not accepted: it is unknown, revoked or expired.",
    "signin.unavailable": "The platform could not be reached; try again in a moment.",
    "datasets.title": "Datasets",
    "datasets.search": "Name contains",
    "datasets.search_submit": "Search",
    "datasets.caption": "Your tenant's datasets",
    "datasets.name": "Name",
    "datasets.versions": "Versions",
    "datasets.rows": "Rows (latest)",
    "datasets.columns": "Columns (latest)",
    "datasets.latest": "Latest version",
    "datasets.none": "No datasets yet.",
    "datasets.none_match": "No dataset's name contains “{search}”.",
    "dataset.versions": "Versions",
    "dataset.version": "Version",
    "dataset.origin": "Origin",
    "dataset.rows": "Rows",
    "dataset.columns": "Columns",
    "dataset.schema": "Schema of the latest version",
    "dataset.column": "Column",
    "dataset.type": "Type",
    "dataset.profile": "Profile of the latest version",
    "dataset.count": "Values",
    "dataset.nulls": "Missing",
    "dataset.distinct": "Distinct",
    "dataset.min": "Min",
    "dataset.max": "Max",
    "dataset.mean": "Mean",
    "dataset.std": "Std. dev.",
    "dataset.no_chart": "No histogram for this column.",
    "chart.histogram": "Histogram of {column}",
    "chart.top_values": "Most frequent values of {column}",
    "chart.histogram_desc": "{bins} bins from {low} to {high}; "
    "the fullest holds {peak} rows ({peak_low} to {peak_high}).",
    "chart.top_values_desc": "{bars} values; the most frequent, {peak_label}, occurs {peak} times.",
    "events.title": "Events",
    "events.intro": "Your tenant's platform events, live: the last {minutes} minutes, then each as it happens.",
    "events.filter": "Show types starting with",
    "events.filter_hint": "For example dataset. or ai.lepton.registry",
    "events.list": "Events, newest first",
    "events.connecting": "Connecting…",
    "events.live": "Live",
    "events.lost": "Connection lost; reconnecting…",
    "events.subject": "about",
    "error.title": "Something went wrong",
    "error.not_found": "Not found in your tenant.",
    "error.forbidden": "Your key's role may not see this.",
    "error.unavailable": "The platform could not be reached; try again in a moment.",
    "error.csrf": "The form was stale or did not come from this console; reload the page and try again.",
    "error.back": "Back to datasets",
}

ZH: dict[str, str] = {
    "app.title": "Lepton 控制台",
    "skip": "跳到正文",
    "nav.label": "主导航",
    "nav.datasets": "数据集",
    "nav.events": "事件",
    "nav.signed_in": "租户 {tenant} · 角色 {role}",
    "signout": "退出登录",
    "lang.switch": "English",
    "lang.switch_label": "将语言切换为英语",
    "signin.title": "登录",
    "signin.intro": "使用 Lepton API 密钥登录。密钥只保存在控制台服务器上，退出登录或闲置 {hours} 小时后即被遗忘。",
    "signin.key": "API 密钥",
    "signin.submit": "登录",
    "signin.wrong_key": "该 API 密钥未被接受：它不存在、已被吊销或已过期。",
    "signin.unavailable": "无法连接平台，请稍后再试。",
    "datasets.title": "数据集",
    "datasets.search": "名称包含",
    "datasets.search_submit": "搜索",
    "datasets.caption": "本租户的数据集",
    "datasets.name": "名称",
    "datasets.versions": "版本数",
    "datasets.rows": "行数（最新）",
    "datasets.columns": "列数（最新）",
    "datasets.latest": "最新版本",
    "datasets.none": "还没有数据集。",
    "datasets.none_match": "没有名称包含“{search}”的数据集。",
    "dataset.versions": "版本",
    "dataset.version": "版本",
    "dataset.origin": "来源",
    "dataset.rows": "行数",
    "dataset.columns": "列数",
    "dataset.schema": "最新版本的结构",
    "dataset.column": "列",
    "dataset.type": "类型",
    "dataset.profile": "最新版本的概况",
    "dataset.count": "值数",
    "dataset.nulls": "缺失",
    "dataset.distinct": "不同值",
    "dataset.min": "最小值",
    "dataset.max": "最大值",
    "dataset.mean": "平均值",
    "dataset.std": "标准差",
    "dataset.no_chart": "此列没有直方图。",
    "chart.histogram": "{column} 的直方图",
    "chart.top_values": "{column} 最常见的值",
    "chart.histogram_desc": "{bins} 个区间，从 {low} 到 {high}；最多的区间（{peak_low} 到 {peak_high}）有 {peak} 行。",
    "chart.top_values_desc": "{bars} 个值；最常见的是 {peak_label}，出现 {peak} 次。",
    "events.title": "事件",
    "events.intro": "本租户的平台事件实时显示：先显示最近 {minutes} 分钟的，之后逐条到达。",
    "events.filter": "只显示类型开头为",
    "events.filter_hint": "例如 dataset. 或 ai.lepton.registry",
    "events.list": "事件（最新在前）",
    "events.connecting": "正在连接…",
    "events.live": "实时",
    "events.lost": "连接中断，正在重连…",
    "events.subject": "对象",
    "error.title": "出错了",
    "error.not_found": "在您的租户中找不到。",
    "error.forbidden": "您的密钥角色无权查看此内容。",
    "error.unavailable": "无法连接平台，请稍后再试。",
    "error.csrf": "表单已过期或并非来自本控制台；请刷新页面后重试。",
    "error.back": "返回数据集",
}

#: Language tag (``<html lang>``, the ``lepton_lang`` cookie) -> messages.
CATALOGUES: dict[str, dict[str, str]] = {"en": EN, "zh-CN": ZH}
DEFAULT = "en"


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The page's language: the ``lepton_lang`` cookie when it names one, else ``zh-CN`` for a browser that
    asks for any Chinese first (``zh*``) and English for the rest."""
    if cookie in CATALOGUES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";", 1)[0].strip().lower()
        if not tag or tag == "*":
            continue
        return "zh-CN" if tag.startswith("zh") else DEFAULT
    return DEFAULT


def other(lang: str) -> str:
    """The language the switch offers from ``lang``."""
    return "en" if lang == "zh-CN" else "zh-CN"


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **fields)``: the message ``key`` in ``lang``, its fields filled in."""
    messages = CATALOGUES.get(lang, EN)

    def t(key: str, **fields: object) -> str:
        text = messages[key]
        return text.format(**fields) if fields else text

    return t
