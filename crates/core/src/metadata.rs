//! Free-form metadata (resource configuration) moves as JSON at the edge and
//! as `google.protobuf.Struct` between services; these convert between them.
//!
//! Metadata has limits, checked at the gateway (on conversion from JSON) and
//! again by the services (internal teams call them directly): at most
//! [`MAX_DEPTH`] levels of nested objects and arrays, [`MAX_KEYS`] keys in
//! all its objects together, and [`MAX_BYTES`] bytes as compact JSON.
//! Anything beyond is a validation error on the field, never a failure
//! further down (protobuf decoding refuses deeply nested messages).

use crate::error::{Error, Result};
use marketbridge_proto::common::v1::Metadata;
use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// Most levels of nesting: the metadata object is level 1, an object or
/// array inside it level 2, and so on.
pub const MAX_DEPTH: usize = 10;
/// Most keys, counted over every object at every level.
pub const MAX_KEYS: usize = 512;
/// Most bytes, as compact JSON.
pub const MAX_BYTES: usize = 32 * 1024;

/// Checks `json` against the limits; the error names `field`.
pub fn check_limits(field: &str, json: &Json) -> Result<()> {
    let mut keys = 0;
    check_value(field, json, 1, &mut keys)?;
    let bytes = serde_json::to_vec(json)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if bytes > MAX_BYTES {
        return Err(Error::invalid_field(
            field,
            format!("is {bytes} bytes as JSON; at most {MAX_BYTES} are accepted"),
        ));
    }
    Ok(())
}

fn check_value(field: &str, json: &Json, depth: usize, keys: &mut usize) -> Result<()> {
    let children: Box<dyn Iterator<Item = &Json>> = match json {
        Json::Object(map) => {
            *keys += map.len();
            if *keys > MAX_KEYS {
                return Err(Error::invalid_field(
                    field,
                    format!("has more than {MAX_KEYS} keys"),
                ));
            }
            Box::new(map.values())
        }
        Json::Array(items) => Box::new(items.iter()),
        _ => return Ok(()),
    };
    if depth > MAX_DEPTH {
        return Err(Error::invalid_field(
            field,
            format!("nests objects and arrays more than {MAX_DEPTH} levels deep"),
        ));
    }
    for child in children {
        check_value(field, child, depth + 1, keys)?;
    }
    Ok(())
}

/// Checks protobuf metadata against the limits; the error names `field`.
pub fn check_metadata_limits(field: &str, metadata: Option<&Metadata>) -> Result<()> {
    check_limits(field, &metadata_to_json(metadata))
}

/// JSON object to protobuf metadata. Anything but an object, or an object
/// beyond the limits, is an error on `field`.
pub fn json_to_metadata(field: &str, json: &Json) -> Result<Metadata> {
    check_limits(field, json)?;
    match json {
        Json::Object(map) => Ok(Metadata {
            fields: Some(object_to_struct(map)),
        }),
        Json::Null => Ok(Metadata {
            fields: Some(Struct::default()),
        }),
        _ => Err(Error::invalid_field(field, "must be an object")),
    }
}

/// Protobuf metadata to a JSON object (an empty object when absent).
pub fn metadata_to_json(metadata: Option<&Metadata>) -> Json {
    match metadata.and_then(|m| m.fields.as_ref()) {
        Some(fields) => struct_to_json(fields),
        None => Json::Object(Map::new()),
    }
}

fn object_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(object_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// A protobuf struct as a JSON object.
pub fn struct_to_json(fields: &Struct) -> Json {
    Json::Object(
        fields
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// Whole numbers come back as integers so `{"size": 2}` survives a round trip.
fn number_to_json(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Json::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map(Json::Number).unwrap_or(Json::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_metadata() {
        let original = json!({"region": "iad1", "size": 2, "ratio": 0.5, "tags": ["a", "b"], "ha": true, "n": null});
        let metadata = json_to_metadata("metadata", &original).unwrap();
        assert_eq!(metadata_to_json(Some(&metadata)), original);
        assert!(json_to_metadata("metadata", &json!([1])).is_err());
        assert_eq!(metadata_to_json(None), json!({}));
    }

    fn nested(levels: usize, wrap: impl Fn(Json) -> Json) -> Json {
        (0..levels).fold(json!("leaf"), |inner, _| wrap(inner))
    }

    #[test]
    fn metadata_beyond_the_limits_is_a_validation_error() {
        let deepest = nested(MAX_DEPTH, |inner| json!({ "a": inner }));
        assert!(json_to_metadata("metadata", &deepest).is_ok());
        let too_deep = nested(MAX_DEPTH + 1, |inner| json!({ "a": inner }));
        let error = json_to_metadata("metadata", &too_deep).unwrap_err();
        assert_eq!(error.code(), crate::ErrorCode::Validation);
        assert!(error.message().contains("levels deep"), "{error:?}");
        let arrays = json!({ "a": nested(60, |inner| json!([inner])) });
        assert!(json_to_metadata("metadata", &arrays).is_err());
        let many: Map<String, Json> = (0..=MAX_KEYS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        let error = json_to_metadata("metadata", &Json::Object(many)).unwrap_err();
        assert!(error.message().contains("keys"), "{error:?}");
        let big = json!({ "a": "x".repeat(MAX_BYTES) });
        let error = json_to_metadata("metadata", &big).unwrap_err();
        assert!(error.message().contains("bytes"), "{error:?}");
        let metadata = json_to_metadata("metadata", &json!({"a": [1, {"b": 2}]})).unwrap();
        assert!(check_metadata_limits("metadata", Some(&metadata)).is_ok());
    }
}
