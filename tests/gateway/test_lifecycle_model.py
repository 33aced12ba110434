"""A property-based model of the token lifecycle against the gateway's allow/deny.

Hypothesis issues, revokes, rescopes, rotates (with and without a grace period), expires
tokens and ends grace periods; after every step, for every secret ever handed out (and a
well-formed secret never issued), the gateway's answer on a route needing one scope (200, 401
or 403) must equal the model's. The gateway learns of each change through its change feed
(`Directory.refresh`), as in production, and answers through its own verifier and route table.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tokenmanager.access.actor import Actor, Role
from tokenmanager.clock import utcnow
from tokenmanager.composition import build_gateway_app, build_services
from tokenmanager.errors import ConflictError
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.gateway.verification import STATUS_ANSWERS, VerifyStatus
from tokenmanager.storage.audit import append_change
from tokenmanager.storage.schema import tokens
from tokenmanager.testing import copy_sqlite_template, make_settings
from tokenmanager.tokens.codec import build_token_secret

T = TypeVar("T")
TEAM_ID = "model-team"
ROUTE_PATH = "/api/chat/completions"
REQUIRED_SCOPE = "chat:write"
SCOPES = ("chat:write", "chat:*", "*", "chat", "chat:read", "models:read")
GRANTING = frozenset({"chat:write", "chat:*", "*"})  # what covers the route's one scope
GRACE_S = 3600
ADMIN = Actor(name="model-admin", role=Role.ADMIN, client_ip="127.0.0.1")


@dataclass
class ModelToken:
    scopes: frozenset[str]
    current: str
    previous: str | None = None  # the rotated-out secret, while its grace period lasts
    is_revoked: bool = False
    is_expired: bool = False

    def answer(self) -> int:
        if self.is_revoked or self.is_expired:
            return 401
        return 200 if self.scopes & GRANTING else 403


def expected_answer(model: dict[int, ModelToken], token_secret: str) -> int:
    for token in model.values():
        if token_secret in (token.current, token.previous):
            return token.answer()
    return 401


async def gateway_answer(app: GatewayApp, token_secret: str) -> int:
    """The status the gateway's pipeline gives this secret on ROUTE_PATH: verify, match the
    route, check its scopes."""
    verification = await app.directory.verifier.verify(token_secret)
    if verification.status is not VerifyStatus.VALID:
        return STATUS_ANSWERS[verification.status][0]
    route = app.directory.match(ROUTE_PATH)
    assert route is not None
    assert verification.record is not None
    return 200 if verification.record.has_scopes(route.required_scopes) else 403


scope_sets = st.frozensets(st.sampled_from(SCOPES), max_size=3)


def make_machine(tmp_path: Path, sqlite_template: Path) -> type[RuleBasedStateMachine]:
    counter = itertools.count()

    class TokenLifecycle(RuleBasedStateMachine):
        token_ids = Bundle("token_ids")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            directory = tmp_path / f"example-{next(counter)}"
            directory.mkdir()
            url = copy_sqlite_template(sqlite_template, directory / "tm.db")
            config = make_settings(directory / "data", url, upstream_allow="127.0.0.0/8")
            self.services = build_services(config)
            self.app = build_gateway_app(config)
            self.model: dict[int, ModelToken] = {}
            self.secrets: list[str] = [build_token_secret()]  # one never issued
            self.run(self._set_up())

        def run(self, work: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(work)

        async def _set_up(self) -> None:
            await self.services.teams.create(ADMIN, team_id=TEAM_ID, name="Model team")
            await self.services.routes.create(
                ADMIN,
                path_prefix="/api/chat",
                upstream_url="http://127.0.0.1:9/v1",
                required_scopes=[REQUIRED_SCOPE],
            )
            # Load the route table and the change position; no background polling: each step
            # refreshes explicitly, so the check does not depend on timing.
            await self.app.directory.start()
            await self.app.directory.stop()

        def teardown(self) -> None:
            try:
                self.run(self.app.shutdown())
                self.run(self.services.close())
            finally:
                self.loop.close()

        # -- rules ---------------------------------------------------------------------------

        @rule(target=token_ids, scopes=scope_sets)
        def issue(self, scopes: frozenset[str]) -> int:
            issued = self.run(
                self.services.tokens.issue(
                    ADMIN, name="model", team_id=TEAM_ID, scopes=sorted(scopes)
                )
            )
            self.model[issued.token.id] = ModelToken(scopes, issued.token_secret)
            self.secrets.append(issued.token_secret)
            return issued.token.id

        @rule(token_id=token_ids)
        def revoke(self, token_id: int) -> None:
            self.run(self.services.tokens.revoke(ADMIN, token_id))
            token = self.model[token_id]
            token.is_revoked, token.previous = True, None

        @rule(token_id=token_ids, scopes=scope_sets)
        def rescope(self, token_id: int, scopes: frozenset[str]) -> None:
            self.run(self.services.tokens.update(ADMIN, token_id, {"scopes": sorted(scopes)}))
            self.model[token_id].scopes = scopes

        @rule(token_id=token_ids, grace_s=st.sampled_from([0, GRACE_S]))
        def rotate(self, token_id: int, grace_s: int) -> None:
            token = self.model[token_id]
            try:
                rotated = self.run(self.services.tokens.rotate(ADMIN, token_id, grace_s=grace_s))
            except ConflictError:
                assert token.is_revoked, "only a revoked token may refuse rotation"
                return
            assert not token.is_revoked, "a revoked token was rotated"
            token.previous = token.current if grace_s > 0 else None
            token.current = rotated.token_secret
            self.secrets.append(rotated.token_secret)

        @rule(token_id=token_ids)
        def expire(self, token_id: int) -> None:
            """Time passes the token's expiry (set in the past directly: the API refuses it)."""
            self.run(self._update_columns(token_id, expires_at=utcnow() - timedelta(seconds=1)))
            self.model[token_id].is_expired = True

        @precondition(lambda self: any(t.previous for t in self.model.values()))
        @rule(data=st.data())
        def end_grace(self, data: st.DataObject) -> None:
            """Time passes the end of a rotated-out secret's grace period."""
            in_grace = sorted(i for i, t in self.model.items() if t.previous is not None)
            token_id = data.draw(st.sampled_from(in_grace))
            past = utcnow() - timedelta(seconds=1)
            self.run(self._update_columns(token_id, previous_hash_expires_at=past))
            self.model[token_id].previous = None

        async def _update_columns(self, token_id: int, **values: Any) -> None:
            async with self.services.database.write() as connection:
                await connection.execute(
                    tokens.update().where(tokens.c.id == token_id).values(**values)
                )
                await append_change(connection, "token", token_id)  # what gateways follow

        # -- the check -----------------------------------------------------------------------

        @invariant()
        def gateway_agrees_with_the_model(self) -> None:
            self.run(self.app.directory.refresh())
            for index, token_secret in enumerate(self.secrets):
                # Twice: the first answer may come from the store, the second from the cache.
                for _ in range(2):
                    actual = self.run(gateway_answer(self.app, token_secret))
                    assert actual == expected_answer(self.model, token_secret), (
                        f"secret #{index}: gateway {actual}, model "
                        f"{expected_answer(self.model, token_secret)}; model {self.model}"
                    )

    return TokenLifecycle


def test_gateway_allow_deny_follows_the_token_lifecycle_model(
    tmp_path: Path, sqlite_template: Path
) -> None:
    run_state_machine_as_test(
        make_machine(tmp_path, sqlite_template),
        settings=settings(
            max_examples=20,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
