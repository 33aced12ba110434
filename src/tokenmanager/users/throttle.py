"""Login throttling: failed attempts per account and per client IP in a sliding window.

In-process; with several control-plane processes each keeps its own count, which still bounds
guessing to (processes x limit) per window.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

FAILURES_PER_ACCOUNT = 5
FAILURES_PER_IP = 20
WINDOW_S = 300.0


class LoginThrottle:
    def __init__(
        self,
        *,
        failures_per_account: int = FAILURES_PER_ACCOUNT,
        failures_per_ip: int = FAILURES_PER_IP,
        window_s: float = WINDOW_S,
    ) -> None:
        self._limits = {"account": failures_per_account, "ip": failures_per_ip}
        self._window_s = window_s
        self._failures: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _keys(self, username: str, client_ip: str | None) -> list[tuple[str, str]]:
        keys = [("account", username.lower())]
        if client_ip:
            keys.append(("ip", client_ip))
        return keys

    def retry_after_s(self, username: str, client_ip: str | None) -> float:
        """0 when a login may be tried now, else seconds until the oldest failure ages out."""
        now = time.monotonic()
        wait = 0.0
        for key in self._keys(username, client_ip):
            failures = self._failures.get(key)
            if not failures:
                continue
            while failures and failures[0] <= now - self._window_s:
                failures.popleft()
            if len(failures) >= self._limits[key[0]]:
                wait = max(wait, failures[0] + self._window_s - now)
        return wait

    def record_failure(self, username: str, client_ip: str | None) -> None:
        now = time.monotonic()
        for key in self._keys(username, client_ip):
            self._failures[key].append(now)

    def record_success(self, username: str) -> None:
        self._failures.pop(("account", username.lower()), None)
