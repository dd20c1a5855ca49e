"""Load and checks for scripts/scale.sh: card payments through the balancer, an event stream on one
API process following a payment made on the other, a process signalled in mid-load, and the
sandbox's ledger against the database.

Each command prints one `scale: ...` line per check and exits 1 when a check fails.
"""

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from datetime import date, timedelta

import requests

FINAL = {"succeeded", "failed", "cancelled", "expired"}
TIMEOUT = 30
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def fail(message):
    print(f"scale: FAIL {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"scale: ok   {message}", flush=True)


def fields():
    arrival = (date.today() + timedelta(days=30)).isoformat()
    return {"full_name": "Scale Out", "passport_number": "S1234567", "date_of_birth": "1990-01-01",
            "nationality": "US", "visa_type": "tourist", "processing_speed": "standard",
            "intended_arrival_date": arrival}


class Payer:
    """One applicant with a keep-alive session; counts its requests and how each failed."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.token = None
        self.answered = 0
        self.failures = []  # (monotonic time, "METHOD /route: what")

    def call(self, method, path, expect, **kw):
        headers = kw.pop("headers", {})
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        route = f"{method} {UUID.sub('{id}', path)}"
        try:
            r = self.http.request(method, self.base + path, headers=headers, timeout=TIMEOUT, **kw)
        except requests.RequestException as e:
            self.failures.append((time.monotonic(), f"{route}: {type(e).__name__} ({e})"))
            return None
        if r.status_code != expect:
            self.failures.append((time.monotonic(), f"{route}: HTTP {r.status_code} {r.text[:200]}"))
            return None
        self.answered += 1
        return r.json() if r.content else {}

    def sign_up(self):
        creds = {"email": f"scale-{uuid.uuid4().hex}@example.org", "password": "scale password 1234"}
        if self.call("POST", "/v1/auth/register", 201, json=creds) is None:
            fail(f"cannot register through {self.base}: {self.failures[-1][1]}")
        login = self.call("POST", "/v1/auth/login", 200, json=creds)
        if login is None:
            fail(f"cannot sign in through {self.base}: {self.failures[-1][1]}")
        self.token = login["access_token"]

    def submitted_application(self):
        # With a key, a create sent again (by the balancer) replays instead of making another.
        app = self.call("POST", "/v1/applications", 201, json=fields(),
                        headers={"idempotency-key": str(uuid.uuid4())})
        if app is None:
            return None
        if self.call("POST", f"/v1/applications/{app['id']}/submit", 200) is None:
            return None
        return app["id"]

    def pay(self, application):
        p = self.call("POST", f"/v1/applications/{application}/payments", 202,
                      json={"provider": "stripe", "payment_method": "pm_card_visa"},
                      headers={"idempotency-key": str(uuid.uuid4())})
        return None if p is None else p["id"]


def sandbox_faults(sandbox, faults):
    requests.post(f"{sandbox}/sandbox/faults", json=faults, timeout=TIMEOUT).raise_for_status()


def charges_by_payment(sandbox):
    """The sandbox's ledger: our payment id (the intent's metadata) → number of charges."""
    counts = {}
    for c in requests.get(f"{sandbox}/sandbox/charges", timeout=TIMEOUT).json():
        pid = c.get("metadata", {}).get("payment_id", f"(intent {c['payment_intent']})")
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def stream_statuses(base, token, payment, deadline):
    """Reads a payment's event stream until a final status; returns the statuses it sent."""
    seen = []
    with requests.get(f"{base}/v1/payments/{payment}/events", stream=True, timeout=TIMEOUT,
                      headers={"authorization": f"Bearer {token}", "accept": "text/event-stream"}) as r:
        if r.status_code != 200:
            return [f"HTTP {r.status_code}"]
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                seen.append(json.loads(line[5:])["status"])
                if seen[-1] in FINAL or time.monotonic() > deadline:
                    break
    return seen


def cmd_stream(args):
    """A payment made on one API process, followed on the other's event stream, both ways."""
    for made_on, watched_on, a, b in ((args.a, args.b, "a", "b"), (args.b, args.a, "b", "a")):
        payer = Payer(made_on)
        payer.sign_up()
        application = payer.submitted_application()
        if application is None:
            fail(f"cannot prepare an application on API {a}: {payer.failures[-1][1]}")
        # The charge takes a second, so the stream is open before the change. With webhooks
        # dropped, the change is the worker's alone and reaches API b only through Postgres.
        sandbox_faults(args.sandbox, {"latency_ms": 1000, "drop_webhooks": True})
        try:
            started = time.monotonic()
            payment = payer.pay(application)
            if payment is None:
                fail(f"payment POST on API {a} failed: {payer.failures[-1][1]}")
            seen = stream_statuses(watched_on, payer.token, payment, started + 20)
            elapsed = time.monotonic() - started
        finally:
            sandbox_faults(args.sandbox, {})
        if seen[-1:] != ["succeeded"] or seen[0] == "succeeded":
            fail(f"event stream on API {b} for a payment made on API {a} saw {seen}")
        ok(f"event stream on API {b} for a payment made on API {a} (webhooks off, so only the "
           f"worker's change): {' -> '.join(seen)} in {elapsed:.1f} s")


def exited(pid):
    """Whether `pid` has ended (a zombie waiting for the shell to reap it counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def cmd_load(args):
    """Closed-loop payers through the balancer; one process is signalled in mid-load."""
    payers = [Payer(args.base) for _ in range(args.payers)]
    for p in payers:
        p.sign_up()
    made = []  # (payer, payment id)
    lock = threading.Lock()
    if args.latency_ms:
        # Every charge is in flight this long, so the signalled worker surely holds some.
        sandbox_faults(args.sandbox, {"latency_ms": args.latency_ms})
    started = time.monotonic()
    deadline = started + args.seconds

    def payer_loop(p):
        while time.monotonic() < deadline:
            application = p.submitted_application()
            payment = application and p.pay(application)
            if payment:
                with lock:
                    made.append((p, payment))

    threads = [threading.Thread(target=payer_loop, args=(p,)) for p in payers]
    for t in threads:
        t.start()
    time.sleep(args.after)
    with lock:
        before = len(made)
    signalled = time.monotonic()
    os.kill(args.pid, getattr(signal, f"SIG{args.signal}"))
    while not exited(args.pid) and time.monotonic() < signalled + 30:
        time.sleep(0.05)
    exit_after = time.monotonic() - signalled
    for t in threads:
        t.join()
    load_end = time.monotonic()
    if args.latency_ms:
        sandbox_faults(args.sandbox, {})

    failures = sorted(f for p in payers for f in p.failures)
    answered = sum(p.answered for p in payers)
    # Only requests caught at the moment of the stop may fail: none before it, none a moment after.
    late = [f for f in failures if not signalled <= f[0] <= signalled + args.failure_window]
    line = (f"{args.what}: SIG{args.signal} at {signalled - started:.1f} s with {before} payments "
            f"in, process gone {exit_after:.1f} s later; {len(made)} payments in "
            f"{load_end - started:.1f} s through the balancer, {answered} requests answered, "
            f"{len(failures)} failed")
    if failures:
        line += f" (at +{failures[0][0] - signalled:.2f} .. +{failures[-1][0] - signalled:.2f} s)"
    if len(failures) > args.max_failures or late or not exited(args.pid):
        for _, what in failures[:10]:
            print(f"scale:      {what}", flush=True)
        fail(line)
    ok(line)
    for _, what in failures:
        print(f"scale:      failed at the stop: {what}", flush=True)

    # Every payment reaches its final status: succeeded, since every card is pm_card_visa.
    pending = list(made)
    statuses = {}
    while pending and time.monotonic() < load_end + args.converge:
        still = []
        for p, pid in pending:
            view = p.call("GET", f"/v1/payments/{pid}", 200)
            if view is None or view["status"] not in FINAL:
                still.append((p, pid))
            else:
                statuses[pid] = view["status"]
        pending = still
        if pending:
            time.sleep(0.25)
    converged = time.monotonic() - load_end
    not_succeeded = [s for s in statuses.values() if s != "succeeded"]
    if pending or not_succeeded:
        fail(f"{args.what}: {len(pending)} payments not final {args.converge:.0f} s after the load, "
             f"{len(not_succeeded)} final but not succeeded {sorted(set(not_succeeded))}")
    ok(f"{args.what}: all {len(made)} payments succeeded, the last {converged:.1f} s after the load "
       f"ended ({time.monotonic() - signalled:.1f} s after the signal)")

    ledger = charges_by_payment(args.sandbox)
    counts = [ledger.get(pid, 0) for _, pid in made]
    missing, duplicated = counts.count(0), sum(1 for c in counts if c > 1)
    if missing or duplicated:
        fail(f"{args.what}: the sandbox's ledger has {missing} of these payments uncharged and "
             f"{duplicated} charged more than once")
    ok(f"{args.what}: the sandbox's ledger has exactly one charge for each of the {len(made)} payments")


def cmd_ledger(args):
    """The whole run: every payment in the database against every charge in the sandbox."""
    payments = {}
    with open(args.payments) as f:
        for line in f:
            if line.strip():
                pid, status = line.strip().split("|")
                payments[pid] = status
    ledger = charges_by_payment(args.sandbox)
    not_succeeded = sorted(s for s in payments.values() if s != "succeeded")
    uncharged = [p for p, s in payments.items() if s == "succeeded" and p not in ledger]
    duplicated = [p for p, n in ledger.items() if n > 1]
    strangers = [p for p in ledger if p not in payments]
    line = (f"whole run: {len(payments)} payments in the database, {len(not_succeeded)} of them "
            f"not succeeded {sorted(set(not_succeeded))}; {sum(ledger.values())} charges in the "
            f"sandbox's ledger: {len(uncharged)} payments succeeded without a charge, "
            f"{len(duplicated)} charged more than once, {len(strangers)} charges of no payment")
    if not_succeeded or uncharged or duplicated or strangers:
        fail(line)
    ok(line)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--a", required=True)
    s.add_argument("--b", required=True)
    s.add_argument("--sandbox", required=True)
    s.set_defaults(run=cmd_stream)
    lo = sub.add_parser("load")
    lo.add_argument("--base", required=True)
    lo.add_argument("--sandbox", required=True)
    lo.add_argument("--what", required=True)
    lo.add_argument("--seconds", type=float, default=10)
    lo.add_argument("--payers", type=int, default=8)
    lo.add_argument("--pid", type=int, required=True, help="the process to signal in mid-load")
    lo.add_argument("--signal", default="KILL", choices=["KILL", "TERM"])
    lo.add_argument("--after", type=float, default=5, help="seconds into the load")
    lo.add_argument("--latency-ms", type=int, default=0, help="sandbox latency during the load")
    lo.add_argument("--converge", type=float, default=60)
    lo.add_argument("--max-failures", type=int, default=0)
    lo.add_argument("--failure-window", type=float, default=0)
    lo.set_defaults(run=cmd_load)
    le = sub.add_parser("ledger")
    le.add_argument("--sandbox", required=True)
    le.add_argument("--payments", required=True, help="a file of `id|status` lines")
    le.set_defaults(run=cmd_ledger)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
