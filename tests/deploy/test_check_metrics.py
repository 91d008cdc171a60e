"""The cross-check of dashboard / rule metrics against /metrics catches what it must."""

from __future__ import annotations

from .conftest import load_module

cm = load_module("deploy/scripts/check_metrics.py")

EXPOSITION = """\
# HELP arb_executor_rejects_total Orders rejected
# TYPE arb_executor_rejects_total counter
arb_executor_rejects_total{venue="alpha",reason="other"} 2.0
arb_executor_rejects_created{venue="alpha",reason="other"} 1.7e9
# HELP arb_market_data_feed_lag_seconds Frame receive time minus venue event time (E)
# TYPE arb_market_data_feed_lag_seconds histogram
arb_market_data_feed_lag_seconds_bucket{venue="alpha",le="0.5"} 3.0
arb_market_data_feed_lag_seconds_count{venue="alpha"} 3.0
arb_market_data_feed_lag_seconds_sum{venue="alpha"} 0.2
# HELP arb_market_data_gaps_total Sequence gaps detected
# TYPE arb_market_data_gaps_total counter
"""


def exported() -> object:
    e = cm.Exported()
    e.add_text(EXPOSITION)
    return e


def test_parse_finds_metrics_not_functions_labels_or_variables() -> None:
    use = cm.parse('histogram_quantile(0.99, sum by (venue, le) (rate('
                   'arb_market_data_feed_lag_seconds_bucket{venue=~"$venue"}[5m]))) > 0.5 '
                   'and on (venue) up == 1', "x")
    assert use.metrics == {"arb_market_data_feed_lag_seconds_bucket", "up"}
    assert use.grouping_labels == {"venue", "le"}
    assert use.selector_labels == {"arb_market_data_feed_lag_seconds_bucket": {"venue"}}


def test_known_metrics_pass_with_histogram_and_counter_suffixes() -> None:
    uses = [cm.parse("sum by (venue) (rate(arb_executor_rejects_total[5m]))", "a"),
            cm.parse("rate(arb_market_data_feed_lag_seconds_sum[5m])", "b"),
            cm.parse("increase(arb_market_data_gaps_total[5m])", "c"),  # no samples yet
            cm.parse("arb:portfolio_drawdown:1d > 50", "d")]
    assert cm.check(exported(), uses, {"arb:portfolio_drawdown:1d"}) == []


def test_a_metric_the_code_does_not_export_is_reported() -> None:
    problems = cm.check(exported(), [cm.parse("rate(arb_executor_slippage_bps_sum[5m])", "p")],
                        set())
    assert len(problems) == 1 and "arb_executor_slippage_bps_sum is not exported" in problems[0]


def test_a_label_the_metric_does_not_have_is_reported() -> None:
    problems = cm.check(exported(), [
        cm.parse('arb_executor_rejects_total{symbol="BTC-USDT"}', "sel"),
        cm.parse("sum by (symbol) (arb_executor_rejects_total)", "by"),
    ], set())
    assert len(problems) == 2
    assert "no label 'symbol'" in problems[0] and "label 'symbol'" in problems[1]
