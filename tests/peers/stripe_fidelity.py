"""Drives the Stripe sandbox with Stripe's official Python library, and validates every answer
and every event body against Stripe's published schemas (tests/peers/stripe/openapi-subset.json)
and the field sets of Stripe's own current example objects (tests/peers/stripe/fixtures.json).

Usage: stripe_fidelity.py SANDBOX_URL SECRET_KEY PUBLISHABLE_KEY
Prints one line per check and exits non-zero if any failed."""
import concurrent.futures
import json
import pathlib
import sys
import uuid

import requests
import stripe
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

HERE = pathlib.Path(__file__).parent / "stripe"
BASE, SK, PK = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]

failures = []


def check(ok, line):
    print(f"stripe-fidelity: {'ok  ' if ok else 'FAIL'} {line}", flush=True)
    if not ok:
        failures.append(line)


def _convert(node):
    """OpenAPI 3.0 schema → JSON Schema: `nullable` becomes a union with null."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if not k.startswith("x-") and k != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out


spec = json.load(open(HERE / "openapi-subset.json"))
root = {"components": {"schemas": {k: _convert(v) for k, v in spec["schemas"].items()}}}
registry = Registry().with_resource("urn:stripe", Resource.opaque(root))
VALIDATORS = {}


def schema_errors(name, body):
    if name not in VALIDATORS:
        VALIDATORS[name] = Draft202012Validator(
            {"$ref": f"urn:stripe#/components/schemas/{name}"}, registry=registry)
    return [f"{'/'.join(map(str, e.path))}: {e.message[:160]}" for e in VALIDATORS[name].iter_errors(body)]


FIXTURES = json.load(open(HERE / "fixtures.json"))["resources"]
validated = {}


def valid(name, body, what):
    """Checks `body` against Stripe's schema `name` and the field set of Stripe's example."""
    errors = schema_errors(name, body) if name in spec["schemas"] else []
    missing = sorted(set(FIXTURES[name]) - set(body)) if name in FIXTURES else []
    validated[name] = validated.get(name, 0) + 1
    if errors or missing:
        check(False, f"{what}: {name} schema errors {errors[:3]} missing fields {missing}")
    return not errors and not missing


def as_dict(obj):
    return json.loads(json.dumps(obj.to_dict(), default=str)) if hasattr(obj, "to_dict") else obj


# The checks can fail: a broken intent is refused on both counts.
broken = dict(FIXTURES["payment_intent"], amount="ten")
del broken["latest_charge"]
check(schema_errors("payment_intent", broken) and not schema_errors("payment_intent", FIXTURES["payment_intent"]),
      "the validator refuses an intent with a string amount and passes Stripe's own example")

client = stripe.StripeClient(SK, base_addresses={"api": BASE}, max_network_retries=0)
browser = stripe.StripeClient(PK, base_addresses={"api": BASE}, max_network_retries=0)


def card(number, exp_year=2034):
    return {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": exp_year, "cvc": "123"}}


def tokenise(number):
    pm = browser.v1.payment_methods.create(params=card(number))
    valid("payment_method", as_dict(pm), "tokenised card")
    return pm.id


def pay(pm, amount=4000, currency="usd", **extra):
    params = {"amount": amount, "currency": currency, "payment_method": pm, "confirm": True,
              "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
              "metadata": {"payment_id": str(uuid.uuid4())}, **extra}
    return client.v1.payment_intents.create(params=params, options={"idempotency_key": str(uuid.uuid4())})


def stripe_error(call):
    try:
        call()
    except stripe.StripeError as e:
        return e
    return None


def error_ok(e, what, **expect):
    """The error is one of Stripe's, its body valid against Stripe's `error` schema."""
    if e is None:
        check(False, f"{what}: no error")
        return
    body = e.json_body or {}
    valid("error", body, what)
    err = body.get("error", {})
    wrong = {k: (err.get(k), v) for k, v in expect.items() if err.get(k) != v}
    check(not wrong and err.get("request_log_url") and e.request_id,
          f"{what}: HTTP {e.http_status} {err.get('type')} code={err.get('code')} param={err.get('param')}"
          + (f" (wrong: {wrong})" if wrong else ""))


# Cards only through tokenisation.
e = stripe_error(lambda: client.v1.payment_methods.create(params=card("4242424242424242")))
error_ok(e, "a card number sent with the secret key is refused", type="invalid_request_error")
check(e is not None and e.http_status == 402, "  ...with HTTP 402")
visa = tokenise("4242424242424242")
error_ok(stripe_error(lambda: browser.v1.payment_methods.create(params=card("4242424242424241"))),
         "a number failing Luhn", type="card_error", code="incorrect_number")
error_ok(stripe_error(lambda: browser.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})),
         "the publishable key cannot create intents", type="invalid_request_error")

# A card payment, answered with the charge and the payment method expanded.
pi = pay(visa, expand=["latest_charge", "payment_method"])
check(pi.status == "succeeded" and pi.latest_charge.status == "succeeded"
      and pi.payment_method.card.last4 == "4242" and pi.last_response.request_id.startswith("req_"),
      f"card payment: {pi.status}, charge {pi.latest_charge.id}, card {pi.payment_method.card.brand} "
      f"{pi.payment_method.card.last4}, Request-Id {pi.last_response.request_id}")
raw = as_dict(pi)
valid("charge", raw["latest_charge"], "expanded latest_charge")
valid("payment_method", raw["payment_method"], "expanded payment_method")
raw["latest_charge"], raw["payment_method"] = pi.latest_charge.id, pi.payment_method.id
valid("payment_intent", raw, "confirmed intent")
charge = client.v1.charges.retrieve(pi.latest_charge.id)
valid("charge", as_dict(charge), "GET /v1/charges/{id}")
check(charge.payment_intent == pi.id and charge.paid, f"GET /v1/charges/{charge.id}: paid, of {pi.id}")

# Declines carry decline_code, charge, payment_intent and payment_method.
e = stripe_error(lambda: pay(tokenise("4000000000009995")))
error_ok(e, "a declined card", type="card_error", code="card_declined", decline_code="insufficient_funds")
err = (e.json_body or {}).get("error", {}) if e else {}
check(bool(err.get("charge")) and bool(err.get("payment_intent", {}).get("id"))
      and bool(err.get("payment_method", {}).get("id")),
      f"  ...naming charge {err.get('charge')}, payment_intent and payment_method")
if err.get("payment_intent"):
    valid("payment_intent", err["payment_intent"], "the declined intent")

# 3-D Secure with a return_url, then completed on the sandbox's page.
three_ds = tokenise("4000002760003184")
pi3 = client.v1.payment_intents.create(params={
    "amount": 4000, "currency": "usd", "payment_method": three_ds, "confirm": True,
    "return_url": "https://portal.example/back"})
na = pi3.next_action
check(pi3.status == "requires_action" and na.redirect_to_url.return_url == "https://portal.example/back",
      f"3-D Secure: {pi3.status}, next_action {na.type} back to {na.redirect_to_url.return_url}")
valid("payment_intent", as_dict(pi3), "an intent asking for 3-D Secure")
back = requests.post(f"{BASE}/sandbox/3ds/{pi3.id}/complete", allow_redirects=False, timeout=10)
check(back.status_code == 303 and "redirect_status=succeeded" in back.headers.get("location", ""),
      f"  ...completed: {back.status_code} to {back.headers.get('location', '')[:60]}...")
check(client.v1.payment_intents.retrieve(pi3.id).status == "succeeded", "  ...and the intent succeeded")

# Cancellation with a reason.
open_pi = client.v1.payment_intents.create(params={"amount": 500, "currency": "eur"})
cancelled = client.v1.payment_intents.cancel(open_pi.id, params={"cancellation_reason": "abandoned"})
check(cancelled.status == "canceled" and cancelled.cancellation_reason == "abandoned",
      f"cancel: {cancelled.status}, cancellation_reason {cancelled.cancellation_reason}")
valid("payment_intent", as_dict(cancelled), "a cancelled intent")

# Validation like Stripe's.
error_ok(stripe_error(lambda: client.v1.payment_intents.create(params={"amount": 100, "currency": "usd", "colour": "red"})),
         "an unknown parameter", type="invalid_request_error", code="parameter_unknown", param="colour")
error_ok(stripe_error(lambda: client.v1.payment_intents.create(params={"currency": "usd"})),
         "a missing parameter", code="parameter_missing", param="amount")
error_ok(stripe_error(lambda: client.v1.payment_intents.create(params={"amount": 10, "currency": "usd"})),
         "an amount under the minimum", code="amount_too_small", param="amount")
error_ok(stripe_error(lambda: client.v1.payment_intents.create(params={"amount": 1000, "currency": "xyz"})),
         "an unsupported currency", type="invalid_request_error", param="currency")

# Refunds: partial, over-refund, the rest; pending ones settled; one from the dashboard.
paid = pay(visa, amount=10000)
r1 = client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 2500, "metadata": {"refund_id": "r1"}})
valid("refund", as_dict(r1), "a partial refund")
error_ok(stripe_error(lambda: client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 9000})),
         "an over-refund", code="amount_too_large", param="amount")
rest = client.v1.refunds.create(params={"payment_intent": paid.id})
charge = client.v1.charges.retrieve(paid.latest_charge)
check(rest.amount == 7500 and charge.refunded and charge.amount_refunded == 10000,
      f"refund of the rest: {rest.amount}; charge refunded {charge.amount_refunded}/{charge.amount}")
valid("charge", as_dict(charge), "a refunded charge")
error_ok(stripe_error(lambda: client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 1})),
         "a refund of a refunded charge", code="charge_already_refunded")
requests.post(f"{BASE}/sandbox/faults", json={"refunds_pending": True}, timeout=10)
paid2 = pay(visa)
pending = client.v1.refunds.create(params={"payment_intent": paid2.id})
requests.post(f"{BASE}/sandbox/faults", json={}, timeout=10)
requests.post(f"{BASE}/sandbox/refunds/{pending.id}/settle", json={"outcome": "succeeded"}, timeout=10)
check(pending.status == "pending" and client.v1.refunds.retrieve(pending.id).status == "succeeded",
      f"a pending refund: {pending.status}, then succeeded")
requests.post(f"{BASE}/sandbox/faults", json={"refunds_pending": True}, timeout=10)
paid3 = pay(visa)
failing = client.v1.refunds.create(params={"payment_intent": paid3.id})
requests.post(f"{BASE}/sandbox/faults", json={}, timeout=10)
requests.post(f"{BASE}/sandbox/refunds/{failing.id}/settle", json={"outcome": "failed"}, timeout=10)
failed = client.v1.refunds.retrieve(failing.id)
check(failed.status == "failed" and client.v1.charges.retrieve(paid3.latest_charge).amount_refunded == 0,
      f"a pending refund that failed: {failed.status} ({failed.failure_reason}); the amount is refundable again")
valid("refund", as_dict(failed), "a failed refund")
outside = requests.post(f"{BASE}/sandbox/charges/{paid3.latest_charge}/refund", json={"amount": 1000}, timeout=10).json()
valid("refund", outside, "a dashboard refund")
check(outside.get("metadata") == {}, f"a dashboard refund {outside.get('id')}: no metadata of ours")

# A dispute, from Stripe's dispute test card, then lost.
disputed = pay(tokenise("4000000000000259"))
disputes = [d for d in requests.get(f"{BASE}/sandbox/disputes", timeout=10).json()
            if d["payment_intent"] == disputed.id]
check(len(disputes) == 1 and disputes[0]["status"] == "needs_response",
      f"the dispute card: charge {disputed.latest_charge} disputed ({disputes[0]['reason'] if disputes else '-'})")
if disputes:
    valid("dispute", disputes[0], "a dispute")
    closed = requests.post(f"{BASE}/sandbox/disputes/{disputes[0]['id']}/close", json={"outcome": "lost"}, timeout=10).json()
    check(closed.get("status") == "lost", f"  ...closed: {closed.get('status')}")

# Idempotency like Stripe's.
key = str(uuid.uuid4())
params = {"amount": 700, "currency": "usd"}
first = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
again = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
check(first.id == again.id and again.last_response.headers.get("Idempotent-Replayed") == "true",
      f"a replay: the same intent {again.id}, Idempotent-Replayed: {again.last_response.headers.get('Idempotent-Replayed')}")
e = stripe_error(lambda: client.v1.payment_intents.create(params={"amount": 800, "currency": "usd"}, options={"idempotency_key": key}))
check(isinstance(e, stripe.IdempotencyError), f"the key with other parameters: {type(e).__name__}")
error_ok(e, "  ...", type="idempotency_error")
e = stripe_error(lambda: client.v1.refunds.create(params={"payment_intent": first.id}, options={"idempotency_key": key}))
check(isinstance(e, stripe.IdempotencyError) and "endpoint" in str(e), f"the key on another endpoint: {type(e).__name__}")
requests.post(f"{BASE}/sandbox/faults", json={"latency_ms": 400}, timeout=10)
busy = str(uuid.uuid4())
with concurrent.futures.ThreadPoolExecutor(2) as pool:
    slow = pool.submit(client.v1.payment_intents.create, params=params, options={"idempotency_key": busy})
    import time; time.sleep(0.15)
    e = stripe_error(lambda: client.v1.payment_intents.create(params=params, options={"idempotency_key": busy}))
    slow.result()
requests.post(f"{BASE}/sandbox/faults", json={}, timeout=10)
error_ok(e, "the key while in flight", code="idempotency_key_in_use")
check(e is not None and e.http_status == 409 and e.headers.get("Stripe-Should-Retry") == "true",
      f"  ...HTTP {e.http_status if e else '-'}, Stripe-Should-Retry: {e.headers.get('Stripe-Should-Retry') if e else '-'}")
requests.post(f"{BASE}/sandbox/faults", json={"error_next": 1}, timeout=10)
k500 = str(uuid.uuid4())
e1 = stripe_error(lambda: client.v1.payment_intents.create(params=params, options={"idempotency_key": k500}))
e2 = stripe_error(lambda: client.v1.payment_intents.create(params=params, options={"idempotency_key": k500}))
check(isinstance(e1, stripe.APIError) and isinstance(e2, stripe.APIError)
      and e2.headers.get("Idempotent-Replayed") == "true",
      f"a 500 is stored under its key and replayed: {e1.http_status if e1 else '-'} then "
      f"{e2.http_status if e2 else '-'} (Idempotent-Replayed: {e2.headers.get('Idempotent-Replayed') if e2 else '-'})")

# A payment that processes first: payment_intent.processing, then succeeded.
requests.post(f"{BASE}/sandbox/faults", json={"processing_next": 1}, timeout=10)
processing = pay(visa)
requests.post(f"{BASE}/sandbox/faults", json={}, timeout=10)
import time; time.sleep(0.5)
check(processing.status == "processing" and client.v1.payment_intents.retrieve(processing.id).status == "succeeded",
      f"processing: answered {processing.status}, then succeeded")

# Every event, through the official client's pagination, against the schemas.
events = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())
kinds = {}
for ev in events:
    body = as_dict(ev)
    valid("event", body, f"event {ev.type}")
    obj = body["data"]["object"]
    valid(obj["object"], obj, f"the object of {ev.type}")
    kinds[ev.type] = kinds.get(ev.type, 0) + 1
expected = {"payment_intent.created", "payment_intent.processing", "payment_intent.requires_action",
            "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled",
            "charge.succeeded", "charge.failed", "charge.refunded", "refund.created", "refund.updated",
            "refund.failed", "charge.dispute.created", "charge.dispute.closed"}
check(expected <= set(kinds), f"{len(events)} events of {len(kinds)} types; missing {sorted(expected - set(kinds))}")
print("stripe-fidelity: event types " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
print("stripe-fidelity: validated " + ", ".join(f"{k} {v}" for k, v in sorted(validated.items())))
print(f"stripe-fidelity: {len(failures)} failed")
sys.exit(1 if failures else 0)
