//! Stripe's API endpoints (`/v1/...`), as the sandbox serves them.

use poem::{
    Body, Request, Response, handler,
    http::StatusCode,
    web::{Data, Path},
};

use super::{
    StripeSandbox,
    calls::{Keys, Stored},
    cards, now,
    objects::{Intent, Refund, payment_method_json},
    payments::card_of,
    wire::{self, param},
};

fn automatic(pairs: &[(String, String)]) -> Option<(bool, Option<String>)> {
    let enabled = param(pairs, "automatic_payment_methods[enabled]")?;
    Some((
        enabled == "true",
        param(pairs, "automatic_payment_methods[allow_redirects]").map(str::to_string),
    ))
}

#[handler]
pub async fn create_intent(req: &Request, body: Body, sandbox: Data<&StripeSandbox>) -> Response {
    let call = match sandbox
        .begin(req, body, &wire::CREATE_INTENT, Keys::SecretOnly)
        .await
    {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let (amount, currency) = match wire::amount_and_currency(&call.pairs) {
        Ok(v) => v,
        Err(answer) => return sandbox.respond(&call.request_id, answer, Stored::No, false),
    };
    let confirm = param(&call.pairs, "confirm") == Some("true");
    let auto = automatic(&call.pairs);
    let return_url = param(&call.pairs, "return_url").map(str::to_string);
    // Payment methods that may redirect need somewhere to come back to, as at Stripe.
    if confirm
        && return_url.is_none()
        && auto
            .as_ref()
            .is_some_and(|(on, redirects)| *on && redirects.as_deref() != Some("never"))
    {
        let answer = wire::invalid(
            None,
            Some("return_url"),
            "This PaymentIntent is configured to accept payment methods enabled in your Dashboard. Because some of these payment methods might redirect your customer off of your page, you must provide a `return_url`. If you don't want to accept redirect-based payment methods, set `automatic_payment_methods[enabled]` to `true` and `automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and Payment Intents.",
        );
        return sandbox.respond(&call.request_id, answer, Stored::No, false);
    }
    sandbox
        .run(call, confirm, move |sandbox, state, call| {
            let id = state.next_id("pi");
            let secret = format!(
                "{id}_secret_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..24]
            );
            let payment_method = param(&call.pairs, "payment_method").map(str::to_string);
            let intent = Intent {
                id: id.clone(),
                amount,
                currency,
                status: if payment_method.is_some() {
                    "requires_confirmation"
                } else {
                    "requires_payment_method"
                },
                payment_method,
                metadata: wire::metadata(&call.pairs),
                client_secret: secret,
                created: now(),
                description: param(&call.pairs, "description").map(str::to_string),
                receipt_email: param(&call.pairs, "receipt_email").map(str::to_string),
                automatic: auto,
                return_url,
                last_error: None,
                latest_charge: None,
                canceled_at: None,
                cancellation_reason: None,
            };
            state.intents.insert(id.clone(), intent);
            let created = sandbox.intent_json(state, &id, &[]).expect("intent exists");
            sandbox.emit(state, Some(call), "payment_intent.created", &created);
            if confirm {
                sandbox.confirm(state, call, &id)
            } else {
                let expand = wire::expansions(&call.pairs);
                (
                    200,
                    sandbox
                        .intent_json(state, &id, &expand)
                        .expect("intent exists"),
                )
            }
        })
        .await
}

#[handler]
pub async fn confirm_intent(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .serve(
            req,
            body,
            &wire::CONFIRM_INTENT,
            Keys::SecretOnly,
            true,
            move |sandbox, state, call| {
                if let Some(i) = state.intents.get_mut(&id) {
                    if let Some(pm) = param(&call.pairs, "payment_method") {
                        i.payment_method = Some(pm.to_string());
                        if i.status == "requires_payment_method" {
                            i.status = "requires_confirmation";
                        }
                    }
                    if let Some(url) = param(&call.pairs, "return_url") {
                        i.return_url = Some(url.to_string());
                    }
                }
                sandbox.confirm(state, call, &id)
            },
        )
        .await
}

#[handler]
pub async fn retrieve_intent(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .retrieve(req, "payment_intent", id, |sandbox, state, id, expand| {
            sandbox.intent_json(state, id, expand)
        })
        .await
}

#[handler]
pub async fn cancel_intent(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .serve(req, body, &wire::CANCEL_INTENT, Keys::SecretOnly, false, move |sandbox, state, call| {
            let reason = param(&call.pairs, "cancellation_reason").map(str::to_string);
            if let Some(r) = &reason
                && !["duplicate", "fraudulent", "requested_by_customer", "abandoned"]
                    .contains(&r.as_str())
            {
                return wire::invalid(
                    Some("parameter_invalid_string"),
                    Some("cancellation_reason"),
                    "Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer, or abandoned",
                );
            }
            let Some(i) = state.intents.get_mut(&id) else {
                return wire::no_such("payment_intent", &id);
            };
            if matches!(i.status, "succeeded" | "canceled" | "processing") {
                return wire::invalid(
                    Some("payment_intent_unexpected_state"),
                    None,
                    &format!(
                        "You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action.",
                        i.status
                    ),
                );
            }
            i.status = "canceled";
            i.canceled_at = Some(now());
            i.cancellation_reason = reason;
            let body = sandbox.intent_json(state, &id, &[]).expect("intent exists");
            sandbox.emit(state, Some(call), "payment_intent.canceled", &body);
            let expand = wire::expansions(&call.pairs);
            (200, sandbox.intent_json(state, &id, &expand).expect("intent exists"))
        })
        .await
}

/// Tokenises a card, as Stripe.js does: with the publishable key only (raw card numbers with
/// the secret key need raw-card access, which the sandbox, like most accounts, does not have).
#[handler]
pub async fn create_payment_method(
    req: &Request,
    body: Body,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .serve(req, body, &wire::CREATE_PAYMENT_METHOD, Keys::PublishableToo, false, |_, state, call| {
            let pairs = &call.pairs;
            if param(pairs, "type") != Some("card") {
                return wire::invalid(
                    Some("parameter_invalid_string"),
                    Some("type"),
                    "The sandbox takes payment methods of type `card` only.",
                );
            }
            let Some(number) = param(pairs, "card[number]") else {
                return wire::missing("card[number]");
            };
            if !call.publishable {
                return wire::error(
                    402,
                    "invalid_request_error",
                    None,
                    None,
                    "Sending credit card numbers directly to the Stripe API is generally unsafe. To continue processing use Stripe.js, the Stripe mobile bindings, or Stripe Elements. If you are qualified to handle card data directly, see https://support.stripe.com/questions/enabling-access-to-raw-card-data-apis.",
                );
            }
            let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
            if !cards::luhn_valid(&digits) {
                return wire::error(
                    402,
                    "card_error",
                    Some("incorrect_number"),
                    Some("card[number]"),
                    "Your card number is incorrect.",
                );
            }
            let month = param(pairs, "card[exp_month]").and_then(|m| m.parse::<i64>().ok());
            let Some(month) = month.filter(|m| (1..=12).contains(m)) else {
                return wire::error(
                    402,
                    "card_error",
                    Some("invalid_expiry_month"),
                    Some("card[exp_month]"),
                    "Your card's expiration month is invalid.",
                );
            };
            let year = param(pairs, "card[exp_year]")
                .and_then(|y| y.parse::<i64>().ok())
                .map(|y| if y < 100 { 2000 + y } else { y });
            let this_year = chrono::Utc::now().format("%Y").to_string().parse::<i64>().unwrap_or(2026);
            let Some(year) = year.filter(|y| *y >= this_year && *y <= this_year + 50) else {
                return wire::error(
                    402,
                    "card_error",
                    Some("invalid_expiry_year"),
                    Some("card[exp_year]"),
                    "Your card's expiration year is invalid.",
                );
            };
            // Any other valid number is a card that simply works, as in Stripe's test mode.
            let card = cards::by_number(&digits, month, year).unwrap_or(cards::TestCard {
                behaviour: cards::Behaviour::Succeed,
                brand: if digits.starts_with('5') { "mastercard" } else { "visa" },
                last4: digits[digits.len() - 4..].to_string(),
                funding: "credit",
                exp_month: month,
                exp_year: year,
            });
            let id = state.next_id("pm");
            let body = payment_method_json(&id, &card, now());
            state.payment_methods.insert(id, card);
            (200, body)
        })
        .await
}

/// CORS preflight for browsers tokenising cards.
#[handler]
pub fn preflight() -> Response {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header("access-control-allow-origin", "*")
        .header("access-control-allow-methods", "POST")
        .header(
            "access-control-allow-headers",
            "authorization, content-type",
        )
        .header("access-control-max-age", "600")
        .finish()
}

#[handler]
pub async fn retrieve_payment_method(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .retrieve(req, "PaymentMethod", id, |_, state, id, _| {
            card_of(state, id).map(|card| payment_method_json(id, &card, now()))
        })
        .await
}

#[handler]
pub async fn retrieve_charge(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .retrieve(req, "charge", id, |sandbox, state, id, _| {
            sandbox.charge_json(state, id)
        })
        .await
}

#[handler]
pub async fn create_refund(req: &Request, body: Body, sandbox: Data<&StripeSandbox>) -> Response {
    sandbox
        .serve(req, body, &wire::CREATE_REFUND, Keys::SecretOnly, false, |sandbox, state, call| {
            let pairs = &call.pairs;
            let amount = match param(pairs, "amount") {
                None => None,
                Some(raw) => match raw.parse::<i64>() {
                    Ok(a) if a >= 1 => Some(a),
                    _ => {
                        return wire::invalid(
                            Some("parameter_invalid_integer"),
                            Some("amount"),
                            &format!("Invalid positive integer: {raw}"),
                        );
                    }
                },
            };
            let reason = param(pairs, "reason").map(str::to_string);
            if let Some(r) = &reason
                && !["duplicate", "fraudulent", "requested_by_customer"].contains(&r.as_str())
            {
                return wire::invalid(
                    Some("parameter_invalid_string"),
                    Some("reason"),
                    "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                );
            }
            let charge = match (param(pairs, "charge"), param(pairs, "payment_intent")) {
                (Some(charge), _) => charge.to_string(),
                (None, Some(pi)) => {
                    let Some(intent) = state.intents.get(pi) else {
                        return wire::invalid(
                            Some("resource_missing"),
                            Some("payment_intent"),
                            &format!("No such payment_intent: '{pi}'"),
                        );
                    };
                    match intent.latest_charge.clone().filter(|_| intent.status == "succeeded") {
                        Some(c) => c,
                        None => {
                            return wire::invalid(
                                Some("charge_not_refundable"),
                                Some("payment_intent"),
                                &format!("This PaymentIntent ({pi}) does not have a successful charge to refund."),
                            );
                        }
                    }
                }
                (None, None) => {
                    return wire::invalid(
                        Some("parameter_missing"),
                        Some("payment_intent"),
                        "One of the following params should be provided for this request: payment_intent or charge.",
                    );
                }
            };
            sandbox.refund(state, Some(call), &charge, amount, reason, wire::metadata(pairs))
        })
        .await
}

#[handler]
pub async fn retrieve_refund(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .retrieve(req, "refund", id, |_, state, id, _| {
            state.refunds.get(id).map(Refund::to_json)
        })
        .await
}

/// `GET /v1/events`: the latest events, newest first (`limit` up to 100, `type` filter,
/// `starting_after` to page).
#[handler]
pub async fn list_events(req: &Request, sandbox: Data<&StripeSandbox>) -> Response {
    sandbox
        .serve(req, Body::empty(), &wire::LIST_EVENTS, Keys::SecretOnly, false, |_, state, call| {
            let limit = match param(&call.pairs, "limit").map(str::parse::<usize>) {
                None => 10,
                Some(Ok(n)) if (1..=100).contains(&n) => n,
                Some(_) => {
                    return wire::invalid(
                        Some("parameter_invalid_integer"),
                        Some("limit"),
                        "This value must be between 1 and 100.",
                    );
                }
            };
            let kind = param(&call.pairs, "type");
            let after = param(&call.pairs, "starting_after");
            let mut seen_cursor = after.is_none();
            let mut data = Vec::new();
            let mut has_more = false;
            for event in state.event_bodies.newest_first() {
                if !seen_cursor {
                    seen_cursor = event["id"].as_str() == after;
                    continue;
                }
                if kind.is_some_and(|k| event["type"].as_str() != Some(k)) {
                    continue;
                }
                if data.len() == limit {
                    has_more = true;
                    break;
                }
                data.push(event.clone());
            }
            (
                200,
                serde_json::json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/events"}),
            )
        })
        .await
}

#[handler]
pub async fn retrieve_event(
    req: &Request,
    Path(id): Path<String>,
    sandbox: Data<&StripeSandbox>,
) -> Response {
    sandbox
        .retrieve(req, "event", id, |_, state, id, _| {
            state.event_bodies.get(id).cloned()
        })
        .await
}
