//! Invoices billing submits: at the end of each billing period, one per
//! resource (or account-level subscription), period and plan, with the
//! plan's base price for the time it was in force and the usage beyond what
//! it includes; and, when an account is uninstalled, final invoices up to the
//! uninstall. Invoicing a period closes the ledger before its end, so the
//! usage an invoice was computed from cannot change afterwards.

use super::BillingDomain;
use super::invoices::StoredItem;
use super::pricing::{Charged, Stretch, base_charge, total_of, usage_charges};
use super::reports::{NewReport, settle_delay};
use super::usage_sums::{UsageTotals, per_metric, usage_on_plan};
use crate::entity::{billing_resource, billing_subscription, invoice, plan_period};
use crate::lifecycle::invoice::InvoiceState;
use crate::marketplace::UsageReporter;
use crate::model::ids::{OwnerId, PlanId};
use crate::submission::{ChargeLine, InvoiceDraft, Submission, TestInvoice};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_catalog::{Plan, PlanKind, PlanScope};
use marketbridge_core::ids::{InvoiceId, SubscriptionId};
use marketbridge_core::time::billing_period;
use marketbridge_core::{Marketplace, Result};
use marketbridge_storage::UnitOfWork;
use marketbridge_storage::db_error;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Smallest invoice total a marketplace accepts, in minor units (Vercel does
/// not send invoices under $0.50).
pub const MINIMUM_INVOICE_MINOR: i64 = 50;

/// The external id of an invoice: unique per account, the same on every
/// retry.
pub fn invoice_external_id(
    owner_id: &OwnerId,
    plan_id: &PlanId,
    period_start: DateTime<Utc>,
) -> String {
    format!("{owner_id}:{plan_id}:{}", period_start.format("%Y-%m"))
}

/// Who is charged and what they used.
pub(crate) struct ChargedGroup {
    /// The resource; `None` for account-level charges.
    pub resource_id: Option<String>,
    /// Usage per metric id.
    pub usage: BTreeMap<String, i64>,
    /// Whether the plan's base price is charged to this group.
    pub with_base_price: bool,
}

/// Who is charged: each resource for resource plans (usage recorded against
/// the subscription itself goes to its only resource, or to an account-level
/// group), the subscription for account plans.
pub(crate) fn charged_groups(
    plan: &Plan,
    resource_ids: &[String],
    usage: &UsageTotals,
) -> Vec<ChargedGroup> {
    if plan.scope == PlanScope::Installation || resource_ids.is_empty() {
        return vec![ChargedGroup {
            resource_id: None,
            usage: per_metric(usage),
            with_base_price: true,
        }];
    }
    if let [only] = resource_ids {
        return vec![ChargedGroup {
            resource_id: Some(only.clone()),
            usage: per_metric(usage),
            with_base_price: true,
        }];
    }
    let mut groups: Vec<ChargedGroup> = resource_ids
        .iter()
        .map(|id| ChargedGroup {
            resource_id: Some(id.clone()),
            usage: BTreeMap::new(),
            with_base_price: true,
        })
        .collect();
    let mut unattributed = BTreeMap::new();
    for ((resource_id, metric_id), quantity) in usage {
        match groups
            .iter_mut()
            .find(|group| group.resource_id.as_deref() == Some(resource_id.as_str()))
        {
            Some(group) => *group.usage.entry(metric_id.clone()).or_default() += quantity,
            None => *unattributed.entry(metric_id.clone()).or_default() += quantity,
        }
    }
    if !unattributed.is_empty() {
        groups.push(ChargedGroup {
            resource_id: None,
            usage: unattributed,
            with_base_price: false,
        });
    }
    groups
}

impl BillingDomain {
    /// Invoices every billing period that has ended (and settled) for
    /// subscriptions at marketplaces that take invoices. Returns how many
    /// invoices were recorded.
    pub(crate) async fn invoice_ended_periods(&self, now: DateTime<Utc>) -> Result<usize> {
        let until = now - settle_delay(self.options.usage_settle_seconds);
        let mut made = 0;
        for (marketplace, reporter) in self.marketplaces.reporters_that(|plan| plan.invoices) {
            let subscriptions = self.subscriptions_at(marketplace).await?;
            for subscription in subscriptions {
                match self
                    .invoice_periods_until(marketplace, &reporter, &subscription, until)
                    .await
                {
                    Ok(invoiced) => made += invoiced,
                    Err(error) => {
                        tracing::error!(subscription.id = %subscription.subscription_id, error = %error, "ended periods could not be invoiced")
                    }
                }
            }
        }
        Ok(made)
    }

    /// Invoices the subscription's complete billing periods that end by
    /// `until`.
    pub(crate) async fn invoice_periods_until(
        &self,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        subscription: &billing_subscription::Model,
        until: DateTime<Utc>,
    ) -> Result<usize> {
        let subscription_id = subscription.subscription()?;
        let periods = self.plan_periods(&subscription_id).await?;
        let Some(first) = periods.first() else {
            return Ok(0);
        };
        let mut closed_before = subscription.usage_closed_before;
        let mut made = 0;
        loop {
            let from = closed_before.unwrap_or(billing_period(first.starts_at).0);
            let (_, period_end) = billing_period(from);
            let billable_after = periods
                .iter()
                .any(|p| p.ends_at.is_none_or(|end| end > from));
            if period_end > until || !billable_after {
                return Ok(made);
            }
            let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
            if !self
                .close_usage_before(&*work, &subscription_id, closed_before, period_end)
                .await?
            {
                return Ok(made);
            }
            made += self
                .record_invoices(
                    &mut work,
                    marketplace,
                    reporter,
                    subscription,
                    &periods,
                    (from, period_end),
                    false,
                )
                .await?;
            work.commit().await?;
            closed_before = Some(period_end);
        }
    }

    /// Final invoices of an uninstalled account's subscription: complete
    /// periods first, then the part of the last period up to `final_end`.
    pub(crate) async fn invoice_final(
        &self,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        subscription_id: &SubscriptionId,
        final_end: DateTime<Utc>,
    ) -> Result<usize> {
        let Some(subscription) = billing_subscription::Entity::find_by_id(subscription_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)?
        else {
            return Ok(0);
        };
        let mut made = self
            .invoice_periods_until(marketplace, reporter, &subscription, final_end)
            .await?;
        let Some(subscription) = billing_subscription::Entity::find_by_id(subscription_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)?
        else {
            return Ok(made);
        };
        let periods = self.plan_periods(subscription_id).await?;
        let Some(first) = periods.first() else {
            return Ok(made);
        };
        let from = subscription
            .usage_closed_before
            .unwrap_or(billing_period(first.starts_at).0);
        if from >= final_end {
            return Ok(made);
        }
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        if self
            .close_usage_before(
                &*work,
                subscription_id,
                subscription.usage_closed_before,
                final_end,
            )
            .await?
        {
            made += self
                .record_invoices(
                    &mut work,
                    marketplace,
                    reporter,
                    &subscription,
                    &periods,
                    (from, final_end),
                    true,
                )
                .await?;
        }
        work.commit().await?;
        Ok(made)
    }

    /// Records the invoices of one subscription for `[start, end)` (inside
    /// one billing period): one per resource and plan, totals under the
    /// marketplace minimum left out.
    #[allow(clippy::too_many_arguments)]
    async fn record_invoices(
        &self,
        work: &mut UnitOfWork,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        subscription: &billing_subscription::Model,
        periods: &[plan_period::Model],
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        is_final: bool,
    ) -> Result<usize> {
        let Some(product) = self.catalog.product(&subscription.product_id) else {
            tracing::warn!(subscription.id = %subscription.subscription_id, product = %subscription.product_id, "cannot invoice a product missing from the catalog");
            return Ok(0);
        };
        let subscription_id = subscription.subscription()?;
        let (period_start, period_end) = billing_period(start);
        let resource_ids: Vec<String> = billing_resource::Entity::find()
            .filter(
                billing_resource::Column::SubscriptionId.eq(subscription.subscription_id.clone()),
            )
            .order_by_asc(billing_resource::Column::ResourceId)
            .all(&**work)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| row.resource_id)
            .collect();
        // Lines per (owner, plan): a plan in force twice in one period is
        // still one invoice.
        let mut invoices: BTreeMap<(Option<String>, String), Vec<ChargeLine>> = BTreeMap::new();
        for period in periods {
            let stretch_start = period.starts_at.max(start);
            let stretch_end = period.ends_at.map_or(end, |ends| ends.min(end));
            if stretch_start >= stretch_end {
                continue;
            }
            let Some(plan) = product.plan(&period.plan_id) else {
                continue;
            };
            if plan.kind != PlanKind::Subscription {
                continue;
            }
            let stretch = Stretch {
                start: stretch_start,
                end: stretch_end,
                period_start,
                period_end,
            };
            let usage =
                usage_on_plan(&**work, &subscription_id, plan, stretch_start, stretch_end).await?;
            let marketplace_plan_id = plan.marketplace_plan_id(marketplace.as_str());
            for group in charged_groups(plan, &resource_ids, &usage) {
                let charged = Charged {
                    plan,
                    marketplace_plan_id: &marketplace_plan_id,
                    resource_id: group.resource_id.as_deref(),
                };
                let lines = invoices
                    .entry((group.resource_id.clone(), plan.id.clone()))
                    .or_default();
                if group.with_base_price {
                    lines.extend(base_charge(charged, stretch)?);
                }
                lines.extend(usage_charges(charged, stretch, &group.usage)?);
            }
        }
        let mut made = 0;
        for ((resource_id, plan_id), lines) in invoices {
            let currency = product
                .plan(&plan_id)
                .map(|plan| plan.currency.clone())
                .unwrap_or_else(|| "USD".to_owned());
            let total = total_of(&lines, &currency);
            let owner = resource_id
                .clone()
                .unwrap_or_else(|| subscription.subscription_id.clone());
            if total.amount_minor < MINIMUM_INVOICE_MINOR {
                tracing::info!(subscription.id = %subscription.subscription_id, owner = %owner, plan = %plan_id, total = %total, "invoice total under the marketplace minimum; not invoiced");
                continue;
            }
            let external_id = invoice_external_id(
                &OwnerId::new(owner.clone()),
                &PlanId::new(plan_id.clone()),
                period_start,
            );
            let invoice_date = (end - ChronoDuration::seconds(1)).max(start);
            let now = self.now();
            let stored_items: Vec<StoredItem> = lines.iter().map(StoredItem::from).collect();
            let row = invoice::Model {
                id: InvoiceId::generate().into_string(),
                account_id: subscription.account_id.clone(),
                subscription_id: subscription.subscription_id.clone(),
                marketplace: marketplace.as_str().to_owned(),
                marketplace_invoice_id: None,
                external_id: Some(external_id.clone()),
                state: InvoiceState::Draft,
                state_at: now,
                period_start: Some(period_start),
                period_end: Some(period_end),
                invoice_date: Some(invoice_date),
                items: serde_json::to_string(&stored_items)
                    .map_err(|e| marketbridge_core::Error::internal(e.to_string()))?,
                total_minor: total.amount_minor,
                currency: total.currency.clone(),
                test: self.options.test_invoices,
                is_final,
                refund_total_minor: 0,
                refund_reason: String::new(),
                paid_at: None,
                created_at: now,
                updated_at: now,
            };
            let inserted = invoice::Entity::insert(row.clone().into_active_model())
                .on_conflict(
                    OnConflict::columns([invoice::Column::AccountId, invoice::Column::ExternalId])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&**work)
                .await
                .map_err(db_error)?;
            if inserted == 0 {
                continue;
            }
            let draft = InvoiceDraft {
                external_id: external_id.clone(),
                invoice_date,
                memo: Some(format!(
                    "{}: {} to {}",
                    product.name,
                    start.format("%Y-%m-%d %H:%M UTC"),
                    end.format("%Y-%m-%d %H:%M UTC")
                )),
                period_start,
                period_end,
                items: lines,
                is_final,
                test: self.options.test_invoices.then(|| TestInvoice {
                    result: Some(self.options.test_invoice_result.clone())
                        .filter(|result| !result.is_empty()),
                }),
            };
            self.record_report(
                work,
                reporter,
                NewReport {
                    account_id: subscription.account()?,
                    subscription_id: Some(subscription_id.clone()),
                    marketplace,
                    submission: Submission::Invoice(draft),
                    window: Some((start, end)),
                    idempotency_key: external_id,
                    invoice_id: Some(row.invoice()?),
                },
            )
            .await?;
            tracing::info!(invoice.id = %row.id, subscription.id = %subscription.subscription_id, total = %total, is_final, "invoice recorded");
            made += 1;
        }
        Ok(made)
    }
}

impl From<&ChargeLine> for StoredItem {
    fn from(line: &ChargeLine) -> Self {
        StoredItem {
            plan_id: line.plan_id.clone(),
            resource_id: line.resource_id.clone().unwrap_or_default(),
            name: line.name.clone(),
            details: line.details.clone(),
            unit_price_micros: line.unit_price_micros,
            quantity: line.quantity,
            units: line.units.clone(),
            total_minor: line.total.amount_minor,
            start: Some(line.start),
            end: Some(line.end),
        }
    }
}
