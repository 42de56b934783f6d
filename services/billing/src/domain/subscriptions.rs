//! Billing's record of subscriptions: which plan was in force when.

use super::BillingDomain;
use crate::entity::{billing_resource, billing_subscription, plan_period};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_core::time::from_optional_timestamp;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::truncate_micros;
use marketbridge_storage::{UnitOfWork, WriteTxn};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QueryTrait,
};

/// The highest version of a subscription billing most likely has not
/// recorded yet: provisioning creates subscriptions at version 0 or 1.
const FIRST_VERSION: i64 = 1;

impl BillingDomain {
    /// Applies a subscription change unless a newer one was applied.
    pub async fn record_subscription_change(
        &self,
        request: pb::RecordSubscriptionChangeRequest,
    ) -> Result<pb::RecordSubscriptionChangeResponse> {
        let change = request
            .change
            .ok_or_else(|| Error::invalid_field("change", "is required"))?;
        if change.subscription_id.is_empty() || change.account_id.is_empty() {
            return Err(Error::invalid_field(
                "change",
                "subscription and account ids are required",
            ));
        }
        let subscription_id =
            SubscriptionId::parse("change.subscriptionId", &change.subscription_id)?;
        let account_id = AccountId::parse("change.accountId", &change.account_id)?;
        let resource_ids = change
            .resource_ids
            .iter()
            .map(|id| ResourceId::parse("change.resourceIds", id))
            .collect::<Result<Vec<_>>>()?;
        let account_ref = change.account_ref.clone().unwrap_or_default();
        let subscription_ref = change.subscription_ref.clone().unwrap_or_default();
        let account_marketplace =
            Marketplace::from_proto("change.accountRef.marketplace", account_ref.marketplace)?;
        let marketplace = Marketplace::from_proto(
            "change.subscriptionRef.marketplace",
            subscription_ref.marketplace,
        )?;
        let effective_at = truncate_micros(
            from_optional_timestamp("change.effectiveAt", change.effective_at.as_ref())?
                .unwrap_or_else(|| self.now()),
        );
        let version = change.version as i64;
        // What the change makes of the row; the close of usage already
        // recorded is kept from the stored row.
        let changed = billing_subscription::Model {
            subscription_id: subscription_id.as_str().to_owned(),
            account_id: account_id.as_str().to_owned(),
            account_marketplace: account_marketplace.as_str().to_owned(),
            account_external_id: account_ref.external_id,
            marketplace: marketplace.as_str().to_owned(),
            external_id: subscription_ref.external_id,
            product_id: change.product_id,
            plan_id: change.plan_id,
            billable: change.billable,
            ended: change.ended,
            usage_reporting_id: change.usage_reporting_id,
            version,
            effective_at,
            updated_at: self.now(),
            usage_closed_before: None,
        };
        // A subscription's first versions are taken for new to billing: its
        // rows are inserted unread (on PostgreSQL as one statement). Should
        // the row be there after all (a job run again, two first changes at
        // once), its key makes those inserts fail whole (on SQLite this
        // writer's savepoint is rolled back, its group's other writers
        // kept), and the change is recorded as any later one is, read first.
        let first = version <= FIRST_VERSION;
        let applied = match self
            .apply_subscription_change(&changed, &resource_ids, first)
            .await
        {
            Err(error) if first && error.code() == marketbridge_core::ErrorCode::Conflict => {
                self.apply_subscription_change(&changed, &resource_ids, false)
                    .await?
            }
            other => other?,
        };
        if let Some(row) = &applied {
            tracing::info!(subscription.id = %row.subscription_id, plan = %row.plan_id, billable = row.billable, version, "subscription change recorded");
            if !row.billable || row.ended {
                // The open window ends here; marketplaces with reporting
                // deadlines (Google: within the hour, after a cancellation
                // "immediately") get it now, not at the scheduler's next run.
                self.report_windows_now(&subscription_id).await;
            }
        }
        Ok(pb::RecordSubscriptionChangeResponse {
            applied: applied.is_some(),
        })
    }

    /// Records `changed` in one write transaction unless a newer version is
    /// recorded; the row written, `None` when it was not newer. `assume_new`:
    /// the row is not read first but inserted (a unique violation at the
    /// commit, `Conflict`, tells it was there).
    async fn apply_subscription_change(
        &self,
        changed: &billing_subscription::Model,
        resource_ids: &[ResourceId],
        assume_new: bool,
    ) -> Result<Option<billing_subscription::Model>> {
        let work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        // A first change of a subscription then only inserts: on PostgreSQL
        // its rows go in one statement, with no transaction around it.
        let stored = if assume_new {
            None
        } else {
            billing_subscription::Entity::find_by_id(changed.subscription_id.as_str())
                .one(&work.reads_before_writes())
                .await
                .map_err(db_error)?
        };
        if stored
            .as_ref()
            .is_some_and(|s| s.version >= changed.version)
        {
            return Ok(None);
        }
        let row = billing_subscription::Model {
            usage_closed_before: stored.as_ref().and_then(|s| s.usage_closed_before),
            ..changed.clone()
        };
        match &stored {
            Some(_) => {
                row.clone()
                    .into_active_model()
                    .reset_all()
                    .update(&*work)
                    .await
                    .map_err(db_error)?;
            }
            None => {
                // Two first changes at once: the second's insert fails (its
                // job retries and finds the row).
                work.insert_at_commit(
                    billing_subscription::Entity::insert(row.clone().into_active_model())
                        .into_query(),
                );
            }
        }
        // Plan periods are only written here, after their subscription's
        // row: a subscription billing did not know has none to close.
        self.update_periods(&work, &row, stored.is_some()).await?;
        for resource_id in resource_ids {
            work.insert_at_commit(
                billing_resource::Entity::insert(billing_resource::ActiveModel {
                    resource_id: Set(resource_id.as_str().to_owned()),
                    subscription_id: Set(row.subscription_id.clone()),
                })
                .on_conflict(
                    OnConflict::column(billing_resource::Column::ResourceId)
                        .do_nothing()
                        .to_owned(),
                )
                .into_query(),
            );
        }
        work.commit().await?;
        Ok(Some(row))
    }

    /// Closes the subscription's open plan period unless `row` keeps it,
    /// and opens one for `row`'s plan when it is billable. `known` is false
    /// for a subscription billing is recording for the first time, which
    /// has no period yet (periods are written only here), so none is read.
    async fn update_periods(
        &self,
        conn: &WriteTxn,
        row: &billing_subscription::Model,
        known: bool,
    ) -> Result<()> {
        let open = if known {
            plan_period::Entity::find()
                .filter(plan_period::Column::SubscriptionId.eq(row.subscription_id.clone()))
                .filter(plan_period::Column::EndsAt.is_null())
                .one(conn)
                .await
                .map_err(db_error)?
        } else {
            None
        };
        let keep_open = row.billable && open.as_ref().is_some_and(|p| p.plan_id == row.plan_id);
        if keep_open {
            return Ok(());
        }
        if let Some(open) = open {
            let ends_at = row.effective_at.max(open.starts_at);
            plan_period::ActiveModel {
                id: Set(open.id),
                ends_at: Set(Some(ends_at)),
                ..Default::default()
            }
            .update(conn)
            .await
            .map_err(db_error)?;
        }
        if row.billable {
            let insert = plan_period::Entity::insert(plan_period::ActiveModel {
                id: Set(format!(
                    "{}:{}",
                    row.subscription_id,
                    row.effective_at.timestamp_micros()
                )),
                subscription_id: Set(row.subscription_id.clone()),
                plan_id: Set(row.plan_id.clone()),
                starts_at: Set(row.effective_at),
                ends_at: Set(None),
            })
            .on_conflict(
                OnConflict::column(plan_period::Column::Id)
                    .update_column(plan_period::Column::PlanId)
                    .to_owned(),
            );
            conn.insert_at_commit(insert.into_query());
        }
        Ok(())
    }

    /// The plan periods of a subscription, oldest first.
    pub async fn plan_periods(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Vec<plan_period::Model>> {
        plan_period::Entity::find()
            .filter(plan_period::Column::SubscriptionId.eq(subscription_id.as_str()))
            .order_by_asc(plan_period::Column::StartsAt)
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    /// The plan billable at `at`, if any.
    pub(crate) fn plan_at(
        periods: &[plan_period::Model],
        at: DateTime<Utc>,
    ) -> Option<&plan_period::Model> {
        periods
            .iter()
            .rev()
            .find(|p| p.starts_at <= at && p.ends_at.is_none_or(|end| at < end))
    }
}
