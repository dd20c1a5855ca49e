// Smoke test of the evisa-pay API through openapi-fetch, typed by openapi-typescript.
//
//   npx openapi-typescript ../../openapi/openapi.json -o src/schema.d.ts
//   npx tsc            # strict; type-checks every call below against the generated schema
//   EVISA_BASE_URL=http://127.0.0.1:8080 node dist/smoke.js
//
// A response body that contradicts the OpenAPI document (a required property missing) is reported
// and fails the run (EVISA_SMOKE_STRICT=0 only warns).

import { randomUUID } from "node:crypto";
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./src/schema";

type Schemas = components["schemas"];
type Problem = Schemas["Problem"];
type Application = Schemas["Application"];
type ApplicationFields = Schemas["ApplicationFields"];

const PASSWORD = "correct horse battery staple";
const STRICT = !["", "0", "false", "no"].includes(process.env.EVISA_SMOKE_STRICT ?? "1");

class SmokeFailure extends Error {}

const warnings: string[] = [];

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new SmokeFailure(message);
}

function describe(response: Response, body: unknown): string {
  const requestId = response.headers.get("x-request-id") ?? "-";
  return `HTTP ${response.status} (x-request-id ${requestId}): ${JSON.stringify(body)}`;
}

/** Unwraps a successful openapi-fetch result, checking the status. */
function expectOk<T>(
  what: string,
  result: { data?: T; error?: unknown; response: Response },
  status: number,
): T {
  const { data, error, response } = result;
  check(response.status === status, `${what}: expected HTTP ${status}, got ${describe(response, error ?? data)}`);
  check(data !== undefined, `${what}: no body`);
  return data;
}

/** The keys the generated type marks required (optional ones are excluded at compile time). */
type RequiredKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? never : K }[keyof T];
const PROBLEM_REQUIRED = ["type", "title", "status", "detail"] as const satisfies readonly RequiredKeys<Problem>[];

/** Checks an openapi-fetch error result is an `application/problem+json` Problem with `status`. */
function expectProblem(
  what: string,
  result: { data?: unknown; error?: Problem; response: Response },
  status: number,
): Problem {
  const { data, error, response } = result;
  check(response.status === status, `${what}: expected HTTP ${status}, got ${describe(response, error ?? data)}`);
  const contentType = response.headers.get("content-type") ?? "";
  check(
    contentType.split(";")[0]?.trim() === "application/problem+json",
    `${what}: expected application/problem+json, got ${JSON.stringify(contentType)}`,
  );
  check(error !== undefined && typeof error === "object" && error !== null, `${what}: no problem body`);
  check(error.status === status, `${what}: Problem.status is ${String(error.status)}`);
  check(typeof error.type === "string" && typeof error.title === "string", `${what}: not a Problem: ${JSON.stringify(error)}`);
  // The generated type promises every `required` property; see whether the body keeps that promise.
  const missing = PROBLEM_REQUIRED.filter((key) => !(key in error));
  if (missing.length > 0) {
    const message =
      `${what}: HTTP ${status} application/problem+json lacks required Problem ` +
      `propert${missing.length === 1 ? "y" : "ies"} ${missing.join(", ")}: ${JSON.stringify(error)}`;
    if (STRICT) throw new SmokeFailure(message);
    warnings.push(message);
  }
  return error;
}

function withToken(baseUrl: string, token: string): Client<paths> {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

async function run(baseUrl: string): Promise<string> {
  const api = createClient<paths>({ baseUrl });

  const email = `smoke-${randomUUID()}@example.org`;
  const account = expectOk(
    "register",
    await api.POST("/v1/auth/register", { body: { email, password: PASSWORD } }),
    201,
  );
  check(account.email === email, `register: account email is ${account.email}`);

  const token = expectOk(
    "login",
    await api.POST("/v1/auth/login", { body: { email, password: PASSWORD } }),
    200,
  );
  check(token.access_token.length > 0, "login: empty access_token");
  check(token.token_type.toLowerCase() === "bearer", `login: token_type is ${token.token_type}`);
  const authed = withToken(baseUrl, token.access_token);

  const quote = expectOk(
    "quoteFee",
    await api.GET("/v1/fees/quote", {
      params: { query: { visa_type: "tourist", nationality: "FR", speed: "standard" } },
    }),
    200,
  );
  check(quote.fee.currency === "USD", `quoteFee: fee.currency is ${quote.fee.currency}, expected USD`);

  const arrival = new Date(Date.now() + 30 * 24 * 60 * 60 * 1000).toISOString().slice(0, 10);
  const fields: ApplicationFields = {
    full_name: "Smoke Test",
    passport_number: "X1234567",
    date_of_birth: "1990-05-17",
    nationality: "FR",
    visa_type: "tourist",
    processing_speed: "standard",
    intended_arrival_date: arrival,
  };
  const created: Application = expectOk(
    "createApplication",
    await authed.POST("/v1/applications", { body: fields }),
    201,
  );
  check(created.status === "draft", `createApplication: status is ${created.status}, expected draft`);
  check(created.fee === undefined, "createApplication: a draft has a fee");

  const submitted = expectOk(
    "submitApplication",
    await authed.POST("/v1/applications/{id}/submit", { params: { path: { id: created.id } } }),
    200,
  );
  check(submitted.status === "submitted", `submitApplication: status is ${submitted.status}, expected submitted`);
  check(submitted.fee !== undefined, "submitApplication: no fee on the application");
  check(
    submitted.fee.amount === quote.fee.amount,
    `submitApplication: fee.amount ${submitted.fee.amount} != quoted ${quote.fee.amount}`,
  );
  check(submitted.fee.currency === "USD", `submitApplication: fee.currency is ${submitted.fee.currency}, expected USD`);

  const fetched = expectOk(
    "getApplication",
    await authed.GET("/v1/applications/{id}", { params: { path: { id: created.id } } }),
    200,
  );
  check(
    fetched.id === created.id && fetched.status === "submitted",
    `getApplication: got ${fetched.id} in ${fetched.status}`,
  );

  expectProblem(
    "getApplication without a token",
    await api.GET("/v1/applications/{id}", { params: { path: { id: created.id } } }),
    401,
  );
  expectProblem(
    "getApplication with an invalid token",
    await withToken(baseUrl, "not-a-valid-token").GET("/v1/applications/{id}", {
      params: { path: { id: created.id } },
    }),
    401,
  );
  expectProblem(
    "getApplication of a random id",
    await authed.GET("/v1/applications/{id}", { params: { path: { id: randomUUID() } } }),
    404,
  );

  const group = await payAsGroup(authed, api, fields, [created.id], submitted.fee.amount);

  return (
    `ts smoke: OK: registered ${email}, application ${created.id} submitted with fee ` +
    `${submitted.fee.amount} ${submitted.fee.currency} (= quote), 401 and 404 are problems, ` +
    group
  );
}

/** A family's applications paid together: `POST /v1/payments`, one charge, every one paid, and a
 * receipt for the payer and for each application that the public check confirms. */
async function payAsGroup(
  authed: Client<paths>,
  api: Client<paths>,
  fields: ApplicationFields,
  submittedIds: string[],
  fee: number,
): Promise<string> {
  const ids = [...submittedIds];
  for (const name of ["Smoke Child", "Smoke Partner"]) {
    const draft = expectOk(
      "createApplication (group member)",
      await authed.POST("/v1/applications", { body: { ...fields, full_name: name } }),
      201,
    );
    expectOk(
      "submitApplication (group member)",
      await authed.POST("/v1/applications/{id}/submit", { params: { path: { id: draft.id } } }),
      200,
    );
    ids.push(draft.id);
  }
  const started = expectOk(
    "createGroupPayment",
    await authed.POST("/v1/payments", {
      params: { header: { "Idempotency-Key": randomUUID() } },
      body: { application_ids: ids, provider: "stripe", payment_method: "pm_card_visa" },
    }),
    202,
  );
  check(started.amount === fee * ids.length, `createGroupPayment: amount ${started.amount}`);
  check(started.allocations.length === ids.length, "createGroupPayment: one allocation per application");
  let payment = started;
  const deadline = Date.now() + 30_000;
  while (payment.status !== "succeeded") {
    check(Date.now() < deadline, `getPayment: still ${payment.status} after 30 s`);
    check(!["failed", "cancelled", "expired"].includes(payment.status), `getPayment: ${payment.status}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    payment = expectOk(
      "getPayment",
      await authed.GET("/v1/payments/{id}", { params: { path: { id: started.id } } }),
      200,
    );
  }
  const codes: string[] = [];
  const payer = expectOk(
    "getReceipt",
    await authed.GET("/v1/payments/{id}/receipt", { params: { path: { id: payment.id } } }),
    200,
  );
  check(payer.kind === "payment" && payer.applications.length === ids.length, "getReceipt: the payer's receipt lists the group");
  codes.push(payer.verification_code);
  for (const id of ids) {
    const app = expectOk(
      "getApplication (group member)",
      await authed.GET("/v1/applications/{id}", { params: { path: { id } } }),
      200,
    );
    check(app.status === "paid", `getApplication: ${id} is ${app.status}, expected paid`);
    const own = expectOk(
      "getApplicationReceipt",
      await authed.GET("/v1/applications/{id}/receipt", { params: { path: { id } } }),
      200,
    );
    check(own.kind === "application" && own.amount === fee, `getApplicationReceipt: ${JSON.stringify(own)}`);
    codes.push(own.verification_code);
  }
  for (const code of codes) {
    const checked = expectOk(
      "checkReceipt",
      await api.GET("/v1/receipts/{code}", { params: { path: { code } } }),
      200,
    );
    check(checked.genuine && checked.payment_reference === payment.id, `checkReceipt: ${JSON.stringify(checked)}`);
  }
  return `group payment ${payment.id} paid ${ids.length} applications (${payment.amount}) with ${codes.length} verified receipts`;
}

/**
 * Never called: proves `tsc` checks calls against the generated schema. Each `@ts-expect-error`
 * must meet a type error, or the build fails ("Unused '@ts-expect-error' directive").
 */
export function typeCheckProbes(api: Client<paths>): void {
  // @ts-expect-error -- no such path in the API
  void api.GET("/v1/no-such-path");
  // @ts-expect-error -- the quote needs visa_type, nationality and speed
  void api.GET("/v1/fees/quote", { params: { query: { visa_type: "tourist" } } });
  // @ts-expect-error -- "student" is not a VisaType
  void api.POST("/v1/applications", { body: { visa_type: "student" } });
  // @ts-expect-error -- login needs a password
  void api.POST("/v1/auth/login", { body: { email: "a@example.org" } });
  // @ts-expect-error -- submit is POST, not GET
  void api.GET("/v1/applications/{id}/submit", { params: { path: { id: "x" } } });
  void (async () => {
    const { data } = await api.GET("/v1/applications/{id}", { params: { path: { id: "x" } } });
    // @ts-expect-error -- Application has no `amount`; the fee is under `fee`
    void data?.amount;
    const n: number | undefined = data?.fee?.amount;
    void n;
  })();
}

async function main(): Promise<number> {
  const baseUrl = (process.env.EVISA_BASE_URL ?? "").replace(/\/+$/, "");
  if (!baseUrl) {
    console.error("ts smoke: FAIL: set EVISA_BASE_URL (e.g. http://127.0.0.1:8080)");
    return 2;
  }
  try {
    const summary = await run(baseUrl);
    for (const w of warnings) console.log(`ts smoke: WARNING: ${w}`);
    console.log(summary);
    return 0;
  } catch (e) {
    for (const w of warnings) console.error(`ts smoke: WARNING: ${w}`);
    const message = e instanceof SmokeFailure ? e.message : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    console.error(`ts smoke: FAIL: ${message}`);
    return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`ts smoke: FAIL: ${String(e)}`);
    process.exitCode = 1;
  },
);
