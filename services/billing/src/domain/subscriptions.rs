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
        // rows are inserted unread (on PostgreSQL together with the other
        // first versions waiting, as one statement). Should the row be there
        // after all (a job run again, two first changes at once), its key
        // makes those inserts fail whole (on SQLite this writer's savepoint
        // is rolled back, its group's other writers kept), and the change is
        // recorded as any later one is, read first.
        let first = version <= FIRST_VERSION;
        let postgres =
            marketbridge_storage::Backend::of(&self.db) == marketbridge_storage::Backend::Postgres;
        let applied = if first && postgres {
            // On PostgreSQL first versions arriving together are written
            // together, one statement for all of them. A batch that failed
            // (one of its rows was there after all) wrote nothing: each of
            // its changes is then recorded on its own, read first.
            match self.first_versions.write(&changed, &resource_ids).await {
                true => Some(changed),
                false => {
                    self.apply_subscription_change(&changed, &resource_ids, false)
                        .await?
                }
            }
        } else {
            match self
                .apply_subscription_change(&changed, &resource_ids, first)
                .await
            {
                Err(error) if first && error.code() == marketbridge_core::ErrorCode::Conflict => {
                    self.apply_subscription_change(&changed, &resource_ids, false)
                        .await?
                }
                other => other?,
            }
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
                // Plan periods are only written here, after their
                // subscription's row: a subscription billing did not know has
                // none to close.
                self.update_periods(&work, &row).await?;
                insert_links(&work, std::iter::once((&row, resource_ids)));
            }
            // Two first changes at once: the second's insert fails (its job
            // retries and finds the row).
            None => insert_first_versions(&work, std::iter::once((&row, resource_ids))),
        }
        work.commit().await?;
        Ok(Some(row))
    }

    /// Closes the subscription's open plan period unless `row` keeps it,
    /// and opens one for `row`'s plan when it is billable.
    async fn update_periods(
        &self,
        conn: &WriteTxn,
        row: &billing_subscription::Model,
    ) -> Result<()> {
        let open = plan_period::Entity::find()
            .filter(plan_period::Column::SubscriptionId.eq(row.subscription_id.clone()))
            .filter(plan_period::Column::EndsAt.is_null())
            .one(conn)
            .await
            .map_err(db_error)?;
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
        insert_open_periods(conn, std::iter::once(row));
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

/// The rows of subscriptions billing records for the first time, held for
/// the commit (on PostgreSQL one statement with whatever else `conn` holds):
/// one insert of their rows, one of the open plan periods of those billable
/// (a subscription billing did not know has no period to close: periods are
/// only written here) and one of their resources' links. A row already there
/// makes the commit fail on its key.
fn insert_first_versions<'a>(
    conn: &WriteTxn,
    changes: impl Iterator<Item = (&'a billing_subscription::Model, &'a [ResourceId])> + Clone,
) {
    conn.insert_at_commit(
        billing_subscription::Entity::insert_many(
            changes
                .clone()
                .map(|(row, _)| row.clone().into_active_model()),
        )
        .into_query(),
    );
    insert_open_periods(conn, changes.clone().map(|(row, _)| row));
    insert_links(conn, changes);
}

/// Opens a plan period for each billable row's plan from its effective
/// time, with one insert (a period opened again at the same instant takes
/// the later plan).
fn insert_open_periods<'a>(
    conn: &WriteTxn,
    rows: impl Iterator<Item = &'a billing_subscription::Model>,
) {
    let periods: Vec<_> = rows
        .filter(|row| row.billable)
        .map(|row| plan_period::ActiveModel {
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
        .collect();
    if !periods.is_empty() {
        let mut insert = plan_period::Entity::insert_many(periods).into_query();
        insert.on_conflict(
            OnConflict::column(plan_period::Column::Id)
                .update_column(plan_period::Column::PlanId)
                .to_owned(),
        );
        conn.insert_at_commit(insert);
    }
}

/// Links each row's resources to its subscription, with one insert (a link
/// already there stays).
fn insert_links<'a>(
    conn: &WriteTxn,
    changes: impl Iterator<Item = (&'a billing_subscription::Model, &'a [ResourceId])>,
) {
    let links: Vec<_> = changes
        .flat_map(|(row, resource_ids)| {
            resource_ids.iter().map(|id| billing_resource::ActiveModel {
                resource_id: Set(id.as_str().to_owned()),
                subscription_id: Set(row.subscription_id.clone()),
            })
        })
        .collect();
    if !links.is_empty() {
        let mut insert = billing_resource::Entity::insert_many(links).into_query();
        insert.on_conflict(
            OnConflict::column(billing_resource::Column::ResourceId)
                .do_nothing()
                .to_owned(),
        );
        conn.insert_at_commit(insert);
    }
}

/// Most first versions written by one statement: three inserts of up to
/// this many rows each (the statement's text differs by the number of rows,
/// so this also bounds how many shapes each connection prepares).
const MOST_FIRST_VERSIONS_TOGETHER: usize = 64;

/// A first version waiting for its batch, and where to say whether the batch
/// wrote it.
type WaitingFirstVersion = (
    billing_subscription::Model,
    Vec<ResourceId>,
    tokio::sync::oneshot::Sender<bool>,
);

/// First versions of subscriptions recorded together, on PostgreSQL: while
/// one batch is being written the next ones wait, and go as one statement
/// (a group commit of first versions). Under load a job's change then costs
/// a share of a statement; alone, it is written at once, as one statement.
pub(crate) struct FirstVersions {
    db: sea_orm::DatabaseConnection,
    /// Its writer task, started by the first write (inside the runtime).
    sender: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<WaitingFirstVersion>>,
}

impl FirstVersions {
    /// First versions written to `db`.
    pub(crate) fn new(db: sea_orm::DatabaseConnection) -> Self {
        Self {
            db,
            sender: std::sync::OnceLock::new(),
        }
    }

    /// Writes `row` (a subscription billing records for the first time) and
    /// its resources' links with the first versions waiting beside it.
    /// False when it was not written: the batch failed as a whole (a row was
    /// there after all), or the writer is gone; the caller then records the
    /// change on its own.
    pub(crate) async fn write(
        &self,
        row: &billing_subscription::Model,
        resource_ids: &[ResourceId],
    ) -> bool {
        let sender = self.sender.get_or_init(|| start_writer(self.db.clone()));
        let (reply, written) = tokio::sync::oneshot::channel();
        if sender
            .send((row.clone(), resource_ids.to_vec(), reply))
            .is_err()
        {
            return false;
        }
        written.await.unwrap_or(false)
    }
}

/// The task that writes batches of first versions; it ends when the
/// [`FirstVersions`] that started it is dropped.
fn start_writer(
    db: sea_orm::DatabaseConnection,
) -> tokio::sync::mpsc::UnboundedSender<WaitingFirstVersion> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<WaitingFirstVersion>();
    tokio::spawn(async move {
        // A change of a subscription already in the batch waits for the
        // next one: one statement never inserts a row twice.
        let mut held_over: Option<WaitingFirstVersion> = None;
        loop {
            let first = match held_over.take() {
                Some(waiting) => waiting,
                None => match receiver.recv().await {
                    Some(waiting) => waiting,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MOST_FIRST_VERSIONS_TOGETHER {
                let Ok(next) = receiver.try_recv() else {
                    break;
                };
                if batch
                    .iter()
                    .any(|(row, _, _)| row.subscription_id == next.0.subscription_id)
                {
                    held_over = Some(next);
                    break;
                }
                batch.push(next);
            }
            let written = write_first_versions(&db, &batch).await;
            if let Err(error) = &written {
                tracing::debug!(error = %error, first_versions = batch.len(), "a batch of first versions was not written; each is recorded on its own");
            }
            for (_, _, reply) in batch {
                let _ = reply.send(written.is_ok());
            }
        }
    });
    sender
}

/// One write transaction holding every first version of `batch` (on
/// PostgreSQL, one statement).
async fn write_first_versions(
    db: &sea_orm::DatabaseConnection,
    batch: &[WaitingFirstVersion],
) -> Result<()> {
    let txn = marketbridge_storage::begin_write(db).await?;
    insert_first_versions(
        &txn,
        batch
            .iter()
            .map(|(row, resource_ids, _)| (row, resource_ids.as_slice())),
    );
    txn.commit().await.map_err(db_error)
}
