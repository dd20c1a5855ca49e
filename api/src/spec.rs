//! What poem-openapi cannot emit, added to the generated document: closed request bodies, RFC
//! 3339 `date` formats, the shape of one server-sent event. Also the path → methods table the
//! `Allow` header of a 405 is built from.

use poem::http::Method;
use serde_json::{Value, json};

/// Applies every rewrite below to the document poem-openapi generated.
pub fn finish(doc: &mut Value) {
    standard_date_format(doc);
    date_patterns(doc);
    close_request_bodies(doc);
    describe_event_streams(doc);
}

/// chrono's `NaiveDate` is declared `format: naive-date`; it is exactly RFC 3339's `full-date`,
/// which OpenAPI calls `date`.
fn standard_date_format(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("format").and_then(Value::as_str) == Some("naive-date") {
                map.insert("format".into(), "date".into());
            }
            map.values_mut().for_each(standard_date_format);
        }
        Value::Array(items) => items.iter_mut().for_each(standard_date_format),
        _ => {}
    }
}

/// Date properties with a fixed floor, which `format: date` cannot state and poem-openapi's
/// validators cannot attach to a `NaiveDate`: (schema, property, pattern).
pub const DATE_PATTERNS: &[(&str, &str, &str)] = &[(
    "ApplicationFields",
    "date_of_birth",
    // 1900-01-01 or later (format: date rules out days such as 02-30).
    "^(19|[2-9][0-9])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
)];

fn date_patterns(doc: &mut Value) {
    for (schema, property, pattern) in DATE_PATTERNS {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        if let Some(Value::Object(p)) = doc.pointer_mut(&pointer) {
            p.insert("pattern".into(), (*pattern).into());
        }
    }
}

/// Request bodies are parsed by [`crate::body::JsonBody`] into types that refuse unknown fields
/// (`serde(deny_unknown_fields)`), so every JSON request schema is closed: each object schema
/// with properties, directly or as a `oneOf`/`anyOf` branch, gets `additionalProperties: false`.
fn close_request_bodies(doc: &mut Value) {
    let mut names = Vec::new();
    for op in operations(doc) {
        let Some(content) = op
            .pointer("/requestBody/content")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (media, m) in content {
            if media.contains("json") {
                collect_refs(&m["schema"], doc, &mut names);
            }
        }
    }
    let mut inline: Vec<String> = Vec::new();
    for op_path in operation_pointers(doc) {
        let pointer = format!("{op_path}/requestBody/content/application~1json/schema");
        if doc.pointer(&pointer).is_some() {
            inline.push(pointer);
        }
    }
    for name in names {
        if let Some(s) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            close(s);
        }
    }
    for pointer in inline {
        if let Some(s) = doc.pointer_mut(&pointer) {
            close(s);
        }
    }
}

/// The component schemas a request schema is made of (itself and its `oneOf`/`anyOf` branches).
fn collect_refs(schema: &Value, doc: &Value, out: &mut Vec<String>) {
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
            collect_refs(&doc["components"]["schemas"][name], doc, out);
        }
        return;
    }
    for key in ["oneOf", "anyOf"] {
        for branch in schema[key].as_array().into_iter().flatten() {
            collect_refs(branch, doc, out);
        }
    }
}

fn close(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), false.into());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = map.get_mut(key) {
            branches.iter_mut().for_each(close);
        }
    }
}

/// poem-openapi declares an event stream as an array of its items; what a client reads is one
/// event at a time, whose `data` is the item as JSON.
fn describe_event_streams(doc: &mut Value) {
    for op_path in operation_pointers(doc) {
        let Some(responses) = doc
            .pointer_mut(&format!("{op_path}/responses"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(media) = response.pointer_mut("/content/text~1event-stream") else {
                continue;
            };
            let item = media
                .pointer("/schema/items/$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("item")
                .to_string();
            media["schema"] = json!({
                "type": "object",
                "description": "One server-sent event.",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "string",
                        "description": format!("The {item} as JSON (a `{item}` object).")
                    },
                    "event": {"type": "string"},
                    "id": {"type": "string"}
                }
            });
        }
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// JSON pointers of every operation object.
fn operation_pointers(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.push(format!(
                    "/paths/{}/{method}",
                    path.replace('~', "~0").replace('/', "~1")
                ));
            }
        }
    }
    out
}

fn operations(doc: &Value) -> Vec<&Value> {
    operation_pointers(doc)
        .iter()
        .filter_map(|p| doc.pointer(p))
        .collect()
}

/// The methods each path answers, for `Allow` on a 405.
#[derive(Clone, Debug)]
pub struct AllowTable(Vec<(Vec<String>, String)>);

impl AllowTable {
    /// From the document's paths (templates like `/v1/applications/{id}`) and routes outside it.
    pub fn new(doc: &Value, extra: &[(&str, &[Method])]) -> Self {
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_uppercase())
                .collect();
            rows.push((path.clone(), methods));
        }
        for (path, methods) in extra {
            rows.push((
                path.to_string(),
                methods.iter().map(|m| m.as_str().to_string()).collect(),
            ));
        }
        AllowTable(
            rows.into_iter()
                .map(|(path, mut methods)| {
                    if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                        // poem answers HEAD wherever it answers GET.
                        methods.push("HEAD".into());
                    }
                    (split(&path), methods.join(", "))
                })
                .collect(),
        )
    }

    /// The `Allow` value for a request path; literal segments win over `{param}` ones.
    pub fn allow(&self, path: &str) -> Option<&str> {
        self.matching(path).map(|(_, allow)| allow.as_str())
    }

    /// The template a request path falls under (`/v1/payments/{id}`), as the document writes it.
    pub fn template(&self, path: &str) -> Option<String> {
        self.matching(path).map(|(template, _)| template.join("/"))
    }

    fn matching(&self, path: &str) -> Option<&(Vec<String>, String)> {
        let segments = split(path);
        self.0
            .iter()
            .filter(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
            })
            .min_by_key(|(template, _)| template.iter().filter(|t| t.starts_with('{')).count())
    }
}

fn split(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let mut doc: Value = serde_json::from_str(&crate::openapi().spec()).unwrap();
        finish(&mut doc);
        doc
    }

    #[test]
    fn request_bodies_are_closed_and_dates_standard() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        for name in [
            "Registration",
            "Credentials",
            "ApplicationFields",
            "PasswordChange",
            "CardPaymentRequest",
            "AlipayPaymentRequest",
            "Rejection",
        ] {
            assert_eq!(s[name]["additionalProperties"], false, "{name}");
        }
        assert_eq!(
            s["ApplicationFields"]["properties"]["date_of_birth"]["format"],
            "date"
        );
        assert!(!doc.to_string().contains("naive-date"));
        for (schema, property, pattern) in DATE_PATTERNS {
            assert_eq!(s[schema]["properties"][property]["pattern"], *pattern);
        }
    }

    #[test]
    fn allow_lists_the_methods_of_the_matching_path() {
        let t = AllowTable::new(&doc(), &[("/v1/webhooks/stripe", &[Method::POST])]);
        assert_eq!(t.allow("/v1/applications"), Some("GET, POST, HEAD"));
        assert_eq!(t.allow("/v1/applications/abc"), Some("GET, PATCH, HEAD"));
        assert_eq!(
            t.template("/v1/applications/abc").as_deref(),
            Some("/v1/applications/{id}")
        );
        assert_eq!(t.template("/nowhere/at/all"), None);
        assert_eq!(t.allow("/v1/webhooks/stripe"), Some("POST"));
        assert_eq!(t.allow("/nope"), None);
    }
}
