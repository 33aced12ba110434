"""Route records. The upstream credential's plaintext lives only in `UpstreamCredential`,
which never prints it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tokenmanager.llm.models import Provider

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_TOTAL_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    """Where to inject the credential (a header or a query parameter) and its value."""

    header: str | None
    query_param: str | None
    value: str = field(repr=False)

    @property
    def hint(self) -> str:
        """The last 4 characters, as the API shows them."""
        return "…" + self.value[-4:] if len(self.value) >= 8 else "…"


@dataclass(frozen=True, slots=True)
class Route:
    id: int
    path_prefix: str
    upstream_url: str
    required_scopes: tuple[str, ...]
    upstream_auth_header: str | None
    upstream_auth_query_param: str | None
    upstream_auth_value_hint: str | None  # None: no credential is set
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float
    is_enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime
    provider: Provider | None = None  # None: not an LLM API, the gateway parses nothing
    include_stream_usage: bool = True  # ask OpenAI-compatible streams to report their usage

    @property
    def has_upstream_credential(self) -> bool:
        return self.upstream_auth_value_hint is not None
