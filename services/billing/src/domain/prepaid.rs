//! Prepaid balances: credit bought through paid purchase invoices
//! (`ProvisionPrepayment`), drawn down by the usage of prepayment plans at
//! their unit prices, and pushed to the marketplaces that show them at least
//! every hour.

use super::BillingDomain;
use super::reports::{NewReport, settle_delay};
use super::usage_sums::{per_metric, usage_on_plan};
use crate::entity::{account_closure, balance, billing_subscription, invoice};
use crate::lifecycle::closing::ClosureStatus;
use crate::marketplace::{InvoiceSnapshot, UsageReporter};
use crate::submission::{BalanceLine, BalancesDraft, Submission, SubmissionKind};
use chrono::{DateTime, Utc};
use marketbridge_catalog::PlanKind;
use marketbridge_core::ids::AccountId;
use marketbridge_core::money::Money;
use marketbridge_core::time::{billing_period, hour_floor, to_rfc3339, to_timestamp};
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_storage::UnitOfWork;
use marketbridge_storage::db_error;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Label of prepaid credit balances.
pub const CREDIT_LABEL: &str = "Credits";

/// Floors micro-units to the currency's minor unit.
fn floor_to_minor(micros: i128, currency: &str) -> Money {
    let per_minor = Money::new(1, currency.to_owned()).to_micros().max(1);
    Money::new(
        micros
            .div_euclid(per_minor)
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        currency.to_owned(),
    )
}

impl BillingDomain {
    /// Checks a paid invoice is a prepayment purchase, the only kind that
    /// credits a balance. The provider's own invoices are for subscription
    /// plans (contract §6) and are refused: one that carries our external
    /// id, one we recorded as ours (an external id or a subscription), or
    /// one whose lines name a plan of the catalog that is not a prepayment
    /// plan.
    pub(crate) async fn check_prepayment_purchase(
        &self,
        marketplace: Marketplace,
        snapshot: &InvoiceSnapshot,
    ) -> Result<()> {
        let refused = |why: &str| {
            Error::unprocessable(format!("the invoice is not a prepayment purchase: {why}"))
                .with_user_message("This invoice is not a purchase of credits")
        };
        if snapshot
            .external_id
            .as_deref()
            .is_some_and(|id| !id.trim().is_empty())
        {
            return Err(refused("it was issued by the provider"));
        }
        let recorded = invoice::Entity::find()
            .filter(invoice::Column::Marketplace.eq(marketplace.as_str()))
            .filter(invoice::Column::MarketplaceInvoiceId.eq(&snapshot.marketplace_invoice_id))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        if recorded.is_some_and(|row| {
            row.external_id.as_deref().is_some_and(|id| !id.is_empty())
                || !row.subscription_id.is_empty()
        }) {
            return Err(refused("it was issued by the provider"));
        }
        for plan_id in &snapshot.plan_ids {
            let plans: Vec<_> = self
                .catalog
                .products()
                .iter()
                .filter_map(|product| product.plan(plan_id))
                .collect();
            if !plans.is_empty() && plans.iter().all(|plan| plan.kind != PlanKind::Prepayment) {
                return Err(refused(&format!("it bills plan `{plan_id}`")));
            }
        }
        Ok(())
    }

    /// What the account's usage of prepayment plans cost up to `until`, in
    /// micro-units, with the plans' currency; `None` when it never was on one.
    pub(crate) async fn prepaid_usage_cost(
        &self,
        conn: &impl ConnectionTrait,
        account_id: &AccountId,
        until: DateTime<Utc>,
    ) -> Result<Option<(i128, String)>> {
        let subscriptions = billing_subscription::Entity::find()
            .filter(billing_subscription::Column::AccountId.eq(account_id.as_str()))
            .order_by_asc(billing_subscription::Column::SubscriptionId)
            .all(conn)
            .await
            .map_err(db_error)?;
        let mut cost: Option<(i128, String)> = None;
        for subscription in subscriptions {
            let Some(product) = self.catalog.product(&subscription.product_id) else {
                continue;
            };
            let subscription_id = subscription.subscription()?;
            for period in self.plan_periods(&subscription_id).await? {
                let Some(plan) = product.plan(&period.plan_id) else {
                    continue;
                };
                if plan.kind != PlanKind::Prepayment {
                    continue;
                }
                let entry = cost.get_or_insert_with(|| (0, plan.currency.clone()));
                let end = period.ends_at.map_or(until, |ends| ends.min(until));
                // Included quantities apply per billing period.
                let mut start = period.starts_at;
                while start < end {
                    let (_, billing_end) = billing_period(start);
                    let stretch_end = billing_end.min(end);
                    let usage = per_metric(
                        &usage_on_plan(conn, &subscription_id, plan, start, stretch_end).await?,
                    );
                    entry.0 += super::pricing::prepaid_cost_micros(plan, &usage)?;
                    start = stretch_end;
                }
            }
        }
        Ok(cost)
    }

    /// The account's balances now: credit bought minus what prepaid usage
    /// drew from the account-level balance.
    pub(crate) async fn balances_of(
        &self,
        conn: &impl ConnectionTrait,
        account_id: &AccountId,
    ) -> Result<pb::Balances> {
        let now = self.now();
        let rows = balance::Entity::find()
            .filter(balance::Column::AccountId.eq(account_id.as_str()))
            .order_by_asc(balance::Column::ResourceId)
            .all(conn)
            .await
            .map_err(db_error)?;
        let mut values: BTreeMap<String, (i128, String)> = rows
            .into_iter()
            .map(|row| {
                let credit = Money::new(row.value_minor, row.currency.clone());
                (row.resource_id, (credit.to_micros(), row.currency))
            })
            .collect();
        if let Some((cost, currency)) = self.prepaid_usage_cost(conn, account_id, now).await? {
            let entry = values.entry(String::new()).or_insert((0, currency));
            entry.0 -= cost;
        }
        Ok(pb::Balances {
            timestamp: Some(to_timestamp(now)),
            balances: values
                .into_iter()
                .map(|(resource_id, (micros, currency))| {
                    let value = floor_to_minor(micros, &currency);
                    pb::Balance {
                        resource_id,
                        credit: format!("{} {}", value.to_decimal_string(), value.currency),
                        name_label: CREDIT_LABEL.to_owned(),
                        value: Some(value.to_proto()),
                    }
                })
                .collect(),
        })
    }

    /// Pushes the balances of every account at marketplaces that show them
    /// and that has prepaid credit or prepaid usage, once per settled hour.
    pub(crate) async fn report_balances(&self, now: DateTime<Utc>) -> Result<usize> {
        let as_of = hour_floor(now - settle_delay(self.options.usage_settle_seconds));
        let reporters: Vec<_> = self.marketplaces.reporters_that(|plan| plan.balances);
        let mut made = 0;
        for (marketplace, reporter) in reporters {
            for account_id in self.accounts_at(marketplace).await? {
                match self
                    .report_account_balances(marketplace, &reporter, &account_id, as_of)
                    .await
                {
                    Ok(recorded) => made += usize::from(recorded),
                    Err(error) => {
                        tracing::error!(account.id = %account_id, error = %error, "balances could not be recorded")
                    }
                }
            }
        }
        Ok(made)
    }

    async fn report_account_balances(
        &self,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        account_id: &AccountId,
        as_of: DateTime<Utc>,
    ) -> Result<bool> {
        let key = format!("{account_id}:{}", to_rfc3339(as_of));
        if self
            .report_exists(marketplace, SubmissionKind::Balances, &key)
            .await?
            || self.closure_finalized(account_id).await?
        {
            return Ok(false);
        }
        let balances = self.balances_of(&self.db, account_id).await?;
        if balances.balances.is_empty() {
            return Ok(false);
        }
        let draft = BalancesDraft {
            timestamp: self.now(),
            balances: balances
                .balances
                .into_iter()
                .map(|b| BalanceLine {
                    resource_id: Some(b.resource_id).filter(|id| !id.is_empty()),
                    credit: b.credit,
                    name_label: b.name_label,
                    value: b
                        .value
                        .as_ref()
                        .map(Money::from_proto)
                        .unwrap_or_else(|| Money::usd_cents(0)),
                })
                .collect(),
        };
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let recorded = self
            .record_report(
                &mut work,
                reporter,
                NewReport {
                    account_id: account_id.clone(),
                    subscription_id: None,
                    marketplace,
                    submission: Submission::Balances(draft),
                    window: None,
                    idempotency_key: key,
                    invoice_id: None,
                },
            )
            .await?;
        work.commit().await?;
        Ok(recorded.is_some())
    }

    /// Accounts with a subscription at a marketplace, in id order.
    pub(crate) async fn accounts_at(&self, marketplace: Marketplace) -> Result<Vec<AccountId>> {
        let subscriptions = self.subscriptions_at(marketplace).await?;
        let accounts = subscriptions
            .iter()
            .map(billing_subscription::Model::account)
            .collect::<Result<BTreeSet<_>>>()?;
        Ok(accounts.into_iter().collect())
    }

    /// Every subscription billed at a marketplace, in id order.
    pub(crate) async fn subscriptions_at(
        &self,
        marketplace: Marketplace,
    ) -> Result<Vec<billing_subscription::Model>> {
        billing_subscription::Entity::find()
            .filter(billing_subscription::Column::Marketplace.eq(marketplace.as_str()))
            .order_by_asc(billing_subscription::Column::SubscriptionId)
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    /// True when the account's billing was finalized.
    pub(crate) async fn closure_finalized(&self, account_id: &AccountId) -> Result<bool> {
        let closure = account_closure::Entity::find_by_id(account_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(closure.is_some_and(|c| c.status == ClosureStatus::Finalized))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_round_down() {
        assert_eq!(floor_to_minor(1_234_999, "USD").amount_minor, 123);
        assert_eq!(floor_to_minor(-1, "USD").amount_minor, -1);
        assert_eq!(floor_to_minor(0, "USD").amount_minor, 0);
    }
}
