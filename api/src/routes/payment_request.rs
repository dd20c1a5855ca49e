//! The spec of a payment request: a card payment names a Stripe PaymentMethod and nothing of
//! Alipay's; an Alipay payment names no card and may choose a cashier and a return URL.
//! poem-openapi's `Object` cannot say that of one flat struct, so [`PaymentRequestBody`] declares
//! it by hand as a `oneOf` on `provider` (parsing stays serde's, which enforces the same).

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaDiscriminatorObject, MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};
use serde_json::json;

use super::payments::{ChannelWire, PaymentRequestBody};

const NAME: &str = "PaymentRequest";
const CARD: &str = "CardPaymentRequest";
const ALIPAY: &str = "AlipayPaymentRequest";

fn provider(value: &str) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        enum_items: vec![json!(value)],
        ..MetaSchema::new("string")
    }))
}

fn string(description: &'static str, pattern: Option<&str>, max_length: usize) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        description: Some(description),
        pattern: pattern.map(str::to_string),
        max_length: Some(max_length),
        ..MetaSchema::new("string")
    }))
}

fn reference(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

impl Type for PaymentRequestBody {
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
        ChannelWire::register(registry);
        registry.create_schema::<Self, _>(CARD.into(), |_| MetaSchema {
            description: Some("A card payment through Stripe."),
            required: vec!["provider", "payment_method"],
            properties: vec![
                ("provider", provider("stripe")),
                (
                    "payment_method",
                    string(
                        "A PaymentMethod id from Stripe.js (or a test method such as `pm_card_visa`). Card details never reach this API.",
                        Some("^pm_[A-Za-z0-9_]{1,250}$"),
                        253,
                    ),
                ),
            ],
            ..MetaSchema::new("object")
        });
        registry.create_schema::<Self, _>(ALIPAY.into(), |_| MetaSchema {
            description: Some(
                "An Alipay payment (in CNY, where the fee schedule prices the application in CNY).",
            ),
            required: vec!["provider"],
            properties: vec![
                ("provider", provider("alipay")),
                ("channel", ChannelWire::schema_ref()),
                (
                    "return_url",
                    string(
                        "Where to send the payer's browser afterwards: an absolute http(s) URL on one of the portal's origins (`EVISA_RETURN_URL_ORIGINS`; 422 otherwise). The browser's return never changes a payment; its status comes from Alipay.",
                        Some("^https?://"),
                        2000,
                    ),
                ),
            ],
            ..MetaSchema::new("object")
        });
        registry.create_schema::<Self, _>(NAME.into(), |_| MetaSchema {
            description: Some(
                "A request to pay an application's fee. The amount is never sent: it is the fee fixed on the application at submission.",
            ),
            one_of: vec![
                MetaSchemaRef::Reference(CARD.into()),
                MetaSchemaRef::Reference(ALIPAY.into()),
            ],
            discriminator: Some(MetaDiscriminatorObject {
                property_name: "provider",
                mapping: vec![
                    ("stripe".into(), reference(CARD)),
                    ("alipay".into(), reference(ALIPAY)),
                ],
            }),
            example: Some(json!({"provider": "stripe", "payment_method": "pm_card_visa"})),
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
