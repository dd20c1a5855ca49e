//! The sandbox's own endpoints (not Stripe's): ledgers, faults, the 3-D Secure page, and what
//! happens at Stripe outside its API — a refund made in the dashboard, a dispute opened or
//! decided, a pending refund settling.

use std::collections::HashMap;

use poem::{
    IntoResponse, Response, handler,
    http::StatusCode,
    web::{Data, Form, Html, Json, Path},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ChargeRecord, Faults, RefundRecord, StripeSandbox, calls::Stored, payments::card_of,
    wire::Answer,
};

impl StripeSandbox {
    fn control(
        &self,
        work: impl FnOnce(&StripeSandbox, &mut super::store::State) -> Answer,
    ) -> Response {
        let (answer, request_id) = {
            let mut s = self.state.lock().expect("sandbox state");
            let answer = work(self, &mut s);
            (answer, s.next_id("req"))
        };
        self.respond(&request_id, answer, Stored::No, false)
    }
}

#[handler]
pub fn list_refunds(sandbox: Data<&StripeSandbox>) -> Json<Vec<RefundRecord>> {
    Json(sandbox.refunds())
}

#[handler]
pub fn list_charges(sandbox: Data<&StripeSandbox>) -> Json<Vec<ChargeRecord>> {
    Json(sandbox.charges())
}

#[handler]
pub fn event_ledger(sandbox: Data<&StripeSandbox>) -> Json<Value> {
    let s = sandbox.state.lock().expect("sandbox state");
    Json(json!(s.events.values().collect::<Vec<_>>()))
}

#[handler]
pub fn list_disputes(sandbox: Data<&StripeSandbox>) -> Json<Value> {
    let s = sandbox.state.lock().expect("sandbox state");
    Json(json!(
        s.disputes.values().map(|d| d.to_json()).collect::<Vec<_>>()
    ))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardRefund {
    /// Minor units; the rest of the charge when absent.
    amount: Option<i64>,
    reason: Option<String>,
}

/// A refund made in Stripe's dashboard: no metadata of ours, no request of ours behind it.
#[handler]
pub fn dashboard_refund(
    Path(charge): Path<String>,
    body: Option<Json<DashboardRefund>>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    sandbox.control(|sandbox, state| {
        sandbox.refund(
            state,
            None,
            &charge,
            body.amount,
            body.reason,
            Default::default(),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// `succeeded` or `failed` for a refund; `won` or `lost` for a dispute.
    outcome: String,
}

#[handler]
pub fn settle_refund(
    Path(id): Path<String>,
    Json(body): Json<Outcome>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    let succeeded = match body.outcome.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => return (StatusCode::BAD_REQUEST, "outcome: succeeded or failed").into_response(),
    };
    sandbox.control(|sandbox, state| sandbox.settle(state, &id, succeeded))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OpenDispute {
    /// Stripe's dispute reasons: `fraudulent` (the default), `product_not_received`, ...
    reason: Option<String>,
}

#[handler]
pub fn open_dispute(
    Path(charge): Path<String>,
    body: Option<Json<OpenDispute>>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    let reason = body
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "fraudulent".into());
    sandbox.control(|sandbox, state| sandbox.dispute(state, &charge, &reason))
}

#[handler]
pub fn close_dispute(
    Path(id): Path<String>,
    Json(body): Json<Outcome>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    let won = match body.outcome.as_str() {
        "won" => true,
        "lost" => false,
        _ => return (StatusCode::BAD_REQUEST, "outcome: won or lost").into_response(),
    };
    sandbox.control(|sandbox, state| sandbox.close_dispute(state, &id, won))
}

#[handler]
pub fn set_faults(sandbox: Data<&StripeSandbox>, Json(faults): Json<Faults>) -> Json<Faults> {
    sandbox.set_faults(faults.clone());
    Json(faults)
}

#[handler]
pub fn get_faults(sandbox: Data<&StripeSandbox>) -> Json<Faults> {
    Json(sandbox.state.lock().expect("sandbox state").faults.clone())
}

#[handler]
pub fn three_ds_page(Path(id): Path<String>, sandbox: Data<&StripeSandbox>) -> Response {
    let s = sandbox.state.lock().expect("sandbox state");
    let Some(i) = s.intents.get(&id) else {
        return (StatusCode::NOT_FOUND, "no such payment").into_response();
    };
    let amount = i.amount;
    let currency = i.currency.to_uppercase();
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>3-D Secure test page</title></head>
<body><main><h1>3-D Secure authentication (test mode)</h1>
<p>Payment {id}: {amount} {currency} (minor units). Status: <span id="status">{}</span>.</p>
<form method="post" action="/sandbox/3ds/{id}/complete"><button id="complete" type="submit">Complete authentication</button></form>
<form method="post" action="/sandbox/3ds/{id}/fail"><button id="fail" type="submit">Fail authentication</button></form>
</main></body></html>"#,
        i.status
    );
    Html(page).into_response()
}

/// The cardholder's answer on the 3-D Secure page; back to the intent's `return_url` if any.
#[handler]
pub fn three_ds_outcome(
    Path((id, outcome)): Path<(String, String)>,
    sandbox: Data<&StripeSandbox>,
    _form: Option<Form<HashMap<String, String>>>,
) -> Response {
    let mut state = sandbox.state.lock().expect("sandbox state");
    let Some(intent) = state.intents.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "no such payment").into_response();
    };
    if intent.status != "requires_action" {
        return (
            StatusCode::CONFLICT,
            "this payment is not waiting for authentication",
        )
            .into_response();
    }
    match outcome.as_str() {
        "complete" => {
            let pm = intent.payment_method.clone().unwrap_or_default();
            let Some(card) = card_of(&state, &pm) else {
                return (StatusCode::CONFLICT, "the payment method is gone").into_response();
            };
            sandbox.succeed(&mut state, None, &id, &pm, card);
        }
        "fail" => {
            if let Some(i) = state.intents.get_mut(&id) {
                i.status = "requires_payment_method";
                i.last_error = Some(json!({
                    "type": "card_error", "code": "payment_intent_authentication_failure",
                    "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
                    "message": "We are unable to authenticate your payment method. Please choose a different payment method and try again.",
                }));
            }
            let body = sandbox
                .intent_json(&state, &id, &[])
                .expect("intent exists");
            sandbox.emit(&mut state, None, "payment_intent.payment_failed", &body);
        }
        _ => return (StatusCode::NOT_FOUND, "unknown outcome").into_response(),
    }
    drop(state);
    match intent.return_url {
        // As Stripe redirects after authentication.
        Some(url) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            let status = if outcome == "complete" { "succeeded" } else { "failed" };
            poem::web::Redirect::see_other(format!(
                "{url}{sep}payment_intent={id}&payment_intent_client_secret={}&redirect_status={status}",
                intent.client_secret
            ))
            .into_response()
        }
        None => Html(format!(
            "<!doctype html><html lang=\"en\"><title>Authentication {outcome}d</title><p>Authentication {outcome}d. You can close this page.</p></html>"
        ))
        .into_response(),
    }
}
