//! What an applicant writes: drafts, their changes, and the submission that fixes the fee.

use super::*;

/// Starts a draft with whatever fields the applicant gave.
pub async fn create_draft(
    conn: &mut PgConnection,
    keys: &DataKeys,
    applicant: UserId,
    changes: &ApplicationChanges,
) -> Result<Application, ApplicationError> {
    let id = ApplicationId::new();
    let b = Bindings::new(keys, id, changes);
    let row: ApplicationRow = sqlx::query_as(concat!(
        "INSERT INTO applications (id, applicant_id, status, full_name, passport_number,
             date_of_birth, nationality, visa_type, processing_speed, intended_arrival_date)
         VALUES ($1, $2, 'draft', $3, $4, $5, $6, $7, $8, $9)
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(applicant)
    .bind(b.full_name)
    .bind(b.passport_number)
    .bind(b.date_of_birth)
    .bind(b.nationality)
    .bind(b.visa_type)
    .bind(b.processing_speed)
    .bind(b.intended_arrival_date)
    .fetch_one(conn)
    .await?;
    row.open(keys)
}

/// Changes the given fields of the applicant's own draft. Anything past draft is refused.
pub async fn update_draft(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    id: ApplicationId,
    changes: &ApplicationChanges,
) -> Result<Application, ApplicationError> {
    let b = Bindings::new(keys, id, changes);
    let row: Option<ApplicationRow> = sqlx::query_as(concat!(
        "UPDATE applications SET
             full_name = coalesce($3, full_name),
             passport_number = coalesce($4, passport_number),
             date_of_birth = coalesce($5, date_of_birth),
             nationality = coalesce($6, nationality),
             visa_type = coalesce($7, visa_type),
             processing_speed = coalesce($8, processing_speed),
             intended_arrival_date = coalesce($9, intended_arrival_date),
             updated_at = now()
         WHERE id = $1 AND applicant_id = $2 AND status = 'draft'
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(applicant)
    .bind(b.full_name)
    .bind(b.passport_number)
    .bind(b.date_of_birth)
    .bind(b.nationality)
    .bind(b.visa_type)
    .bind(b.processing_speed)
    .bind(b.intended_arrival_date)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.open(keys),
        // Tell "not yours / not there" from "not a draft any more".
        None => {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM applications WHERE id = $1 AND applicant_id = $2",
            )
            .bind(id)
            .bind(applicant)
            .fetch_optional(pool)
            .await?;
            match status.and_then(|s| s.parse::<ApplicationStatus>().ok()) {
                None => Err(ApplicationError::NotFound),
                Some(status) => Err(ApplicationError::NotEditable { status }),
            }
        }
    }
}

/// Submits the applicant's complete draft: fixes the fee quote of the day and, for a fee-exempt
/// application, marks it paid at once. One transaction; nothing is written if anything fails.
pub async fn submit(
    pool: &PgPool,
    keys: &DataKeys,
    applicant: UserId,
    id: ApplicationId,
    today: NaiveDate,
) -> Result<Application, ApplicationError> {
    let actor = Actor::User {
        id: applicant,
        role: Role::Applicant,
    };
    let mut tx = pool.begin().await?;
    let row: ApplicationRow = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1 AND applicant_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(applicant)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApplicationError::NotFound)?;
    let current = row.open(keys)?;
    let submitted = current.status.next(ApplicationEvent::Submit)?;

    let missing: Vec<&'static str> = [
        ("full_name", current.full_name.is_none()),
        ("passport_number", current.passport_number.is_none()),
        ("date_of_birth", current.date_of_birth.is_none()),
        ("nationality", current.nationality.is_none()),
        ("visa_type", current.visa_type.is_none()),
        ("processing_speed", current.processing_speed.is_none()),
        (
            "intended_arrival_date",
            current.intended_arrival_date.is_none(),
        ),
    ]
    .into_iter()
    .filter_map(|(field, absent)| absent.then_some(field))
    .collect();
    let (Some(nationality), Some(visa_type), Some(speed), Some(arrival), true) = (
        current.nationality,
        current.visa_type,
        current.processing_speed,
        current.intended_arrival_date,
        missing.is_empty(),
    ) else {
        return Err(ApplicationError::Incomplete { missing });
    };
    let mut out_of_range = Vec::new();
    if let Some(Err(e)) = current.date_of_birth.map(|d| DateOfBirth::parse(d, today)) {
        out_of_range.push(("date_of_birth", e));
    }
    if let Err(e) = ArrivalDate::parse(arrival, today) {
        out_of_range.push(("intended_arrival_date", e));
    }
    if !out_of_range.is_empty() {
        return Err(ApplicationError::OutOfRange {
            fields: out_of_range,
        });
    }

    let quote: FeeQuote = fees::quote(&mut *tx, visa_type, nationality, speed, today)
        .await?
        .ok_or(ApplicationError::NoFeeRule)?;
    let prices: Vec<StoredPrice> = quote
        .prices
        .iter()
        .map(|m| StoredPrice {
            currency: m.currency().code().to_string(),
            amount: m.amount_minor(),
        })
        .collect();
    sqlx::query(
        "UPDATE applications SET status = $2, fee_rule_id = $3, fee_amount_minor = $4,
             fee_currency = $5, fee_exempt = $6, fee_prices = $7, submitted_at = now(),
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(submitted.as_str())
    .bind(quote.rule_id)
    .bind(quote.base.amount_minor())
    .bind(quote.base.currency().code())
    .bind(quote.exempt)
    .bind(sqlx::types::Json(&prices))
    .execute(&mut *tx)
    .await?;
    record_event(
        &mut tx,
        id,
        ApplicationEvent::Submit,
        current.status,
        submitted,
        actor,
        None,
    )
    .await?;

    if quote.exempt {
        let paid = submitted.next(ApplicationEvent::FeeWaived)?;
        sqlx::query("UPDATE applications SET status = $2, paid_at = now() WHERE id = $1")
            .bind(id)
            .bind(paid.as_str())
            .execute(&mut *tx)
            .await?;
        let cause = format!("fee_rule:{}", quote.rule_id);
        record_event(
            &mut tx,
            id,
            ApplicationEvent::FeeWaived,
            submitted,
            paid,
            Actor::System,
            Some(&cause),
        )
        .await?;
    }
    let row: ApplicationRow = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    row.open(keys)
}
