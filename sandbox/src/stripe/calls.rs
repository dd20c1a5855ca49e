//! One API call as Stripe handles it: authentication (secret or publishable key), injected
//! faults, parameter validation, idempotency, and the headers of every answer.

use std::time::Duration;

use poem::{Request, Response, http::StatusCode};
use serde_json::{Value, json};

use super::{
    StripeSandbox, events, now,
    store::{KeyRecord, State},
    wire::{self, Answer},
};

/// One API request, authenticated and parsed.
pub(crate) struct Call {
    pub request_id: String,
    /// Its `Idempotency-Key`.
    pub key: Option<String>,
    /// `POST /v1/refunds`, say.
    pub endpoint: String,
    pub pairs: Vec<(String, String)>,
    /// Made with the publishable key (a browser), not the secret key.
    pub publishable: bool,
}

/// Whether an answer is kept under the request's idempotency key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    No,
    Yes,
    /// Kept earlier, and sent again now.
    Replayed,
}

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Keys {
    SecretOnly,
    /// Stripe.js calls it from the browser with the publishable key.
    PublishableToo,
}

impl StripeSandbox {
    /// Authenticates a request and parses its form; injected 500s and 429s answer here, before
    /// anything runs.
    pub(super) async fn begin(
        &self,
        req: &Request,
        body: poem::Body,
        spec: &wire::Spec,
        keys: Keys,
    ) -> Result<Call, Box<Response>> {
        let request_id = {
            let mut s = self.state.lock().expect("sandbox state");
            s.next_id("req")
        };
        let mut pairs = if req.method() == poem::http::Method::GET {
            wire::form_pairs(req.uri().query().unwrap_or_default().as_bytes())
        } else {
            wire::form_pairs(&body.into_vec().await.unwrap_or_default())
        };
        // Stripe.js sends the publishable key as a form field rather than a header.
        let form_key = pairs
            .iter()
            .position(|(k, _)| k == "key")
            .map(|i| pairs.remove(i).1);
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let presented = bearer.or(form_key);
        let publishable = presented.as_deref() == Some(self.publishable_key().as_str());
        let fail = |answer: Answer| {
            Err(Box::new(self.respond(
                &request_id,
                answer,
                Stored::No,
                publishable,
            )))
        };
        if presented.as_deref() != Some(self.config.secret_key.as_str()) && !publishable {
            return fail(wire::error(
                401,
                "invalid_request_error",
                None,
                None,
                "Invalid API Key provided.",
            ));
        }
        if publishable && keys == Keys::SecretOnly {
            return fail(wire::error(
                401,
                "invalid_request_error",
                Some("secret_key_required"),
                None,
                "This API call cannot be made with a publishable API key. Please use a secret API key.",
            ));
        }
        let (fail_now, limit) = {
            let mut s = self.state.lock().expect("sandbox state");
            let f = &mut s.faults;
            let fail_now = f.fail_next > 0;
            f.fail_next = f.fail_next.saturating_sub(1);
            let limit = !fail_now && f.rate_limit_next > 0;
            if limit {
                f.rate_limit_next -= 1;
            }
            (fail_now, limit)
        };
        if fail_now {
            return fail(wire::error(
                500,
                "api_error",
                None,
                None,
                "An unexpected error occurred (injected).",
            ));
        }
        if limit {
            return fail(wire::error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                None,
                "Too many requests hit the API too quickly (injected).",
            ));
        }
        if let Err(answer) = wire::check(spec, &pairs) {
            return fail(answer);
        }
        // Stripe ignores idempotency keys on reads.
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|_| req.method() != poem::http::Method::GET)
            .map(str::to_string);
        Ok(Call {
            request_id,
            key,
            endpoint: format!("{} {}", req.method(), req.uri().path()),
            pairs,
            publishable,
        })
    }

    /// One API call: [`Self::begin`], then [`Self::run`].
    pub(super) async fn serve(
        &self,
        req: &Request,
        body: poem::Body,
        spec: &wire::Spec,
        keys: Keys,
        charging: bool,
        work: impl FnOnce(&StripeSandbox, &mut State, &Call) -> Answer,
    ) -> Response {
        match self.begin(req, body, spec, keys).await {
            Ok(call) => self.run(call, charging, work).await,
            Err(refused) => *refused,
        }
    }

    /// `GET /v1/{kind}s/{id}`: the object `find` gives (with the request's `expand[]`), or
    /// Stripe's `resource_missing`.
    pub(super) async fn retrieve(
        &self,
        req: &Request,
        kind: &str,
        id: String,
        find: impl FnOnce(&StripeSandbox, &State, &str, &[&str]) -> Option<Value>,
    ) -> Response {
        self.serve(
            req,
            poem::Body::empty(),
            &wire::RETRIEVE,
            Keys::SecretOnly,
            false,
            |sandbox, state, call| {
                let expand = wire::expansions(&call.pairs);
                match find(sandbox, state, &id, &expand) {
                    Some(body) => (200, body),
                    None => wire::no_such(kind, &id),
                }
            },
        )
        .await
    }

    /// Runs `work` under Stripe's idempotency rules: a key seen with the same request replays
    /// the first answer (errors and 500s included), a key still in flight is a 409, and a key
    /// reused on another endpoint or with other parameters is an `idempotency_error`.
    pub(super) async fn run(
        &self,
        call: Call,
        charging: bool,
        work: impl FnOnce(&StripeSandbox, &mut State, &Call) -> Answer,
    ) -> Response {
        let params = KeyRecord::params_of(&call.pairs);
        let latency = {
            let mut s = self.state.lock().expect("sandbox state");
            if let Some(key) = &call.key {
                if let Some(seen) = s.idempotency.get(key) {
                    let refused = if seen.endpoint != call.endpoint {
                        Some(format!(
                            "Keys for idempotent requests can only be used for the same endpoint they were first used for ('{}' vs '{}'). Try using a key other than '{key}' if you meant to execute a different request.",
                            seen.endpoint, call.endpoint
                        ))
                    } else if seen.params != params {
                        Some(format!(
                            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                        ))
                    } else {
                        None
                    };
                    let answer = match (refused, &seen.answer) {
                        (Some(message), _) => {
                            wire::error(400, "idempotency_error", None, None, &message)
                        }
                        (None, None) => wire::error(
                            409,
                            "invalid_request_error",
                            Some("idempotency_key_in_use"),
                            None,
                            "There is currently another in-progress request using this Stripe API key and idempotency key. Please try again later.",
                        ),
                        (None, Some(kept)) => {
                            let answer = KeyRecord::replay(kept);
                            drop(s);
                            return self.respond(
                                &call.request_id,
                                answer,
                                Stored::Replayed,
                                call.publishable,
                            );
                        }
                    };
                    drop(s);
                    return self.respond(&call.request_id, answer, Stored::No, call.publishable);
                }
                s.idempotency.insert(
                    key.clone(),
                    KeyRecord {
                        endpoint: call.endpoint.clone(),
                        params,
                        answer: None,
                    },
                );
            }
            s.faults.latency_ms
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let answer = {
            let mut s = self.state.lock().expect("sandbox state");
            let failed = || {
                wire::error(
                    500,
                    "api_error",
                    None,
                    None,
                    "An unexpected error occurred while processing the request (injected).",
                )
            };
            let answer = if s.faults.error_next > 0 {
                s.faults.error_next -= 1;
                failed()
            } else {
                let answer = work(self, &mut s, &call);
                if charging && s.faults.charge_then_error_next > 0 {
                    // It charged, and yet the answer kept under the key is a 500.
                    s.faults.charge_then_error_next -= 1;
                    failed()
                } else {
                    answer
                }
            };
            let mut stored = Stored::No;
            if let Some(key) = &call.key
                && let Some(record) = s.idempotency.get_mut(key)
            {
                record.answer = Some(KeyRecord::keep(&answer));
                stored = Stored::Yes;
            }
            if charging && s.faults.lose_next_responses > 0 {
                s.faults.lose_next_responses -= 1;
                let lost = wire::error(
                    500,
                    "api_error",
                    None,
                    None,
                    "The response was lost (injected).",
                );
                (lost, Stored::No)
            } else {
                (answer, stored)
            }
        };
        self.respond(&call.request_id, answer.0, answer.1, call.publishable)
    }

    /// Sends an answer with Stripe's headers; an error gets its `request_log_url`, and says
    /// whether a retry could help (not for an answer stored under its idempotency key).
    pub(super) fn respond(
        &self,
        request_id: &str,
        (status, mut body): Answer,
        stored: Stored,
        browser: bool,
    ) -> Response {
        let replayed = stored == Stored::Replayed;
        if body.get("error").is_some() && body["error"].get("request_log_url").is_none() {
            body["error"]["request_log_url"] = json!(format!(
                "https://dashboard.stripe.com/test/logs/{request_id}?t={}",
                now()
            ));
        }
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let retry = status == 429
            || status >= 500 && stored == Stored::No
            || code == "idempotency_key_in_use"
            || code == "lock_timeout";
        let mut r = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type("application/json")
            .header("request-id", request_id)
            .header("stripe-version", events::API_VERSION);
        if status >= 400 {
            r = r.header("stripe-should-retry", if retry { "true" } else { "false" });
        }
        if replayed {
            r = r.header("idempotent-replayed", "true");
        }
        if browser {
            r = r.header("access-control-allow-origin", "*");
        }
        r.body(body.to_string())
    }
}
