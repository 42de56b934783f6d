//! Usage reported as metering operations (Google Service Control): per
//! subscription, contiguous windows from the start of billing, each ending
//! at the next hour or plan boundary, each with the metric names of the plan
//! in force. A window is reported once the settle delay after its end has
//! passed; reporting it closes the ledger before its end, so usage can no
//! longer change under a report already sent.

use super::BillingDomain;
use super::reports::{NewReport, settle_delay};
use super::usage_sums::{per_metric, usage_on_plan};
use crate::entity::{billing_subscription, plan_period};
use crate::marketplace::UsageReporter;
use crate::submission::{MetricValue, Submission, UsageOperation};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::time::hour_floor;
use marketbridge_core::{Marketplace, Result};
use marketbridge_storage::db_error;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most windows reported per subscription in one run (a week of hours), so
/// one run stays short after a long pause.
pub const MAX_WINDOWS_PER_RUN: usize = 168;

/// The namespace of operation ids: UUIDv5 of the ledger key in it.
const OPERATION_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d62_7573_6167_6552_8a8c_5e0f_3b6e_1d42);

/// The operation id of a subscription's window: the same on every retry and
/// after any restart.
pub fn operation_id(subscription_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let key = format!(
        "usage:{subscription_id}:{}:{}",
        start.timestamp_micros(),
        end.timestamp_micros()
    );
    uuid::Uuid::new_v5(&OPERATION_NAMESPACE, key.as_bytes()).to_string()
}

/// The next window of a subscription from `cursor`, given its plan periods
/// (oldest first): up to the next hour or plan boundary, whichever comes
/// first. `Ok(None)` when nothing is billable from `cursor` on.
pub(crate) fn next_window(
    periods: &[plan_period::Model],
    cursor: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>, &plan_period::Model)> {
    let period = periods
        .iter()
        .find(|p| p.ends_at.is_none_or(|end| end > cursor) && p.starts_at <= cursor)
        .or_else(|| periods.iter().find(|p| p.starts_at > cursor))?;
    let start = cursor.max(period.starts_at);
    let hour_end = hour_floor(start) + ChronoDuration::hours(1);
    let end = period.ends_at.map_or(hour_end, |ends| ends.min(hour_end));
    Some((start, end, period))
}

impl BillingDomain {
    /// Reports every settled window of every subscription at marketplaces
    /// that meter usage by operations. Returns how many reports were made.
    pub(crate) async fn report_usage_operations(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut made = 0;
        let reporters: Vec<_> = self
            .marketplaces
            .reporters_that(|plan| plan.usage_operations);
        for (marketplace, reporter) in reporters {
            let subscriptions = self.subscriptions_at(marketplace).await?;
            for subscription in subscriptions {
                match self
                    .report_subscription_windows(marketplace, &reporter, &subscription, now)
                    .await
                {
                    Ok(reported) => made += reported,
                    // One customer's problem must not hold back the others.
                    Err(error) => {
                        tracing::error!(subscription.id = %subscription.subscription_id, error = %error, "usage windows could not be reported")
                    }
                }
            }
        }
        Ok(made)
    }

    async fn report_subscription_windows(
        &self,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        subscription: &billing_subscription::Model,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let settled_until = now - settle_delay(self.options.usage_settle_seconds);
        let periods = self.plan_periods(&subscription.subscription_id).await?;
        let Some(first) = periods.first() else {
            return Ok(0);
        };
        let mut closed_before = subscription.usage_closed_before;
        let due = next_window(&periods, closed_before.unwrap_or(first.starts_at))
            .is_some_and(|(_, end, _)| end <= settled_until);
        if !due {
            return Ok(0);
        }
        if self
            .reporting_suspended(&subscription.subscription_id)
            .await?
        {
            tracing::debug!(subscription.id = %subscription.subscription_id, "reporting is suspended");
            return Ok(0);
        }
        if subscription.usage_reporting_id.is_empty() {
            tracing::warn!(subscription.id = %subscription.subscription_id, "usage is due but the subscription has no usage reporting id yet");
            return Ok(0);
        }
        let mut made = 0;
        for _ in 0..MAX_WINDOWS_PER_RUN {
            let cursor = closed_before.unwrap_or(first.starts_at);
            let Some((start, end, period)) = next_window(&periods, cursor) else {
                break;
            };
            if end > settled_until {
                break;
            }
            let txn = marketbridge_storage::begin_write(&self.db).await?;
            if !self
                .close_usage_before(&txn, &subscription.subscription_id, closed_before, end)
                .await?
            {
                // Another run moved the cursor; it reports from there.
                break;
            }
            let plan = self
                .catalog
                .product(&subscription.product_id)
                .and_then(|product| product.plan(&period.plan_id));
            let metered: Vec<(String, String)> = plan
                .map(|plan| {
                    plan.metrics
                        .iter()
                        .filter_map(|metric| {
                            metric
                                .marketplace_metric_name(marketplace.as_str())
                                .map(|name| (metric.id.clone(), name.to_owned()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let (Some(plan), false) = (plan, metered.is_empty()) {
                let usage = per_metric(
                    &usage_on_plan(&txn, &subscription.subscription_id, plan, start, end).await?,
                );
                let values = metered
                    .into_iter()
                    .map(|(metric_id, metric_name)| MetricValue {
                        metric_name,
                        value: usage.get(&metric_id).copied().unwrap_or(0),
                    })
                    .collect();
                let operation_id = operation_id(&subscription.subscription_id, start, end);
                let operation = UsageOperation {
                    operation_id: operation_id.clone(),
                    operation_name: "Hourly Usage Report".to_owned(),
                    consumer_id: subscription.usage_reporting_id.clone(),
                    start,
                    end,
                    values,
                    labels: BTreeMap::new(),
                };
                let recorded = self
                    .record_report(
                        &txn,
                        reporter,
                        NewReport {
                            account_id: subscription.account_id.clone(),
                            subscription_id: subscription.subscription_id.clone(),
                            marketplace,
                            submission: Submission::Usage(operation),
                            window: Some((start, end)),
                            idempotency_key: operation_id,
                            invoice_id: None,
                        },
                    )
                    .await?;
                made += usize::from(recorded.is_some());
            }
            txn.commit().await.map_err(db_error)?;
            closed_before = Some(end);
        }
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketbridge_core::time::parse_rfc3339;

    fn at(text: &str) -> DateTime<Utc> {
        parse_rfc3339("t", text).unwrap()
    }

    fn period(plan: &str, start: &str, end: Option<&str>) -> plan_period::Model {
        plan_period::Model {
            id: format!("sub:{start}"),
            subscription_id: "sub".into(),
            plan_id: plan.into(),
            starts_at: at(start),
            ends_at: end.map(at),
        }
    }

    #[test]
    fn windows_stop_at_hours_and_plan_changes_and_skip_gaps() {
        let periods = vec![
            period("free", "2026-11-23T12:20:00Z", Some("2026-11-23T14:30:00Z")),
            period("pro", "2026-11-23T14:30:00Z", Some("2026-11-23T15:10:00Z")),
            period("pro", "2026-11-23T18:00:00Z", None),
        ];
        let window = |cursor: &str| {
            next_window(&periods, at(cursor)).map(|(start, end, p)| (start, end, p.plan_id.clone()))
        };
        assert_eq!(
            window("2026-11-23T12:20:00Z"),
            Some((
                at("2026-11-23T12:20:00Z"),
                at("2026-11-23T13:00:00Z"),
                "free".into()
            ))
        );
        assert_eq!(
            window("2026-11-23T14:00:00Z"),
            Some((
                at("2026-11-23T14:00:00Z"),
                at("2026-11-23T14:30:00Z"),
                "free".into()
            ))
        );
        assert_eq!(
            window("2026-11-23T14:30:00Z"),
            Some((
                at("2026-11-23T14:30:00Z"),
                at("2026-11-23T15:00:00Z"),
                "pro".into()
            ))
        );
        assert_eq!(
            window("2026-11-23T15:00:00Z"),
            Some((
                at("2026-11-23T15:00:00Z"),
                at("2026-11-23T15:10:00Z"),
                "pro".into()
            ))
        );
        assert_eq!(
            window("2026-11-23T15:10:00Z"),
            Some((
                at("2026-11-23T18:00:00Z"),
                at("2026-11-23T19:00:00Z"),
                "pro".into()
            )),
            "the unbillable gap is skipped"
        );
    }

    #[test]
    fn operation_ids_are_stable_uuids() {
        let start = at("2026-11-23T12:00:00Z");
        let end = at("2026-11-23T13:00:00Z");
        let id = operation_id("sub_1", start, end);
        assert_eq!(id, operation_id("sub_1", start, end));
        assert_ne!(id, operation_id("sub_2", start, end));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 5);
    }
}
