"""Smoke test of the evisa-pay API through the client that openapi-python-client generates.

Generate the client first (scripts/clients.sh does this):

    openapi-python-client generate --path openapi/openapi.json \
        --output-path clients/python/generated --overwrite

then run `python clients/python/smoke.py` with EVISA_BASE_URL pointing at a running server.

Every call goes through the generated package (`evisa_pay_client`): its operation modules, its
models and its `Client`/`AuthenticatedClient`; no hand-written HTTP.

A response that the generated models cannot parse is a mismatch between the OpenAPI document and
what the server sends; it fails the run (EVISA_SMOKE_STRICT=0 reports it as a WARNING instead).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated"))

try:
    from evisa_pay_client import AuthenticatedClient, Client
    from evisa_pay_client.api.applications import (
        create_application,
        get_application,
        submit_application,
    )
    from evisa_pay_client.api.auth import login, register
    from evisa_pay_client.api.fees import quote_fee
    from evisa_pay_client.api.payments import (
        check_receipt,
        create_group_payment,
        get_application_receipt,
        get_payment,
        get_receipt,
    )
    from evisa_pay_client.models import (
        AccessToken,
        Account,
        Application,
        ApplicationFields,
        ApplicationStatus,
        CountryCode,
        Credentials,
        FeeQuote,
        GroupPaymentRequest,
        Payment,
        PaymentProvider,
        PaymentStatus,
        Problem,
        ProcessingSpeed,
        Receipt,
        ReceiptCheck,
        Registration,
        VisaType,
    )
    from evisa_pay_client.types import Response, Unset
except ImportError as e:  # pragma: no cover - reported, not raised
    print(
        f"python smoke: FAIL: cannot import the generated client from {HERE / 'generated'}: {e}\n"
        "  generate it with: openapi-python-client generate --path openapi/openapi.json "
        "--output-path clients/python/generated --overwrite",
        file=sys.stderr,
    )
    sys.exit(1)

PASSWORD = "correct horse battery staple"
STRICT = os.environ.get("EVISA_SMOKE_STRICT", "1") not in ("", "0", "false", "no")


class SmokeFailure(Exception):
    pass


warnings: list[str] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def describe(response: Response[Any]) -> str:
    body = response.content.decode("utf-8", "replace")
    if len(body) > 500:
        body = body[:500] + "..."
    request_id = response.headers.get("x-request-id", "-")
    return f"HTTP {int(response.status_code)} (x-request-id {request_id}): {body}"


def call(what: str, fn: Callable[..., Response[Any]], **kwargs: Any) -> Response[Any]:
    """Calls a generated `sync_detailed`; a model that cannot parse the body fails with context."""
    try:
        return fn(**kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise SmokeFailure(
            f"{what}: the generated client could not parse the response "
            f"({type(e).__name__}: {e}); the server's body does not match the OpenAPI document"
        ) from e


def expect(what: str, response: Response[Any], status: HTTPStatus, model: type) -> Any:
    check(
        response.status_code == status,
        f"{what}: expected HTTP {int(status)}, got {describe(response)}",
    )
    check(
        isinstance(response.parsed, model),
        f"{what}: expected a parsed {model.__name__}, got {type(response.parsed).__name__}",
    )
    return response.parsed


def expect_problem(
    what: str,
    module: Any,
    status: HTTPStatus,
    client: Client | AuthenticatedClient,
    **kwargs: Any,
) -> str:
    """Calls `module` expecting an `application/problem+json` answer with `status`.

    Goes through the generated module's `sync_detailed`; if the generated `Problem` model rejects
    the body, the request is repeated through the generated module's own request description
    (`_get_kwargs`) and the generated client's httpx client to check at least the status and the
    media type, and the parse failure is recorded as a spec mismatch.
    """
    try:
        response = module.sync_detailed(client=client, **kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raw = client.get_httpx_client().request(**module._get_kwargs(**kwargs))
        content_type = raw.headers.get("content-type", "")
        check(
            raw.status_code == status,
            f"{what}: expected HTTP {int(status)}, got HTTP {raw.status_code}: {raw.text[:500]}",
        )
        check(
            content_type.split(";")[0].strip() == "application/problem+json",
            f"{what}: expected application/problem+json, got {content_type!r}",
        )
        message = (
            f"{what}: HTTP {raw.status_code} application/problem+json, but the generated Problem "
            f"model rejects the body ({type(e).__name__}: {e}): {raw.text}"
        )
        if STRICT:
            raise SmokeFailure(message) from e
        warnings.append(message)
        return content_type
    content_type = response.headers.get("content-type", "")
    check(
        response.status_code == status,
        f"{what}: expected HTTP {int(status)}, got {describe(response)}",
    )
    check(
        content_type.split(";")[0].strip() == "application/problem+json",
        f"{what}: expected application/problem+json, got {content_type!r}",
    )
    problem = response.parsed
    check(
        isinstance(problem, Problem),
        f"{what}: expected a parsed Problem, got {type(problem).__name__}",
    )
    assert isinstance(problem, Problem)
    check(problem.status == int(status), f"{what}: Problem.status is {problem.status}")
    return content_type


def run(base_url: str) -> str:
    public = Client(base_url=base_url, raise_on_unexpected_status=True, timeout=30.0)

    email = f"smoke-{uuid.uuid4()}@example.org"
    account = expect(
        "register",
        call(
            "register",
            register.sync_detailed,
            client=public,
            body=Registration(email=email, password=PASSWORD),
        ),
        HTTPStatus.CREATED,
        Account,
    )
    check(account.email == email, f"register: account email is {account.email!r}")

    token = expect(
        "login",
        call(
            "login",
            login.sync_detailed,
            client=public,
            body=Credentials(email=email, password=PASSWORD),
        ),
        HTTPStatus.OK,
        AccessToken,
    )
    check(bool(token.access_token), "login: empty access_token")
    check(
        token.token_type.lower() == "bearer",
        f"login: token_type is {token.token_type!r}",
    )
    authed = AuthenticatedClient(
        base_url=base_url,
        token=token.access_token,
        raise_on_unexpected_status=True,
        timeout=30.0,
    )

    quote = expect(
        "quoteFee",
        call(
            "quoteFee",
            quote_fee.sync_detailed,
            client=public,
            visa_type=VisaType.TOURIST,
            nationality=CountryCode.FR,
            speed=ProcessingSpeed.STANDARD,
        ),
        HTTPStatus.OK,
        FeeQuote,
    )

    today = datetime.datetime.now(datetime.UTC).date()
    created = expect(
        "createApplication",
        call(
            "createApplication",
            create_application.sync_detailed,
            client=authed,
            body=ApplicationFields(
                full_name="Smoke Test",
                passport_number="X1234567",
                date_of_birth=datetime.date(1990, 5, 17),
                nationality=CountryCode.FR,
                visa_type=VisaType.TOURIST,
                processing_speed=ProcessingSpeed.STANDARD,
                intended_arrival_date=today + datetime.timedelta(days=30),
            ),
        ),
        HTTPStatus.CREATED,
        Application,
    )
    check(
        created.status == ApplicationStatus.DRAFT,
        f"createApplication: status is {created.status!r}, expected draft",
    )
    check(isinstance(created.fee, Unset), "createApplication: a draft has a fee")

    submitted = expect(
        "submitApplication",
        call(
            "submitApplication",
            submit_application.sync_detailed,
            client=authed,
            id=created.id,
        ),
        HTTPStatus.OK,
        Application,
    )
    check(
        submitted.status == ApplicationStatus.SUBMITTED,
        f"submitApplication: status is {submitted.status!r}, expected submitted",
    )
    check(
        not isinstance(submitted.fee, Unset),
        "submitApplication: no fee on the application",
    )
    check(
        submitted.fee.amount == quote.fee.amount,
        f"submitApplication: fee.amount {submitted.fee.amount} != quoted {quote.fee.amount}",
    )
    check(
        submitted.fee.currency == "USD",
        f"submitApplication: fee.currency is {submitted.fee.currency!r}, expected USD",
    )
    check(
        quote.fee.currency == "USD",
        f"quoteFee: fee.currency is {quote.fee.currency!r}, expected USD",
    )

    fetched = expect(
        "getApplication",
        call(
            "getApplication",
            get_application.sync_detailed,
            client=authed,
            id=created.id,
        ),
        HTTPStatus.OK,
        Application,
    )
    check(
        fetched.id == created.id and fetched.status == ApplicationStatus.SUBMITTED,
        f"getApplication: got {fetched.id} in {fetched.status!r}",
    )

    # No token at all: the generated signature asks for an AuthenticatedClient, but the plain
    # Client is what a caller without a token has.
    expect_problem(
        "getApplication without a token",
        get_application,
        HTTPStatus.UNAUTHORIZED,
        public,
        id=created.id,
    )
    expect_problem(
        "getApplication with an invalid token",
        get_application,
        HTTPStatus.UNAUTHORIZED,
        AuthenticatedClient(
            base_url=base_url,
            token="not-a-valid-token",
            raise_on_unexpected_status=True,
            timeout=30.0,
        ),
        id=created.id,
    )
    expect_problem(
        "getApplication of a random id",
        get_application,
        HTTPStatus.NOT_FOUND,
        authed,
        id=uuid.uuid4(),
    )

    group = pay_as_group(authed, public, created.id, submitted.fee.amount, today)

    return (
        f"python smoke: OK: registered {email}, application {created.id} submitted with fee "
        f"{submitted.fee.amount} {submitted.fee.currency} (= quote), 401 and 404 are problems, "
        f"{group}"
    )


def pay_as_group(
    authed: AuthenticatedClient,
    public: Client,
    first: uuid.UUID,
    fee: int,
    today: datetime.date,
) -> str:
    """A family's applications paid together: `POST /v1/payments`, one charge, every one paid,
    and a receipt for the payer and for each application that the public check confirms."""
    ids = [first]
    for name in ("Smoke Child", "Smoke Partner"):
        draft = expect(
            "createApplication (group member)",
            call(
                "createApplication",
                create_application.sync_detailed,
                client=authed,
                body=ApplicationFields(
                    full_name=name,
                    passport_number="X7654321",
                    date_of_birth=datetime.date(2012, 3, 4),
                    nationality=CountryCode.FR,
                    visa_type=VisaType.TOURIST,
                    processing_speed=ProcessingSpeed.STANDARD,
                    intended_arrival_date=today + datetime.timedelta(days=30),
                ),
            ),
            HTTPStatus.CREATED,
            Application,
        )
        expect(
            "submitApplication (group member)",
            call(
                "submitApplication",
                submit_application.sync_detailed,
                client=authed,
                id=draft.id,
            ),
            HTTPStatus.OK,
            Application,
        )
        ids.append(draft.id)

    started = expect(
        "createGroupPayment",
        call(
            "createGroupPayment",
            create_group_payment.sync_detailed,
            client=authed,
            idempotency_key=str(uuid.uuid4()),
            body=GroupPaymentRequest(
                application_ids=ids,
                provider=PaymentProvider.STRIPE,
                payment_method="pm_card_visa",
            ),
        ),
        HTTPStatus.ACCEPTED,
        Payment,
    )
    check(
        started.amount == fee * len(ids),
        f"createGroupPayment: amount {started.amount}, expected {fee * len(ids)}",
    )
    check(
        len(started.allocations) == len(ids),
        f"createGroupPayment: {len(started.allocations)} allocations for {len(ids)} applications",
    )
    payment = started
    deadline = time.monotonic() + 30
    while payment.status != PaymentStatus.SUCCEEDED:
        check(time.monotonic() < deadline, f"getPayment: still {payment.status!r} after 30 s")
        check(
            payment.status
            not in (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.EXPIRED),
            f"getPayment: the group payment is {payment.status!r}",
        )
        time.sleep(0.2)
        payment = expect(
            "getPayment",
            call("getPayment", get_payment.sync_detailed, client=authed, id=started.id),
            HTTPStatus.OK,
            Payment,
        )

    payer = expect(
        "getReceipt",
        call("getReceipt", get_receipt.sync_detailed, client=authed, id=payment.id),
        HTTPStatus.OK,
        Receipt,
    )
    check(
        payer.kind == "payment" and len(payer.applications) == len(ids),
        f"getReceipt: kind {payer.kind!r} with {len(payer.applications)} applications",
    )
    codes = [payer.verification_code]
    for id_ in ids:
        application = expect(
            "getApplication (group member)",
            call("getApplication", get_application.sync_detailed, client=authed, id=id_),
            HTTPStatus.OK,
            Application,
        )
        check(
            application.status == ApplicationStatus.PAID,
            f"getApplication: {id_} is {application.status!r}, expected paid",
        )
        own = expect(
            "getApplicationReceipt",
            call(
                "getApplicationReceipt",
                get_application_receipt.sync_detailed,
                client=authed,
                id=id_,
            ),
            HTTPStatus.OK,
            Receipt,
        )
        check(
            own.kind == "application" and own.amount == fee,
            f"getApplicationReceipt: kind {own.kind!r}, amount {own.amount}",
        )
        codes.append(own.verification_code)
    for code in codes:
        checked = expect(
            "checkReceipt",
            call("checkReceipt", check_receipt.sync_detailed, client=public, code=code),
            HTTPStatus.OK,
            ReceiptCheck,
        )
        check(
            checked.genuine and checked.payment_reference == payment.id,
            f"checkReceipt: {code} is not the group payment's",
        )
    return (
        f"group payment {payment.id} paid {len(ids)} applications ({payment.amount}) "
        f"with {len(codes)} verified receipts"
    )


def main() -> int:
    base_url = os.environ.get("EVISA_BASE_URL", "").rstrip("/")
    if not base_url:
        print(
            "python smoke: FAIL: set EVISA_BASE_URL (e.g. http://127.0.0.1:8080)",
            file=sys.stderr,
        )
        return 2
    try:
        summary = run(base_url)
    except SmokeFailure as e:
        for w in warnings:
            print(f"python smoke: WARNING: {w}", file=sys.stderr)
        print(f"python smoke: FAIL: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any error is a failed smoke, reported on one line
        for w in warnings:
            print(f"python smoke: WARNING: {w}", file=sys.stderr)
        print(f"python smoke: FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"python smoke: WARNING: {w}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
