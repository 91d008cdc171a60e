"""Paper settings: balances formats, defaults that trade, one clear line for a bad value."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from arb_common.settings import Mode, load_settings
from arb_executor.config import ExecutorSettings, parse_paper_balances


def test_default_balances_cover_every_configured_symbol_on_every_venue() -> None:
    s = ExecutorSettings()
    for venue in s.venue_list:
        have = s.paper_balances_for(venue)
        assert have["USDT"] == D("1000000")
        for symbol in s.symbol_list:
            assert have[symbol.split("-")[0]] > 0
    assert (s.paper_latency_ms, s.paper_book_stale_s) == (0, 5.0)


def test_balances_as_pairs_json_and_per_venue_json() -> None:
    assert parse_paper_balances("USDT=1000.5, BTC=2") == {"*": {"USDT": D("1000.5"),
                                                                "BTC": D("2")}}
    assert parse_paper_balances('{"USDT": "10", "BTC": 0.1}') == {
        "*": {"USDT": D("10"), "BTC": D("0.1")}}
    s = ExecutorSettings(paper_balances='{"alpha": {"USDT": "5", "BTC": "0", "ETH": "0", '
                         '"SOL": "0"}, "*": {"USDT": "7", "BTC": "1", "ETH": "1", "SOL": "1"}}')
    assert s.paper_balances_for("alpha")["USDT"] == D("5")
    assert s.paper_balances_for("beta")["USDT"] == D("7")


@pytest.mark.parametrize(("env", "value", "expected"), [
    ("ARB_PAPER_BALANCES", "USDT=lots", "ARB_PAPER_BALANCES: Value error, USDT: not a decimal"),
    ("ARB_PAPER_BALANCES", "USDT=-5,BTC=1", "amount must be >= 0"),
    ("ARB_PAPER_BALANCES", "{oops", "not valid JSON"),
    ("ARB_PAPER_BALANCES", "USDT=1000", "ARB_PAPER_BALANCES: no BTC balance for venue alpha"),
    ("ARB_PAPER_LATENCY_MS", "-1", "ARB_PAPER_LATENCY_MS: Input should be greater than"),
    ("ARB_PAPER_BOOK_STALE_S", "0", "ARB_PAPER_BOOK_STALE_S: Input should be greater than"),
    ("ARB_PAPER_TAKER_FEE", "0.5", "ARB_PAPER_TAKER_FEE: Value error, a fee rate"),
    ("ARB_PAPER_MIN_NOTIONAL", "five", "ARB_PAPER_MIN_NOTIONAL: Value error, not a decimal"),
])
def test_bad_paper_setting_exits_with_one_line_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        env: str, value: str, expected: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit) as exc:
        load_settings(ExecutorSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


def test_live_mode_does_not_require_paper_balances_for_its_symbols() -> None:
    s = ExecutorSettings(mode=Mode.live, paper_balances="USDT=1")
    assert s.paper_balances_for("alpha") == {"USDT": D("1")}
