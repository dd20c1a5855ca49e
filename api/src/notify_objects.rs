//! What a notification's `data.object` is: the resource exactly as this API shows it (the same
//! views as `GET /v1/admin/applications/{id}`, `GET /v1/payments/{id}` and a payment's refunds).
//! The worker's relay calls it as an `evisa_core::notify::RenderObject`.

use std::sync::Arc;

use evisa_core::{
    application::{self, ApplicationError},
    config::Config,
    ids::{ApplicationId, PaymentId},
    notify::{ObjectKind, RenderObject},
    payment, refund,
};
use poem_openapi::types::ToJSON;

use crate::routes::{payments::PaymentView, refunds::RefundView, views::ApplicationView};

pub fn renderer(pool: sqlx::PgPool, config: Arc<Config>) -> RenderObject {
    Arc::new(move |kind, id| {
        let (pool, config) = (pool.clone(), config.clone());
        Box::pin(async move {
            Ok(match kind {
                ObjectKind::Application => {
                    match application::store::get(
                        &pool,
                        &config.data_keys,
                        ApplicationId::from_uuid(id),
                    )
                    .await
                    {
                        Ok(a) => ApplicationView::from(a).to_json(),
                        Err(ApplicationError::NotFound) => None,
                        Err(e) => return Err(e.into()),
                    }
                }
                ObjectKind::Payment => payment::store::get(&pool, PaymentId::from_uuid(id))
                    .await?
                    .and_then(|p| PaymentView::from(p).to_json()),
                ObjectKind::Refund => refund::get(&pool, id)
                    .await?
                    .and_then(|r| RefundView::from(r).to_json()),
            })
        })
    })
}
