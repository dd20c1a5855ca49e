//! Receipts: the applicant's (JSON, and a printable page), and the public check of a receipt's
//! verification code.

use evisa_core::{
    ids::{ApplicationId, PaymentId},
    payment::store as payments,
    receipt::{self, Method, Receipt},
};
use poem::web::Data;
use poem_openapi::{
    Object, OpenApi,
    param::Path,
    payload::{Html, Json},
};

use super::Tag;
use crate::{
    auth::BearerAuth,
    problem::{ApiError, ApiResult},
    state::AppState,
};

pub struct ReceiptsApi;

/// A refund on a receipt.
#[derive(Object, Debug, Clone)]
#[oai(rename = "ReceiptRefund")]
pub struct ReceiptRefundView {
    /// Minor units of the payment's currency.
    pub amount: i64,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub date: chrono::DateTime<chrono::Utc>,
}

/// One application a receipt covers, and its share of the payment.
#[derive(Object, Debug, Clone)]
#[oai(rename = "ReceiptApplication")]
pub struct ReceiptLineView {
    pub application_reference: uuid::Uuid,
    /// Minor units of the payment's currency.
    pub amount: i64,
    pub refunded_amount: i64,
}

/// The receipt of a succeeded payment: the payer's (`kind: payment`: the total and every
/// application it paid) or one application's (`kind: application`: its own share, its own code,
/// nothing about the payer or the other applications).
#[derive(Object, Debug, Clone)]
#[oai(rename = "Receipt")]
pub struct ReceiptView {
    /// `payment` (the payer's receipt) or `application` (one application's share).
    pub kind: String,
    pub payment_reference: uuid::Uuid,
    /// The application of an application's receipt; the first application of a payer's.
    pub application_reference: uuid::Uuid,
    /// Minor units of `currency`: the whole payment, or the application's share.
    pub amount: i64,
    pub currency: String,
    /// `card` or `alipay`.
    pub method: String,
    #[oai(skip_serializing_if_is_none)]
    pub card_brand: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub card_last4: Option<String>,
    /// Alipay's trade number.
    #[oai(skip_serializing_if_is_none)]
    pub alipay_trade_no: Option<String>,
    pub paid_at: chrono::DateTime<chrono::Utc>,
    /// Minor units given back by succeeded refunds.
    pub refunded_amount: i64,
    pub refunds: Vec<ReceiptRefundView>,
    /// The applications covered (one, on an application's receipt).
    pub applications: Vec<ReceiptLineView>,
    /// Anyone can check it at `GET /v1/receipts/{verification_code}`.
    pub verification_code: String,
}

fn kind(r: &Receipt) -> &'static str {
    if r.share_of.is_some() {
        "application"
    } else {
        "payment"
    }
}

fn lines(r: &Receipt) -> Vec<ReceiptLineView> {
    r.lines
        .iter()
        .map(|l| ReceiptLineView {
            application_reference: l.application_id.as_uuid(),
            amount: l.amount.amount_minor(),
            refunded_amount: l.refunded_amount,
        })
        .collect()
}

impl From<Receipt> for ReceiptView {
    fn from(r: Receipt) -> Self {
        let (kind, applications) = (kind(&r).to_string(), lines(&r));
        let (method, card_brand, card_last4, alipay_trade_no) = match r.method {
            Method::Card { brand, last4 } => ("card", brand, last4, None),
            Method::Alipay { trade_no } => ("alipay", None, None, trade_no),
        };
        ReceiptView {
            kind,
            applications,
            payment_reference: r.payment_id.as_uuid(),
            application_reference: r.application_id.as_uuid(),
            amount: r.amount.amount_minor(),
            currency: r.amount.currency().code().to_string(),
            method: method.into(),
            card_brand,
            card_last4,
            alipay_trade_no,
            paid_at: r.paid_at,
            refunded_amount: r.refunded_amount,
            refunds: r
                .refunds
                .into_iter()
                .map(|f| ReceiptRefundView {
                    amount: f.amount.amount_minor(),
                    status: f.status.as_str().into(),
                    date: f.created_at,
                })
                .collect(),
            verification_code: r.code,
        }
    }
}

/// What the public check of a receipt code confirms. Nothing personal.
#[derive(Object, Debug, Clone)]
#[oai(rename = "ReceiptCheck")]
pub struct ReceiptCheckView {
    /// Always true: codes that are not genuine answer 404.
    pub genuine: bool,
    /// `payment` (a payer's receipt) or `application` (one application's share).
    pub kind: String,
    pub payment_reference: uuid::Uuid,
    pub application_reference: uuid::Uuid,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    pub paid_at: chrono::DateTime<chrono::Utc>,
    pub refunded_amount: i64,
    /// The applications the receipt covers.
    pub applications: Vec<ReceiptLineView>,
}

async fn receipt_of(
    state: &AppState,
    auth: &BearerAuth,
    id: uuid::Uuid,
) -> Result<Receipt, ApiError> {
    let me = auth.applicant()?;
    let payment = payments::get_for_owner(&state.db, me.user_id, PaymentId::from_uuid(id))
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    receipt::for_payment(&state.db, &state.config.receipt_key, &payment)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "no-receipt",
                format!(
                    "the payment is {}; only succeeded payments have a receipt",
                    payment.status
                ),
            )
        })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[OpenApi(tag = "Tag::Payments")]
impl ReceiptsApi {
    /// Get the receipt of one of my payments.
    #[oai(
        path = "/v1/payments/:id/receipt",
        method = "get",
        operation_id = "getReceipt"
    )]
    async fn receipt(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<ReceiptView>> {
        Ok(Json(receipt_of(&state, &auth, id.0).await?.into()))
    }

    /// Get the receipt of one of my applications: its share of the payment that paid it.
    ///
    /// For a group payment, each application has its own receipt (its share, its own
    /// verification code); the payer's receipt of the whole is `GET /v1/payments/{id}/receipt`.
    /// 409 while no payment has paid the application.
    #[oai(
        path = "/v1/applications/:id/receipt",
        method = "get",
        operation_id = "getApplicationReceipt"
    )]
    async fn application_receipt(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Json<ReceiptView>> {
        let me = auth.applicant()?;
        let application = ApplicationId::from_uuid(id.0);
        // 404 for an application that is not mine.
        evisa_core::application::store::get_for_owner(
            &state.db,
            &state.config.data_keys,
            me.user_id,
            application,
        )
        .await
        .map_err(super::applications::application_error)?;
        let r = receipt::for_application(
            &state.db,
            &state.config.receipt_key,
            me.user_id,
            application,
        )
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "no-receipt",
                "no payment has paid this application; only paid applications have a receipt",
            )
        })?;
        Ok(Json(r.into()))
    }

    /// Get the receipt of one of my payments as a printable page.
    #[oai(
        path = "/v1/payments/:id/receipt/printable",
        method = "get",
        operation_id = "getPrintableReceipt"
    )]
    async fn printable(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<uuid::Uuid>,
    ) -> ApiResult<Html<String>> {
        let r = ReceiptView::from(receipt_of(&state, &auth, id.0).await?);
        let exponent = evisa_core::money::Currency::parse(&r.currency)
            .map(|c| c.exponent())
            .unwrap_or(2);
        let major = |minor: i64| {
            evisa_core::money::Money::new(
                minor,
                evisa_core::money::Currency::parse(&r.currency).expect("stored currency"),
            )
            .map(|m| m.to_major_string())
            .unwrap_or_else(|_| format!("{minor} (minor units, exponent {exponent})"))
        };
        let method = match (&r.card_brand, &r.card_last4, &r.alipay_trade_no) {
            (Some(b), Some(l), _) => format!("Card: {} ending {}", escape(b), escape(l)),
            (_, _, Some(t)) => format!("Alipay, trade no. {}", escape(t)),
            _ => escape(&r.method),
        };
        let refunds: String = r
            .refunds
            .iter()
            .map(|f| {
                format!(
                    "<tr><td>{}</td><td>{} {}</td><td>{}</td></tr>",
                    f.date.format("%Y-%m-%d"),
                    major(f.amount),
                    r.currency,
                    escape(&f.status)
                )
            })
            .collect();
        // A group payment's receipt lists the applications it paid: references and shares only.
        let members: String = if r.applications.len() > 1 {
            let rows: String = r
                .applications
                .iter()
                .map(|a| {
                    format!(
                        "<tr><td>{}</td><td>{} {}</td></tr>",
                        a.application_reference,
                        major(a.amount),
                        escape(&r.currency)
                    )
                })
                .collect();
            format!("<h2>Applications paid</h2><table>{rows}</table>")
        } else {
            String::new()
        };
        let page = format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Receipt {payment}</title>
<style>body{{font-family:serif;max-width:40em;margin:2em auto}}td,th{{padding:.2em 1em;text-align:left}}@media print{{a{{display:none}}}}</style></head>
<body><h1>Visa fee receipt</h1><table>
<tr><th>Payment reference</th><td>{payment}</td></tr>
<tr><th>Application reference</th><td>{application}</td></tr>
<tr><th>Amount</th><td>{amount} {currency}</td></tr>
<tr><th>Paid with</th><td>{method}</td></tr>
<tr><th>Date</th><td>{date}</td></tr>
<tr><th>Refunded</th><td>{refunded} {currency}</td></tr>
</table>{members}{refunds_table}
<p>Verification code: <strong>{code}</strong><br>Check that this receipt is genuine at <code>/v1/receipts/{code}</code> on the official service.</p>
</body></html>"#,
            payment = r.payment_reference,
            application = r.application_reference,
            amount = major(r.amount),
            currency = escape(&r.currency),
            date = r.paid_at.format("%Y-%m-%d %H:%M UTC"),
            refunded = major(r.refunded_amount),
            refunds_table = if refunds.is_empty() {
                String::new()
            } else {
                format!("<h2>Refunds</h2><table>{refunds}</table>")
            },
            code = escape(&r.verification_code),
        );
        Ok(Html(page))
    }

    /// Check a receipt's verification code.
    ///
    /// Public: confirms that a receipt with this code was issued by this service, and for what,
    /// without any personal data. Codes that are not genuine answer 404.
    #[oai(
        path = "/v1/receipts/:code",
        method = "get",
        operation_id = "checkReceipt"
    )]
    async fn check(
        &self,
        state: Data<&AppState>,
        code: Path<String>,
    ) -> ApiResult<Json<ReceiptCheckView>> {
        let r = receipt::by_code(&state.db, &state.config.receipt_key, &code.0)
            .await?
            .ok_or_else(|| {
                ApiError::from_status(
                    poem::http::StatusCode::NOT_FOUND,
                    "no genuine receipt has this code".into(),
                    vec![],
                )
            })?;
        Ok(Json(ReceiptCheckView {
            genuine: true,
            kind: kind(&r).into(),
            applications: lines(&r),
            payment_reference: r.payment_id.as_uuid(),
            application_reference: r.application_id.as_uuid(),
            amount: r.amount.amount_minor(),
            currency: r.amount.currency().code().to_string(),
            paid_at: r.paid_at,
            refunded_amount: r.refunded_amount,
        }))
    }
}
