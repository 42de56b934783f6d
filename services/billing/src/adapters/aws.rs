//! What AWS Marketplace receives from billing: each usage window of a
//! license as `BatchMeterUsage` records, one per dimension, stamped with
//! the start of the window's hour. The ledger stores the requests before the
//! first attempt, so every retry sends byte-identical records (AWS
//! deduplicates identical records; a changed quantity would be a
//! `DuplicateRecord`).
//!
//! What is metered follows `aws.product_type`: all usage of subscription
//! (pay-as-you-go) products and of contracts with consumption, none of
//! contracts. For contracts with consumption, AWS bills the usage sent as
//! overage: the catalog's metering dimensions are not the contract's
//! dimensions, so the usage of an hour is all beyond the contract.
//!
//! A subscription's usage reporting id names exactly one metering shape
//! (`LicenseArn` + account, or the legacy `CustomerIdentifier` with the
//! product code), so one license is never metered in both shapes and
//! billed twice. Records AWS leaves unprocessed, throttling and outages are
//! retried; a window older than the metering window is not sent (AWS would
//! refuse it) and is logged as lost.

use crate::marketplace::{Delivery, DeliveryAccount, ReportingPlan, UsageReporter};
use crate::submission::{Submission, SubmissionKind, UsageOperation};
use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use marketbridge_aws::MarketplaceClient;
use marketbridge_aws::error::names;
use marketbridge_aws::metering::{
    BatchMeterUsageRequest, Licensee, Measurement, MeteringBatch, status,
};
use marketbridge_core::time::{SharedClock, hour_floor};
use marketbridge_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The body stored in the reporting ledger: the hour and its requests.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    hour: i64,
    requests: Vec<BatchMeterUsageRequest>,
}

/// Renders and delivers usage windows to `BatchMeterUsage`.
pub struct AwsReporter {
    client: MarketplaceClient,
    clock: SharedClock,
    window: Duration,
    month_end_grace: bool,
}

impl AwsReporter {
    /// A reporter over `client`; usage older than `window_hours` is not
    /// sent, except the previous month's until 06:00 UTC on the 1st when
    /// `month_end_grace` is on.
    pub fn new(
        client: MarketplaceClient,
        clock: SharedClock,
        window_hours: u64,
        month_end_grace: bool,
    ) -> Self {
        Self {
            client,
            clock,
            window: Duration::hours(window_hours.clamp(1, 24) as i64),
            month_end_grace,
        }
    }

    /// True when AWS still takes usage of the hour starting at `hour` at
    /// `now`.
    pub fn sendable(&self, hour: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if now - hour < self.window {
            return true;
        }
        if !self.month_end_grace {
            return false;
        }
        let month_start = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single();
        month_start.is_some_and(|start| {
            hour < start && hour >= start - Duration::days(31) && now < start + Duration::hours(6)
        })
    }

    fn batch(&self, usage: &UsageOperation) -> Result<Body> {
        let licensee = Licensee::from_reporting_id(&usage.consumer_id).ok_or_else(|| {
            Error::validation(format!(
                "`{}` names no AWS license or customer",
                usage.consumer_id
            ))
        })?;
        let hour = hour_floor(usage.start).timestamp();
        let tags: Vec<(String, String)> = usage
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let measurements: Vec<Measurement> = usage
            .values
            .iter()
            .map(|value| Measurement {
                dimension: value.metric_name.clone(),
                quantity: value.value.clamp(0, i64::from(i32::MAX)),
                tags: tags.clone(),
            })
            .collect();
        let batch = MeteringBatch::new(self.client.product_code(), &licensee, hour, &measurements);
        Ok(Body {
            hour,
            requests: batch.requests().to_vec(),
        })
    }
}

#[async_trait]
impl UsageReporter for AwsReporter {
    fn plan(&self) -> ReportingPlan {
        // Contracts are paid up front: AWS takes no usage for them.
        ReportingPlan {
            usage_operations: self.client.product_type().meters_usage(),
            ..ReportingPlan::default()
        }
    }

    fn render(&self, submission: &Submission) -> Result<String> {
        match submission {
            Submission::Usage(usage) => serde_json::to_string(&self.batch(usage)?)
                .map_err(|e| Error::internal(format!("metering body: {e}"))),
            other => Err(Error::validation(format!(
                "AWS Marketplace takes no `{}` submissions",
                other.kind()
            ))),
        }
    }

    async fn deliver(
        &self,
        account: &DeliveryAccount,
        kind: SubmissionKind,
        body: &str,
    ) -> Result<Delivery> {
        if kind != SubmissionKind::Usage {
            return Err(Error::validation(format!(
                "AWS Marketplace takes no `{kind}` submissions"
            )));
        }
        let body: Body = serde_json::from_str(body).map_err(|e| {
            Error::internal(format!("a stored metering body does not read back: {e}"))
        })?;
        let hour = Utc
            .timestamp_opt(body.hour, 0)
            .single()
            .ok_or_else(|| Error::internal("a stored metering hour does not read back"))?;
        if !self.sendable(hour, self.clock.now()) {
            tracing::error!(account.external_id = %account.external_id, hour = body.hour, "usage is past AWS's metering window and is not sent: it is not billed");
            return Ok(Delivery::Refused {
                answer: json!({"notSent": "outside the metering window"}).to_string(),
            });
        }
        let mut answers = Vec::new();
        for request in &body.requests {
            if request.usage_records.is_empty() {
                continue;
            }
            let answer = match self.client.batch_meter_usage(request).await {
                Ok(answer) => answer,
                Err(error) if error.is_transient() => return Err(Error::from(error)),
                Err(error) => {
                    let lost = error.name() == Some(names::TIMESTAMP_OUT_OF_BOUNDS);
                    tracing::error!(account.external_id = %account.external_id, hour = body.hour, error = %error, lost, "AWS refused usage records");
                    return Ok(Delivery::Refused {
                        answer: json!({"error": error.to_string()}).to_string(),
                    });
                }
            };
            if !answer.unprocessed_records.is_empty() {
                // Identical records are idempotent at AWS: the whole body
                // goes again.
                return Err(Error::unavailable(format!(
                    "AWS left {} usage records unprocessed",
                    answer.unprocessed_records.len()
                )));
            }
            let refused: Vec<&str> = answer
                .results
                .iter()
                .map(|r| r.status.as_str())
                .filter(|s| *s != status::SUCCESS)
                .collect();
            let text = serde_json::to_value(&answer).unwrap_or_default();
            if !refused.is_empty() {
                if refused.contains(&status::DUPLICATE_RECORD) {
                    tracing::error!(account.external_id = %account.external_id, hour = body.hour, "AWS already holds another quantity for this hour: the first one stands");
                } else {
                    tracing::warn!(account.external_id = %account.external_id, hour = body.hour, statuses = ?refused, "AWS did not accept usage records");
                }
                answers.push(text);
                return Ok(Delivery::Refused {
                    answer: json!({"results": answers}).to_string(),
                });
            }
            answers.push(text);
        }
        Ok(Delivery::Accepted {
            answer: json!({"results": answers}).to_string(),
            marketplace_invoice_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::MetricValue;
    use marketbridge_core::time::system_clock;
    use std::collections::BTreeMap;

    fn reporter(grace: bool) -> AwsReporter {
        reporter_for(grace, marketbridge_config::AwsProductType::default())
    }

    fn reporter_for(grace: bool, product_type: marketbridge_config::AwsProductType) -> AwsReporter {
        let options = marketbridge_config::AwsOptions {
            product_type,
            product_code: "prod".into(),
            access_key_id: "AKIA".into(),
            secret_access_key: "secret".into(),
            metering_url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        };
        let client =
            MarketplaceClient::from_options(&options, &marketbridge_config::TlsOptions::default())
                .unwrap()
                .unwrap();
        AwsReporter::new(client, system_clock(), 6, grace)
    }

    fn at(text: &str) -> DateTime<Utc> {
        marketbridge_core::time::parse_rfc3339("t", text).unwrap()
    }

    #[test]
    fn windows_are_stamped_with_their_hour_in_the_license_shape() {
        let usage = UsageOperation {
            operation_id: "op".into(),
            operation_name: "Hourly Usage Report".into(),
            consumer_id: "license:012345678901:arn:aws:license-manager::1:license:l-1".into(),
            start: at("2026-11-23T12:20:00Z"),
            end: at("2026-11-23T13:00:00Z"),
            values: vec![MetricValue {
                metric_name: "requests".into(),
                value: 7,
            }],
            labels: BTreeMap::new(),
        };
        let body: serde_json::Value =
            serde_json::from_str(&reporter(false).render(&Submission::Usage(usage)).unwrap())
                .unwrap();
        let record = &body["requests"][0]["UsageRecords"][0];
        assert_eq!(
            record["Timestamp"],
            at("2026-11-23T12:00:00Z").timestamp() as f64
        );
        assert_eq!(record["Quantity"], 7);
        assert!(body["requests"][0].get("ProductCode").is_none());
    }

    #[test]
    fn contracts_meter_nothing_and_the_others_all_usage() {
        use marketbridge_config::AwsProductType;
        assert!(
            !reporter_for(false, AwsProductType::Contract)
                .plan()
                .usage_operations
        );
        assert!(
            reporter_for(false, AwsProductType::Subscription)
                .plan()
                .usage_operations
        );
        assert!(
            reporter_for(false, AwsProductType::ContractWithConsumption)
                .plan()
                .usage_operations
        );
    }

    #[test]
    fn the_metering_window_and_month_end_grace() {
        let plain = reporter(false);
        let hour = at("2026-11-30T23:00:00Z");
        assert!(plain.sendable(hour, at("2026-12-01T04:59:00Z")));
        assert!(!plain.sendable(hour, at("2026-12-01T05:00:00Z")));
        let grace = reporter(true);
        let early = at("2026-11-30T20:00:00Z");
        assert!(grace.sendable(early, at("2026-12-01T05:59:00Z")));
        assert!(!grace.sendable(early, at("2026-12-01T06:00:00Z")));
        assert!(!grace.sendable(at("2026-12-01T00:00:00Z"), at("2026-12-01T07:00:00Z")));
    }
}
