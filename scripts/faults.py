"""Load generator and checker for scripts/faults.sh: card payments at a steady rate while the
script stops Postgres and Redis under the service.

    python scripts/faults.py --base URL --sandbox URL --workdir DIR [--rate 20] [--count N]

It prepares N submitted applications, writes DIR/ready, then pays one every 1/rate s until
DIR/stop appears (when the prepared ones run out, each payer first makes its own application).
Every payment POST carries its own Idempotency-Key and is retried with the same key (on 503, a
timeout or a refused connection, after Retry-After) until it is accepted, so no payment is made
twice. Payments are followed with GET until final, and every tenth also on its event stream
(reconnecting as a browser does), which must show the final status. Every answer is counted by
status and content type in the phase named in DIR/phase at the time (the script writes it); a
request that takes longer than the timeout counts as a hang. After DIR/stop it waits (bounded)
for every payment to reach a final status, reads the sandbox's ledger, and writes:

    DIR/payments.csv   payment id, application id, final status (for the script's SQL checks)
    DIR/events.csv     the sandbox's webhook events (id, type)
    DIR/result.json    every figure, and the list of failed checks

It prints one line per check and exits 1 when one fails.
"""

import argparse
import collections
import concurrent.futures
import datetime
import itertools
import json
import os
import random
import sys
import threading
import time
import uuid

import requests

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
PROBLEM = "application/problem+json"
IN_FLIGHT = "/problems/idempotency-in-flight"


class Tally:
    """Answers per phase: 2xx, 503 problem+json, anything else (by status and type), hangs."""

    def __init__(self, workdir):
        self.lock = threading.Lock()
        self.phase_file = os.path.join(workdir, "phase")
        self.phase_cache = ("setup", 0.0)
        self.by_phase = collections.defaultdict(
            lambda: {"2xx": 0, "503": 0, "in_flight": 0, "other": collections.Counter(), "hangs": 0, "max_ms": 0.0}
        )

    def phase(self):
        name, read_at = self.phase_cache
        now = time.monotonic()
        if now - read_at > 0.1:
            try:
                with open(self.phase_file, encoding="utf-8") as f:
                    name = f.read().strip() or name
            except OSError:
                pass
            self.phase_cache = (name, now)
        return name

    def record(self, what, elapsed, status=None, ctype="", kind=None):
        with self.lock:
            p = self.by_phase[self.phase()]
            p["max_ms"] = max(p["max_ms"], elapsed * 1000)
            if what == "hang":
                p["hangs"] += 1
            elif what == "error":
                p["other"][f"no answer ({status})"] += 1
            elif 200 <= status < 300:
                p["2xx"] += 1
            elif status == 503 and ctype.startswith(PROBLEM):
                p["503"] += 1
            elif status == 409 and kind == IN_FLIGHT:
                # The documented answer to a retry that overtook its first try, still running on
                # the server after the client gave up on it (counted as a hang already).
                p["in_flight"] += 1
            else:
                p["other"][f"{status} {ctype or '-'}"] += 1

    def totals(self):
        with self.lock:
            out = {"2xx": 0, "503": 0, "in_flight": 0, "other": collections.Counter(), "hangs": 0, "max_ms": 0.0}
            for p in self.by_phase.values():
                for k in ("2xx", "503", "in_flight"):
                    out[k] += p[k]
                out["other"].update(p["other"])
                out["hangs"] += p["hangs"]
                out["max_ms"] = max(out["max_ms"], p["max_ms"])
            return out


class Client:
    """requests with a timeout on every call, one session per thread, every answer tallied."""

    def __init__(self, base, timeout, tally):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.tally = tally
        self.local = threading.local()

    def session(self):
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
        return s

    def call(self, method, path, count=True, **kw):
        """(status, content type, JSON or None); status None when nothing answered in time.
        The answer's Retry-After (seconds) is left in `self.local.retry_after`."""
        started = time.monotonic()
        self.local.retry_after = None
        try:
            r = self.session().request(method, self.base + path, timeout=self.timeout, **kw)
        except requests.Timeout:
            if count:
                self.tally.record("hang", time.monotonic() - started)
            self.local.s = None
            return None, "timeout", None
        except requests.ConnectionError as e:
            if count:
                self.tally.record("error", time.monotonic() - started, type(e).__name__)
            # A fresh connection next time: the old one may be half-closed.
            self.local.s = None
            return None, "connection error", None
        elapsed = time.monotonic() - started
        ctype = r.headers.get("content-type", "")
        try:
            self.local.retry_after = float(r.headers.get("retry-after", ""))
        except ValueError:
            pass
        try:
            body = r.json()
        except ValueError:
            body = None
        if count:
            kind = body.get("type") if isinstance(body, dict) else None
            self.tally.record("answer", elapsed, r.status_code, ctype, kind)
        return r.status_code, ctype, body

    def pause(self, backoff):
        """Waits before a retry as a well-behaved client does: Retry-After when given (at most
        5 s), else `backoff`, with jitter so that retries do not arrive together."""
        hint = getattr(self.local, "retry_after", None)
        time.sleep(min(hint or backoff, 5.0) * random.uniform(0.5, 1.0))


class Applicants:
    """A few accounts (signing up hashes a password) and their submitted applications."""

    def __init__(self, api, accounts):
        self.api = api
        arrival = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
        self.fields = {
            "full_name": "Fault Tolerant", "passport_number": "F1234567", "date_of_birth": "1990-01-01",
            "nationality": "US", "visa_type": "tourist", "processing_speed": "standard",
            "intended_arrival_date": arrival,
        }
        with concurrent.futures.ThreadPoolExecutor(accounts) as pool:
            self.tokens = list(pool.map(self.account, range(accounts)))

    def post(self, path, count, until, **kw):
        """POSTs until something other than 503 or no answer comes back, or `until` passes."""
        backoff = 0.5
        while True:
            status, _, body = self.api.call("POST", path, count=count, **kw)
            if status not in (None, 503) or time.monotonic() > until:
                return status, body
            self.api.pause(backoff)
            backoff = min(backoff * 2, 5.0)

    def account(self, _):
        creds = {"email": f"faults-{uuid.uuid4().hex}@example.org", "password": "faults password 1234"}
        # Password hashing is bounded per core: a sign-up that waits too long is 503.
        until = time.monotonic() + 60
        status, body = self.post("/v1/auth/register", False, until, json=creds)
        if status != 201:
            raise RuntimeError(f"register answered {status}: {body}")
        status, body = self.post("/v1/auth/login", False, until, json=creds)
        if status != 200:
            raise RuntimeError(f"login answered {status}: {body}")
        return body["access_token"]

    def application(self, token, count=False, until=None):
        """A new submitted application of `token`'s applicant; None if `until` passed first.
        A retried create may leave a spare draft behind, which is harmless."""
        until = until or (time.monotonic() + 60)
        auth = {"authorization": f"Bearer {token}"}
        status, body = self.post("/v1/applications", count, until, json=self.fields, headers=auth)
        if status != 201:
            return None
        app = body["id"]
        status, body = self.post(f"/v1/applications/{app}/submit", count, until, headers=auth)
        if status == 409:
            # A retried submit whose first try went through.
            status, _, body = self.api.call("GET", f"/v1/applications/{app}", count=count, headers=auth)
        if status != 200 or body.get("status") != "submitted":
            return None
        return app

    def prepare(self, count):
        def one(i):
            token = self.tokens[i % len(self.tokens)]
            app = self.application(token)
            if app is None:
                raise RuntimeError("an application could not be made and submitted")
            return token, app

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(count)))


class Load:
    """Pays applications at `rate` per second until told to stop, then follows them to the end."""

    def __init__(self, api, applicants, rate, retry_until, stream_every):
        self.api = api
        self.applicants = applicants
        self.rate = rate
        self.retry_until = retry_until  # a callable: the monotonic deadline for retries
        self.lock = threading.Lock()
        self.payments = {}  # payment id -> {"app", "token", "status"}
        self.posts = {"sent": 0, "retried": 0, "gave_up": 0, "made_applications": 0}
        self.pending = set()
        self.stopping = threading.Event()
        # Every `stream_every`-th payment is also followed on its event stream, which is fed by
        # the API's LISTEN connection: it must show the final status even across an outage.
        self.stream_every = stream_every
        self.stream_pool = concurrent.futures.ThreadPoolExecutor(256)
        self.stream_deadline = float("inf")
        self.streams = {"watched": 0, "saw_final": 0, "reconnects": 0, "missed": []}

    def gave_up(self):
        with self.lock:
            self.posts["gave_up"] += 1

    def pay(self, token, app):
        if app is None:
            app = self.applicants.application(token, count=True, until=self.retry_until())
            if app is None:
                return self.gave_up()
            with self.lock:
                self.posts["made_applications"] += 1
        headers = {"authorization": f"Bearer {token}", "idempotency-key": str(uuid.uuid4())}
        body = {"provider": "stripe", "payment_method": "pm_card_visa"}
        backoff = 0.5
        for attempt in itertools.count():
            with self.lock:
                self.posts["sent"] += 1
                self.posts["retried"] += attempt > 0
            status, _, answer = self.api.call(
                "POST", f"/v1/applications/{app}/payments", json=body, headers=headers
            )
            if status == 202:
                pid = answer["id"]
                with self.lock:
                    self.payments[pid] = {"app": app, "token": token, "status": answer["status"]}
                    if answer["status"] not in TERMINAL:
                        self.pending.add(pid)
                    watch = len(self.payments) % self.stream_every == 0
                    self.streams["watched"] += watch
                if watch:
                    self.stream_pool.submit(self.watch, pid, token)
                return None
            # The same key again: a lost 202 is replayed, never a second payment.
            if time.monotonic() > self.retry_until():
                return self.gave_up()
            self.api.pause(backoff)
            backoff = min(backoff * 2, 5.0)

    def watch(self, pid, token):
        """Follows one payment's event stream until it shows a final status, reconnecting as a
        browser's EventSource does when the stream fails or ends early."""
        url = f"{self.api.base}/v1/payments/{pid}/events"
        headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        backoff = 0.5
        while time.monotonic() < self.stream_deadline:
            started = time.monotonic()
            try:
                # The stream sends a keep-alive every 15 s: 20 s of silence is a stalled stream.
                with requests.get(url, headers=headers, stream=True, timeout=(self.api.timeout, 20)) as r:
                    ctype = r.headers.get("content-type", "")
                    self.api.tally.record("answer", time.monotonic() - started, r.status_code, ctype)
                    if r.status_code == 200:
                        backoff = 0.5
                        for line in r.iter_lines(chunk_size=1024, decode_unicode=True):
                            if line and line.startswith("data:"):
                                if json.loads(line[5:]).get("status") in TERMINAL:
                                    with self.lock:
                                        self.streams["saw_final"] += 1
                                    return
                            if time.monotonic() >= self.stream_deadline:
                                break
            except requests.Timeout:
                self.api.tally.record("hang", time.monotonic() - started)
            except requests.ConnectionError:
                # Also a read timeout in the middle of a stream (requests wraps it so).
                pass
            if time.monotonic() >= self.stream_deadline:
                break
            with self.lock:
                self.streams["reconnects"] += 1
            time.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 5.0)
        with self.lock:
            self.streams["missed"].append(pid)

    def follow(self, pool):
        """GETs every payment not yet final, over and over, until stopped and none is left."""
        checked = {}
        while True:
            with self.lock:
                ids = list(self.pending)
            if not ids and self.stopping.is_set():
                return
            # Under load, a few reads a second beside the payments (the least recently checked
            # first: while Postgres is down each GET takes up to the pool's acquire timeout);
            # once the load has stopped, every open payment each round.
            if not self.stopping.is_set():
                ids = sorted(ids, key=lambda pid: checked.get(pid, 0.0))[:8]
            now = time.monotonic()
            for pid in ids:
                checked[pid] = now
            futures = {
                pool.submit(
                    self.api.call, "GET", f"/v1/payments/{pid}",
                    headers={"authorization": f"Bearer {self.payments[pid]['token']}"},
                ): pid
                for pid in ids
            }
            for f in concurrent.futures.as_completed(futures):
                pid = futures[f]
                status, _, body = f.result()
                if status == 200:
                    with self.lock:
                        self.payments[pid]["status"] = body["status"]
                        if body["status"] in TERMINAL:
                            self.pending.discard(pid)
            time.sleep(1.0)

    def run(self, prepared, stop_file, payers):
        """Open loop: one payment every 1/rate s whatever the answers, as real traffic arrives.
        Returns how many were offered and over how many seconds."""
        follower_pool = concurrent.futures.ThreadPoolExecutor(8)
        follower = threading.Thread(target=self.follow, args=(follower_pool,), daemon=True)
        follower.start()
        tokens = self.applicants.tokens
        more = ((tokens[i % len(tokens)], None) for i in itertools.count())
        started = time.monotonic()
        offered = 0
        with concurrent.futures.ThreadPoolExecutor(payers) as pool:
            futures = []
            for token, app in itertools.chain(prepared, more):
                if os.path.exists(stop_file):
                    break
                due = started + offered / self.rate
                time.sleep(max(0.0, due - time.monotonic()))
                futures.append(pool.submit(self.pay, token, app))
                offered += 1
            offering = time.monotonic() - started
            for f in futures:
                f.result()
        return offered, offering, follower, follower_pool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--sandbox", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--count", type=int, default=1400, help="applications prepared before the load")
    ap.add_argument("--accounts", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=10, help="a request slower than this is a hang")
    ap.add_argument("--converge-seconds", type=float, default=60)
    ap.add_argument("--stream-every", type=int, default=10, help="follow every n-th payment's event stream")
    args = ap.parse_args()
    work = args.workdir
    tally = Tally(work)
    api = Client(args.base, args.timeout, tally)
    sandbox = Client(args.sandbox, args.timeout, tally)

    t0 = time.monotonic()
    applicants = Applicants(api, args.accounts)
    prepared = applicants.prepare(args.count)
    print(f"faults: {len(prepared)} submitted applications prepared in {time.monotonic() - t0:.1f} s", flush=True)
    open(os.path.join(work, "ready"), "w").close()

    stop_file = os.path.join(work, "stop")
    stopped_at = []

    def retry_until():
        # Retries go on through the outages, and for a while after the load stops.
        if not stopped_at and os.path.exists(stop_file):
            stopped_at.append(time.monotonic())
        return stopped_at[0] + args.converge_seconds if stopped_at else float("inf")

    load = Load(api, applicants, args.rate, retry_until, args.stream_every)
    t_load = time.monotonic()
    offered, offering, follower, follower_pool = load.run(prepared, stop_file, payers=400)
    print(f"faults: {offered} payments offered in {offering:.1f} s ({offered / offering:.1f}/s, "
          f"{load.posts['made_applications']} on applications made during the load); the last accepted "
          f"{time.monotonic() - t_load:.1f} s after the first was offered", flush=True)

    # Convergence: every accepted payment final within the bound.
    load.stopping.set()
    deadline = time.monotonic() + args.converge_seconds
    while time.monotonic() < deadline:
        with load.lock:
            if not load.pending:
                break
        time.sleep(0.5)
    converge_secs = args.converge_seconds - max(0.0, deadline - time.monotonic())
    with load.lock:
        still_open = sorted(load.pending)
        load.pending.clear()
    follower.join(timeout=15)
    follower_pool.shutdown(wait=False)
    # Every final status is committed by now: a stream still waiting has missed its notification.
    load.stream_deadline = time.monotonic() + 15
    load.stream_pool.shutdown(wait=True)

    # The gateway's ledger, read after the services settled.
    _, _, charges = sandbox.call("GET", "/sandbox/charges", count=False)
    _, _, refunds = sandbox.call("GET", "/sandbox/refunds", count=False)
    _, _, events = sandbox.call("GET", "/sandbox/events", count=False)
    charges, refunds, events = charges or [], refunds or [], events or []

    payments = load.payments
    statuses = collections.Counter(p["status"] for p in payments.values())
    per_payment = collections.Counter(c.get("metadata", {}).get("payment_id") for c in charges)
    succeeded = {pid for pid, p in payments.items() if p["status"] == "succeeded"}
    charged_once = sum(1 for pid in succeeded if per_payment.get(pid) == 1)
    charged_twice = sorted(pid for pid, n in per_payment.items() if n > 1)
    charged_not_succeeded = sorted(pid for pid in per_payment if pid in payments and pid not in succeeded)
    charged_unknown = sorted(str(pid) for pid in per_payment if pid not in payments)
    # Only the types the endpoint subscribes to are sent (as at Stripe, `enabled_events`).
    events = [e for e in events if e.get("subscribed", True)]
    undelivered = [e["id"] for e in events if not e.get("delivered")]
    apps_paid = collections.Counter(p["app"] for p in payments.values())

    with open(os.path.join(work, "payments.csv"), "w", encoding="utf-8") as f:
        for pid, p in payments.items():
            f.write(f"{pid},{p['app']},{p['status']}\n")
    with open(os.path.join(work, "events.csv"), "w", encoding="utf-8") as f:
        for e in events:
            f.write(f"{e['id']},{e.get('type', '')}\n")

    totals = tally.totals()
    failures = []

    def check(ok, line):
        print(f"faults: {'ok  ' if ok else 'FAIL'} {line}", flush=True)
        if not ok:
            failures.append(line)

    for name, p in tally.by_phase.items():
        if name == "setup":
            continue
        other = ", ".join(f"{k}: {v}" for k, v in sorted(p["other"].items())) or "none"
        print(
            f"faults:      phase {name}: {p['2xx']} 2xx, {p['503']} 503 problem+json, "
            f"{p['hangs']} hangs, {p['in_flight']} 409 in flight, slowest {p['max_ms']:.0f} ms, other: {other}",
            flush=True,
        )
    other_total = sum(totals["other"].values())
    check(other_total == 0, f"every answer was 2xx or 503 problem+json: {totals['2xx']} 2xx, "
          f"{totals['503']} 503, other {other_total} {dict(totals['other']) or ''}".rstrip())
    check(totals["hangs"] == 0, f"no request took longer than {args.timeout:.0f} s: {totals['hangs']} hangs "
          f"(slowest answer {totals['max_ms']:.0f} ms)")
    check(load.posts["gave_up"] == 0, f"every payment offered was accepted: {len(payments)} of {offered} "
          f"({load.posts['sent']} POSTs, {load.posts['retried']} retries with the same key, "
          f"{load.posts['gave_up']} gave up {args.converge_seconds:.0f} s after the load stopped)")
    check(all(n == 1 for n in apps_paid.values()), "one payment per application (retries made no second payment)")
    check(not still_open, f"every payment reached a final status within {args.converge_seconds:.0f} s of the load "
          f"stopping: {len(payments) - len(still_open)} of {len(payments)} in {converge_secs:.1f} s "
          f"{dict(statuses)}" + (f"; open: {still_open[:3]}" if still_open else ""))
    check(len(succeeded) == len(payments), f"every payment succeeded: {len(succeeded)} of {len(payments)}")
    check(charged_once == len(succeeded) and not charged_twice and not charged_not_succeeded and not charged_unknown,
          f"exactly one charge per succeeded payment: {len(charges)} charges for {len(succeeded)} succeeded "
          f"({charged_once} charged once, {len(charged_twice)} more than once, "
          f"{len(charged_not_succeeded)} charged but not succeeded, {len(charged_unknown)} for payments the "
          f"load never saw accepted)")
    check(not refunds, f"no refunds at the gateway (the sweeper refunds duplicate charges): {len(refunds)}")
    check(not undelivered, f"every webhook was delivered: {len(events) - len(undelivered)} of {len(events)}")
    st = load.streams
    check(not st["missed"], f"every event stream followed showed its payment's final status: {st['saw_final']} of "
          f"{st['watched']} ({st['reconnects']} reconnects)" + (f"; missed: {st['missed'][:3]}" if st["missed"] else ""))

    result = {
        "prepared": len(prepared), "offered": offered, "offering_seconds": round(offering, 1),
        "payments": len(payments), "converged": len(payments) - len(still_open),
        "succeeded": len(succeeded), "charges": len(charges), "refunds": len(refunds),
        "events": len(events), "streams": {**st, "missed": len(st["missed"])}, "ok_2xx": totals["2xx"],
        "unavailable_503": totals["503"], "in_flight_409": totals["in_flight"], "other": other_total, "other_by_kind": dict(totals["other"]),
        "hangs": totals["hangs"], "posts": load.posts, "converge_seconds": round(converge_secs, 1),
        "failures": failures,
    }
    with open(os.path.join(work, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
