#!/usr/bin/env python3
"""Checks compose.yaml without Docker (CI has none).

1. Statically: compose.yaml validates against the Compose Specification's JSON schema
   (tests/compose/compose-spec.json, a copy whose references are all local), the profiles give a
   production shape that talks to Stripe and a demo shape that talks only to the sandbox, every
   service has a healthcheck, every worker a stop_grace_period longer than `work` takes to drain,
   and no secret is committed: each comes from `.env`, which `.env.example` documents.
2. By running it: the demo profile's evisa services (migrate, sandbox, serve, work) are started as
   local processes with exactly the command and environment compose would give them, interpolated
   from freshly generated secrets, with only these substitutions:
     - host names of compose services -> 127.0.0.1; the Postgres and Redis images' services are
       the local Postgres (trust auth) and Redis on their standard ports;
     - container ports (and ports published on localhost) -> free local ports, one per service and
       port, since every container has its own network namespace and these processes share one;
       binding 0.0.0.0 becomes binding 127.0.0.1;
     - the database: a fresh database on the local Postgres instead of the image's `evisa`; the
       image's owner login (POSTGRES_USER, a superuser there) becomes `postgres` (the superuser
       here); the service login gets a per-run suffix (Postgres roles are cluster-wide), in
       migrate's `--service-login` and in the DATABASE_URL of serve and work alike;
     - EVISA_REDIS_PREFIX gets a per-run value (Redis is shared).
   Then it pays a card payment end to end through the API, checks the sandbox's ledger, stops a
   worker with SIGTERM while a charge is in flight, and stops everything with SIGTERM within each
   service's stop_grace_period.

`--static` runs part 1 only. Prints one line per check; exits non-zero when any fails. Needs
EVISA_BIN (the `evisa` binary), psql, and Postgres and Redis on 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import jsonschema
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Another file may be checked instead (e.g. a deliberately broken copy).
COMPOSE = Path(os.environ.get("EVISA_COMPOSE_FILE", ROOT / "compose.yaml"))
SCHEMA = ROOT / "tests" / "compose" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DEMO = "demo"
# Docker's default when a service sets none.
DEFAULT_GRACE_S = 10.0
PG_HOST, PG_PORT, PG_ADMIN = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The variables that are secrets: each must come from .env, never be written in compose.yaml.
SECRET_VARS = (
    "EVISA_JWT_SECRET",
    "EVISA_RECEIPT_KEY",
    "EVISA_DATA_KEYS",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRETS",
)


# Local addresses only: never through a proxy from the environment.
HTTP = requests.Session()
HTTP.trust_env = False


class Report:
    """One line per check; remembers whether any failed."""

    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def check(self, ok: bool, what: str) -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def info(self, what: str) -> None:
        print(f"info {what}", flush=True)


class Abort(Exception):
    """A check failed that later checks depend on."""


# --- reading compose.yaml ---------------------------------------------------------------------

INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate_text(text: str, env: dict[str, str], missing: list[str], unset: list[str]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?message}, ${VAR?message}, ${VAR:+alternative}, ${VAR+alternative}."""

    def replace(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        is_unset = value is None
        is_empty = is_unset or value == ""
        if op is None:
            if is_unset:
                unset.append(name)
            return value or ""
        absent = is_empty if op.startswith(":") else is_unset
        kind = op[-1]
        if kind == "-":
            return interpolate_text(arg, env, missing, unset) if absent else value
        if kind == "?":
            if absent:
                missing.append(name)
                return ""
            return value
        return "" if absent else interpolate_text(arg, env, missing, unset)

    return INTERPOLATION.sub(replace, text)


def interpolate(node, env: dict[str, str], missing: list[str], unset: list[str]):
    if isinstance(node, str):
        return interpolate_text(node, env, missing, unset)
    if isinstance(node, list):
        return [interpolate(v, env, missing, unset) for v in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env, missing, unset) for k, v in node.items()}
    return node


def yaml_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for v in node:
            yield from yaml_strings(v)
    elif isinstance(node, dict):
        for v in node.values():
            yield from yaml_strings(v)


def referenced_vars(text: str) -> list[str]:
    """Every variable compose.yaml interpolates, in order of first appearance."""
    seen: list[str] = []
    for m in INTERPOLATION.finditer(text):
        name = m.group("braced") or m.group("bare")
        if name and name not in seen:
            seen.append(name)
    return seen


def required_vars(text: str) -> list[str]:
    return sorted(
        {m.group("braced") for m in INTERPOLATION.finditer(text) if (m.group("op") or "").endswith("?")}
    )


def vars_without_default(raw_text: str) -> list[str]:
    """The variables a fresh .env must set: all without a default."""
    names = []
    for m in INTERPOLATION.finditer(raw_text):
        name = m.group("braced") or m.group("bare")
        if not name or name in names:
            continue
        if (m.group("op") or "").endswith("-"):
            continue
        names.append(name)
    return names


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = {}
        for item in env:
            key, sep, value = item.partition("=")
            pairs[key] = value if sep else None
        env = pairs
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def active_services(services: dict, profiles: set[str]) -> list[str]:
    """The Compose Specification's rule: a service without profiles is always enabled, one with
    profiles only when one of them is active."""
    return [
        name
        for name, s in services.items()
        if not s.get("profiles") or profiles & set(s["profiles"])
    ]


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: (v or {}).get("condition", "service_started") for d, v in deps.items()}


def duration_s(text: str) -> float:
    """Compose durations: 1m30s, 45s, 1.5s, 500ms, 1h."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(text))
    if not parts or "".join(a + b for a, b in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def image_kind(service: dict) -> str:
    """`postgres` or `redis` for those images' services (the local ones stand in for them),
    `evisa` for services built from this repository's Dockerfile."""
    image = str(service.get("image", ""))
    if "build" in service:
        return "evisa"
    if image.split(":")[0].split("/")[-1] == "postgres":
        return "postgres"
    if image.split(":")[0].split("/")[-1] == "redis":
        return "redis"
    return "other"


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT, exec form."""
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    if not m:
        raise Abort("Dockerfile has no exec-form ENTRYPOINT")
    return json.loads(m.group(1))


def source_seconds(path: Path, pattern: str) -> float | None:
    m = re.search(pattern, path.read_text(), re.S)
    return float(m.group(1)) if m else None


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        pairs[key.strip()] = value.strip().strip("'\"")
    return pairs


# --- static checks ----------------------------------------------------------------------------


def local_refs_only(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and not v.startswith("#"):
                found.append(v)
            found += local_refs_only(v)
    elif isinstance(node, list):
        for v in node:
            found += local_refs_only(v)
    return found


def schema_validator():
    schema = json.loads(SCHEMA.read_text())
    if "draft-07" not in schema.get("$schema", ""):
        raise Abort(f"{SCHEMA.name}: expected a draft-07 schema, found {schema.get('$schema')}")
    jsonschema.Draft7Validator.check_schema(schema)
    return schema, jsonschema.Draft7Validator(schema)


def schema_errors(validator, document) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    ]


def static_checks(r: Report, raw_text: str, raw: dict, generated: dict[str, str]) -> dict:
    schema, validator = schema_validator()
    remote = local_refs_only(schema)
    r.check(
        not remote,
        f"schema: {SCHEMA.relative_to(ROOT)} is draft-07 with only local $refs "
        f"(resolves offline; {len(remote)} remote)",
    )
    errors = schema_errors(validator, raw)
    r.check(not errors, f"schema: compose.yaml as committed, {len(errors)} errors against the Compose Specification")
    for e in errors[:10]:
        print(f"     {e}")
    missing, unset = [], []
    model = interpolate(raw, generated, missing, unset)
    errors = schema_errors(validator, model)
    r.check(not errors, f"schema: compose.yaml interpolated from a fresh .env, {len(errors)} errors")
    for e in errors[:10]:
        print(f"     {e}")
    r.check(
        not missing and not unset,
        f"interpolation: every variable set by the fresh .env "
        f"({len(referenced_vars(raw_text))} referenced; missing {missing + unset or 'none'})",
    )

    services: dict = model["services"]
    refusal, no_env_unset = [], []
    interpolate(raw, {}, refusal, no_env_unset)
    required = required_vars(raw_text)
    r.check(
        sorted(set(refusal)) == required and len(required) >= len(SECRET_VARS),
        f"no .env: compose refuses to start, naming {len(set(refusal))} required variables "
        f"({', '.join(required)})",
    )

    # Committed secrets: every secret and every password in compose.yaml is a reference to .env.
    committed = []
    for name, s in raw["services"].items():
        for key, value in environment_of(s).items():
            if key in SECRET_VARS or key.endswith("PASSWORD"):
                if not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value):
                    committed.append(f"{name}.{key}")
            if value.startswith(("postgres://", "postgresql://")):
                m = re.match(r"postgres(?:ql)?://[^:/@]+:(.*)@[^@]*$", value)
                password = m.group(1) if m else ""
                if password and not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", password):
                    committed.append(f"{name}.{key} (password)")
    r.check(not committed, f"secrets: none committed; each secret and password is a ${{VAR:?}} from .env"
            f"{' (literal: ' + ', '.join(committed) + ')' if committed else ''}")

    example = parse_env_file(ENV_EXAMPLE)
    example_text = ENV_EXAMPLE.read_text()
    undocumented = [
        v for v in referenced_vars(raw_text) if not re.search(rf"^#?\s*{v}=", example_text, re.M)
    ]
    r.check(
        not undocumented,
        f".env.example: documents all {len(referenced_vars(raw_text))} variables compose.yaml uses "
        f"(undocumented: {undocumented or 'none'})",
    )

    # Profiles. A plain `up` enables COMPOSE_PROFILES from .env; `--profile demo` replaces it.
    default_profiles = {p for p in example.get("COMPOSE_PROFILES", "").split(",") if p}
    all_profiles = sorted({p for s in services.values() for p in s.get("profiles") or []})
    r.check(DEMO in all_profiles, f"profiles: {all_profiles} (a `{DEMO}` profile exists)")
    r.check(
        bool(default_profiles) and DEMO not in default_profiles,
        f"profiles: .env.example sets COMPOSE_PROFILES={','.join(sorted(default_profiles)) or '(unset)'} for a plain `up`",
    )

    def by_command(names, word):
        return [n for n in names if image_kind(services[n]) == "evisa" and command_of(services[n])[:1] == [word]]

    def shape(profiles: set[str]):
        names = active_services(services, profiles)
        broken = [
            f"{n}->{d}" for n in names for d in depends_on(services[n]) if d not in names
        ]
        return names, broken

    prod, prod_broken = shape(default_profiles)
    demo, demo_broken = shape({DEMO})
    bare, _ = shape(set())
    prod_gateway_users = by_command(prod, "serve") + by_command(prod, "work")
    prod_sandboxes = by_command(prod, "sandbox")
    r.check(
        not prod_broken
        and by_command(prod, "serve")
        and by_command(prod, "work")
        and not prod_sandboxes
        and all("STRIPE_API_BASE" not in environment_of(services[n]) for n in prod_gateway_users),
        f"shape `docker compose up`: {', '.join(prod)}; serve and work talk to Stripe itself, "
        f"no sandbox{'; broken depends_on ' + str(prod_broken) if prod_broken else ''}",
    )
    demo_sandboxes = by_command(demo, "sandbox")
    demo_gateway_users = by_command(demo, "serve") + by_command(demo, "work")
    wrong_gateway = []
    for n in demo_gateway_users:
        base = environment_of(services[n]).get("STRIPE_API_BASE", "")
        if urllib.parse.urlsplit(base).hostname not in demo_sandboxes:
            wrong_gateway.append(n)
    webhook_targets = {
        urllib.parse.urlsplit(environment_of(services[s]).get("EVISA_PUBLIC_BASE_URL", "")).hostname
        for s in demo_sandboxes
    }
    r.check(
        not demo_broken
        and bool(demo_sandboxes)
        and by_command(demo, "serve")
        and by_command(demo, "work")
        and not wrong_gateway
        and webhook_targets <= set(by_command(demo, "serve")),
        f"shape `docker compose --profile {DEMO} up`: {', '.join(demo)}; every serve and work "
        f"reaches Stripe at {', '.join(demo_sandboxes) or '(no sandbox)'}, whose webhooks go to "
        f"{', '.join(sorted(h or '?' for h in webhook_targets))}"
        f"{'; not through the sandbox: ' + str(wrong_gateway) if wrong_gateway else ''}"
        f"{'; broken depends_on ' + str(demo_broken) if demo_broken else ''}",
    )
    shared_gateway_users = set(prod_gateway_users) & set(demo_gateway_users)
    r.check(
        not shared_gateway_users and not (by_command(bare, "serve") + by_command(bare, "work")),
        f"shapes: no serve/work runs in both (shared: {sorted(set(prod) & set(demo)) or 'none'}); "
        f"with no profile at all: {bare or 'no service'}",
    )

    no_health = [n for n, s in services.items() if not s.get("healthcheck")]
    disabled = [n for n, s in services.items() if (s.get("healthcheck") or {}).get("disable") in (True, "true")]
    # A disabled healthcheck is truthful only for a one-shot that others wait out.
    awaited = {d for s in services.values() for d, c in depends_on(s).items() if c == "service_completed_successfully"}
    r.check(
        not no_health and set(disabled) <= awaited,
        f"healthchecks: {len(services) - len(no_health)}/{len(services)} services declare one; "
        f"disabled for the one-shots {disabled or 'none'} (others wait for them to exit 0)"
        f"{'; missing: ' + str(no_health) if no_health else ''}",
    )

    drain = source_seconds(ROOT / "worker" / "src" / "lib.rs", r"\.shutdown_timeout\(Duration::from_secs\((\d+)\)\)")
    serve_drain = source_seconds(
        ROOT / "src" / "main.rs",
        r"run_with_graceful_shutdown\(app,\s*shutdown\.wait\(\),\s*Some\(Duration::from_secs\((\d+)\)\)",
    )
    # Before that, `serve` drains with /readyz at 503 (EVISA_SHUTDOWN_DRAIN_SECONDS, production default).
    serve_pre_drain = source_seconds(
        ROOT / "core" / "src" / "config" / "mod.rs",
        r"\"EVISA_SHUTDOWN_DRAIN_SECONDS\",\s*std::time::Duration::from_secs\(if dev \{ 0 \} else \{ (\d+) \}\)",
    )
    if serve_drain is not None:
        serve_drain = None if serve_pre_drain is None else serve_drain + serve_pre_drain
    for word, bound, where in (
        ("work", drain, "worker/src/lib.rs shutdown_timeout"),
        ("serve", serve_drain, "drain + graceful shutdown, src/main.rs and core/src/config/mod.rs"),
    ):
        names = [n for n in services if image_kind(services[n]) == "evisa" and command_of(services[n])[:1] == [word]]
        periods = {n: duration_s(services[n].get("stop_grace_period", f"{DEFAULT_GRACE_S}s")) for n in names}
        short = [n for n, p in periods.items() if bound is None or p <= bound]
        unset = [n for n in names if "stop_grace_period" not in services[n]]
        shown = ", ".join(f"{n} {p:g}s" for n, p in periods.items())
        r.check(
            bool(names) and not unset and not short,
            f"stop_grace_period of `{word}` services: {shown} > {bound if bound is not None else '?'} s "
            f"drain bound ({where}){'; unset (Docker default): ' + ', '.join(unset) if unset else ''}",
        )
    return model


# --- running the demo ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_ADMIN,
         "-d", database, "-Atc", sql],
        check=True, capture_output=True, text=True,
    ).stdout


class Localiser:
    """The documented substitutions, from compose's network to this machine."""

    def __init__(self, services: dict, active: list[str], run_id: str, database: str) -> None:
        self.services = services
        self.active = active
        self.run_id = run_id
        self.database = database
        self.ports: dict[tuple[str, int], int] = {}
        self.logins: dict[str, str] = {}
        self.redis_prefix = f"evisa-compose-{run_id}"

    def port(self, service: str, container_port: int) -> int:
        key = (service, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def login(self, name: str) -> str:
        if name not in self.logins:
            self.logins[name] = f"{name}_{self.run_id}"
        return self.logins[name]

    def publisher(self, host_port: int) -> tuple[str, int] | None:
        """The active service that publishes `host_port` on the host, and its container port."""
        for n in self.active:
            for spec in self.services[n].get("ports") or []:
                parts = str(spec).split(":")
                if len(parts) >= 2 and parts[-2].isdigit() and int(parts[-2]) == host_port:
                    return n, int(parts[-1].split("/")[0])
        return None

    def address(self, own: str, host: str, port: int) -> str | None:
        kind = image_kind(self.services[host]) if host in self.services else None
        if kind == "postgres":
            return f"{PG_HOST}:{PG_PORT}"
        if kind == "redis":
            return f"{REDIS_HOST}:{REDIS_PORT}"
        if host in self.services:
            return f"127.0.0.1:{self.port(host, port)}"
        if host == "localhost" and (published := self.publisher(port)):
            return f"127.0.0.1:{self.port(*published)}"
        if host in ("0.0.0.0", "127.0.0.1", "localhost"):
            return f"127.0.0.1:{self.port(own, port)}"
        return None

    def text(self, own: str, value: str) -> str:
        def replace(m: re.Match) -> str:
            return self.address(own, m.group(1), int(m.group(2))) or m.group(0)

        return re.sub(r"(?<![\w.-])([A-Za-z0-9_.-]+):(\d{2,5})(?!\d)", replace, value)

    def postgres_url(self, value: str) -> str:
        url = urllib.parse.urlsplit(value)
        server = self.services.get(url.hostname or "")
        if server is None or image_kind(server) != "postgres":
            raise Abort(f"DATABASE_URL points at {url.hostname}, which is not a Postgres service")
        owner = environment_of(server).get("POSTGRES_USER", "postgres")
        user = PG_ADMIN if url.username == owner else self.login(url.username or "")
        password = f":{url.password}" if url.password else ""
        return urllib.parse.urlunsplit(
            (url.scheme, f"{user}{password}@{PG_HOST}:{PG_PORT}", f"/{self.database}", url.query, "")
        )

    def environment(self, own: str) -> dict[str, str]:
        env = {}
        for key, value in environment_of(self.services[own]).items():
            if value.startswith(("postgres://", "postgresql://")):
                value = self.postgres_url(value)
            elif key == "EVISA_REDIS_PREFIX":
                value = self.redis_prefix
            elif key in SECRET_VARS or key.endswith("PASSWORD"):
                pass
            else:
                value = self.text(own, value)
            env[key] = value
        return env

    def command(self, own: str, evisa_bin: str) -> list[str]:
        args = command_of(self.services[own])
        out = []
        for i, a in enumerate(args):
            out.append(self.login(a) if i > 0 and args[i - 1] == "--service-login" else a)
        image_entry = entrypoint()
        if image_entry[:1] != ["evisa"]:
            raise Abort(f"the image's ENTRYPOINT is {image_entry}, not evisa")
        return [evisa_bin, *image_entry[1:], *out]

    def healthcheck(self, own: str) -> list[str] | None:
        test = (self.services[own].get("healthcheck") or {}).get("test")
        if not test:
            return None
        if isinstance(test, str):
            return ["sh", "-c", self.text(own, test)]
        if test[0] == "CMD":
            return [self.text(own, t) for t in test[1:]]
        if test[0] == "CMD-SHELL":
            return ["sh", "-c", self.text(own, " ".join(test[1:]))]
        return None


class Stack:
    """The demo's evisa services as local processes; stops and removes everything on close."""

    def __init__(self, evisa_bin: str, tmp: Path, secret_values: list[str]) -> None:
        self.evisa_bin = evisa_bin
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[str, float] = {}
        self.secret_values = [s for s in secret_values if len(s) >= 8]

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        # Only what compose gives the container (the image adds PATH).
        proc_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        proc = subprocess.Popen(argv, env=proc_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[name] = proc
        self.started[name] = time.monotonic()
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        for s in self.secret_values:
            text = text.replace(s, "***")
        return text

    def tail(self, name: str, lines: int = 15) -> None:
        for line in self.log(name).splitlines()[-lines:]:
            print(f"     {name}| {line[:300]}")

    def stop(self, name: str, grace: float) -> tuple[int | None, float]:
        """SIGTERM, then wait up to `grace`; (exit status or None if it had to be killed, seconds)."""
        proc = self.procs[name]
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        return rc, time.monotonic() - t0

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(interval)
    return None


def generate_env(evisa_bin: str, names: list[str]) -> dict[str, str]:
    """A fresh .env: random secrets of the shapes `serve` demands."""

    def b64() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    def data_keys() -> str:
        return subprocess.run([evisa_bin, "keys", "generate", "--id", "k1"], check=True,
                              capture_output=True, text=True).stdout.strip()

    generators = {
        "EVISA_JWT_SECRET": b64,
        "EVISA_RECEIPT_KEY": b64,
        "EVISA_DATA_KEYS": data_keys,
        "STRIPE_SECRET_KEY": lambda: "sk_test_" + secrets.token_hex(24),
        "STRIPE_WEBHOOK_SECRETS": lambda: "whsec_" + secrets.token_hex(32),
        # Passwords go into URLs: hex only.
        "POSTGRES_PASSWORD": lambda: secrets.token_hex(32),
        "EVISA_SERVICE_DB_PASSWORD": lambda: secrets.token_hex(32),
    }
    unknown = [n for n in names if n not in generators]
    if unknown:
        raise Abort(f"no generator for {unknown}: teach scripts/compose_check.py what they hold")
    return {n: generators[n]() for n in names}


def api_call(method: str, url: str, token: str | None = None, body=None, headers=None):
    h = dict(headers or {})
    if token:
        h["authorization"] = f"Bearer {token}"
    resp = HTTP.request(method, url, json=body, headers=h, timeout=15)
    try:
        data = resp.json()
    except ValueError:
        data = None
    return resp.status_code, data


def submitted_application(base: str, token: str, name: str) -> tuple[str, dict]:
    arrival = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    status, app = api_call("POST", f"{base}/v1/applications", token, {
        "full_name": name, "passport_number": "X1234567", "date_of_birth": "1990-05-17",
        "nationality": "FR", "visa_type": "tourist", "processing_speed": "standard",
        "intended_arrival_date": arrival,
    })
    if status != 201 and status != 200:
        raise Abort(f"POST /v1/applications answered {status}: {app}")
    status, submitted = api_call("POST", f"{base}/v1/applications/{app['id']}/submit", token)
    if status not in (200, 201) or submitted.get("status") != "submitted":
        raise Abort(f"submit answered {status}: {submitted}")
    return app["id"], submitted


def pay(base: str, token: str, application: str) -> tuple[int, dict]:
    return api_call(
        "POST", f"{base}/v1/applications/{application}/payments", token,
        {"provider": "stripe", "payment_method": "pm_card_visa"},
        {"idempotency-key": str(uuid.uuid4())},
    )


def payment_status(base: str, token: str, payment: str) -> str | None:
    status, body = api_call("GET", f"{base}/v1/payments/{payment}", token)
    return body.get("status") if status == 200 and body else None


def refuses_example_values(r: Report, services: dict, localiser: Localiser, evisa_bin: str, raw: dict) -> None:
    """`serve` and `work` with the services' environment interpolated from .env.example."""
    example = parse_env_file(ENV_EXAMPLE)
    missing, unset = [], []
    model = interpolate(raw, example, missing, unset)
    shown = [example[v] for v in SECRET_VARS if v in example]
    for word in ("serve", "work"):
        name = next(n for n in localiser.active
                    if image_kind(services[n]) == "evisa" and command_of(services[n])[:1] == [word])
        example_localiser = Localiser(model["services"], localiser.active, localiser.run_id, localiser.database)
        example_localiser.ports = localiser.ports
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **example_localiser.environment(name)}
        t0 = time.monotonic()
        try:
            out = subprocess.run(example_localiser.command(name, evisa_bin), env=env,
                                 capture_output=True, text=True, timeout=30)
            rc, text = out.returncode, out.stdout + out.stderr
        except subprocess.TimeoutExpired:
            rc, text = None, ""
        named = [v for v in SECRET_VARS if v in text]
        leaked = [v for v, value in zip(SECRET_VARS, shown) if value and value in text]
        r.check(
            rc not in (0, None) and len(named) == len(SECRET_VARS) and not leaked and not missing,
            f"{name} (`{word}`) with .env.example's values: refused (exit {rc}) in "
            f"{time.monotonic() - t0:.1f} s naming {len(named)}/{len(SECRET_VARS)} secrets, "
            f"values echoed: {len(leaked)}",
        )


def run_demo(r: Report, raw: dict, raw_text: str, evisa_bin: str) -> None:
    run_id = secrets.token_hex(4)
    database = f"evisa_compose_{run_id}"
    r.check(answers(PG_HOST, PG_PORT) and answers(REDIS_HOST, REDIS_PORT),
            f"local Postgres {PG_HOST}:{PG_PORT} and Redis {REDIS_HOST}:{REDIS_PORT} answer")
    env_file = generate_env(evisa_bin, vars_without_default(raw_text))
    missing, unset = [], []
    model = interpolate(raw, env_file, missing, unset)
    services = model["services"]
    active = active_services(services, {DEMO})
    evisa_services = [n for n in active if image_kind(services[n]) == "evisa"]
    others = [n for n in active if image_kind(services[n]) not in ("evisa", "postgres", "redis")]
    if others:
        raise Abort(f"no local stand-in for the demo's services {others}")
    localiser = Localiser(services, active, run_id, database)
    commands = {n: command_of(services[n])[:1][0] for n in evisa_services}
    r.check(
        sorted(set(commands.values())) == ["migrate", "sandbox", "serve", "work"],
        f"demo runs as local processes: {', '.join(f'{n} ({c})' for n, c in commands.items())}; "
        f"Postgres and Redis images -> the local ones",
    )

    tmp = Path(tempfile.mkdtemp(prefix="evisa-compose-"))
    stack = Stack(evisa_bin, tmp, list(env_file.values()))
    created_db = False
    try:
        refuses_example_values(r, services, localiser, evisa_bin, raw)

        psql(f'CREATE DATABASE "{database}"')
        created_db = True

        # In the order depends_on demands; each condition met before the dependant starts.
        order: list[str] = []
        pending = list(evisa_services)
        while pending:
            ready = [n for n in pending
                     if all(d in order or image_kind(services[d]) != "evisa" for d in depends_on(services[n]))]
            if not ready:
                raise Abort(f"depends_on cycle among {pending}")
            order.append(ready[0])
            pending.remove(ready[0])

        exits: dict[str, int] = {}

        def satisfied(name: str) -> None:
            for dep, condition in depends_on(services[name]).items():
                if image_kind(services[dep]) != "evisa":
                    continue
                if condition == "service_completed_successfully":
                    if dep not in exits:
                        raise Abort(f"{dep} had not finished before {name}")
                    if exits[dep] != 0:
                        raise Abort(f"{dep} exited {exits[dep]}, so {name} would not start")

        for name in order:
            satisfied(name)
            argv = localiser.command(name, evisa_bin)
            env = localiser.environment(name)
            word = commands[name]
            proc = stack.start(name, argv, env)
            t0 = time.monotonic()
            if word == "migrate":
                try:
                    exits[name] = proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    exits[name] = -1
                ok = r.check(exits[name] == 0, f"{name}: `{' '.join(command_of(services[name]))}` "
                             f"exited {exits[name]} in {time.monotonic() - t0:.1f} s")
            elif word == "sandbox":
                host, port = env["EVISA_SANDBOX_ADDR"].rsplit(":", 1)
                ok = r.check(bool(wait_until(lambda: proc.poll() is None and answers(host, int(port)), 20)),
                             f"{name}: `sandbox` listening on {host}:{port} in {time.monotonic() - t0:.1f} s")
            elif word == "serve":
                addr = env["EVISA_HTTP_ADDR"]

                def ready_api():
                    if proc.poll() is not None:
                        return "exited"
                    try:
                        return HTTP.get(f"http://{addr}/readyz", timeout=1).status_code == 200
                    except requests.RequestException:
                        return False

                outcome = wait_until(ready_api, 40)
                ok = r.check(outcome is True, f"{name}: `serve` ready (/readyz 200 on {addr}) in {time.monotonic() - t0:.1f} s")
            else:
                outcome = wait_until(lambda: "exited" if proc.poll() is not None else "workers starting" in stack.log(name), 40)
                ok = r.check(outcome is True, f"{name}: `work` accepted its configuration and started in {time.monotonic() - t0:.1f} s")
            if not ok:
                stack.tail(name)
                raise Abort(f"{name} did not start")

        for name in order:
            test = localiser.healthcheck(name)
            if test is None:
                r.info(f"healthcheck {name}: disabled")
                continue
            try:
                rc = subprocess.run(test, capture_output=True, timeout=5).returncode
            except (subprocess.TimeoutExpired, FileNotFoundError):
                rc = -1
            # The very command Docker would run (curl on the service's own port, localised).
            r.check(rc == 0, f"healthcheck {name}: `{' '.join(test[:1] + test[-1:])}` -> {'healthy' if rc == 0 else f'exit {rc}'}")

        api = next(n for n in order if commands[n] == "serve")
        worker = next(n for n in order if commands[n] == "work")
        sandbox = next(n for n in order if commands[n] == "sandbox")
        base = f"http://{localiser.environment(api)['EVISA_HTTP_ADDR']}"
        sandbox_base = f"http://{localiser.environment(sandbox)['EVISA_SANDBOX_ADDR']}"
        token = pay_and_check(r, base, sandbox_base, run_id)
        drain_check(r, stack, services, base, sandbox_base, worker, token)

        for name in [n for n in reversed(order) if n in stack.procs and stack.procs[n].poll() is None]:
            grace = duration_s(services[name].get("stop_grace_period", f"{DEFAULT_GRACE_S:g}s"))
            rc, took = stack.stop(name, grace)
            r.check(rc == 0, f"{name}: SIGTERM -> exit {rc if rc is not None else 'none (killed)'} "
                    f"in {took:.1f} s (stop_grace_period {grace:g} s)")
    except Abort as e:
        r.check(False, str(e))
    finally:
        stack.close()
        if r.failed:
            for name in stack.procs:
                stack.tail(name, 8)
        if created_db:
            try:
                psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            except subprocess.CalledProcessError as e:
                print(f"warn could not drop {database}: {e.stderr.strip()}")
        for login in localiser.logins.values():
            try:
                psql(f'DROP ROLE IF EXISTS "{login}"')
            except subprocess.CalledProcessError as e:
                print(f"warn could not drop role {login}: {e.stderr.strip()}")
        drop_redis_keys(localiser.redis_prefix)
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def drop_redis_keys(prefix: str) -> None:
    try:
        keys = subprocess.run(["redis-cli", "-h", REDIS_HOST, "-p", str(REDIS_PORT), "--scan", "--pattern", f"{prefix}*"],
                              capture_output=True, text=True, timeout=10).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "-h", REDIS_HOST, "-p", str(REDIS_PORT), "del", *keys[i:i + 500]],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass


def pay_and_check(r: Report, base: str, sandbox_base: str, run_id: str) -> str:
    """Pays one application by card; returns the applicant's token."""
    t0 = time.monotonic()
    creds = {"email": f"compose-{run_id}@example.org", "password": "correct horse battery staple"}
    status, _ = api_call("POST", f"{base}/v1/auth/register", body=creds)
    if status not in (200, 201):
        raise Abort(f"register answered {status}")
    status, login = api_call("POST", f"{base}/v1/auth/login", body=creds)
    if status != 200:
        raise Abort(f"login answered {status}")
    token = login["access_token"]
    application, submitted = submitted_application(base, token, "Ann Lee")
    fee = submitted.get("fee") or {}
    status, payment = pay(base, token, application)
    if not r.check(status == 202, f"payment: POST answered {status} ({payment.get('status') if payment else '-'}) "
                   f"for a fee of {fee.get('amount')} {fee.get('currency')}"):
        raise Abort("the payment was not accepted")
    final = wait_until(lambda: (s := payment_status(base, token, payment["id"])) in ("succeeded", "failed", "expired") and s, 30)
    took = time.monotonic() - t0
    r.check(final == "succeeded", f"payment: pm_card_visa -> {final or 'still pending after 30 s'} "
            f"(register to succeeded in {took:.1f} s)")
    _, app = api_call("GET", f"{base}/v1/applications/{application}", token)
    r.check((app or {}).get("status") == "paid", f"application: {(app or {}).get('status')}")
    charges = HTTP.get(f"{sandbox_base}/sandbox/charges", timeout=5).json()
    amounts = [(c["amount"], c["currency"]) for c in charges]
    r.check(len(charges) == 1 and amounts[0] == (fee.get("amount"), str(fee.get("currency", "")).lower()),
            f"sandbox ledger: {len(charges)} charge(s) {amounts}")

    # Only the types the endpoint subscribes to (`enabled_events`) are sent.
    def subscribed():
        events = HTTP.get(f"{sandbox_base}/sandbox/events", timeout=5).json()
        return [e for e in events if e.get("subscribed", True)]

    def delivered():
        events = subscribed()
        return events if events and all(e.get("delivered") for e in events) else None

    events = wait_until(delivered, 15, 0.2) or subscribed()
    done = sum(1 for e in events if e.get("delivered"))
    r.check(bool(events) and done == len(events),
            f"webhooks: {done}/{len(events)} signed with the .env secret and accepted by the api "
            f"({', '.join(sorted({e.get('type', '?') for e in events}))})")
    return token


def drain_check(r: Report, stack: Stack, services: dict, base: str, sandbox_base: str, worker: str,
                token: str) -> None:
    """SIGTERM the worker while a charge is in flight: the job must finish before it exits."""
    application, _ = submitted_application(base, token, "Bo Lee")
    # Each Stripe call the charge makes now takes this long.
    HTTP.post(f"{sandbox_base}/sandbox/faults", json={"latency_ms": 1500}, timeout=5).raise_for_status()
    try:
        status, payment = pay(base, token, application)
        if status != 202:
            raise Abort(f"second payment answered {status}")
        in_flight = wait_until(lambda: payment_status(base, token, payment["id"]) == "processing", 10, 0.05)
        grace = duration_s(services[worker].get("stop_grace_period", f"{DEFAULT_GRACE_S:g}s"))
        rc, took = stack.stop(worker, grace)
        final = payment_status(base, token, payment["id"])
    finally:
        HTTP.post(f"{sandbox_base}/sandbox/faults", json={}, timeout=5)
    charges = HTTP.get(f"{sandbox_base}/sandbox/charges", timeout=5).json()
    r.check(
        bool(in_flight) and rc == 0 and final == "succeeded",
        f"{worker}: SIGTERM during a charge ({'in flight' if in_flight else 'never seen processing'}) "
        f"-> exit {rc if rc is not None else 'none (killed)'} in {took:.1f} s "
        f"(stop_grace_period {grace:g} s); the payment it was charging: {final}",
    )
    intents = {c["payment_intent"] for c in charges}
    r.check(len(charges) == 2 and len(intents) == 2, f"sandbox ledger: {len(charges)} charges for 2 payments")


def main() -> int:
    evisa_bin = os.environ.get("EVISA_BIN") or str(
        Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/evisa/target")) / "debug" / "evisa")
    if not os.access(evisa_bin, os.X_OK):
        print(f"FAIL no evisa binary at {evisa_bin} (set EVISA_BIN, or run scripts/compose_check.sh)")
        return 1
    r = Report()
    t0 = time.monotonic()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        raw = yaml.safe_load(COMPOSE.read_text())
        # What compose interpolates: the values, not the comments.
        raw_text = "\n".join(yaml_strings(raw))
        generated = generate_env(evisa_bin, vars_without_default(raw_text))
        static_checks(r, raw_text, raw, generated)
        if "--static" not in sys.argv[1:]:
            run_demo(r, raw, raw_text, evisa_bin)
    except Abort as e:
        r.check(False, str(e))
    except KeyboardInterrupt as e:
        r.check(False, f"interrupted ({e})")
    print(f"compose check: {r.passed} passed, {r.failed} failed in {time.monotonic() - t0:.1f} s")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
