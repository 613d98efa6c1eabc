"""The operator console in a real headless Chromium against a real ``rampgate serve``."""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from console_helpers import (
    ADMIN_TOKEN,
    JWT_SECRET,
    READONLY_TOKEN,
    SCREENSHOT_DIR,
    SERVICE_TOKEN,
    ServerClient,
)
from playwright.sync_api import BrowserContext, Page, expect

pytestmark = pytest.mark.browser

FLAG = "rate_limit_enforcement"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@dataclass
class Console:
    """A signed-in browser page plus what it saw: every request URL and every uncaught script error."""

    page: Page
    context: BrowserContext
    server: ServerClient
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def section(self, name: str) -> Any:
        return self.page.get_by_role("region", name=name)

    def refresh_count(self) -> int:
        return int(self.page.evaluate("document.body.dataset.refreshCount || '0'"))

    def wait_for_refresh(self) -> None:
        """Wait until the page has reloaded its data at least once more.

        Polls from Python: the page's CSP forbids the string evaluation that
        ``page.wait_for_function`` relies on.
        """
        count = self.refresh_count()
        poll(lambda: self.refresh_count() > count, seconds=15, message="the console did not refresh its data")


def poll(condition: Callable[[], Any], *, seconds: float, message: str) -> Any:
    """Call ``condition`` until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{message} (waited {seconds} s)")
        time.sleep(0.05)


def sign_in(page: Page, server: ServerClient, token: str) -> None:
    page.goto(server.base_url + "/console")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Flags", exact=True)).to_be_visible()


@pytest.fixture
def open_console(browser: Any, server: ServerClient) -> Iterator[Callable[..., Console]]:
    """Open a fresh browser context, sign in with ``token`` and return the console."""
    consoles: list[Console] = []

    def open_with(token: str = ADMIN_TOKEN, viewport: dict[str, int] = DESKTOP) -> Console:
        context = browser.new_context(viewport=viewport, service_workers="block")
        page = context.new_page()
        console = Console(page, context, server)
        context.on("request", lambda request: console.requests.append(request.url))
        page.on("pageerror", lambda error: console.page_errors.append(str(error)))
        consoles.append(console)
        sign_in(page, server, token)
        console.wait_for_refresh()
        return console

    yield open_with
    for console in consoles:
        console.context.close()
    for console in consoles:
        assert console.page_errors == [], f"uncaught script errors: {console.page_errors}"


def save_screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def test_sign_in_with_admin_token(open_console: Callable[..., Console]) -> None:
    console = open_console()
    page = console.page

    expect(page.locator(".role-badge")).to_have_text("admin")
    card = page.locator(f'.flag-card[data-flag="{FLAG}"]')
    expect(card).to_be_visible()
    expect(card.locator('[data-field="state"]')).to_have_text("Disabled")
    cookies = {cookie["name"]: cookie for cookie in console.context.cookies()}
    session = cookies["rampgate_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("rampgate_session") == -1


def enforce_for_everyone(server: ServerClient, *, action: str, limit: int) -> None:
    """Enable the flag at 100 % and give tier B a tight limit on ``action``."""
    server.api("PATCH", f"/v1/flags/{FLAG}", {"enabled": True, "percentage": 100})
    server.api("PUT", "/v1/limits", {"scope": "tier", "tier": "B", "action": action, "limit": limit, "window_seconds": 60})


def send_checks(server: ServerClient, *, actor_id: str, action: str, count: int) -> list[dict[str, Any]]:
    return [
        server.api(
            "POST",
            "/v1/check",
            {"actor_type": "user", "actor_id": actor_id, "action": action},
            token=SERVICE_TOKEN,
        )
        for _ in range(count)
    ]


def block_traffic(server: ServerClient, *, actor_id: str, action: str = "send_message", limit: int = 2) -> int:
    """Send checks until some are blocked (policy changes reach the server within a second); return the blocked count."""
    enforce_for_everyone(server, action=action, limit=limit)

    def blocked_now() -> int:
        decisions = send_checks(server, actor_id=actor_id, action=action, count=limit + 3)
        return sum(1 for decision in decisions if not decision["allowed"])

    return int(poll(blocked_now, seconds=5, message="checks were never blocked"))


def test_sign_in_wrong_token_shows_error(browser: Any, server: ServerClient) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    try:
        page.goto(server.base_url + "/console")
        page.get_by_label("Admin token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()

        expect(page.get_by_role("alert")).to_contain_text("Invalid token")
        expect(page.get_by_label("Admin token")).to_be_visible()
        expect(page.get_by_role("heading", name="Flags", exact=True)).to_have_count(0)
        assert [cookie["name"] for cookie in context.cookies()] == []
    finally:
        context.close()


def test_sign_out_ends_session(open_console: Callable[..., Console]) -> None:
    console = open_console()
    page = console.page

    page.get_by_role("button", name="Sign out").click()

    expect(page.get_by_label("Admin token")).to_be_visible()
    assert "rampgate_session" not in [cookie["name"] for cookie in console.context.cookies()]
    page.goto(console.server.base_url + "/console")
    expect(page.get_by_label("Admin token")).to_be_visible()


def test_percentage_set_to_ten(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page

    page.get_by_label(f"Percentage of {FLAG}", exact=True).fill("10")
    page.get_by_role("button", name=f"Set percentage of {FLAG}").click()

    poll(lambda: server.api("GET", f"/v1/flags/{FLAG}")["percentage"] == 10, seconds=5, message="percentage is not 10")
    card = page.locator(f'.flag-card[data-flag="{FLAG}"]')
    expect(card).to_have_attribute("data-percentage", "10")


def test_action_percentage_saved(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page

    page.get_by_text("Per-action percentages", exact=True).click()
    page.get_by_label(f"media_upload percentage of {FLAG}").fill("50")
    page.get_by_role("button", name=f"Save per-action percentages of {FLAG}").click()

    poll(
        lambda: server.api("GET", f"/v1/flags/{FLAG}")["action_percentages"] == {"media_upload": 50},
        seconds=5,
        message="per-action percentage of media_upload is not 50",
    )

    # Emptying the field removes the override: the action follows the flag's percentage again.
    console.wait_for_refresh()
    field = page.get_by_label(f"media_upload percentage of {FLAG}")
    field.fill("")
    page.get_by_role("button", name=f"Save per-action percentages of {FLAG}").click()
    poll(
        lambda: server.api("GET", f"/v1/flags/{FLAG}")["action_percentages"] == {},
        seconds=5,
        message="the media_upload override was not removed",
    )


def test_rollback_disables_flag_within_second(open_console: Callable[..., Console], server: ServerClient) -> None:
    server.api("PATCH", f"/v1/flags/{FLAG}", {"enabled": True, "percentage": 25})
    console = open_console()
    page = console.page
    card = page.locator(f'.flag-card[data-flag="{FLAG}"]')
    expect(card).to_have_attribute("data-enabled", "true")
    rollback = page.get_by_role("button", name=f"Emergency rollback of {FLAG}")

    rollback.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert server.api("GET", f"/v1/flags/{FLAG}")["enabled"] is True

    def disabled_flag() -> dict[str, Any] | None:
        flag = server.api("GET", f"/v1/flags/{FLAG}")
        return None if flag["enabled"] else flag

    rollback.click()
    page.get_by_role("dialog").get_by_role("button", name="Roll back now").click()
    flag = poll(
        disabled_flag,
        seconds=1.0,
        message="the flag was still enabled a second after the rollback was confirmed",
    )
    assert flag["percentage"] == 0
    expect(card).to_have_attribute("data-enabled", "false")


def test_rollback_aborts_running_rollout(open_console: Callable[..., Console], server: ServerClient) -> None:
    server.api("POST", f"/v1/rollouts/{FLAG}/start", {})
    poll(lambda: server.api("GET", f"/v1/flags/{FLAG}")["enabled"], seconds=5, message="the rollout did not enable the flag")
    console = open_console()
    page = console.page
    expect(page.locator("#rollout")).to_have_attribute("data-state", "running")

    page.get_by_role("button", name=f"Emergency rollback of {FLAG}").click()
    page.get_by_role("dialog").get_by_role("button", name="Roll back now").click()

    poll(
        lambda: not server.api("GET", f"/v1/flags/{FLAG}")["enabled"],
        seconds=1.0,
        message="the flag was still enabled a second after the rollback was confirmed",
    )
    rollout = server.api("GET", f"/v1/rollouts/{FLAG}")
    assert rollout["state"] == "aborted"
    expect(page.locator("#timeline li").first).to_have_attribute("data-event", "aborted")


def test_policy_limit_zero_rejected(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page
    limit = page.get_by_label("Limit for tier B media_upload")

    limit.fill("0")
    page.get_by_role("button", name="Save tier B media_upload").click()

    # The page shows the API's own message, whatever its wording.
    status, rejection = server.request(
        "PUT", "/v1/limits", {"scope": "tier", "tier": "B", "action": "media_upload", "limit": 0, "window_seconds": 60}
    )
    assert status == 422
    assert rejection["field"] == "limit"
    error = page.locator(f"#{limit.get_attribute('id')}-error")
    expect(error).to_have_text(rejection["message"])
    expect(error).to_contain_text("invalid limit")
    expect(limit).to_have_attribute("aria-invalid", "true")
    expect(limit).to_have_value("0")
    policies = server.api("GET", "/v1/limits?action=media_upload&tier=B")
    assert [policy["limit"] for policy in policies] == [5]


def test_policy_limit_saved(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page

    page.get_by_label("Limit for tier B media_upload").fill("12")
    page.get_by_role("button", name="Save tier B media_upload").click()

    poll(
        lambda: [policy["limit"] for policy in server.api("GET", "/v1/limits?action=media_upload&tier=B")] == [12],
        seconds=5,
        message="the tier-B media_upload limit is not 12",
    )
    expect(page.get_by_label("Limit for tier B media_upload")).not_to_have_attribute("aria-invalid", "true")


def test_blocked_chart_counts_traffic(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    blocked_chart = console.page.locator("#chart-blocked")
    decisions_chart = console.page.locator("#chart-decisions")
    expect(blocked_chart).to_have_attribute("data-total", "0")
    reloads = console.page.evaluate("performance.getEntriesByType('navigation').length")

    blocked = block_traffic(server, actor_id="chart-user")

    # The page refreshes every few seconds; audit rows are visible within a second.
    totals = poll(
        lambda: int(blocked_chart.get_attribute("data-total") or 0) >= blocked and blocked_chart.get_attribute("data-total"),
        seconds=20,
        message=f"the 429 chart did not count the {blocked} blocked checks",
    )
    assert int(totals) >= blocked
    assert int(decisions_chart.get_attribute("data-total") or 0) >= int(totals)
    assert "send_message" in blocked_chart.locator(".legend").inner_text()
    assert console.page.evaluate("performance.getEntriesByType('navigation').length") == reloads


def test_block_rate_chart_shows_threshold(open_console: Callable[..., Console], server: ServerClient) -> None:
    server.api("POST", f"/v1/rollouts/{FLAG}/start", {})
    console = open_console()
    chart = console.page.locator("#chart-block-rate")

    threshold = server.api("GET", "/v1/reports/timeseries?since=1h")["block_rate_max"]

    assert threshold is not None
    expect(chart).to_have_attribute("data-threshold", str(threshold))
    expect(chart.locator("line.threshold")).to_have_count(1)


def test_gates_and_timeline_shown(open_console: Callable[..., Console], server: ServerClient) -> None:
    server.api("POST", f"/v1/rollouts/{FLAG}/start", {})
    status = server.api("GET", f"/v1/status?flag={FLAG}")
    console = open_console()
    section = console.page.locator("#rollout")

    expect(section).to_have_attribute("data-state", "running")
    gate_rows = section.locator("#gates-table tbody tr[data-metric]")
    expect(gate_rows).to_have_count(len(status["rollout"]["gates"]))
    for gate in status["rollout"]["gates"]:
        expect(section.locator(f'#gates-table tr[data-metric="{gate["metric"]}"]')).to_have_attribute(
            "data-status", gate["status"] or "pending"
        )
    expect(section.locator('#timeline li[data-event="started"]')).to_have_count(1)
    card = console.page.locator(f'.flag-card[data-flag="{FLAG}"]')
    expect(card.locator('[data-field="stage"]')).to_contain_text(f"{status['rollout']['stage']} · ")
    expect(card.locator('[data-field="bake-left"]')).to_have_text(re.compile(r"\d+ (h|min|s)"))


def test_trust_override_add_edit_remove(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page
    page.on("dialog", lambda dialog: dialog.accept())
    form = page.locator("#trust-add-form")

    form.get_by_label("Actor id").fill("alice")
    form.get_by_label("Tier").select_option("A")
    form.get_by_role("button", name="Add trust override").click()
    poll(lambda: trust_tier(server, "alice") == "A", seconds=5, message="alice is not tier A")

    page.get_by_label("Tier of user:alice").select_option("C")
    page.get_by_role("button", name="Save user:alice").click()
    poll(lambda: trust_tier(server, "alice") == "C", seconds=5, message="alice is not tier C")

    page.get_by_role("button", name="Remove user:alice").click()
    poll(lambda: trust_tier(server, "alice") is None, seconds=5, message="alice still has a trust profile")
    expect(page.get_by_label("Tier of user:alice")).to_have_count(0)


def trust_tier(server: ServerClient, actor_id: str) -> str | None:
    for profile in server.api("GET", "/v1/trust?limit=1000"):
        if profile["actor_type"] == "user" and profile["actor_id"] == actor_id:
            return str(profile["tier"])
    return None


def end_user_token(subject: str) -> str:
    import jwt

    return jwt.encode({"sub": subject, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


def test_appeal_upheld(open_console: Callable[..., Console], server: ServerClient) -> None:
    block_traffic(server, actor_id="bob", action="media_upload", limit=1)
    status, appeal = server.request(
        "POST", "/v1/appeals", {"action": "media_upload", "text": "I was uploading my own photos"}, token=end_user_token("bob")
    )
    assert status == 201, appeal
    console = open_console()
    page = console.page
    appeal_id = appeal["appeal_id"]

    page.get_by_label(f"Note for appeal {appeal_id}").fill("legitimate burst")
    page.get_by_role("button", name=f"Uphold appeal {appeal_id}").click()

    poll(
        lambda: server.api("GET", "/v1/appeals?status=upheld") != [],
        seconds=5,
        message="the appeal was not upheld",
    )
    upheld = server.api("GET", "/v1/appeals?status=upheld")[0]
    assert upheld["appeal_id"] == appeal_id
    assert upheld["resolution_note"] == "legitimate burst"


def test_changes_history_lists_console_change(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page

    page.get_by_label(f"Percentage of {FLAG}", exact=True).fill("7")
    page.get_by_role("button", name=f"Set percentage of {FLAG}").click()

    row = page.locator("#changes-table tbody tr", has_text="percentage").first
    expect(row).to_contain_text("console")
    expect(row).to_contain_text("7")


def test_readonly_session_disables_changes(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console(READONLY_TOKEN)
    page = console.page

    expect(page.locator(".role-badge")).to_have_text("read-only")
    controls = page.locator("[data-change]")
    assert controls.count() > 20
    enabled = page.locator("[data-change]:not(:disabled)")
    assert enabled.count() == 0, [enabled.nth(index).evaluate("node => node.outerHTML") for index in range(enabled.count())]
    for control in [
        page.get_by_label(f"Percentage of {FLAG}", exact=True),
        page.get_by_role("button", name=f"Set percentage of {FLAG}"),
        page.get_by_role("button", name=f"Emergency rollback of {FLAG}"),
        page.get_by_label("Limit for tier B media_upload"),
        page.get_by_role("button", name="Save tier B media_upload"),
        page.get_by_role("button", name="Add trust override"),
    ]:
        expect(control).to_be_disabled()

    status = forged_patch(page, {"percentage": 90}, csrf="page")

    assert status == 403
    assert server.api("GET", f"/v1/flags/{FLAG}")["percentage"] == 0


def forged_patch(page: Page, change: dict[str, Any], *, csrf: str) -> int:
    """PATCH the flag from the page with its session cookie; ``csrf`` is "page", "none" or a token to send."""
    script = """async ([flag, change, csrf]) => {
        const headers = {"Content-Type": "application/json"};
        if (csrf === "page") headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
        else if (csrf !== "none") headers["X-CSRF-Token"] = csrf;
        const response = await fetch(`/v1/flags/${flag}`, {method: "PATCH", headers, body: JSON.stringify(change)});
        return response.status;
    }"""
    return int(page.evaluate(script, [FLAG, change, csrf]))


def test_change_needs_csrf_token(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page

    assert forged_patch(page, {"percentage": 40}, csrf="none") == 403
    assert forged_patch(page, {"percentage": 41}, csrf="not-the-csrf-token") == 403
    assert server.api("GET", f"/v1/flags/{FLAG}")["percentage"] == 0
    assert forged_patch(page, {"percentage": 42}, csrf="page") == 200
    assert server.api("GET", f"/v1/flags/{FLAG}")["percentage"] == 42


def test_page_loads_only_from_loopback(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page
    for summary in page.locator("summary").all():
        summary.click()
    console.wait_for_refresh()
    phone = open_console(viewport=PHONE)
    phone.wait_for_refresh()

    requests = console.requests + phone.requests
    paths = {urlsplit(url).path for url in requests}
    assert "/console/static/js/main.js" in paths
    assert "/console/static/console.css" in paths
    assert "/v1/flags" in paths
    foreign = [url for url in requests if urlsplit(url).hostname != "127.0.0.1"]
    assert foreign == []


def test_phone_layout_fits_width(open_console: Callable[..., Console]) -> None:
    console = open_console(viewport=PHONE)
    page = console.page

    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= PHONE["width"], f"the page is {scroll_width} px wide on a {PHONE['width']} px screen"
    expect(page.get_by_role("button", name=f"Emergency rollback of {FLAG}")).to_be_in_viewport()
    expect(page.get_by_label(f"Percentage of {FLAG}", exact=True)).to_be_visible()
    expect(page.get_by_label("Limit for tier B media_upload")).to_be_visible()


def seed_audit_history(database_url: str, *, minutes: int) -> tuple[int, int]:
    """Write synthetic enforced decisions for each of the last ``minutes`` minutes; return (decisions, blocked).

    The traffic is made up and seeded, so every run draws the same rows. It
    only gives the screenshots an hour that looks like one. The chart test
    above sends real checks.
    """
    from rampgate.catalog.database import create_catalog_engine
    from rampgate.catalog.schema import rate_limit_audits

    rng = random.Random(7)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    volume = {"send_message": 40, "search": 60, "media_upload": 12, "create_post": 18}
    rows: list[dict[str, Any]] = []
    for age in range(minutes, 0, -1):
        minute = now - timedelta(minutes=age)
        # A burst of abuse in the middle of the hour makes the block rate climb towards its gate.
        block_chance = 0.045 if minutes // 2 - 4 <= age <= minutes // 2 + 2 else 0.012
        for action, mean in volume.items():
            for index in range(max(1, int(rng.gauss(mean, mean / 5)))):
                allowed = rng.random() >= block_chance
                rows.append(
                    {
                        "actor_type": "user",
                        "actor_id": f"u-{rng.randint(1, 400)}",
                        "action": action,
                        "allowed": allowed,
                        "created_at": minute + timedelta(seconds=index % 60),
                        "context": {"tier": "B", "policy": f"tier:B:{action}", "reason": "ok" if allowed else "limited", "cost": 1},
                    }
                )
    engine = create_catalog_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(rate_limit_audits.insert(), rows)
    finally:
        engine.dispose()
    return len(rows), sum(1 for row in rows if not row["allowed"])


def test_screenshots_of_main_views(browser: Any, open_console: Callable[..., Console], server: ServerClient) -> None:
    decisions, blocked = seed_audit_history(server.database_url, minutes=50)
    block_traffic(server, actor_id="bob", action="media_upload", limit=1)
    # Ordinary enforced traffic in the current minute, so that bob's blocks are a rate of a few per cent.
    for index in range(120):
        send_checks(server, actor_id=f"reader-{index}", action="search", count=1)
    server.api("POST", "/v1/appeals", {"action": "media_upload", "text": "I was uploading my own photos"}, token=end_user_token("bob"))
    server.api("PUT", "/v1/trust", {"actor_type": "user", "actor_id": "alice", "tier": "A", "enforcement_level": "E1", "trust_score": 95.0})
    server.api("PATCH", f"/v1/flags/{FLAG}", {"enabled": False, "percentage": 0})
    server.api("PUT", "/v1/limits", {"scope": "tier", "tier": "B", "action": "media_upload", "limit": 5, "window_seconds": 60})
    server.api("POST", f"/v1/rollouts/{FLAG}/start", {})

    sign_in_page = browser.new_context(viewport=DESKTOP).new_page()
    sign_in_page.goto(server.base_url + "/console")
    saved = [save_screenshot(sign_in_page, "sign-in")]
    sign_in_page.context.close()

    console = open_console()
    page = console.page
    totals = poll(
        lambda: int(page.locator("#chart-decisions").get_attribute("data-total") or 0) >= decisions and True,
        seconds=15,
        message="the decisions chart does not show the seeded history",
    )
    assert totals
    assert int(page.locator("#chart-blocked").get_attribute("data-total") or 0) >= blocked
    saved.append(save_screenshot(page, "overview"))
    saved.append(save_section(page, "traffic"))
    saved.append(save_section(page, "rollout"))
    saved.append(save_section(page, "blocks"))
    page.get_by_label("Limit for tier B media_upload").fill("0")
    page.get_by_role("button", name="Save tier B media_upload").click()
    expect(page.get_by_role("alert").filter(has_text="invalid limit")).to_be_visible()
    page.locator("#policy-tier-filter").select_option("B")
    saved.append(save_section(page, "policies"))
    saved.append(save_section(page, "trust"))
    saved.append(save_section(page, "appeals"))
    saved.append(save_section(page, "changes"))

    readonly = open_console(READONLY_TOKEN)
    saved.append(save_screenshot(readonly.page, "readonly"))

    phone = open_console(viewport=PHONE)
    saved.append(save_screenshot(phone.page, "phone"))
    phone.page.evaluate("document.getElementById('policies').scrollIntoView()")
    saved.append(save_screenshot(phone.page, "phone-policies"))

    for path in saved:
        assert path.stat().st_size > 10_000, f"{path} looks empty"
    if os.environ.get("RAMPGATE_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        for path in saved:
            shutil.copyfile(path, DOCS_IMAGES / path.name)


def save_section(page: Page, section: str) -> Path:
    """Screenshot one section, with the sticky top bar and the status message out of the way."""
    page.evaluate("document.querySelector('.topbar').style.position = 'static'; document.getElementById('toast').hidden = true")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"console-{section}.png"
    page.locator(f"#{section}").screenshot(path=str(path))
    return path


def test_percentage_out_of_range_rejected(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page
    percentage = page.get_by_label(f"Percentage of {FLAG}", exact=True)

    percentage.fill("101")
    page.get_by_role("button", name=f"Set percentage of {FLAG}").click()

    expect(page.locator(f"#{percentage.get_attribute('id')}-error")).to_contain_text("invalid percentage")
    expect(percentage).to_have_value("101")
    assert server.api("GET", f"/v1/flags/{FLAG}")["percentage"] == 0


def test_policy_added_and_deleted(open_console: Callable[..., Console], server: ServerClient) -> None:
    console = open_console()
    page = console.page
    page.on("dialog", lambda dialog: dialog.accept())
    form = page.locator("#policy-add-form")

    page.get_by_text("Add a policy", exact=True).click()
    form.get_by_label("Scope").select_option("actor")
    form.get_by_label("Actor id").fill("vip")
    form.get_by_label("Action").fill("media_upload")
    form.get_by_label("Limit").fill("50")
    form.get_by_role("button", name="Add policy").click()
    poll(lambda: actor_limits(server) == [50], seconds=5, message="the actor policy for user/vip was not added")

    page.get_by_role("button", name="Delete actor user/vip media_upload").click()
    poll(lambda: actor_limits(server) == [], seconds=5, message="the actor policy for user/vip was not deleted")
    expect(page.get_by_label("Limit for actor user/vip media_upload")).to_have_count(0)


def actor_limits(server: ServerClient) -> list[int]:
    policies = server.api("GET", "/v1/limits?action=media_upload")
    return [policy["limit"] for policy in policies if policy["scope"] == "actor" and policy["actor_id"] == "vip"]


def test_appeal_rejected(open_console: Callable[..., Console], server: ServerClient) -> None:
    block_traffic(server, actor_id="carol", action="media_upload", limit=1)
    status, appeal = server.request("POST", "/v1/appeals", {"action": "media_upload", "text": "not me"}, token=end_user_token("carol"))
    assert status == 201, appeal
    console = open_console()
    page = console.page

    page.get_by_role("button", name=f"Reject appeal {appeal['appeal_id']}").click()

    poll(lambda: server.api("GET", "/v1/appeals?status=rejected") != [], seconds=5, message="the appeal was not rejected")
    assert server.api("GET", "/v1/appeals?status=open") == []
    expect(page.locator(f'#appeals-table tr[data-appeal="{appeal["appeal_id"]}"]')).to_have_count(0)
