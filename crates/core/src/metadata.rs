//! Free-form metadata (resource configuration) moves as JSON at the edge and
//! as `google.protobuf.Struct` between services; these convert between them.

use crate::error::{Error, Result};
use marketbridge_proto::common::v1::Metadata;
use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// JSON object to protobuf metadata. Anything but an object is an error on
/// `field`.
pub fn json_to_metadata(field: &str, json: &Json) -> Result<Metadata> {
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
}
