"""The dashboard's languages (English, Traditional Chinese) and the localised formatting of
numbers, percentages and times. Pure: no request or I/O here; the pages pick the language."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

LANGUAGES = ("en", "zh-TW")
DEFAULT_LANGUAGE = "en"

# One entry per text on the pages: {key: (English, Traditional Chinese)}.
_TEXTS: dict[str, tuple[str, str]] = {
    "app_name": ("Token Manager", "Token Manager"),
    "nav_dashboard": ("Dashboard", "總覽"),
    "nav_analytics": ("Usage analytics", "使用分析"),
    "nav_tokens": ("Tokens", "權杖"),
    "nav_routes": ("Routes", "路由"),
    "nav_audit": ("Audit log", "稽核紀錄"),
    "nav_prices": ("Prices", "價格"),
    "cost": ("Cost (USD)", "費用（美元）"),
    "cost_unknown": ("unknown", "未知"),
    "cost_unknown_title": (
        "Unknown: these calls' model has no price, or their token counts are missing (not 0).",
        "未知：這些呼叫的模型沒有價格，或缺少 token 數量（並非 0）。",
    ),
    "cost_partial_title": (
        "Lower bound: {count} LLM calls had no price.",
        "下限：有 {count} 次 LLM 呼叫沒有價格。",
    ),
    "tokens_over_time": ("Tokens over time", "Token 用量趨勢"),
    "prompt_tokens": ("Prompt tokens", "提示 token"),
    "completion_tokens": ("Completion tokens", "回應 token"),
    "llm_calls": ("LLM calls", "LLM 呼叫次數"),
    "cost_by_model": ("Cost by model", "各模型費用"),
    "cost_by_team": ("Cost by team", "各團隊費用"),
    "cost_by_token": ("Cost by token", "各權杖費用"),
    "model": ("Model", "模型"),
    "unknown_model": ("(no model)", "（無模型）"),
    "budget": ("Budget", "預算"),
    "spent": ("Spent", "已花費"),
    "budget_bar": (
        "{spent} of {budget} USD spent this {period} ({percent}%)",
        "本{period}已花費 {spent} / {budget} 美元（{percent}%）",
    ),
    "period_day": ("day", "日"),
    "period_month": ("month", "月"),
    "period_range": ("Period", "期間"),
    "team_budgets": ("Team budgets", "團隊預算"),
    "no_budget": ("no budget", "無預算"),
    "prices_title": ("Prices", "價格"),
    "price_input": ("Input, USD / 1M tokens", "輸入（美元／百萬 token）"),
    "price_output": ("Output, USD / 1M tokens", "輸出（美元／百萬 token）"),
    "price_cached_input": ("Cached input, USD / 1M tokens", "快取輸入（美元／百萬 token）"),
    "price_cached_optional": (
        "Cached input, USD / 1M tokens (optional)",
        "快取輸入（美元／百萬 token，選填）",
    ),
    "same_as_input": ("as input", "同輸入"),
    "price_source": ("Source", "來源"),
    "effective_from": ("Effective from", "生效時間"),
    "shipped_default": ("shipped default", "內建預設"),
    "set_price": ("Set a price", "設定價格"),
    "remove": ("Remove", "移除"),
    "confirm_remove_price": (
        "Remove this price? From now on calls to this model cost unknown.",
        "確定移除此價格？此後這個模型的呼叫費用將為未知。",
    ),
    "no_prices": ("No prices.", "沒有價格。"),
    "prices_admin_only": ("Only admins change prices.", "只有管理員可以變更價格。"),
    "sign_in": ("Sign in", "登入"),
    "sign_out": ("Sign out", "登出"),
    "username": ("Username", "使用者名稱"),
    "password": ("Password", "密碼"),
    "wrong_login": ("Wrong username or password.", "使用者名稱或密碼錯誤。"),
    "throttled_login": (
        "Too many failed sign-ins. Try again in {seconds} s.",
        "登入失敗次數過多，請於 {seconds} 秒後再試。",
    ),
    "theme_toggle": ("Light / dark", "淺色 / 深色"),
    "language": ("Language", "語言"),
    "total_calls": ("Total calls", "總呼叫次數"),
    "success_rate": ("Success rate", "成功率"),
    "avg_response_time": ("Average response time", "平均回應時間"),
    "error_count": ("Errors", "錯誤數"),
    "error_rate": ("Error rate", "錯誤率"),
    "p95": ("p95", "p95"),
    "p50": ("p50", "p50"),
    "calls": ("Calls", "呼叫次數"),
    "avg_ms": ("Average ms", "平均毫秒"),
    "rank": ("#", "排名"),
    "name": ("Name", "名稱"),
    "team": ("Team", "團隊"),
    "all_teams": ("All teams", "所有團隊"),
    "route": ("Route", "路由"),
    "token": ("Token", "權杖"),
    "trend_title": ("Calls and response time", "呼叫次數與回應時間"),
    "top_tokens": ("Most active tokens", "最活躍的權杖"),
    "top_routes": ("Busiest routes", "最熱門的路由"),
    "route_share": ("Top 5 routes", "前 5 名路由"),
    "window": ("Time range", "時間範圍"),
    "window_24h": ("24 hours", "24 小時"),
    "window_7d": ("7 days", "7 天"),
    "window_30d": ("30 days", "30 天"),
    "window_custom": ("Custom", "自訂"),
    "since": ("From", "開始"),
    "until": ("To", "結束"),
    "apply": ("Apply", "套用"),
    "week_calls": ("Calls this week", "本週呼叫次數"),
    "live_success_rate": ("Success rate, last 5 min", "近 5 分鐘成功率"),
    "no_recent_calls": ("no calls", "無呼叫"),
    "trend_24h": ("Last 24 hours", "最近 24 小時"),
    "security_findings": ("Open security findings", "未處理的安全警示"),
    "no_open_findings": ("No open findings.", "沒有未處理的警示。"),
    "no_data": ("No usage yet.", "尚無使用紀錄。"),
    "state": ("State", "狀態"),
    "state_active": ("active", "使用中"),
    "state_expiring": ("expiring soon", "即將到期"),
    "state_idle": ("idle", "閒置"),
    "state_revoked": ("revoked", "已撤銷"),
    "state_expired": ("expired", "已過期"),
    "last_used": ("Last used", "最後使用"),
    "never": ("never", "從未"),
    "view_usage": ("View usage", "查看使用情況"),
    "view_stats": ("View stats", "查看統計"),
    "issue_token": ("Issue a token", "發行權杖"),
    "scopes": ("Scopes (comma-separated)", "權限範圍（以逗號分隔）"),
    "scope_list": ("Scopes", "權限範圍"),
    "expires_at": ("Expires (optional)", "到期日（選填）"),
    "description": ("Description", "說明"),
    "issue": ("Issue", "發行"),
    "secret_once": (
        "Copy this secret now: it is shown only once.",
        "請立即複製此密鑰：它只會顯示這一次。",
    ),
    "copy": ("Copy", "複製"),
    "copied": ("Copied", "已複製"),
    "revoke": ("Revoke", "撤銷"),
    "rotate": ("Rotate", "輪換"),
    "confirm_revoke": ("Revoke this token? Calls with it will fail.", "確定撤銷此權杖？"),
    "confirm_rotate": ("Rotate this token's secret?", "確定輪換此權杖的密鑰？"),
    "token_info": ("Token", "權杖資訊"),
    "prefix": ("Prefix", "前綴"),
    "created_at": ("Created", "建立時間"),
    "stats_30d": ("Last 30 days", "最近 30 天"),
    "recent_calls": ("Last 100 calls", "最近 100 次呼叫"),
    "time": ("Time", "時間"),
    "status": ("Status", "狀態碼"),
    "duration_ms": ("ms", "毫秒"),
    "method": ("Method", "方法"),
    "route_distribution": ("Routes used", "路由分布"),
    "time_profile": ("Calls by weekday and hour (UTC)", "依星期與時段的呼叫（UTC）"),
    "routes": ("Routes", "路由"),
    "add_route": ("Add a route", "新增路由"),
    "edit_route": ("Edit route", "編輯路由"),
    "edit": ("Edit", "編輯"),
    "save": ("Save", "儲存"),
    "path_prefix": ("Path prefix", "路徑前綴"),
    "upstream_url": ("Upstream URL", "上游網址"),
    "required_scopes": ("Required scopes (comma-separated)", "所需權限（以逗號分隔）"),
    "auth_header": ("Credential header", "憑證標頭"),
    "auth_value": ("Credential value (write-only)", "憑證值（僅寫入）"),
    "auth_value_keep": ("Leave empty to keep the current value.", "留空以保留目前的值。"),
    "auth_value_remove": ("Remove the credential", "移除憑證"),
    "credential": ("Credential", "憑證"),
    "credential_set": ("set", "已設定"),
    "credential_unset": ("none", "無"),
    "enabled": ("Enabled", "啟用"),
    "provider": ("LLM provider", "LLM 供應商"),
    "provider_none": ("None (not an LLM API)", "無（非 LLM API）"),
    "provider_openai": ("OpenAI-compatible", "OpenAI 相容"),
    "provider_anthropic": ("Anthropic", "Anthropic"),
    "include_stream_usage": (
        "Ask streams to report usage (OpenAI-compatible)",
        "要求串流回報用量（OpenAI 相容）",
    ),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "token_distribution": ("Tokens calling this route", "呼叫此路由的權杖"),
    "latency_trend": ("Response time (p50 / p95)", "回應時間（p50 / p95）"),
    "errors_by_status": ("Errors by status", "依狀態碼的錯誤"),
    "errors_by_kind": ("Errors by failure kind", "依失敗類型的錯誤"),
    "top_messages": ("Top error messages", "最常見的錯誤訊息"),
    "count": ("Count", "次數"),
    "message": ("Message", "訊息"),
    "audit_title": ("Audit log", "稽核紀錄"),
    "actor": ("Actor", "操作者"),
    "action": ("Action", "動作"),
    "target": ("Target", "對象"),
    "client_ip": ("IP", "IP"),
    "filter": ("Filter", "篩選"),
    "not_found": ("Not found.", "找不到。"),
    "forbidden": ("This page needs the admin role.", "此頁面需要管理員權限。"),
    "bad_input": ("Please check the form:", "請檢查表單："),
    "older": ("Older", "較舊"),
    "nav_security": ("Security", "安全"),
    "security_title": ("Security findings", "安全警示"),
    "all_findings": ("All findings", "所有警示"),
    "findings_for_token": ("Security findings for this token", "此權杖的安全警示"),
    "findings_for_route": ("Security findings for this route", "此路由的安全警示"),
    "no_findings": ("No findings match.", "沒有符合的警示。"),
    "finding_status": ("Status", "狀態"),
    "finding_status_open": ("open", "未處理"),
    "finding_status_acknowledged": ("acknowledged", "已確認"),
    "finding_status_resolved": ("resolved", "已解決"),
    "finding_status_all": ("all", "全部"),
    "min_severity": ("Severity (at least)", "嚴重度（至少）"),
    "severity_low": ("low", "低"),
    "severity_medium": ("medium", "中"),
    "severity_high": ("high", "高"),
    "severity_critical": ("critical", "嚴重"),
    "finding_kind": ("Kind", "類型"),
    "kind_volume_spike": ("Call volume far above baseline", "呼叫量遠高於基準"),
    "kind_new_network": ("Used from a new network", "來自新網段的使用"),
    "kind_new_user_agent": ("Used by a new client", "新的用戶端"),
    "kind_auth_failure_burst": ("Burst of 401/403 answers", "大量 401/403 回應"),
    "kind_rate_limit_burst": ("Burst of 429 answers", "大量 429 回應"),
    "kind_off_hours": ("Use outside usual hours", "非慣常時段的使用"),
    "kind_route_error_spike": ("Route error-rate spike", "路由錯誤率飆升"),
    "kind_route_latency_spike": ("Route p95 latency spike", "路由 p95 延遲飆升"),
    "kind_grace_secret_use": ("Old secret used during grace period", "寬限期內使用舊密鑰"),
    "kind_expired_token_use": ("Expired token presented", "使用已過期的權杖"),
    "kind_revoked_token_use": ("Revoked token presented", "使用已撤銷的權杖"),
    "kind_budget_threshold": ("Budget threshold reached", "已達預算門檻"),
    "first_seen": ("First seen", "首次發現"),
    "last_seen": ("Last seen", "最後發現"),
    "status_changed_by": ("Status set by", "狀態變更者"),
    "evidence": ("Evidence", "證據"),
    "evidence_calls": ("calls", "呼叫次數"),
    "evidence_count": ("count", "次數"),
    "evidence_threshold": ("threshold", "門檻"),
    "evidence_baseline_median": ("baseline median", "基準中位數"),
    "evidence_error_rate": ("error rate", "錯誤率"),
    "evidence_baseline_error_rate": ("baseline error rate", "基準錯誤率"),
    "evidence_p95_ms": ("p95 ms", "p95 毫秒"),
    "evidence_baseline_p95_ms": ("baseline p95 ms", "基準 p95 毫秒"),
    "evidence_spent_percent": ("% of budget spent", "已用預算 %"),
    "evidence_threshold_percent": ("threshold %", "門檻 %"),
    "acknowledge": ("Acknowledge", "確認"),
    "resolve": ("Resolve", "解決"),
}


_WEEKDAYS = (
    ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    ("週一", "週二", "週三", "週四", "週五", "週六", "週日"),
)


@dataclass(frozen=True, slots=True)
class Locale:
    """The texts and formats of one language."""

    language: str

    @property
    def _column(self) -> int:
        return 1 if self.language == "zh-TW" else 0

    def text(self, key: str, **values: object) -> str:
        """The text for `key` (KeyError for an unknown key: a typo must fail the tests)."""
        phrase = _TEXTS[key][self._column]
        return phrase.format(**values) if values else phrase

    def weekdays(self) -> list[str]:
        """Monday first, as the analytics' time profile is."""
        return list(_WEEKDAYS[self._column])

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return "–"
        return f"{value:,.{digits}f}"

    def percent(self, value: float | None) -> str:
        return "–" if value is None else f"{value:,.1f}%"

    def ms(self, value: float | None) -> str:
        unit = " 毫秒" if self._column else " ms"
        return "–" if value is None else f"{value:,.0f}{unit}"

    def moment(self, value: datetime | str | None) -> str:
        """A UTC time as people of this language write it; '–' for none."""
        if value is None:
            return "–"
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if self._column:
            return f"{moment:%Y年%m月%d日 %H:%M} UTC"
        return f"{moment:%b} {moment.day}, {moment:%Y %H:%M} UTC"

    def filters(self) -> dict[str, Callable[..., str]]:
        """The Jinja filters the templates use."""
        return {
            "number": self.number,
            "percent": self.percent,
            "ms": self.ms,
            "moment": self.moment,
        }


def pick_language(requested: str | None, cookie: str | None, accept_language: str) -> str:
    """?lang= first, then the cookie, then the browser's Accept-Language; English otherwise."""
    for candidate in (requested, cookie):
        if candidate in LANGUAGES:
            return candidate
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh") and tag not in ("zh-cn", "zh-sg", "zh-hans"):
            return "zh-TW"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE
