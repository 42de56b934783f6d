//! Reading JSON bodies and query strings leniently: unknown fields are
//! ignored, and anything unreadable becomes a 400 naming the field the way
//! the caller wrote it (`metadata.region`, `credentials.access_token`),
//! never a 500.

use marketbridge_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

/// Parses a JSON body (an object) into `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid_field("body", "a JSON body is required"));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| {
        Error::invalid_field("body", "is not valid JSON")
            .with_user_message("The request could not be read")
    })?;
    if !value.is_object() {
        return Err(Error::invalid_field("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(describe)
}

/// Parses an optional JSON body: an empty body is `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes)
}

fn describe(error: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = error.path().to_string();
    let text = error.inner().to_string();
    let text = text
        .split(" at line ")
        .next()
        .unwrap_or(text.as_str())
        .to_owned();
    if let Some(rest) = text.strip_prefix("missing field `")
        && let Some(name) = rest.split('`').next()
    {
        return Error::invalid_field(join(&path, name), "is required");
    }
    let field = if path == "." { "body".to_owned() } else { path };
    Error::invalid_field(field, text)
}

fn join(path: &str, name: &str) -> String {
    if path == "." || path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The query string as a map (the last value of a repeated key wins).
pub fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The `metadata` query parameter: a JSON object, or `{}` when absent.
pub fn metadata_param(query: &BTreeMap<String, String>) -> Result<Value> {
    let Some(text) = query.get("metadata").filter(|t| !t.trim().is_empty()) else {
        return Ok(Value::Object(Default::default()));
    };
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(Error::invalid_field("metadata", "must be a JSON object")),
        Err(_) => Err(Error::invalid_field("metadata", "is not valid JSON")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        product_id: String,
        metadata: BTreeMap<String, Value>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        access_token: String,
    }

    fn field_of(body: &str) -> String {
        parse_json::<Sample>(body.as_bytes()).unwrap_err().fields()[0]
            .field
            .clone()
    }

    #[test]
    fn errors_name_the_field_as_written() {
        assert_eq!(field_of(r#"{"metadata": {}}"#), "productId");
        assert_eq!(field_of(r#"{"productId": 5, "metadata": {}}"#), "productId");
        assert_eq!(
            field_of(r#"{"productId": "a", "metadata": {}, "inner": {}}"#),
            "inner.access_token"
        );
        assert_eq!(
            field_of(r#"{"productId": "a", "metadata": []}"#),
            "metadata"
        );
        assert_eq!(field_of("{not json"), "body");
        assert_eq!(field_of(""), "body");
        assert_eq!(field_of("[1]"), "body");
        assert!(parse_json::<Sample>(br#"{"productId": "a", "metadata": {}, "extra": 1}"#).is_ok());
    }

    #[test]
    fn metadata_parameter_must_be_an_object() {
        let query = query_map(Some("metadata=%7B%22region%22%3A%22fra1%22%7D"));
        assert_eq!(
            metadata_param(&query).unwrap(),
            serde_json::json!({"region": "fra1"})
        );
        assert!(metadata_param(&query_map(Some("metadata=%5B1%5D"))).is_err());
        assert!(metadata_param(&query_map(Some("metadata=%7Bx"))).is_err());
        assert_eq!(
            metadata_param(&query_map(None)).unwrap(),
            serde_json::json!({})
        );
    }
}
