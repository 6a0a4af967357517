"""The paid-request log line and metrics: exact amounts, one line per request, counts by outcome."""

from __future__ import annotations

import json
import logging

from prometheus_client import generate_latest

from a402.observe import PAID_LOGGER, Observer


def test_each_paid_request_logs_one_exact_line_and_counts_by_scheme_and_outcome(caplog):
    observer = Observer("vault")
    logger = logging.getLogger(PAID_LOGGER)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=PAID_LOGGER):
            observer.paid(request_id="r1", payer="0xabc", amount=1000, scheme="a402",
                          outcome="paid", latency=0.0125, channelId="0x01", reason=None)
            # An amount past 64 bits (token units can be that large) is written exactly.
            observer.paid(request_id="r2", payer="0xabc", amount=2**70, scheme="a402",
                          outcome="paid", latency=0.5, big=2**70)
            observer.paid(request_id="r3", payer=None, amount=None, scheme="exact",
                          outcome="refused", latency=0.001, reason="insufficient_funds")
    finally:
        logger.removeHandler(caplog.handler)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == PAID_LOGGER]
    assert [line["requestId"] for line in lines] == ["r1", "r2", "r3"]
    assert lines[0]["amount"] == "1000" and lines[0]["latencyMs"] == 12.5
    assert lines[0]["channelId"] == "0x01" and lines[0]["reason"] is None
    assert lines[1]["amount"] == str(2**70) and lines[1]["big"] == 2**70
    assert lines[2]["payer"] is None and lines[2]["reason"] == "insufficient_funds"
    metrics = generate_latest(observer.registry).decode()
    assert ('a402_paid_requests_total{outcome="paid",scheme="a402",service="vault"} 2.0'
            in metrics)
    assert ('a402_paid_requests_total{outcome="refused",scheme="exact",service="vault"} 1.0'
            in metrics)
