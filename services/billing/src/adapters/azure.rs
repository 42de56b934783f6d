//! What Azure Marketplace receives from billing: each usage window of a
//! SaaS subscription as metering events (§6), one per dimension the plan in
//! force meters, stamped with the start of the window's hour, only for
//! quantities above zero, sent in batches of at most 25. The ledger's
//! windows never cross an hour, so each (subscription, dimension, hour) is
//! sent once; a retry that finds it taken (`Duplicate`, `409`) counts as
//! delivered. `Expired` (older than 24 hours) and other refusals are final
//! for the window; `Error` items are retried with the whole body (the taken
//! ones then answer `Duplicate`).
//!
//! Microsoft wants the subscription's current plan on every event, so the
//! stored body leaves `planId` empty and delivery fills it from a Get of the
//! subscription just before sending.

use crate::marketplace::{Delivery, DeliveryAccount, ReportingPlan, UsageReporter};
use crate::submission::{Submission, SubmissionKind};
use async_trait::async_trait;
use chrono::{DurationRound, TimeDelta};
use marketbridge_azure::fulfillment::FulfillmentClient;
use marketbridge_azure::metering::{EventOutcome, MeteringClient, outcome_of};
use marketbridge_azure::model::{BatchUsageRequest, MAX_BATCH, UsageEvent};
use marketbridge_core::time::to_rfc3339;
use marketbridge_core::{Error, Result};
use serde_json::json;

/// How long after its end a window Microsoft cannot take yet is kept: it
/// refuses hours that started more than 24 hours ago, and a window ends an
/// hour after its hour starts.
pub const GRACE_HOURS: i64 = 23;

/// Renders and delivers usage windows to the metering API.
#[derive(Debug, Clone)]
pub struct AzureReporter {
    metering: MeteringClient,
    fulfillment: FulfillmentClient,
}

impl AzureReporter {
    /// A reporter over the metering and Fulfillment clients.
    pub fn new(metering: MeteringClient, fulfillment: FulfillmentClient) -> Self {
        Self {
            metering,
            fulfillment,
        }
    }
}

#[async_trait]
impl UsageReporter for AzureReporter {
    fn plan(&self) -> ReportingPlan {
        ReportingPlan {
            usage_operations: true,
            ..ReportingPlan::default()
        }
    }

    fn render(&self, submission: &Submission) -> Result<String> {
        let Submission::Usage(usage) = submission else {
            return Err(Error::validation(format!(
                "Azure Marketplace takes no `{}` submissions",
                submission.kind()
            )));
        };
        let hour = usage
            .start
            .duration_trunc(TimeDelta::hours(1))
            .map_err(|e| Error::internal(format!("usage window hour: {e}")))?;
        let request = usage
            .values
            .iter()
            .filter(|value| value.value > 0)
            .map(|value| UsageEvent {
                resource_id: usage.consumer_id.clone(),
                quantity: value.value as f64,
                dimension: value.metric_name.clone(),
                effective_start_time: to_rfc3339(hour),
                plan_id: String::new(),
            })
            .collect();
        serde_json::to_string(&BatchUsageRequest { request })
            .map_err(|e| Error::internal(format!("usage events body: {e}")))
    }

    async fn deliver(
        &self,
        _account: &DeliveryAccount,
        kind: SubmissionKind,
        body: &str,
    ) -> Result<Delivery> {
        if kind != SubmissionKind::Usage {
            return Err(Error::validation(format!(
                "Azure Marketplace takes no `{kind}` submissions"
            )));
        }
        let mut stored: BatchUsageRequest = serde_json::from_str(body).map_err(|e| {
            Error::internal(format!(
                "a stored usage events body does not read back: {e}"
            ))
        })?;
        if stored.request.is_empty() {
            return Ok(Delivery::Accepted {
                answer: json!({"note": "no usage above zero in this window"}).to_string(),
                marketplace_invoice_id: None,
            });
        }
        let resource_id = stored.request[0].resource_id.clone();
        let Some(subscription) = self.fulfillment.get_subscription(&resource_id).await? else {
            return Ok(Delivery::Refused {
                answer: json!({"error": "the SaaS subscription is unknown to Microsoft"})
                    .to_string(),
            });
        };
        for event in &mut stored.request {
            event.plan_id = subscription.plan().to_owned();
        }
        let mut results = Vec::new();
        for chunk in stored.request.chunks(MAX_BATCH) {
            let answer = self.metering.send_batch(chunk).await?;
            results.extend(answer.result);
        }
        let outcomes: Vec<EventOutcome> = results.iter().map(|r| outcome_of(&r.status)).collect();
        let answer = json!({"planId": subscription.plan(), "result": results}).to_string();
        if outcomes.len() < stored.request.len() || outcomes.contains(&EventOutcome::Retry) {
            return Err(Error::unavailable(format!(
                "Azure Marketplace did not take every usage event; answer: {answer}"
            )));
        }
        if outcomes.iter().all(|o| *o == EventOutcome::Delivered) {
            return Ok(Delivery::Accepted {
                answer,
                marketplace_invoice_id: None,
            });
        }
        tracing::error!(azure.subscription = %resource_id, answer = %answer, "Azure Marketplace refused usage events; that usage is not billed");
        Ok(Delivery::Refused { answer })
    }

    fn usage_grace(&self) -> Option<chrono::Duration> {
        Some(chrono::Duration::hours(GRACE_HOURS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::{MetricValue, UsageOperation};
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    #[test]
    fn windows_become_one_event_per_dimension_above_zero_at_their_hour() {
        let http = marketbridge_rpc::http::outbound_client(
            &marketbridge_config::Config::default().tls,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let tokens: std::sync::Arc<dyn marketbridge_azure::token::AccessTokens> =
            std::sync::Arc::new(marketbridge_azure::token::EmulatorTokens::new(
                "t",
                "c",
                "r",
                std::sync::Arc::new(marketbridge_core::time::SystemClock),
            ));
        let api = marketbridge_azure::api::AzureApi::new(http, "http://127.0.0.1:9/api", tokens);
        let reporter = AzureReporter::new(
            MeteringClient::new(api.clone()),
            FulfillmentClient::new(api),
        );
        let usage = UsageOperation {
            operation_id: "op".into(),
            operation_name: "Hourly Usage Report".into(),
            consumer_id: "sub-1".into(),
            start: Utc.with_ymd_and_hms(2026, 11, 23, 12, 20, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 11, 23, 13, 0, 0).unwrap(),
            values: vec![
                MetricValue {
                    metric_name: "requests".into(),
                    value: 7,
                },
                MetricValue {
                    metric_name: "storage_gb".into(),
                    value: 0,
                },
            ],
            labels: BTreeMap::new(),
        };
        let body: serde_json::Value =
            serde_json::from_str(&reporter.render(&Submission::Usage(usage)).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"request": [{"resourceId": "sub-1", "quantity": 7.0, "dimension": "requests", "effectiveStartTime": "2026-11-23T12:00:00.000Z", "planId": ""}]})
        );
    }
}
