"""The console over HTTP: what a signed-out visitor, a wrong token and the operator get,
and that every value is escaped and every answer is locked down (no browser needed)."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from a402.console import Console, token_check
from a402.console.app import COOKIE, CSP
from a402.console.charts import volume_and_latency
from tests.console.support import HOSTILE, TOKEN, Records, console, inner

PAYER = "0x" + "ab" * 20
TX = "0x" + "cd" * 32


@pytest.fixture
def records() -> Records:
    r = Records()
    r.add(PAYER, 1500, TX)
    r.add(HOSTILE, 7, "0xfeed")
    return r


@pytest.fixture
def client(records: Records) -> TestClient:
    return TestClient(console(records), base_url="http://testserver")


def sign_in(client: TestClient, token: str = TOKEN):  # type: ignore[no-untyped-def]
    return client.post("/console/login", data={"token": token}, follow_redirects=False)


def test_a_visitor_without_the_token_sees_a_sign_in_form_and_no_payment(client) -> None:
    page = client.get("/console")
    assert page.status_code == 200
    assert 'name="token"' in page.text and 'type="password"' in page.text
    assert PAYER not in page.text and TX not in page.text
    assert client.get("/console/panel").status_code == 401


def test_a_wrong_token_is_refused_without_a_cookie(client) -> None:
    answer = sign_in(client, "not-the-operator-token-at-all")
    assert answer.status_code == 401
    assert "not this service&#x27;s operator token" in answer.text
    assert "set-cookie" not in answer.headers
    assert PAYER not in answer.text
    assert client.get("/console").text.count(PAYER) == 0


def test_the_operator_signs_in_with_a_strict_httponly_cookie_that_is_not_the_token(
        client) -> None:
    answer = sign_in(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/console"):
        assert attribute in cookie
    assert TOKEN not in cookie
    page = client.get("/console")
    assert page.status_code == 200
    assert f'<td class="payer">{PAYER}</td>' in page.text
    assert '<td class="amount">1500</td>' in page.text
    assert f'<td class="transaction">{TX}</td>' in page.text
    signed_out = client.post("/console/logout", follow_redirects=False)
    assert "Max-Age=0" in signed_out.headers["set-cookie"]
    assert PAYER not in client.get("/console").text


def test_a_hostile_payer_string_is_written_as_text_in_every_place(client) -> None:
    sign_in(client)
    for path in ("/console", "/console/panel"):
        page = client.get(path).text
        assert HOSTILE not in page
        assert "<img" not in page and "window.pwned" in page
        assert page.count("&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;") == 2
        assert "&amp;amp;&quot;&#x27;" in page


def test_every_answer_is_locked_down_and_the_page_holds_no_inline_code(client) -> None:
    sign_in(client)
    for path in ("/console", "/console/panel", "/console/console.js", "/console/console.css"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
    assert "unsafe" not in CSP and "script-src 'self'" in CSP
    page = client.get("/console").text
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script src="/console/console.js" defer>']
    assert not re.search(r"<[^>]*\s(style|on[a-z]+)=", page)  # no inline style or handler
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_the_console_only_reads_and_leaves_other_paths_to_the_service(client) -> None:
    sign_in(client)
    assert client.post("/console").status_code == 405
    assert client.get("/console/nothing").status_code == 404
    assert client.get("/paid/report").text == "the service itself"
    assert client.get("/consoleX").text == "the service itself"


def test_a_login_body_over_the_limit_is_refused(client) -> None:
    answer = client.post("/console/login", content=b"token=" + b"x" * 10_000,
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413


def test_a_console_needs_an_operator_token_of_16_characters() -> None:
    with pytest.raises(ValueError, match="16"):
        Console(inner, service="test", check_token=token_check("short"), read=Records().read)


def test_volume_and_latency_land_in_their_minute() -> None:
    now = 1_800_000_030.0  # 30 s into a minute
    records = [
        {"time": now - 5, "amount": "1500", "latencyMs": 10.0, "status": "settled"},
        {"time": now - 10, "amount": "500", "latencyMs": 30.0, "status": "confirmed"},
        {"time": now - 12, "amount": "9000", "latencyMs": 20.0, "status": "failed"},
        {"time": now - 125, "amount": "7", "latencyMs": 5.0, "status": "paid"},
        {"time": now - 10, "amount": None, "latencyMs": None, "status": "settled"},
        {"time": "garbage", "amount": "99", "status": "settled"},
    ]
    volume, latency = volume_and_latency(records, now=now)
    assert volume.width == 60.0
    # A failed payment moved no money: it is latency, not volume.
    assert volume.values[-1] == 2000 and latency.values[-1] == 20.0
    assert sum(v for v in volume.values if v) == 2007
    assert latency.values.count(None) == len(latency.values) - 2


def test_no_service_page_loads_code_from_a_cdn() -> None:
    """FastAPI's /docs and /redoc pull Swagger UI and ReDoc from a CDN: both are off on
    the facilitator and the indexer; the OpenAPI document itself is still served."""
    from typing import Any, cast

    from a402.agents.indexer.app import create_app as indexer_app
    from a402.facilitator.app import create_app as facilitator_app

    for app in (facilitator_app(cast(Any, None)), indexer_app(cast(Any, None))):
        client = TestClient(app)  # no lifespan: nothing here touches the facilitator
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").status_code == 200


def test_a_session_cookie_is_good_for_its_own_process_only(records: Records) -> None:
    first, second = (TestClient(console(records)) for _ in range(2))
    sign_in(first)
    cookie = first.cookies.get(COOKIE)
    assert cookie and len(cookie) == 64
    second.cookies.set(COOKIE, cookie, path="/console")
    assert PAYER not in second.get("/console").text
    assert second.get("/console/panel").status_code == 401
    assert sign_in(first, " ").status_code == 401


def test_another_sites_form_cannot_sign_in_or_out(client) -> None:
    for path in ("/console/login", "/console/logout"):
        for origin in ("https://evil.example", "null", "http://testserver.evil"):
            answer = client.post(path, data={"token": TOKEN}, follow_redirects=False,
                                 headers={"origin": origin})
            assert answer.status_code == 403, (path, origin)
            assert "set-cookie" not in answer.headers
    same = client.post("/console/login", data={"token": TOKEN}, follow_redirects=False,
                       headers={"origin": "http://testserver"})
    assert same.status_code == 303


def test_head_asks_like_get(client) -> None:
    assert client.head("/console/console.js").status_code == 200
    assert client.head("/console/panel").status_code == 401
