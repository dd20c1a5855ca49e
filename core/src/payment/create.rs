//! Creating a payment for one application or for a group of them: the checks on every
//! application (locked, in id order — the lock order everywhere), the amount from their fee
//! quotes, and the payment with its allocations and first event in one statement.

use chrono::Duration;
use sqlx::PgConnection;

use super::store::{PaymentRow, payment_columns};
use super::{Payment, Provider};
use crate::{
    application::{Actor, ApplicationStatus},
    ids::{ApplicationId, PaymentId, UserId},
    money::Currency,
};

/// Why a payment could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CreatePaymentError {
    #[error("application not found")]
    ApplicationNotFound,
    /// Only submitted applications are paid for.
    #[error("the application is {0}; only submitted applications can be paid")]
    NotPayable(ApplicationStatus),
    #[error("this application is exempt from the fee")]
    FeeExempt,
    /// Another attempt is still in flight.
    #[error("payment {0} for this application is still in progress")]
    AlreadyInProgress(PaymentId),
    #[error("the fee for this application has already been paid")]
    AlreadyPaid,
    /// The provider needs a currency the fee schedule does not price this application in.
    #[error("the fee schedule has no price in {0} for this application")]
    NoPriceInCurrency(Currency),
    /// The applications of a group are priced in different currencies for this provider.
    #[error("the applications' fees are in different currencies ({0} and {1})")]
    MixedCurrencies(Currency, Currency),
    /// The same application is named twice.
    #[error("application {0} is named more than once")]
    Repeated(ApplicationId),
    /// One application of a group cannot be paid (its position in the request, and why).
    #[error("application {application} (number {index} of the group): {refusal}")]
    Member {
        index: usize,
        application: ApplicationId,
        refusal: Box<CreatePaymentError>,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a new payment needs.
pub struct NewPayment<'a> {
    pub applicant: UserId,
    /// The applications it pays: one, or the members of a group.
    pub applications: &'a [ApplicationId],
    pub provider: Provider,
    /// The currency the provider charges in; `None` takes the fees' base currency.
    pub currency: Option<Currency>,
    pub payment_method: Option<&'a str>,
    pub return_url: Option<&'a str>,
    pub expires_in: Duration,
}

/// What a payment needs to know of an application.
#[derive(sqlx::FromRow)]
struct FeeRow {
    id: ApplicationId,
    status: String,
    fee_exempt: Option<bool>,
    fee_amount_minor: Option<i64>,
    fee_currency: Option<String>,
    fee_prices: Option<sqlx::types::Json<Vec<PriceRow>>>,
    /// A payment (or a waiver) already paid the fee.
    paid: bool,
    /// The attempt in flight, if any.
    open: Option<PaymentId>,
}

#[derive(serde::Deserialize)]
struct PriceRow {
    currency: String,
    amount: i64,
}

impl FeeRow {
    /// The application's fee in `currency` (its base currency when `None`), if it can be paid.
    fn fee(&self, currency: Option<Currency>) -> Result<(Currency, i64), CreatePaymentError> {
        let status: ApplicationStatus = self
            .status
            .parse()
            .map_err(|_| sqlx::Error::Decode("stored application status is invalid".into()))?;
        // An exempt application was marked paid on submission: it is exempt, not paid by anyone.
        if self.fee_exempt == Some(true) {
            return Err(CreatePaymentError::FeeExempt);
        }
        if self.paid {
            return Err(CreatePaymentError::AlreadyPaid);
        }
        if let Some(open) = self.open {
            return Err(CreatePaymentError::AlreadyInProgress(open));
        }
        if status != ApplicationStatus::Submitted {
            return Err(CreatePaymentError::NotPayable(status));
        }
        let base = self
            .fee_currency
            .as_deref()
            .and_then(|c| Currency::parse(c).ok())
            .ok_or_else(|| sqlx::Error::Decode("submitted application without a fee".into()))?;
        let currency = currency.unwrap_or(base);
        if currency == base {
            return Ok((currency, self.fee_amount_minor.unwrap_or(0)));
        }
        self.fee_prices
            .as_ref()
            .and_then(|p| p.0.iter().find(|p| p.currency == currency.code()))
            .map(|p| (currency, p.amount))
            .ok_or(CreatePaymentError::NoPriceInCurrency(currency))
    }
}

/// Starts a payment for the applicant's submitted applications, inside the caller's transaction
/// (which also enqueues the gateway work). Locks the application rows in id order, so that two
/// concurrent attempts for an application — single or group — are serialised and the second
/// sees the first. A refusal of one member of a group is [`CreatePaymentError::Member`].
pub async fn create(
    conn: &mut PgConnection,
    new: &NewPayment<'_>,
) -> Result<Payment, CreatePaymentError> {
    let group = new.applications.len() > 1;
    let member = |index: usize, application: ApplicationId, refusal: CreatePaymentError| {
        if group {
            CreatePaymentError::Member {
                index,
                application,
                refusal: Box::new(refusal),
            }
        } else {
            refusal
        }
    };
    for (i, a) in new.applications.iter().enumerate() {
        if new.applications[..i].contains(a) {
            return Err(member(i, *a, CreatePaymentError::Repeated(*a)));
        }
    }
    // The attempt in flight is read in the same statement as the lock; one that committed while
    // this waited for the lock may be missed here, and then
    // `payment_allocations_one_open_per_application` refuses the INSERT (the caller answers it
    // like `AlreadyInProgress`).
    let ids: Vec<uuid::Uuid> = new.applications.iter().map(|a| a.as_uuid()).collect();
    let rows: Vec<FeeRow> = sqlx::query_as(
        "SELECT id, status, fee_exempt, fee_amount_minor, fee_currency, fee_prices,
                paid_at IS NOT NULL AS paid,
                (SELECT payment_id FROM payment_allocations WHERE application_id = a.id
                    AND payment_state = 'in_flight'
                  LIMIT 1) AS open
           FROM applications a WHERE id = ANY($1) AND applicant_id = $2
          ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .bind(new.applicant)
    .fetch_all(&mut *conn)
    .await?;

    let mut shares: Vec<(uuid::Uuid, i64)> = Vec::with_capacity(ids.len());
    let mut currency: Option<Currency> = None;
    let mut total: i64 = 0;
    for (i, &application) in new.applications.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| r.id == application)
            .ok_or_else(|| member(i, application, CreatePaymentError::ApplicationNotFound))?;
        // Each in the provider's currency, or else in its own base currency: a group whose
        // base currencies differ is refused, whatever the order of its members.
        let (c, amount) = row
            .fee(new.currency)
            .map_err(|e| member(i, application, e))?;
        if let Some(fixed) = currency
            && fixed != c
        {
            return Err(member(
                i,
                application,
                CreatePaymentError::MixedCurrencies(fixed, c),
            ));
        }
        currency = Some(c);
        total = total
            .checked_add(amount)
            .ok_or_else(|| sqlx::Error::Decode("the group's total overflows".into()))?;
        shares.push((application.as_uuid(), amount));
    }
    let currency = currency.ok_or_else(|| sqlx::Error::Decode("a payment of nothing".into()))?;

    // The payment, its allocations and the first event of its chain, in one statement. It is not
    // announced: no one can follow a payment before the answer that names it.
    let (actor_kind, actor_id) = Actor::User {
        id: new.applicant,
        role: crate::users::Role::Applicant,
    }
    .parts();
    let (apps, amounts): (Vec<uuid::Uuid>, Vec<i64>) = shares.into_iter().unzip();
    let row: PaymentRow = sqlx::query_as(concat!(
        "WITH p AS (
             INSERT INTO payments (id, application_id, applicant_id, provider, status,
                 amount_minor, currency, payment_method, expires_at, return_url)
             VALUES ($1, $2, $3, $4, 'created', $5, $6, $7, now() + $8, $9)
             RETURNING *),
         al AS (
             INSERT INTO payment_allocations (payment_id, application_id, amount_minor, currency,
                 payment_state)
             SELECT p.id, s.application_id, s.amount_minor, p.currency, payment_state(p.status)
               FROM p, unnest($12::uuid[], $13::bigint[]) AS s (application_id, amount_minor)
             RETURNING *),
         e AS (
             INSERT INTO payment_events (id, payment_id, event, from_status, to_status,
                 actor_kind, actor_id, cause, occurred_at, prev_hash, hash)
             OVERRIDING SYSTEM VALUE
             SELECT n.id, p.id, 'created', NULL, 'created', $10, $11, NULL, n.at, NULL,
                    audit_hash(NULL::bytea, n.id, p.id, 'created', NULL::text, 'created', $10,
                               $11, NULL::text, n.at)
               FROM p, (SELECT nextval('payment_events_id_seq') AS id,
                               now() AS at) n)
         SELECT ",
        payment_columns!("al"),
        " FROM p"
    ))
    .bind(PaymentId::new())
    .bind(new.applications[0])
    .bind(new.applicant)
    .bind(new.provider.as_str())
    .bind(total)
    .bind(currency.code())
    .bind(new.payment_method)
    .bind(new.expires_in)
    .bind(new.return_url)
    .bind(actor_kind)
    .bind(actor_id)
    .bind(&apps)
    .bind(&amounts)
    .fetch_one(&mut *conn)
    .await?;
    row.into_payment().map_err(Into::into)
}
