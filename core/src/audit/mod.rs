//! Verification of the hash-chained event logs (`application_events`, `payment_events`): each
//! event stores the hash of the previous event of its application or payment and a hash over its
//! own fields (`audit_hash`, see the `audit_chain` migration), computed by the INSERT that
//! appends it ([`chained_event!`]). Changing, inserting or removing a row by hand breaks the chain
//! at that row or the next.

use sqlx::PgPool;

/// The SQL that appends one chained event to `$table`, whose chains are per `$entity` column:
/// `INSERT INTO <table> (...) OVERRIDING SYSTEM VALUE SELECT ...` with `$1` the entity, `$2` the
/// event, `$3` from, `$4` to, `$5` the actor's kind, `$6` its id and `$7` the cause. Its hash is
/// `audit_hash` over the predecessor's hash and its fields. The caller holds the entity's row
/// lock, so it is the chain's only writer; a second writer would violate the table's
/// `(entity, prev_hash)` unique index rather than fork the chain.
macro_rules! chained_event {
    ($table:literal, $entity:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (id, ",
            $entity,
            ", event, from_status, to_status,
                 actor_kind, actor_id, cause, occurred_at, prev_hash, hash)
             OVERRIDING SYSTEM VALUE
             SELECT n.id, $1, $2, $3, $4, $5, $6, $7, n.at, n.prev,
                    audit_hash(n.prev, n.id, $1, $2, $3, $4, $5, $6, $7, n.at)
               FROM (SELECT nextval('",
            $table,
            "_id_seq') AS id,
                            now() AS at,
                            (SELECT hash FROM ",
            $table,
            " WHERE ",
            $entity,
            " = $1
                              ORDER BY id DESC LIMIT 1) AS prev) n"
        )
    };
}
pub(crate) use chained_event;

pub mod checkpoint;

/// The hash-chained logs and the column naming each chain's application or payment.
pub const LOGS: [(&str, &str); 2] = [
    ("application_events", "application_id"),
    ("payment_events", "payment_id"),
];

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// `application_events` or `payment_events`.
    pub table: &'static str,
    /// The row at which the chain stops holding.
    pub id: i64,
    /// The application or payment the row belongs to.
    pub entity: uuid::Uuid,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl std::fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {} (of {}): {}",
            self.table, self.id, self.entity, self.problem
        )
    }
}

/// How many events were checked, and the first broken link, if any (lowest row id first).
pub async fn verify(pool: &PgPool) -> Result<(u64, Option<BrokenLink>), sqlx::Error> {
    let mut checked = 0;
    let mut first: Option<BrokenLink> = None;
    for (table, entity) in LOGS {
        // Recompute each row's hash from its fields and the previous row's stored hash.
        let sql = format!(
            "SELECT id, {entity}, matches, linked, count(*) OVER () FROM (
                SELECT id, {entity},
                       hash = audit_hash(prev_hash, id, {entity}, event, from_status, to_status,
                                         actor_kind, actor_id, cause, occurred_at) AS matches,
                       prev_hash IS NOT DISTINCT FROM lag(hash) OVER (PARTITION BY {entity} ORDER BY id) AS linked
                  FROM {table}) t
             ORDER BY (matches AND linked), id LIMIT 1"
        );
        let row: Option<(i64, uuid::Uuid, bool, bool, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_optional(pool)
                .await?;
        let Some((id, entity_id, matches, linked, count)) = row else {
            continue;
        };
        checked += count as u64;
        if matches && linked {
            continue;
        }
        let broken = BrokenLink {
            table,
            id,
            entity: entity_id,
            problem: if !matches {
                "its contents do not match its hash (the row was changed)"
            } else {
                "it does not follow the event before it (a row was removed or inserted)"
            },
        };
        // Application events are walked first; the first break found is the one reported.
        first.get_or_insert(broken);
    }
    Ok((checked, first))
}

/// The first payment or application whose status is not the last status its log records (a row
/// changed behind the log's back), if any.
pub async fn status_mismatch(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let payment: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT p.id FROM payments p
          WHERE p.status IS DISTINCT FROM (SELECT to_status FROM payment_events e
                                            WHERE e.payment_id = p.id ORDER BY id DESC LIMIT 1)
          ORDER BY p.id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    if let Some(id) = payment {
        return Ok(Some(format!(
            "payment {id}: its status is not the last one its log records"
        )));
    }
    // A draft has no events until it is submitted.
    let application: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT a.id FROM applications a
           LEFT JOIN LATERAL (SELECT to_status FROM application_events e
                               WHERE e.application_id = a.id ORDER BY id DESC LIMIT 1) last ON true
          WHERE a.status IS DISTINCT FROM coalesce(last.to_status, 'draft')
          ORDER BY a.id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(application
        .map(|id| format!("application {id}: its status is not the last one its log records")))
}
