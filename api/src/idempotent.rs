//! The HTTP side of idempotent POSTs (see `evisa_core::idempotency`): parse the key, claim it in
//! the request's transaction, replay a saved answer, or save the new one.

use evisa_core::{
    idempotency::{self, Begin, IdempotencyError, IdempotencyKey, Saved},
    ids::UserId,
};
use poem_openapi::types::{ParseFromJSON, ToJSON};
use sqlx::{PgConnection, PgPool};

use crate::problem::{ApiError, FieldProblem};

/// Does `work` once per `Idempotency-Key`: in one transaction it claims the key, does the work,
/// saves its answer (`status` and the view) and commits, so a request either happened with
/// its answer saved or did not happen at all. A repeat gets the saved answer without doing
/// anything; without a key, the work is simply done. The work's error rolls everything back.
pub async fn once<T: ToJSON + ParseFromJSON>(
    db: &PgPool,
    user: UserId,
    key: Option<&str>,
    path: &str,
    body: &serde_json::Value,
    status: u16,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut tx = db.begin().await?;
    let claimed = match claim(&mut tx, user, key, path, body).await? {
        Outcome::Replay(saved) => return replay(saved),
        Outcome::Proceed(claimed) => claimed,
    };
    let view = work(&mut tx).await?;
    if let Some(c) = claimed {
        let answer = view.to_json().unwrap_or_default();
        if idempotency::save(&mut tx, user, &c.key, &c.hash, status, &answer).await? == Saved::Raced
        {
            // The same key's first request committed while this one looked: its answer stands
            // and this one's work is undone.
            tx.rollback().await?;
            let mut tx = db.begin().await?;
            return match claim(&mut tx, user, key, path, body).await? {
                Outcome::Replay(saved) => replay(saved),
                Outcome::Proceed(_) => Err(in_flight()),
            };
        }
    }
    tx.commit().await?;
    Ok(view)
}

fn in_flight() -> ApiError {
    ApiError::conflict(
        "idempotency-in-flight",
        "a request with this Idempotency-Key is still being processed; retry shortly",
    )
}

/// A claimed key: the work may proceed and its answer must be saved with it.
struct Claim {
    key: IdempotencyKey,
    hash: Vec<u8>,
}

/// What to do with a keyed request.
enum Outcome {
    /// First time (or no key): do the work.
    Proceed(Option<Claim>),
    /// Answer this saved body again and do nothing.
    Replay(serde_json::Value),
}

/// Claims `key` (if the client sent one) for this request in `conn`'s transaction.
async fn claim(
    conn: &mut PgConnection,
    user: UserId,
    key: Option<&str>,
    path: &str,
    body: &serde_json::Value,
) -> Result<Outcome, ApiError> {
    let Some(raw) = key else {
        return Ok(Outcome::Proceed(None));
    };
    let key = IdempotencyKey::parse(raw)
        .map_err(|e| ApiError::bad_param("Idempotency-Key", e.to_string()))?;
    let hash = idempotency::request_hash("POST", path, body);
    match idempotency::begin(conn, user, &key, &hash).await {
        Ok(Begin::New) => Ok(Outcome::Proceed(Some(Claim { key, hash }))),
        Ok(Begin::Replay { body, .. }) => Ok(Outcome::Replay(body)),
        Err(IdempotencyError::InFlight) => Err(in_flight()),
        // A conflict with an earlier request, like a key still in flight: 409, not 422, since the
        // request itself is valid and would succeed under a fresh key.
        Err(IdempotencyError::Mismatch) => Err(ApiError::conflict_with(
            "idempotency-key-reused",
            "this Idempotency-Key was already used with a different request; use a new key",
            vec![FieldProblem {
                field: "Idempotency-Key".into(),
                pointer: None,
                detail: "was used for a different request".into(),
            }],
        )),
        Err(IdempotencyError::Database(e)) => Err(e.into()),
    }
}

/// The saved answer of a replayed request, as the operation's view type.
fn replay<T: ParseFromJSON>(saved: serde_json::Value) -> Result<T, ApiError> {
    T::parse_from_json(Some(saved)).map_err(|e| ApiError::internal(e.into_message()))
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters, as the spec says. Checked
/// here byte by byte: the same rule as a `pattern` validator, whose regular expression (with its
/// 255 bounded repetitions) poem-openapi would compile again on every request.
#[derive(Debug, Clone)]
pub struct KeyHeader(pub String);

impl KeyHeader {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl poem_openapi::types::Type for KeyHeader {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        let mut schema = poem_openapi::registry::MetaSchema::new("string");
        schema.min_length = Some(1);
        schema.max_length = Some(255);
        schema.pattern = Some("^[!-~]{1,255}$".into());
        poem_openapi::registry::MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ParseFromParameter for KeyHeader {
    fn parse_from_parameter(value: &str) -> poem_openapi::types::ParseResult<Self> {
        IdempotencyKey::parse(value)
            .map(|k| KeyHeader(k.as_str().to_string()))
            .map_err(|e| poem_openapi::types::ParseError::custom(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::{
        registry::MetaSchemaRef,
        types::{ParseFromParameter, Type},
    };

    use super::KeyHeader;

    #[test]
    fn the_header_takes_what_the_pattern_says_and_the_spec_still_says_it() {
        for good in [
            "0190a000-0000-7000-8000-000000000001",
            "!",
            &"~".repeat(255),
        ] {
            assert_eq!(
                KeyHeader::parse_from_parameter(good).unwrap().as_str(),
                good
            );
        }
        for bad in ["", " ", "a b", "clé", "\t", &"a".repeat(256)] {
            assert!(KeyHeader::parse_from_parameter(bad).is_err(), "{bad:?}");
        }
        let MetaSchemaRef::Inline(schema) = KeyHeader::schema_ref() else {
            panic!("an inline schema");
        };
        assert_eq!(schema.pattern.as_deref(), Some("^[!-~]{1,255}$"));
        assert_eq!((schema.min_length, schema.max_length), (Some(1), Some(255)));
    }
}
