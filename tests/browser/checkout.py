"""The hosted checkout page in a real headless Chromium (Debian's, driven by Playwright), against
a running `evisa dev`: card success (and the paid page on a later visit), a decline then another
card, 3-D Secure completed, failed, and reopened after a reload, Alipay on the sandbox's cashier
(phone and desktop), a used link refused in another browser, an expired session and link, the
expiry warning on the browser's clock, the pages without JavaScript, zh-CN, a 320 px phone, the
card number never sent to evisa-pay, a double click paying once, a family's group payment,
and axe-core with 0 violations
on every state. Screenshots of each state go to SCREENSHOTS (printed).

Usage: python checkout.py BASE_URL SANDBOX_URL SCREENSHOT_DIR
Prints one line per check and a closing `N passed, N failed`; exits non-zero on any failure.
"""

import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import traceback
import uuid

import requests
from playwright.sync_api import sync_playwright, expect

BASE, SANDBOX, SHOTS = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/"), pathlib.Path(sys.argv[3])
HERE = pathlib.Path(__file__).resolve().parent
AXE = (HERE / "node_modules" / "axe-core" / "axe.min.js").read_text()
CARD_NUMBERS = ["4242424242424242", "4000000000000002", "4000002760003184"]
TIMEOUT = 20_000
results = []
evisa_requests = []  # every request the browser sent to evisa-pay's origin: (url, body)


def applicant():
    email = f"browser-{uuid.uuid4().hex}@example.org"
    creds = {"email": email, "password": "correct horse battery staple"}
    assert requests.post(f"{BASE}/v1/auth/register", json=creds).status_code == 201
    r = requests.post(f"{BASE}/v1/auth/login", json=creds)
    assert r.status_code == 200, f"sign-in answered {r.status_code}: {r.text}"
    return r.json()["access_token"]


def application(token, nationality="FR"):
    fields = {"full_name": "Ann Lee", "passport_number": "X1234567", "date_of_birth": "1990-05-17",
              "nationality": nationality, "visa_type": "tourist", "processing_speed": "standard",
              "intended_arrival_date": "2027-03-01"}
    h = {"authorization": f"Bearer {token}"}
    a = requests.post(f"{BASE}/v1/applications", json=fields, headers=h).json()["id"]
    r = requests.post(f"{BASE}/v1/applications/{a}/submit", headers=h)
    assert r.json()["status"] == "submitted", r.text
    return a


def checkout_link(nationality="FR", locale=None):
    """A new applicant's submitted application and its checkout link: (token, app, {url, expires_at})."""
    token = applicant()
    app = application(token, nationality)
    body = {"return_url": f"{BASE}/portal/done"}
    if locale:
        body["locale"] = locale
    r = requests.post(f"{BASE}/v1/applications/{app}/checkout", json=body,
                      headers={"authorization": f"Bearer {token}", "idempotency-key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    return token, app, r.json()


def checkout(nationality="FR", locale=None):
    token, app, link = checkout_link(nationality, locale)
    return token, app, link["url"]


def end_session_now(app):
    """The checkout sessions of application `app` run out: their deadline is put a minute back."""
    subprocess.run(["psql", os.environ["DATABASE_URL"], "-qAtc",
                    "UPDATE checkout_sessions SET expires_at = now() - interval '1 minute' WHERE id IN "
                    f"(SELECT session_id FROM checkout_session_applications WHERE application_id = '{uuid.UUID(app)}')"],
                   check=True)


def payments_of(token, app):
    return requests.get(f"{BASE}/v1/applications/{app}/payments",
                        headers={"authorization": f"Bearer {token}"}).json()


def charges_for(payment_id):
    charges = requests.get(f"{SANDBOX}/sandbox/charges").json()
    charges = charges.get("data", charges) if isinstance(charges, dict) else charges
    return [c for c in charges if payment_id in json.dumps(c)]


def axe(page, state):
    """axe-core on the page as it is now: 0 violations (cross-origin frames are the bank's)."""
    # Through the DevTools protocol, which the page's CSP does not govern (the CSP stays on).
    if not page.evaluate("!!window.axe"):
        page.evaluate(AXE)
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {iframes: false, resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")
    assert found == [], f"axe-core found violations in state {state}: {json.dumps(found, indent=1)}"


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page, state):
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    assert width <= viewport, f"{state}: {width}px wide in a {viewport}px viewport"


def fill_card(page, number, name="Ann Lee", expiry="12/34", cvc="123"):
    page.fill("#card-name", name)
    page.fill("#card-number", number)
    page.fill("#card-expiry", expiry)
    page.fill("#card-cvc", cvc)
    page.click("#continue")
    expect(page.locator("#review")).to_be_visible(timeout=TIMEOUT)


def expect_paid(page):
    expect(page.locator("#paid")).to_be_visible(timeout=TIMEOUT)
    assert page.locator("#verification-code").inner_text().startswith("EVP-")


def check(name):
    def wrap(fn):
        def run(browser):
            started = time.monotonic()
            try:
                fn(browser)
                results.append((name, True))
                print(f"ok   {name} ({time.monotonic() - started:.1f} s)", flush=True)
            except Exception:
                results.append((name, False))
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
        run.__name__ = name
        return run
    return wrap


def new_page(browser, **kw):
    context = browser.new_context(**kw)
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    origin = BASE

    def record(req):
        if req.url.startswith(origin):
            evisa_requests.append((req.url, req.post_data or ""))
    page.on("request", record)
    return context, page


@check("card success (the form, its error summary, the review, paid), with axe-core on each")
def card_success(browser):
    context, page = new_page(browser)
    _, _, url = checkout()
    page.goto(url)
    expect(page.locator("#card-form")).to_be_visible()
    assert page.get_attribute("html", "lang") == "en"
    assert "US$40.00" in page.inner_text("#fee")
    axe(page, "pay"); shot(page, "01-pay")
    page.click("#continue")
    expect(page.locator("#error-summary")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "error-summary", "focus moves to the summary"
    assert page.get_attribute("#card-number", "aria-invalid") == "true"
    axe(page, "errors"); shot(page, "02-errors")
    fill_card(page, "4242 4242 4242 4242")
    assert "4242" in page.inner_text("#review-text")
    axe(page, "review"); shot(page, "03-review")
    page.click("#pay")
    expect_paid(page)
    axe(page, "paid"); shot(page, "04-paid")
    page.click("#receipt-link")
    expect(page.locator("#heading")).to_contain_text("receipt")
    axe(page, "receipt"); shot(page, "05-receipt")
    # Paid is final: the link again, in the same browser, shows it paid and offers nothing.
    page.goto(url)
    expect_paid(page)
    assert page.locator("#card-form").count() == 0 and page.locator("#pay").count() == 0
    context.close()


@check("a decline shows the gateway's message by the card fields, then another card pays")
def decline_then_success(browser):
    context, page = new_page(browser)
    token, app, url = checkout()
    page.goto(url)
    fill_card(page, "4000 0000 0000 0002")
    page.click("#pay")
    expect(page.locator("#card-number-error")).to_contain_text("declined")
    expect(page.locator("#error-summary")).to_be_visible()
    axe(page, "declined"); shot(page, "06-declined")
    fill_card(page, "4242424242424242")
    page.click("#pay")
    expect_paid(page)
    statuses = sorted(p["status"] for p in payments_of(token, app))
    assert statuses == ["failed", "succeeded"], statuses
    context.close()


@check("3-D Secure completed on the bank's page pays")
def three_ds_completed(browser):
    context, page = new_page(browser)
    _, _, url = checkout()
    page.goto(url)
    fill_card(page, "4000002760003184")
    page.click("#pay")
    expect(page.locator("#bank-check")).to_be_visible()
    frame = page.frame_locator("#bank-frame")
    expect(frame.locator("#complete")).to_be_visible()
    axe(page, "3-D Secure"); shot(page, "07-3ds")
    frame.locator("#complete").click()
    expect_paid(page)
    context.close()


@check("3-D Secure failed shows the bank's refusal and lets the applicant try again")
def three_ds_failed(browser):
    context, page = new_page(browser)
    _, _, url = checkout()
    page.goto(url)
    fill_card(page, "4000002760003184")
    page.click("#pay")
    page.frame_locator("#bank-frame").locator("#fail").click()
    expect(page.locator("#card-number-error")).to_contain_text("bank")
    expect(page.locator("#card-form")).to_be_visible()
    axe(page, "3-D Secure failed"); shot(page, "08-3ds-failed")
    context.close()


@check("Alipay paid on the sandbox's cashier (phone channel), back to the page: paid")
def alipay_paid(browser):
    context, page = new_page(browser, viewport={"width": 390, "height": 844}, is_mobile=True,
                             user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148")
    token, app, url = checkout("CN")
    page.goto(url)
    expect(page.locator("#alipay")).to_contain_text("¥360.00")
    page.click("#alipay")
    page.wait_for_url(f"{SANDBOX}/**")
    assert "alipay.trade.wap.pay" in page.url or "wap" in page.url, page.url
    page.click("#pay")
    page.wait_for_url(f"{BASE}/checkout/s/**")
    expect_paid(page)
    axe(page, "Alipay paid"); shot(page, "09-alipay-paid")
    assert [p["status"] for p in payments_of(token, app)] == ["succeeded"]
    context.close()


@check("a second visit of a used link, in another browser, is refused")
def used_link(browser):
    first, page = new_page(browser)
    _, _, url = checkout()
    page.goto(url)
    expect(page.locator("#card-form")).to_be_visible()
    second, other = new_page(browser)
    response = other.goto(url)
    assert response.status == 403, response.status
    expect(other.locator("#heading")).to_contain_text("already used")
    axe(other, "used"); shot(other, "10-used")
    first.close(); second.close()


@check("zh-CN: the right lang, Chinese text and amounts; the switch goes back to English")
def chinese(browser):
    context, page = new_page(browser)
    _, _, url = checkout("CN", locale="zh-CN")
    page.goto(url)
    assert page.get_attribute("html", "lang") == "zh-CN"
    expect(page.locator("#heading")).to_have_text("支付签证费")
    expect(page.locator("#alipay")).to_contain_text("¥360.00")
    axe(page, "zh-CN"); shot(page, "11-zh-CN")
    page.click("a[hreflang=en]")
    assert page.get_attribute("html", "lang") == "en"
    context.close()


@check("a 320 px phone: no horizontal scroll, touch targets of 44 px, numeric keypads")
def phone(browser):
    context, page = new_page(browser, viewport={"width": 320, "height": 640}, is_mobile=True, has_touch=True)
    _, _, url = checkout("CN")
    page.goto(url)
    no_horizontal_scroll(page, "pay")
    for sel in ["#continue", "#alipay", "#card-number"]:
        box = page.locator(sel).bounding_box()
        assert box["height"] >= 44, f"{sel} is {box['height']}px tall"
    for sel in ["#card-number", "#card-expiry", "#card-cvc"]:
        assert page.get_attribute(sel, "inputmode") == "numeric"
    shot(page, "12-phone-320")
    page.click("#continue")
    no_horizontal_scroll(page, "errors")
    fill_card(page, "4242424242424242")
    no_horizontal_scroll(page, "review")
    axe(page, "phone review")
    context.close()


@check("a double click on Pay pays once")
def double_click(browser):
    context, page = new_page(browser)
    token, app, url = checkout()
    page.goto(url)
    fill_card(page, "4242424242424242")
    page.dblclick("#pay")
    expect_paid(page)
    payments = payments_of(token, app)
    assert len(payments) == 1, payments
    assert len(charges_for(payments[0]["id"])) == 1
    context.close()


@check("the waiting page (Alipay opened, not paid) leads back to the cashier; a made-up link is not valid")
def waiting_and_not_valid(browser):
    context, page = new_page(browser)
    _, _, url = checkout("CN")
    page.goto(url)
    session_page = page.url
    page.click("#alipay")
    page.wait_for_url(f"{SANDBOX}/**")
    cashier = page.url
    page.goto(session_page)
    expect(page.locator("#heading")).to_contain_text("waiting")
    assert page.get_attribute("#continue", "href") == cashier
    expect(page.locator("#card-form")).to_have_count(0)
    axe(page, "waiting"); shot(page, "18-waiting")
    response = page.goto(f"{BASE}/checkout/{'x' * 43}")
    assert response.status == 404, response.status
    expect(page.locator("#heading")).to_contain_text("not valid")
    axe(page, "not valid"); shot(page, "19-not-valid")
    context.close()


@check("a family's checkout: the applications listed with their fees, one card payment pays all three")
def group(browser):
    context, page = new_page(browser)
    token = applicant()
    apps = [application(token) for _ in range(3)]
    r = requests.post(f"{BASE}/v1/checkout", json={"application_ids": apps, "return_url": f"{BASE}/portal/done"},
                      headers={"authorization": f"Bearer {token}", "idempotency-key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    page.goto(r.json()["url"])
    expect(page.locator("#summary-heading")).to_have_text("The applications this payment covers")
    members = page.inner_text("#members")
    assert all(a in members for a in apps), members
    assert members.count("US$40.00") == 3, members
    assert "US$120.00" in page.inner_text("#fee")
    axe(page, "group pay"); shot(page, "20-group")
    fill_card(page, "4242424242424242")
    assert "US$120.00" in page.inner_text("#review-text")
    page.click("#pay")
    expect_paid(page)
    h = {"authorization": f"Bearer {token}"}
    assert [requests.get(f"{BASE}/v1/applications/{a}", headers=h).json()["status"] for a in apps] == ["paid"] * 3
    payments = payments_of(token, apps[0])
    assert len(payments) == 1 and payments[0]["amount"] == 12000, payments
    assert len(charges_for(payments[0]["id"])) == 1
    context.close()


@check("no request to evisa-pay's origin ever carried a card number")
def no_card_number(_browser):
    assert evisa_requests, "the network was watched"
    for url, body in evisa_requests:
        for number in CARD_NUMBERS:
            for form in (number, " ".join(number[i:i + 4] for i in range(0, 16, 4))):
                assert form not in url and form not in body, f"{number} went to {url}"
    posts = [u for u, b in evisa_requests if b]
    assert any(u.endswith("/card") for u in posts), "card payments were posted (only pm_ ids)"



@check("3-D Secure survives a reload: the page reopens the bank's check, which then pays")
def three_ds_reload(browser):
    context, page = new_page(browser)
    token, app, url = checkout()
    page.goto(url)
    fill_card(page, "4000002760003184")
    page.click("#pay")
    expect(page.frame_locator("#bank-frame").locator("#complete")).to_be_visible()
    page.reload()
    expect(page.locator("#bank-check")).to_be_visible()
    expect(page.locator("#alipay")).to_have_count(0)
    frame = page.frame_locator("#bank-frame")
    frame.locator("#complete").click()
    expect_paid(page)
    assert [p["status"] for p in payments_of(token, app)] == ["succeeded"]
    context.close()


@check("expiry is announced ten minutes before it happens, then paying is turned off")
def expiry_warning(browser):
    context, page = new_page(browser)
    _, _, link = checkout_link()
    deadline = datetime.datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    # The browser's clock, eleven minutes before the deadline (the server's is untouched).
    page.clock.install(time=deadline - datetime.timedelta(minutes=11))
    page.goto(link["url"])
    expect(page.locator("#card-form")).to_be_visible()
    assert page.inner_text("#status").strip() == "", "no warning eleven minutes before"
    page.clock.fast_forward(90_000)
    expect(page.locator("[role=status]")).to_contain_text("expires soon")
    # The time it names is the one the page shows as the deadline.
    assert deadline.strftime("%H:%M UTC") in page.inner_text("#status"), page.inner_text("#status")
    assert deadline.strftime("%H:%M UTC") in page.inner_text("#deadline")
    assert not page.locator("#continue").is_disabled()
    axe(page, "expiry warning"); shot(page, "13-expiry-warning")
    page.clock.fast_forward(11 * 60_000)
    expect(page.locator("#continue")).to_be_disabled()
    assert page.locator("#continue").is_disabled()
    expect(page.locator("[role=status]")).to_contain_text("has expired")
    axe(page, "expiry passed"); shot(page, "14-expiry-passed")
    context.close()


@check("an expired session: its page and its unused link say so (410), and nothing is offered")
def expired(browser):
    context, page = new_page(browser)
    _, app, url = checkout()
    page.goto(url)
    expect(page.locator("#card-form")).to_be_visible()
    end_session_now(app)
    response = page.reload()
    assert response.status == 410, response.status
    expect(page.locator("#heading")).to_contain_text("expired")
    assert page.locator("#card-form").count() == 0 and page.locator("#alipay").count() == 0
    axe(page, "expired"); shot(page, "15-expired")
    # A link never opened, after its session ran out.
    _, app, unused = checkout()
    end_session_now(app)
    response = page.goto(unused)
    assert response.status == 410, response.status
    expect(page.locator("#heading")).to_contain_text("expired")
    context.close()


@check("without JavaScript: the card form says it needs it, Alipay pays (desktop cashier), every status page works")
def no_javascript(browser):
    context, page = new_page(browser, java_script_enabled=False)
    token, app, url = checkout("CN")
    page.goto(url)
    expect(page.locator("#card-needs-js")).to_be_visible()
    expect(page.locator("#card-form")).to_be_hidden()
    expect(page.locator("#alipay")).to_be_visible()
    shot(page, "16-no-js")
    page.click("#alipay")
    page.wait_for_url(f"{SANDBOX}/**")
    assert "alipay.trade.page.pay" in page.url, page.url
    page.click("#pay")
    page.wait_for_url(f"{BASE}/checkout/s/**")
    # With no script to follow the payment, the waiting page offers a refresh until it is known.
    for _ in range(40):
        if page.locator("#paid").count():
            break
        expect(page.locator("#heading")).to_be_visible()
        page.wait_for_timeout(250)
        page.reload()
    expect_paid(page)
    shot(page, "17-no-js-paid")
    page.click("#receipt-link")
    expect(page.locator("#heading")).to_contain_text("receipt")
    assert [p["status"] for p in payments_of(token, app)] == ["succeeded"]
    context.close()
    # axe-core is a script, and a page with JavaScript off runs none (nor Playwright's
    # evaluate). So the no-JS pay page is scanned as such a browser shows it: the page's own
    # script blocked and its <noscript> content shown.
    context, page = new_page(browser)
    page.route("**/checkout/assets/*.js", lambda route: route.abort())

    def unwrap_noscript(route):
        response = route.fetch()
        html = response.text().replace("<noscript>", "").replace("</noscript>", "")
        route.fulfill(response=response, body=html)
    page.route("**/checkout/s/*", unwrap_noscript)
    _, _, url = checkout("CN")
    page.goto(url)
    # The link's redirect to the page is not routed; the page itself, loaded again, is.
    page.goto(page.url)
    expect(page.locator("#card-needs-js")).to_be_visible()
    expect(page.locator("#card-form")).to_be_hidden()
    axe(page, "no-JS pay")
    context.close()


def main():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox"])
        for test in [card_success, decline_then_success, three_ds_completed, three_ds_failed,
                     alipay_paid, used_link, chinese, phone, double_click, three_ds_reload,
                     expiry_warning, expired, no_javascript, waiting_and_not_valid, group,
                     no_card_number]:
            test(browser)
        browser.close()
    print(f"screenshots: {SHOTS}")
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
