"""Where the venues are and how to authenticate.

Per venue ``<id>`` (upper-cased in variable names):
``ARB_VENUE_<ID>_DIALECT``, ``ARB_VENUE_<ID>_REST_URL``, ``ARB_VENUE_<ID>_WS_URL``,
``ARB_VENUE_<ID>_API_KEY``, ``ARB_VENUE_<ID>_API_SECRET`` (secret: env or secrets dir).
When a venue's URLs are not configured, they are discovered from the simulator's control
API (``GET {ARB_VENUE_SIM_URL}/control/venues``), which also hands out the dev account's keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import ConfigError, TemporaryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VenueConfig:
    id: str
    dialect: str
    rest_url: str
    ws_url: str
    api_key: str = ""
    api_secret: str = field(default="", repr=False)
    taker_fee: str = "0.001"
    maker_fee: str = "0.001"


def read_secret(name: str) -> str:
    """``name`` from the environment, else from the file ``$ARB_SECRETS_DIR/<name lower>``."""
    value = os.environ.get(name, "")
    secrets_dir = os.environ.get("ARB_SECRETS_DIR")
    if not value and secrets_dir:
        path = Path(secrets_dir) / name.lower()
        if path.exists():
            value = path.read_text().strip()
    return value


def from_env(venue: str) -> VenueConfig | None:
    up = venue.upper()
    rest = os.environ.get(f"ARB_VENUE_{up}_REST_URL")
    ws = os.environ.get(f"ARB_VENUE_{up}_WS_URL")
    if not rest and not ws:
        return None
    if not rest or not ws:
        raise ConfigError(f"ARB_VENUE_{up}_REST_URL and ARB_VENUE_{up}_WS_URL must both be set")
    return VenueConfig(
        id=venue,
        dialect=os.environ.get(f"ARB_VENUE_{up}_DIALECT", "binance"),
        rest_url=rest.rstrip("/"),
        ws_url=ws.rstrip("/"),
        api_key=read_secret(f"ARB_VENUE_{up}_API_KEY"),
        api_secret=read_secret(f"ARB_VENUE_{up}_API_SECRET"),
        taker_fee=os.environ.get(f"ARB_VENUE_{up}_TAKER_FEE", "0.001"),
        maker_fee=os.environ.get(f"ARB_VENUE_{up}_MAKER_FEE", "0.001"),
    )


async def discover(
    venues: list[str], sim_url: str, *, timeout: float = 60.0
) -> dict[str, VenueConfig]:
    """Resolve every venue: environment first, then the simulator's control API (retried)."""
    out: dict[str, VenueConfig] = {}
    for venue in venues:
        cfg = from_env(venue)
        if cfg is not None:
            out[venue] = cfg
    missing = [v for v in venues if v not in out]
    if not missing:
        return out
    deadline = asyncio.get_running_loop().time() + timeout
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with httpx.AsyncClient(timeout=3.0) as client:
                resp = await client.get(f"{sim_url.rstrip('/')}/control/venues")
                resp.raise_for_status()
                listed = {v["id"]: v for v in resp.json()["venues"]}
            for venue in missing:
                if venue not in listed:
                    raise ConfigError(f"venue {venue!r} is not configured and not in the simulator")
                v = listed[venue]
                out[venue] = VenueConfig(
                    id=venue,
                    dialect=v["dialect"],
                    rest_url=v["rest_url"].rstrip("/"),
                    ws_url=v["ws_url"].rstrip("/"),
                    api_key=v.get("api_key", ""),
                    api_secret=v.get("api_secret", ""),
                    taker_fee=str(v.get("taker_fee", "0.001")),
                    maker_fee=str(v.get("maker_fee", "0.001")),
                )
            return out
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - simulator not up yet: retry until timeout
            last = exc
            await asyncio.sleep(0.5)
    raise TemporaryError(f"cannot discover venues {missing} from {sim_url}: {last!r}")
