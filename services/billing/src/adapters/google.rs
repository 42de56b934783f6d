//! What Google Cloud Marketplace receives from billing: usage of each
//! entitlement per window as a Service Control operation, checked first
//! (`services.check`) and then reported (`services.report`). Check errors
//! hold the report back (the customer cannot be billed now); report errors
//! inside a `200` are failures, retried when Google says they are
//! transient. The operation id comes from the ledger, so every retry is the
//! same operation.

use crate::marketplace::{Delivery, DeliveryAccount, ReportingPlan, UsageReporter};
use crate::submission::{Submission, SubmissionKind, UsageOperation};
use async_trait::async_trait;
use marketbridge_core::time::to_rfc3339;
use marketbridge_core::{Error, Result};
use marketbridge_google::service_control::{
    MetricValue, MetricValueSet, Operation, ServiceControlClient,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Google's grace period for reporting blocked by the customer's state or
/// by Service Control, unless configured: "we recommend not exceeding 30
/// days".
pub const DEFAULT_GRACE_DAYS: u64 = 30;

/// Renders and delivers usage operations to Service Control.
#[derive(Debug, Clone)]
pub struct GoogleReporter {
    service_control: ServiceControlClient,
    grace: chrono::Duration,
}

impl GoogleReporter {
    /// A reporter using a Service Control client of the product's service.
    pub fn new(service_control: ServiceControlClient) -> Self {
        Self {
            service_control,
            grace: chrono::Duration::days(DEFAULT_GRACE_DAYS as i64),
        }
    }

    /// Keeps windows Google cannot take for `days` after their end
    /// (`google.report_grace_days`; at least one day, at most a year).
    pub fn with_grace_days(mut self, days: u64) -> Self {
        self.grace = chrono::Duration::days(days.clamp(1, 366) as i64);
        self
    }
}

/// The body of `services.report`, as stored in the reporting ledger.
#[derive(Debug, Serialize, Deserialize)]
struct ReportBody {
    operations: Vec<Operation>,
}

/// A usage operation in Service Control's terms: one metric value set per
/// metric, int64 values.
pub fn operation(usage: &UsageOperation) -> Operation {
    Operation {
        operation_id: usage.operation_id.clone(),
        operation_name: usage.operation_name.clone(),
        consumer_id: usage.consumer_id.clone(),
        start_time: to_rfc3339(usage.start),
        end_time: to_rfc3339(usage.end),
        metric_value_sets: usage
            .values
            .iter()
            .map(|value| MetricValueSet {
                metric_name: value.metric_name.clone(),
                metric_values: vec![MetricValue::int64(value.value)],
            })
            .collect(),
        user_labels: usage.labels.clone(),
    }
}

#[async_trait]
impl UsageReporter for GoogleReporter {
    fn plan(&self) -> ReportingPlan {
        ReportingPlan {
            usage_operations: true,
            ..ReportingPlan::default()
        }
    }

    fn render(&self, submission: &Submission) -> Result<String> {
        match submission {
            Submission::Usage(usage) => serde_json::to_string(&ReportBody {
                operations: vec![operation(usage)],
            })
            .map_err(|e| Error::internal(format!("service control body: {e}"))),
            other => Err(Error::validation(format!(
                "Google Cloud Marketplace takes no `{}` submissions",
                other.kind()
            ))),
        }
    }

    async fn deliver(
        &self,
        _account: &DeliveryAccount,
        submission_kind: SubmissionKind,
        body: &str,
    ) -> Result<Delivery> {
        if submission_kind != SubmissionKind::Usage {
            return Err(Error::validation(format!(
                "Google Cloud Marketplace takes no `{submission_kind}` submissions"
            )));
        }
        let report: ReportBody = serde_json::from_str(body).map_err(|e| {
            Error::internal(format!(
                "a stored Service Control body does not read back: {e}"
            ))
        })?;
        let mut answers = Vec::new();
        for operation in &report.operations {
            let check = self.service_control.check(operation).await?;
            if !check.is_clear() {
                let answer = json!({"check": check}).to_string();
                return Ok(Delivery::Suspended { answer });
            }
            answers.push(json!({"check": check}));
        }
        let outcome = self.service_control.report(&report.operations).await?;
        let answer = json!({
            "checks": answers,
            "accepted": outcome.accepted,
            "reportErrors": outcome.failed,
        })
        .to_string();
        match outcome.into_result() {
            Ok(()) => Ok(Delivery::Accepted {
                answer,
                marketplace_invoice_id: None,
            }),
            Err(error) if error.code().is_transient() => Err(Error::new(
                error.code(),
                format!("{}; answer: {answer}", error.message()),
            )),
            Err(_) => Ok(Delivery::Refused { answer }),
        }
    }

    /// Google wants contiguous windows, each reported once, and replayed in
    /// order after an outage within the grace period.
    fn usage_grace(&self) -> Option<chrono::Duration> {
        Some(self.grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::MetricValue as UsageValue;
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    #[test]
    fn operations_carry_int64_values_as_text() {
        let usage = UsageOperation {
            operation_id: "op-1".into(),
            operation_name: "Hourly Usage Report".into(),
            consumer_id: "project_number:42".into(),
            start: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 11, 23, 13, 0, 0).unwrap(),
            values: vec![UsageValue {
                metric_name: "svc/requests".into(),
                value: 1500,
            }],
            labels: BTreeMap::new(),
        };
        let body = serde_json::to_value(operation(&usage)).unwrap();
        assert_eq!(
            body["metricValueSets"][0],
            json!({"metricName": "svc/requests", "metricValues": [{"int64Value": "1500"}]})
        );
        assert_eq!(body["startTime"], "2026-11-23T12:00:00.000Z");
        assert!(body.get("userLabels").is_none());
    }
}
