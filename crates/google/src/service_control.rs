//! Service Control v1 for usage reporting: `services.check` then
//! `services.report` of operations carrying metric values. A `200` answer to
//! a report can still list per-operation `reportErrors`; those operations
//! failed and the outcome says so.

use crate::api::GoogleApi;
use marketbridge_core::{Error, ErrorCode, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One metric value. `int64Value` travels as a JSON string.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// An integer value (sent as text, as protobuf JSON maps int64).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "int64_as_text"
    )]
    pub int64_value: Option<i64>,
    /// A floating point value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_value: Option<f64>,
    /// A boolean value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bool_value: Option<bool>,
    /// A text value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// Start of the interval this value covers, when it differs from the
    /// operation's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// End of that interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Labels of this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl MetricValue {
    /// An integer value.
    pub fn int64(value: i64) -> Self {
        Self {
            int64_value: Some(value),
            ..Default::default()
        }
    }

    /// A floating point value.
    pub fn double(value: f64) -> Self {
        Self {
            double_value: Some(value),
            ..Default::default()
        }
    }
}

mod int64_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_str(&value.to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        let value = Option::<serde_json::Value>::deserialize(deserializer)?;
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(serde_json::Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("int64Value is not an integer")),
            Some(_) => Err(serde::de::Error::custom("int64Value is not an integer")),
        }
    }
}

/// The values of one metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValueSet {
    /// The metric, as named in Producer Portal.
    pub metric_name: String,
    /// Its values.
    #[serde(default)]
    pub metric_values: Vec<MetricValue>,
}

/// One operation: usage of one consumer over an interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Unique id; the same for the check and the report of one operation.
    pub operation_id: String,
    /// A name for the kind of operation (`Hourly Usage Report`).
    pub operation_name: String,
    /// The entitlement's `usageReportingId`, verbatim.
    pub consumer_id: String,
    /// Start of the interval (RFC 3339).
    pub start_time: String,
    /// End of the interval (RFC 3339).
    pub end_time: String,
    /// Metric values.
    #[serde(default)]
    pub metric_value_sets: Vec<MetricValueSet>,
    /// Labels; only allowed in reports, never in checks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckRequest<'a> {
    operation: &'a Operation,
    #[serde(skip_serializing_if = "str::is_empty")]
    service_config_id: &'a str,
}

/// One problem `services.check` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckError {
    /// `SERVICE_NOT_ACTIVATED`, `BILLING_DISABLED`, `PROJECT_DELETED`, ...
    #[serde(default)]
    pub code: String,
    /// What it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A status, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// The answer of `services.check`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    /// The checked operation's id.
    #[serde(default)]
    pub operation_id: String,
    /// Problems; empty when the operation may be reported.
    #[serde(default)]
    pub check_errors: Vec<CheckError>,
    /// Service configuration used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_config_id: Option<String>,
    /// Rollout used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_rollout_id: Option<String>,
    /// Extra information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_info: Option<Value>,
}

impl CheckResponse {
    /// True when nothing stands in the way of reporting.
    pub fn is_clear(&self) -> bool {
        self.check_errors.is_empty()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportRequest<'a> {
    operations: &'a [Operation],
    #[serde(skip_serializing_if = "str::is_empty")]
    service_config_id: &'a str,
}

/// A `google.rpc.Status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RpcStatus {
    /// The gRPC code number.
    #[serde(default)]
    pub code: i32,
    /// A message.
    #[serde(default)]
    pub message: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// One operation a report refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportError {
    /// The operation.
    #[serde(default)]
    pub operation_id: String,
    /// Why.
    #[serde(default)]
    pub status: RpcStatus,
}

impl ReportError {
    /// The error this refusal stands for (transient codes retry).
    pub fn to_error(&self) -> Error {
        let code = match self.status.code {
            4 => ErrorCode::Timeout,
            8 => ErrorCode::RateLimited,
            10 | 13 | 14 => ErrorCode::Unavailable,
            3 | 11 => ErrorCode::Validation,
            5 => ErrorCode::NotFound,
            7 => ErrorCode::PermissionDenied,
            9 => ErrorCode::Conflict,
            16 => ErrorCode::Unauthenticated,
            _ => ErrorCode::Internal,
        };
        Error::new(
            code,
            format!(
                "Service Control refused operation {} (code {}): {}",
                self.operation_id, self.status.code, self.status.message
            ),
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportResponse {
    #[serde(default)]
    report_errors: Vec<ReportError>,
}

/// What a report achieved, per operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportOutcome {
    /// Operations Service Control accepted.
    pub accepted: Vec<String>,
    /// Operations it refused, with why.
    pub failed: Vec<ReportError>,
}

impl ReportOutcome {
    /// `Ok` when every operation was accepted; otherwise the first refusal.
    pub fn into_result(self) -> Result<()> {
        match self.failed.first() {
            None => Ok(()),
            Some(first) => {
                let mut error = first.to_error();
                if self.failed.len() > 1 {
                    error = Error::new(
                        error.code(),
                        format!(
                            "{} (and {} more refused operations)",
                            error.message(),
                            self.failed.len() - 1
                        ),
                    );
                }
                Err(error)
            }
        }
    }
}

/// Client of Service Control for one service.
#[derive(Debug, Clone)]
pub struct ServiceControlClient {
    api: GoogleApi,
    service_name: String,
}

impl ServiceControlClient {
    /// A client for `service_name` (the product's service domain).
    pub fn new(api: GoogleApi, service_name: &str) -> Result<Self> {
        let service_name = service_name.trim();
        if service_name.is_empty()
            || !service_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::invalid_field(
                "google.service_name",
                "must be the product's service domain",
            ));
        }
        Ok(Self {
            api,
            service_name: service_name.to_owned(),
        })
    }

    /// The service name.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// `services.check` of one operation (its user labels are left out).
    pub async fn check(&self, operation: &Operation) -> Result<CheckResponse> {
        let mut checked = operation.clone();
        checked.user_labels.clear();
        let path = format!("/v1/services/{}:check", self.service_name);
        self.api
            .call(
                Method::POST,
                "servicecontrol.services.check",
                &path,
                Some(&CheckRequest {
                    operation: &checked,
                    service_config_id: "",
                }),
            )
            .await?
            .json()
    }

    /// `services.report` of operations. A transport or HTTP failure is an
    /// error; operations listed in `reportErrors` come back as failed.
    pub async fn report(&self, operations: &[Operation]) -> Result<ReportOutcome> {
        let path = format!("/v1/services/{}:report", self.service_name);
        let answer = self
            .api
            .call(
                Method::POST,
                "servicecontrol.services.report",
                &path,
                Some(&ReportRequest {
                    operations,
                    service_config_id: "",
                }),
            )
            .await?;
        let response: ReportResponse = if answer.body.iter().all(u8::is_ascii_whitespace) {
            ReportResponse::default()
        } else {
            answer.json()?
        };
        let failed_ids: Vec<&str> = response
            .report_errors
            .iter()
            .map(|e| e.operation_id.as_str())
            .collect();
        let accepted = operations
            .iter()
            .filter(|op| !failed_ids.contains(&op.operation_id.as_str()))
            .map(|op| op.operation_id.clone())
            .collect();
        for failure in &response.report_errors {
            tracing::warn!(operation.id = %failure.operation_id, code = failure.status.code, message = %failure.status.message, "service control refused a usage operation");
        }
        Ok(ReportOutcome {
            accepted,
            failed: response.report_errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn int64_values_travel_as_text() {
        let set = MetricValueSet {
            metric_name: "svc/requests".into(),
            metric_values: vec![MetricValue::int64(150)],
        };
        let value = serde_json::to_value(&set).unwrap();
        assert_eq!(
            value,
            json!({"metricName": "svc/requests", "metricValues": [{"int64Value": "150"}]})
        );
        let back: MetricValueSet = serde_json::from_value(value).unwrap();
        assert_eq!(back, set);
        let lenient: MetricValue = serde_json::from_value(json!({"int64Value": 7})).unwrap();
        assert_eq!(lenient.int64_value, Some(7));
    }

    #[test]
    fn refused_operations_become_errors() {
        let outcome = ReportOutcome {
            accepted: vec!["a".into()],
            failed: vec![ReportError {
                operation_id: "b".into(),
                status: RpcStatus {
                    code: 14,
                    message: "try later".into(),
                    details: vec![],
                },
            }],
        };
        let error = outcome.into_result().unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert!(error.message().contains("operation b"), "{error}");
        assert!(ReportOutcome::default().into_result().is_ok());
    }
}
