//! Paying an application's fee, following a payment, and its live event stream.

use evisa_core::{
    ids::{ApplicationId, PaymentId, UserId},
    payment::{
        Announced, CreatePaymentError, Payment, PaymentStatus, Provider, announcements,
        start::{self, StartAlipayError, Terms},
        store,
    },
    ratelimit::{self, Take},
};
use futures_util::StreamExt;
use poem::web::Data;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path},
    payload::{EventStream, Json},
};

use super::Tag;
use crate::{
    auth::BearerAuth,
    body::JsonBody,
    idempotent::{self, KeyHeader},
    limits::{WhenRedisIsDown, admit, client_ip},
    problem::{ApiError, ApiResult},
    state::AppState,
};

pub(crate) mod group;
pub(crate) mod wire;

pub(crate) use wire::Method;
pub(crate) use wire::field_problem;
pub use wire::{
    AllocationView, ChannelWire, NextActionView, PaymentRequestBody, PaymentStatusWire,
    PaymentView, ProviderWire,
};

pub struct PaymentsApi;

#[derive(ApiResponse)]
pub enum PaymentAccepted {
    /// The payment was accepted and is being charged; follow it with `GET /v1/payments/{id}` or
    /// its event stream. A retry with the same `Idempotency-Key` and body gets this same answer.
    #[oai(status = 202)]
    Accepted(Json<PaymentView>),
}

pub(crate) fn create_error(e: CreatePaymentError) -> ApiError {
    match e {
        CreatePaymentError::ApplicationNotFound => ApiError::not_found("application"),
        CreatePaymentError::NotPayable(status) => ApiError::conflict(
            "not-payable",
            format!("the application is {status}; only submitted applications can be paid"),
        ),
        CreatePaymentError::FeeExempt => {
            ApiError::conflict("fee-exempt", "this application is exempt from the fee")
        }
        CreatePaymentError::AlreadyInProgress(id) => ApiError::conflict(
            "payment-in-progress",
            format!("payment {id} for this application is still in progress; wait for its outcome"),
        ),
        CreatePaymentError::AlreadyPaid => ApiError::conflict(
            "already-paid",
            "the fee for this application has already been paid",
        ),
        CreatePaymentError::NoPriceInCurrency(c) => ApiError::rule(
            "provider-not-offered",
            format!("this payment method is not offered for this application (no price in {c})"),
            vec![],
        ),
        CreatePaymentError::MixedCurrencies(a, b) => ApiError::rule(
            "mixed-currencies",
            format!("the applications' fees are in different currencies ({a} and {b})"),
            vec![],
        ),
        CreatePaymentError::Repeated(a) => ApiError::invalid(vec![field_problem(
            "application_ids",
            &format!("names application {a} more than once"),
        )]),
        CreatePaymentError::Member {
            index,
            application,
            refusal,
        } => group::member_error(index, application, *refusal),
        CreatePaymentError::Database(e) if is_unique_violation(&e) => ApiError::conflict(
            "payment-in-progress",
            "another payment for this application was started at the same moment",
        ),
        CreatePaymentError::Database(e) => e.into(),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The checks before any payment attempt, from the API or the checkout page: payments per
/// client address, and (card testing) declines per application and per applicant.
pub(crate) async fn admit_attempt(
    state: &AppState,
    req: &poem::Request,
    applicant: UserId,
    applications: &[ApplicationId],
) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    let per_address = format!("payments:ip:{}", client_ip(req));
    let per_application: Vec<String> = applications
        .iter()
        .map(|&a| ratelimit::failed_payments_of_application(a))
        .collect();
    let per_applicant = ratelimit::failed_payments_of_applicant(applicant);
    let mut buckets = vec![(per_address.as_str(), limits.payment(), Take::Count)];
    // Card testing: after too many declines, no more attempts go to the gateway for a while.
    buckets.extend(
        per_application
            .iter()
            .map(|b| (b.as_str(), limits.failures_per_application(), Take::Peek)),
    );
    buckets.push((
        per_applicant.as_str(),
        limits.failures_per_applicant(),
        Take::Peek,
    ));
    // One round trip to Redis for all of them.
    admit(state, &buckets, WhenRedisIsDown::Allow).await
}

/// After the transaction that started a payment has committed: counted, and for a card, the
/// charge queue's workers woken (its job was added without waking them, see `start::card`).
pub(crate) fn accepted(provider: Provider) {
    evisa_core::metrics::payment_created(provider);
    if provider == Provider::Stripe {
        evisa_core::signals::wake_workers(<evisa_jobs::ChargeCard as evisa_jobs::Job>::QUEUE);
    }
}

/// Starts a payment of one application or a group by `method` in the caller's transaction,
/// through `payment::start`: the one path of the API and the checkout page alike.
pub(crate) async fn start_payment(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    applicant: UserId,
    applications: &[ApplicationId],
    method: Method,
) -> Result<Payment, ApiError> {
    let terms = Terms {
        expires_in: chrono::Duration::from_std(state.config.payments.expiry)
            .map_err(ApiError::internal)?,
        max_attempts: state.config.jobs.max_attempts,
    };
    Ok(match method {
        Method::Card { payment_method } => {
            start::card(tx, applicant, applications, &payment_method, &terms)
                .await
                .map_err(create_error)?
        }
        Method::Alipay {
            channel,
            return_url,
        } => {
            let Some(alipay) = state.alipay.as_ref() else {
                return Err(ApiError::rule(
                    "provider-not-offered",
                    "Alipay is not offered by this service",
                    vec![],
                ));
            };
            start::alipay(
                tx,
                alipay,
                applicant,
                applications,
                channel,
                return_url.as_ref(),
                &state.config.public_base_url,
                state.config.alipay.poll_first,
                &terms,
            )
            .await
            .map_err(|e| match e {
                StartAlipayError::Create(CreatePaymentError::NoPriceInCurrency(_)) => {
                    ApiError::rule(
                        "provider-not-offered",
                        "Alipay is not offered for this application: the fee schedule has no CNY price for it",
                        vec![field_problem("provider", "Alipay needs a CNY price")],
                    )
                }
                StartAlipayError::Create(other) => create_error(other),
                other => ApiError::internal(other),
            })?
        }
    })
}

/// A payment of `applicant`'s as it is now, then on every status change, up to and including a
/// final status, or until the stream's lifetime is up. It holds one of the applicant's stream
/// slots while it lives (429 beyond).
pub(crate) async fn follow(
    state: &AppState,
    applicant: UserId,
    id: PaymentId,
) -> Result<futures_util::stream::BoxStream<'static, Payment>, ApiError> {
    let limits = &state.config.connections;
    let slot = state.event_streams.open(applicant, limits)?;
    // Subscribe before reading, so no change between the read and the subscription is lost.
    let changes = announcements::subscribe();
    let current = store::get_for_owner(&state.db, applicant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let db = state.db.clone();
    let first = futures_util::stream::once(futures_util::future::ready(current));
    // Every FOLLOWER_REREAD, a `None`: read the payment again, in case an
    // announcement was lost (see `announcements`).
    let rereads = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(announcements::FOLLOWER_REREAD).await;
        Some((Ok(None), ()))
    });
    let changes = tokio_stream::wrappers::BroadcastStream::new(changes);
    let updates = futures_util::stream::select(changes, rereads).filter_map(move |msg| {
        let db = db.clone();
        async move {
            // The announcement carries the payment as it now is. A lagging subscriber, or one
            // told that changes may have been missed, re-reads the payment: it never misses the
            // final state.
            match msg {
                Ok(Some(change)) if change.id() != id => None,
                Ok(Some(change)) => match &*change {
                    Announced::Payment(p) => Some((**p).clone()),
                    Announced::Changed(_) => store::get(&db, id).await.ok().flatten(),
                },
                _ => store::get(&db, id).await.ok().flatten(),
            }
        }
    });
    let deduplicated = first
        .chain(updates)
        // One event per status, in order.
        .scan(None::<PaymentStatus>, |last, p| {
            let repeat = *last == Some(p.status);
            *last = Some(p.status);
            futures_util::future::ready(Some((repeat, p)))
        })
        .filter_map(|(repeat, p)| futures_util::future::ready((!repeat).then_some(p)))
        .boxed();
    // Up to and including the final status, then end at once; in any case after the stream's
    // lifetime (the client reconnects). The slot is held for as long as the stream lives.
    Ok(futures_util::stream::unfold(
        (deduplicated, false, slot),
        |(mut inner, done, slot)| async move {
            if done {
                return None;
            }
            let p = inner.next().await?;
            let terminal = p.status.is_terminal();
            Some((p, (inner, terminal, slot)))
        },
    )
    .take_until(tokio::time::sleep(limits.event_stream_lifetime))
    .boxed())
}

#[OpenApi(tag = "Tag::Payments")]
impl PaymentsApi {
    /// Pay an application's fee.
    ///
    /// Starts a payment for a submitted application and answers 202 at once. By card
    /// (`provider: stripe`), the charge runs in the background; with Alipay, the payment is
    /// `requires_action` with a signed `redirect_url` to Alipay's cashier, charged in CNY. The
    /// amount is the fee fixed at submission. Requires an
    /// `Idempotency-Key`: the same key and body replay the first answer for 24 hours; the same
    /// key with another body is 422; while the first request is still running, 409. Only one
    /// payment per application may be in progress (409 names it); after `failed`, `cancelled`
    /// or `expired` a new attempt is allowed, after `succeeded` never.
    #[oai(
        path = "/v1/applications/:id/payments",
        method = "post",
        operation_id = "createPayment"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        req: &poem::Request,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
        /// A unique key per payment attempt (a UUID), 1 to 255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<KeyHeader>,
        body: JsonBody<PaymentRequestBody>,
    ) -> ApiResult<PaymentAccepted> {
        let me = auth.applicant()?;
        let application = ApplicationId::from_uuid(id.0);
        admit_attempt(&state, req, me.user_id, &[application]).await?;
        let path = format!("/v1/applications/{}/payments", id.0);
        let raw = body.1.clone();
        let view = idempotent::once(
            &state.db,
            me.user_id,
            Some(idempotency_key.0.as_str()),
            &path,
            &raw,
            202,
            async |tx| {
                let JsonBody(request, _) = body;
                let method = request.into_method(&state.config.return_url_origins)?;
                let payment = start_payment(&state, tx, me.user_id, &[application], method).await?;
                Ok(PaymentView::from(payment))
            },
        )
        .await?;
        if let Ok(provider) = view.provider.parse::<Provider>() {
            accepted(provider);
        }
        tracing::info!(payment_id = %view.id, "payment accepted");
        Ok(PaymentAccepted::Accepted(Json(view)))
    }

    /// Get one of my payments.
    #[oai(path = "/v1/payments/:id", method = "get", operation_id = "getPayment")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<PaymentView>> {
        let me = auth.applicant()?;
        let payment = store::get_for_owner(&state.db, me.user_id, PaymentId::from_uuid(id.0))
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        Ok(Json(payment.into()))
    }

    /// List the payments of one of my applications, newest first.
    #[oai(
        path = "/v1/applications/:id/payments",
        method = "get",
        operation_id = "listApplicationPayments"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<Vec<PaymentView>>> {
        let me = auth.applicant()?;
        let app = ApplicationId::from_uuid(id.0);
        // 404 for an application that is not mine, rather than an empty list.
        evisa_core::application::store::get_for_owner(
            &state.db,
            &state.config.data_keys,
            me.user_id,
            app,
        )
        .await
        .map_err(super::applications::application_error)?;
        let payments = store::list_for_application(&state.db, me.user_id, app).await?;
        Ok(Json(payments.into_iter().map(Into::into).collect()))
    }

    /// Follow a payment live (Server-Sent Events).
    ///
    /// Sends the payment as it is now, then again on every status change, and ends after a final
    /// status (`succeeded`, `failed`, `cancelled`, `expired`) or after the stream's lifetime
    /// (`EVISA_EVENT_STREAM_MAX_SECONDS`; reconnect to follow on). Works whichever API process
    /// the change happened in. At most `EVISA_EVENT_STREAMS_PER_APPLICANT` streams per applicant
    /// (429 beyond).
    #[oai(
        path = "/v1/payments/:id/events",
        method = "get",
        operation_id = "paymentEvents"
    )]
    async fn events(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<EventStream<futures_util::stream::BoxStream<'static, PaymentView>>> {
        let me = auth.applicant()?;
        let stream = follow(&state, me.user_id, PaymentId::from_uuid(id.0))
            .await?
            .map(PaymentView::from)
            .boxed();
        Ok(EventStream::new(stream).keep_alive(std::time::Duration::from_secs(15)))
    }
}
