"""Settings base: ``ARB_*`` environment variables, dev / staging / prod profiles.

Secrets come from the environment or from files in ``ARB_SECRETS_DIR`` (one file per
setting, as Docker and Kubernetes mount them); they are ``SecretStr`` and never logged.
A bad value makes :func:`load_settings` exit non-zero with one line naming the setting.
"""

from __future__ import annotations

import hashlib
import os
import sys
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Profile(StrEnum):
    dev = "dev"
    staging = "staging"
    prod = "prod"


class Mode(StrEnum):
    paper = "paper"
    shadow = "shadow"
    live = "live"


class CommonSettings(BaseSettings):
    """Settings every service shares. Services subclass it and set ``http_port``."""

    model_config = SettingsConfigDict(
        env_prefix="ARB_",
        extra="ignore",
        secrets_dir=os.environ.get("ARB_SECRETS_DIR") or None,
        validate_default=True,
    )

    profile: Profile = Profile.dev
    mode: Mode = Mode.paper
    session: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    nats_url: str = "nats://127.0.0.1:14222"
    database_url: str = "postgresql+psycopg://arb@127.0.0.1:15432/arb"
    redis_url: str = "redis://127.0.0.1:16379/0"
    # Isolates one deployment (or one test run) on shared engines: prefixes every subject,
    # stream name and Redis key.
    bus_prefix: str = Field(default="", pattern=r"^[a-z0-9]{0,16}$")
    # JetStream replicas of every file/memory stream the services provision (at most the
    # number of NATS servers: 1 on one server, 3 on the prod overlay's 3-server cluster).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    control_token: SecretStr | None = None
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # The asyncio event loop implementation: uvloop (libuv; about half the per-message and
    # per-request cost of the stock loop) or the standard library's.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    venues: str = Field(default="alpha,beta", pattern=r"^[a-z0-9_]+(,[a-z0-9_]+)*$")
    symbols: str = Field(
        default="BTC-USDT,ETH-USDT,SOL-USDT",
        pattern=r"^[A-Z0-9]+-[A-Z0-9]+(,[A-Z0-9]+-[A-Z0-9]+)*$",
    )
    # Where the simulator's control API is (used to discover venue URLs and dev API keys).
    venue_sim_url: str = "http://127.0.0.1:8090"

    @model_validator(mode="after")
    def _token_outside_dev(self) -> CommonSettings:
        if self.profile is not Profile.dev and self.control_token is None:
            raise ValueError("control_token: required when profile is staging or prod")
        return self

    @property
    def venue_list(self) -> list[str]:
        return [v for v in self.venues.split(",") if v]

    @property
    def symbol_list(self) -> list[str]:
        return [s for s in self.symbols.split(",") if s]

    def digest(self) -> str:
        """A short digest of the non-secret configuration, shown on ``/info``."""
        public = self.model_dump(mode="json", exclude={"control_token"})
        for key in list(public):
            if "secret" in key or "password" in key or key.endswith("_url"):
                public[key] = _redact_url(str(public[key]))
        text = repr(sorted(public.items())).encode()
        return hashlib.sha256(text).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        """Non-secret settings with credentials removed from URLs."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump(mode="json").items():
            if isinstance(value, str) and key.endswith("_url"):
                value = _redact_url(value)
            if key == "control_token" or "secret" in key:
                value = "***" if value else None
            out[key] = value
        return out


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return url


S = TypeVar("S", bound=BaseSettings)


def format_validation_error(exc: ValidationError, prefix: str = "ARB_") -> str:
    """One line naming the first bad setting and what is wrong with it."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err.get("loc", ()) if part != "__root__")
    msg = str(err.get("msg", "invalid"))
    if not loc and ":" in msg:  # model validators say "name: reason"
        loc, msg = msg.removeprefix("Value error, ").split(":", 1)
    name = f"{prefix}{loc.upper()}" if loc else "configuration"
    value = err.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {str(value)[:60]!r})"
    return f"config error: {name}: {msg.strip()}{shown}"


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings or exit(2) with one clear line on stderr."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        sys.stderr.write(format_validation_error(exc) + "\n")
        raise SystemExit(2) from None
