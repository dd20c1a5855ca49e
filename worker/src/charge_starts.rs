//! Charge jobs running at once start their charges together: one statement and one commit for
//! all of them (`payment::start_charges`), instead of one each. The starter takes whatever has
//! gathered while its last statement ran, so an idle worker's charge starts at once.

use apalis::prelude::BoxDynError;
use evisa_core::{
    ids::PaymentId,
    payment::{self, Payment},
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// Starts taken in one statement at most.
const BATCH: usize = 256;

type Answer = oneshot::Sender<Result<Option<Payment>, String>>;

/// Hands charge starts to one task that makes them in batches.
pub struct ChargeStarts {
    requests: mpsc::Sender<(PaymentId, String, Answer)>,
}

impl ChargeStarts {
    /// The starter, running until the last handle is dropped.
    pub fn spawn(db: PgPool) -> Self {
        let (requests, mut pending) = mpsc::channel::<(PaymentId, String, Answer)>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while pending.recv_many(&mut batch, BATCH).await > 0 {
                let started = {
                    let starts: Vec<(PaymentId, &str)> = batch
                        .iter()
                        .map(|(id, cause, _)| (*id, cause.as_str()))
                        .collect();
                    payment::start_charges(&db, &starts).await
                };
                // A failed statement started none of them: each job is retried.
                match started {
                    Ok(payments) => {
                        for ((_, _, answer), payment) in batch.drain(..).zip(payments) {
                            let _ = answer.send(Ok(payment));
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        for (_, _, answer) in batch.drain(..) {
                            let _ = answer.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { requests }
    }

    /// Starts the charge of payment `id` together with the others waiting (see
    /// `payment::start_charges`): the payment as it now is, `None` if there is none.
    pub async fn start(&self, id: PaymentId, cause: &str) -> Result<Option<Payment>, BoxDynError> {
        let stopped = "the charge starter has stopped";
        let (answer, answered) = oneshot::channel();
        self.requests
            .send((id, cause.to_string(), answer))
            .await
            .map_err(|_| stopped)?;
        Ok(answered.await.map_err(|_| stopped)??)
    }
}
