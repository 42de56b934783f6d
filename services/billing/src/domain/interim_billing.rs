//! Interim billing and usage per account, for marketplaces that show it
//! between invoices (Vercel `POST .../billing`, display only, the latest
//! submission of a period wins). Once per settled hour: the charges of the
//! period so far and running usage totals per resource, plus account-wide
//! totals summed over the resources.

use super::BillingDomain;
use super::invoicing::charged_groups;
use super::pricing::{Charged, Stretch, base_charge, usage_charges};
use super::reports::{NewReport, settle_delay};
use super::usage_sums::{usage_between, usage_on_plan};
use crate::entity::{billing_resource, billing_subscription};
use crate::marketplace::UsageReporter;
use crate::submission::{InterimBilling, Submission, SubmissionKind, UsageLine};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_catalog::{Metric, Plan};
use marketbridge_core::ids::AccountId;
use marketbridge_core::time::{billing_period, hour_floor, to_rfc3339};
use marketbridge_core::{Marketplace, Result};
use marketbridge_storage::UnitOfWork;
use marketbridge_storage::db_error;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The start of the UTC day containing `time`.
fn day_floor(time: DateTime<Utc>) -> DateTime<Utc> {
    hour_floor(time) - ChronoDuration::hours(i64::from(chrono::Timelike::hour(&time)))
}

/// Usage values of one line while they are summed.
#[derive(Default)]
struct Running {
    day: i64,
    period: i64,
}

impl BillingDomain {
    /// Records the interim billing of every account at marketplaces that
    /// show it, once per settled hour. Returns how many were recorded.
    pub(crate) async fn report_interim_billing(&self, now: DateTime<Utc>) -> Result<usize> {
        let as_of = hour_floor(now - settle_delay(self.options.usage_settle_seconds));
        let reporters: Vec<_> = self
            .marketplaces
            .reporters_that(|plan| plan.interim_billing);
        let mut made = 0;
        for (marketplace, reporter) in reporters {
            for account_id in self.accounts_at(marketplace).await? {
                match self
                    .report_account_interim_billing(marketplace, &reporter, &account_id, as_of)
                    .await
                {
                    Ok(recorded) => made += usize::from(recorded),
                    Err(error) => {
                        tracing::error!(account.id = %account_id, error = %error, "interim billing could not be recorded")
                    }
                }
            }
        }
        Ok(made)
    }

    async fn report_account_interim_billing(
        &self,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        account_id: &AccountId,
        as_of: DateTime<Utc>,
    ) -> Result<bool> {
        let key = format!("{account_id}:{}", to_rfc3339(as_of));
        if self
            .report_exists(marketplace, SubmissionKind::BillingData, &key)
            .await?
            || self.closure_finalized(account_id).await?
        {
            return Ok(false);
        }
        let Some(billing) = self
            .interim_billing_of(marketplace, account_id, as_of)
            .await?
        else {
            return Ok(false);
        };
        let window = (billing.period_start, as_of);
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let recorded = self
            .record_report(
                &mut work,
                reporter,
                NewReport {
                    account_id: account_id.clone(),
                    subscription_id: None,
                    marketplace,
                    submission: Submission::BillingData(billing),
                    window: Some(window),
                    idempotency_key: key,
                    invoice_id: None,
                },
            )
            .await?;
        work.commit().await?;
        Ok(recorded.is_some())
    }

    /// The account's interim billing with usage up to `as_of`; `None` when
    /// nothing was billable in the period.
    pub(crate) async fn interim_billing_of(
        &self,
        marketplace: Marketplace,
        account_id: &AccountId,
        as_of: DateTime<Utc>,
    ) -> Result<Option<InterimBilling>> {
        let data_time = as_of - ChronoDuration::microseconds(1);
        let (period_start, period_end) = billing_period(data_time);
        let day_start = day_floor(data_time).max(period_start);
        let subscriptions = billing_subscription::Entity::find()
            .filter(billing_subscription::Column::AccountId.eq(account_id.as_str()))
            .filter(billing_subscription::Column::Marketplace.eq(marketplace.as_str()))
            .order_by_asc(billing_subscription::Column::SubscriptionId)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut items = Vec::new();
        let mut running: BTreeMap<(String, String), Running> = BTreeMap::new();
        let mut metrics: BTreeMap<String, (Metric, i64)> = BTreeMap::new();
        let mut billable = false;
        for subscription in subscriptions {
            let Some(product) = self.catalog.product(&subscription.product_id) else {
                continue;
            };
            let subscription_id = subscription.subscription()?;
            let periods: Vec<_> = self
                .plan_periods(&subscription_id)
                .await?
                .into_iter()
                .filter(|p| p.starts_at < as_of && p.ends_at.is_none_or(|end| end > period_start))
                .collect();
            if periods.is_empty() {
                continue;
            }
            billable = true;
            let resource_ids: Vec<String> = billing_resource::Entity::find()
                .filter(
                    billing_resource::Column::SubscriptionId
                        .eq(subscription.subscription_id.clone()),
                )
                .order_by_asc(billing_resource::Column::ResourceId)
                .all(&self.db)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|row| row.resource_id)
                .collect();
            let mut current_plan: Option<&Plan> = None;
            for period in &periods {
                let Some(plan) = product.plan(&period.plan_id) else {
                    continue;
                };
                current_plan = Some(plan);
                let start = period.starts_at.max(period_start);
                let planned_end = period.ends_at.map_or(period_end, |end| end.min(period_end));
                let used_until = period.ends_at.map_or(as_of, |end| end.min(as_of));
                let usage =
                    usage_on_plan(&self.db, &subscription_id, plan, start, used_until).await?;
                let marketplace_plan_id = plan.marketplace_plan_id(marketplace.as_str());
                for group in charged_groups(plan, &resource_ids, &usage) {
                    let charged = Charged {
                        plan,
                        marketplace_plan_id: &marketplace_plan_id,
                        resource_id: group.resource_id.as_deref(),
                    };
                    let planned = Stretch {
                        start,
                        end: planned_end,
                        period_start,
                        period_end,
                    };
                    if group.with_base_price {
                        items.extend(base_charge(charged, planned)?);
                    }
                    let so_far = Stretch {
                        end: used_until,
                        ..planned
                    };
                    items.extend(usage_charges(charged, so_far, &group.usage)?);
                }
            }
            if let Some(plan) = current_plan {
                for metric in &plan.metrics {
                    metrics.insert(metric.id.clone(), (metric.clone(), metric.included));
                    for resource_id in &resource_ids {
                        running
                            .entry((resource_id.clone(), metric.id.clone()))
                            .or_default();
                    }
                }
            }
            let (period_usage, day_usage) = match current_plan {
                Some(plan) => (
                    usage_on_plan(&self.db, &subscription_id, plan, period_start, as_of).await?,
                    usage_on_plan(&self.db, &subscription_id, plan, day_start, as_of).await?,
                ),
                None => (
                    usage_between(&self.db, &subscription_id, period_start, as_of).await?,
                    usage_between(&self.db, &subscription_id, day_start, as_of).await?,
                ),
            };
            for (key, quantity) in period_usage {
                running.entry(key).or_default().period += quantity;
            }
            for (key, quantity) in day_usage {
                running.entry(key).or_default().day += quantity;
            }
        }
        if !billable {
            return Ok(None);
        }
        let line = |resource_id: Option<String>, metric_id: &str, values: &Running| {
            let (metric, included) = metrics.get(metric_id)?;
            Some(UsageLine {
                resource_id,
                metric_id: metric_id.to_owned(),
                name: metric.name.clone(),
                kind: metric.kind,
                units: metric.unit.clone(),
                day_value: values.day,
                period_value: values.period,
                plan_value: Some(*included).filter(|included| *included > 0),
            })
        };
        let mut usage = Vec::new();
        let mut account_wide: BTreeMap<String, Running> = BTreeMap::new();
        for ((resource_id, metric_id), values) in &running {
            let total = account_wide.entry(metric_id.clone()).or_default();
            total.day += values.day;
            total.period += values.period;
            if !resource_id.is_empty() {
                usage.extend(line(Some(resource_id.clone()), metric_id, values));
            }
        }
        for (metric_id, values) in &account_wide {
            usage.extend(line(None, metric_id, values));
        }
        Ok(Some(InterimBilling {
            timestamp: self.now(),
            day_end: day_floor(data_time) + ChronoDuration::days(1),
            period_start,
            period_end,
            items,
            usage,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketbridge_core::time::parse_rfc3339;

    #[test]
    fn days_start_at_midnight_utc() {
        let time = parse_rfc3339("t", "2026-11-23T17:45:12Z").unwrap();
        assert_eq!(to_rfc3339(day_floor(time)), "2026-11-23T00:00:00.000Z");
    }
}
