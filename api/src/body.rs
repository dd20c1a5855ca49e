//! `JsonBody<T>`: a JSON request body whose schema comes from poem-openapi and whose parsing
//! comes from serde, so that every error names the field at fault (poem-openapi's own `Json`
//! reports the type, not the field). Domain rules are checked afterwards, in the handlers.

use poem::{Request, RequestBody, Result};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::ContentTypeError,
    payload::{ParsePayload, Payload},
    registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, FieldProblem};

/// Fields a client may never send, with the reason (e.g. amounts: the server computes them).
pub trait ServerSetFields {
    const SERVER_SET: &'static [(&'static str, &'static str)] = &[];
}

/// The largest body accepted, put into the request's data by the size-limit middleware.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON request body of type `T`, with the document as received (for request fingerprints).
pub struct JsonBody<T>(pub T, pub serde_json::Value);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(m) if m.type_() == "application"
            && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned + ServerSetFields> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        let limit = request
            .data::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(64 * 1024);
        let bytes = body
            .take()?
            .into_bytes_limit(limit)
            .await
            .map_err(|e| match e {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::from_status(
                    poem::http::StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {limit} bytes"),
                    vec![],
                ),
                other => {
                    ApiError::bad_request(format!("the body could not be read: {other}"), vec![])
                }
            })?;
        parse_with_value::<T>(&bytes)
            .map(|(v, doc)| JsonBody(v, doc))
            .map_err(Into::into)
    }
}

/// Parses a body: 400 for what is not JSON at all, 422 naming the field for everything else.
pub fn parse<T: DeserializeOwned + ServerSetFields>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_with_value(bytes).map(|(v, _)| v)
}

/// [`parse`], also returning the JSON document.
pub fn parse_with_value<T: DeserializeOwned + ServerSetFields>(
    bytes: &[u8],
) -> Result<(T, serde_json::Value), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "a JSON request body is required",
            vec![],
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            format!(
                "the body is not valid JSON: {} at line {}, column {}",
                describe_syntax(&e),
                e.line(),
                e.column()
            ),
            vec![],
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::invalid(vec![FieldProblem {
            field: "(body)".into(),
            pointer: Some(String::new()),
            detail: "must be a JSON object".into(),
        }]));
    };
    // No field of a request body is nullable: an optional field is left out, never sent as null.
    let nulls: Vec<FieldProblem> = object
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(field, _)| FieldProblem {
            field: field.clone(),
            pointer: Some(format!("/{field}")),
            detail: "may not be null: leave the field out instead".into(),
        })
        .collect();
    if !nulls.is_empty() {
        return Err(ApiError::invalid(nulls));
    }
    let forbidden: Vec<FieldProblem> = T::SERVER_SET
        .iter()
        .filter(|(field, _)| object.contains_key(*field))
        .map(|(field, why)| FieldProblem {
            field: (*field).into(),
            pointer: Some(format!("/{field}")),
            detail: (*why).into(),
        })
        .collect();
    if !forbidden.is_empty() {
        return Err(ApiError::rule(
            "server-set-field",
            format!(
                "`{}` may not be sent: {}",
                forbidden[0].field, forbidden[0].detail
            ),
            forbidden,
        ));
    }
    serde_path_to_error::deserialize::<_, T>(value.clone())
        .map(|v| (v, value))
        .map_err(|e| {
            let inner = e.inner().to_string();
            // serde reports a missing field at the parent's path, naming the field in the message;
            // put the field itself into the path (unknown fields already end the path).
            let mut path = e.path().to_string();
            let named = ["missing field `", "unknown field `"]
                .iter()
                .find_map(|p| inner.strip_prefix(p))
                .and_then(|rest| rest.split('`').next());
            if let Some(name) = named
                && path.rsplit('.').next() != Some(name)
            {
                path = if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
            }
            let detail = match inner.split_once(", expected one of") {
                Some((head, _)) if inner.starts_with("unknown field") => {
                    format!("{head}: this request does not accept it")
                }
                _ if CHRONO_MESSAGES.contains(&inner.as_str()) => {
                    format!("must be a date as YYYY-MM-DD ({inner})")
                }
                _ => inner,
            };
            let pointer = format!("/{}", path.replace('.', "/"));
            ApiError::invalid(vec![FieldProblem {
                field: path,
                pointer: Some(pointer),
                detail,
            }])
        })
}

/// chrono's parse errors say what is wrong but not what was expected.
const CHRONO_MESSAGES: &[&str] = &[
    "input contains invalid characters",
    "premature end of input",
    "input is out of range",
    "trailing input",
    "input is not enough for unique date and time",
    "no possible date and time matching input",
];

fn describe_syntax(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        _ => "unexpected character",
    }
}

impl<'a, T: Type + DeserializeOwned + ServerSetFields> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> Result<Self> {
        match request.content_type() {
            Some(ct) if Self::check_content_type(ct) => {
                <Self as ParsePayload>::from_request(request, body).await
            }
            Some(ct) => Err(ContentTypeError::NotSupported {
                content_type: ct.to_string(),
            }
            .into()),
            None => Err(ContentTypeError::ExpectContentType.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        age: Option<u32>,
        inner: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        when: chrono::NaiveDate,
    }
    impl ServerSetFields for Sample {
        const SERVER_SET: &'static [(&'static str, &'static str)] = &[("amount", "set by us")];
    }

    fn problem(r: Result<Sample, ApiError>) -> (u16, Vec<String>, String) {
        use poem::IntoResponse;
        let resp = r.unwrap_err().into_response();
        let status = resp.status().as_u16();
        let body = futures_body(resp);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let fields = v["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (status, fields, v["detail"].as_str().unwrap().to_string())
    }

    fn futures_body(resp: poem::Response) -> Vec<u8> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resp.into_body().into_vec())
            .unwrap()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(problem(parse(b"{\"name\": 5}")).1, ["name"]);
        assert_eq!(problem(parse(b"{\"age\": 1}")).1, ["name"]);
        assert_eq!(problem(parse(b"{\"name\":\"a\",\"x\":1}")).1, ["x"]);
        let (status, fields, _) = problem(parse(b"{\"name\":\"a\",\"inner\":{\"when\":\"nope\"}}"));
        assert_eq!((status, fields), (422, vec!["inner.when".to_string()]));
        let (status, fields, detail) = problem(parse(b"{\"name\":\"a\",\"amount\":100}"));
        assert_eq!((status, fields), (422, vec!["amount".to_string()]));
        assert!(detail.contains("set by us"));
    }

    #[test]
    fn explicit_null_is_refused_naming_the_field() {
        let (status, fields, detail) = problem(parse(b"{\"name\":\"a\",\"age\":null}"));
        assert_eq!((status, fields), (422, vec!["age".to_string()]));
        assert!(detail.contains("null"));
    }

    #[test]
    fn malformed_json_is_400() {
        assert_eq!(problem(parse(b"{\"name\":")).0, 400);
        assert_eq!(problem(parse(b"")).0, 400);
        assert_eq!(problem(parse(b"[1]")).0, 422);
    }
}
