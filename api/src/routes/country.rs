//! `CountryWire`: a nationality on the wire, declared in the spec as one shared `CountryCode`
//! schema listing every assigned ISO 3166-1 alpha-2 code (the codes the server accepts).

use std::borrow::Cow;

use evisa_core::CountryCode;
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde_json::Value;

const NAME: &str = "CountryCode";

/// As sent. Handlers parse it with [`CountryCode::parse`], so that an unknown code is reported
/// against the field or parameter that carried it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct CountryWire(pub String);

impl Type for CountryWire {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(NAME.into())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(NAME.into(), |_| MetaSchema {
            description: Some("ISO 3166-1 alpha-2 code of a country, e.g. `FR`."),
            enum_items: CountryCode::all_alpha2().map(Value::from).collect(),
            example: Some("FR".into()),
            ..MetaSchema::new("string")
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromParameter for CountryWire {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_string()))
    }
}

impl ParseFromJSON for CountryWire {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for CountryWire {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}
