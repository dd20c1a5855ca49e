//! The spec of an officer's decision: `reject` takes a non-blank `reason` of 1 to 1000
//! characters, the other decisions take none. poem-openapi's `Object` cannot say that of one
//! flat struct, so [`DecisionBody`] declares it by hand as a `oneOf` on `decision`.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaDiscriminatorObject, MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};
use serde_json::json;

use super::admin::DecisionBody;

const NAME: &str = "DecisionRequest";
const WITHOUT_REASON: &str = "DecisionWithoutReason";
const REJECTION: &str = "Rejection";

fn decision(values: &[&str]) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        enum_items: values.iter().map(|v| json!(v)).collect(),
        ..MetaSchema::new("string")
    }))
}

fn reference(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

impl Type for DecisionBody {
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
        registry.create_schema::<Self, _>(WITHOUT_REASON.into(), |_| MetaSchema {
            description: Some(
                "`begin_processing` (paid → processing) or `approve` (processing → approved).",
            ),
            required: vec!["decision"],
            properties: vec![("decision", decision(&["begin_processing", "approve"]))],
            ..MetaSchema::new("object")
        });
        registry.create_schema::<Self, _>(REJECTION.into(), |_| MetaSchema {
            description: Some("processing → rejected, with the reason."),
            required: vec!["decision", "reason"],
            properties: vec![
                ("decision", decision(&["reject"])),
                (
                    "reason",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        description: Some("Why the application is rejected (not all blank)."),
                        min_length: Some(1),
                        max_length: Some(1000),
                        pattern: Some(r"\S".into()),
                        ..MetaSchema::new("string")
                    })),
                ),
            ],
            ..MetaSchema::new("object")
        });
        registry.create_schema::<Self, _>(NAME.into(), |_| MetaSchema {
            description: Some("An officer's decision on an application."),
            one_of: vec![
                MetaSchemaRef::Reference(WITHOUT_REASON.into()),
                MetaSchemaRef::Reference(REJECTION.into()),
            ],
            discriminator: Some(MetaDiscriminatorObject {
                property_name: "decision",
                mapping: vec![
                    ("begin_processing".into(), reference(WITHOUT_REASON)),
                    ("approve".into(), reference(WITHOUT_REASON)),
                    ("reject".into(), reference(REJECTION)),
                ],
            }),
            example: Some(json!({
                "decision": "reject",
                "reason": "The passport expires before the intended stay ends."
            })),
            ..MetaSchema::new("object")
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
