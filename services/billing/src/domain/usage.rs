//! The usage ledger: events recorded once by their client id, summed into
//! hour windows in the same transaction.

use super::BillingDomain;
use crate::entity::{
    account_closure, billing_resource, billing_subscription, plan_period, usage_window,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ids::SubscriptionId;
use marketbridge_core::time::{
    billing_period, from_optional_timestamp, hour_floor, to_rfc3339, to_timestamp,
};
use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::truncate_micros;
use marketbridge_storage::{Backend, UnitOfWork};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Most events in one call.
pub const MAX_BATCH: usize = 1000;
/// Oldest event accepted, in days.
pub const MAX_EVENT_AGE_DAYS: i64 = 7;

/// An event after validation.
struct Checked {
    event_id: String,
    subscription_id: SubscriptionId,
    resource_id: String,
    metric_id: String,
    quantity: i64,
    occurred_at: DateTime<Utc>,
}

/// Which customer a usage event or query names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Customer {
    Resource(String),
    Subscription(String),
}

impl BillingDomain {
    /// Records a batch of usage events; all or nothing.
    pub async fn record_usage(
        &self,
        request: pb::RecordUsageRequest,
    ) -> Result<pb::RecordUsageResponse> {
        if request.events.is_empty() || request.events.len() > MAX_BATCH {
            return Err(Error::invalid_field(
                "events",
                format!("must hold 1 to {MAX_BATCH} events"),
            ));
        }
        let now = self.now();
        let checked = self.check_events(&request.events, now).await?;
        let work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let txn = &*work;
        let mut earliest: BTreeMap<&SubscriptionId, DateTime<Utc>> = BTreeMap::new();
        for event in &checked {
            let entry = earliest
                .entry(&event.subscription_id)
                .or_insert(event.occurred_at);
            *entry = (*entry).min(event.occurred_at);
        }
        // Subscriptions are locked in id order (one statement), so a report
        // closing the ledger either sees this batch or makes it fail here.
        let backend = Backend::of(&self.db);
        if let Some((subscription_id, earliest)) = lock_open(txn, backend, &earliest).await? {
            return Err(Error::invalid_field(
                "events",
                format!(
                    "usage of {subscription_id} before {} was reported to the marketplace meanwhile",
                    to_rfc3339(earliest)
                ),
            ));
        }
        let inserted = insert_new_events(txn, backend, &checked, now).await?;
        // One row per hour window touched, upserted in key order.
        let mut increments: BTreeMap<WindowKey<'_>, (i64, i64)> = BTreeMap::new();
        let mut results = Vec::with_capacity(checked.len());
        let (mut accepted, mut duplicates) = (0_u32, 0_u32);
        for event in &checked {
            let outcome = if inserted.contains(event.event_id.as_str()) {
                let increment = increments
                    .entry((
                        event.subscription_id.as_str(),
                        event.resource_id.as_str(),
                        event.metric_id.as_str(),
                        hour_floor(event.occurred_at),
                    ))
                    .or_default();
                increment.0 += event.quantity;
                increment.1 += 1;
                accepted += 1;
                pb::UsageEventOutcome::Accepted
            } else {
                duplicates += 1;
                pb::UsageEventOutcome::Duplicate
            };
            results.push(pb::UsageEventResult {
                event_id: event.event_id.clone(),
                outcome: outcome as i32,
            });
        }
        add_to_windows(txn, backend, &increments).await?;
        work.commit().await?;
        tracing::debug!(accepted, duplicates, "usage recorded");
        Ok(pb::RecordUsageResponse {
            results,
            accepted,
            duplicates,
        })
    }

    async fn check_events(
        &self,
        events: &[pb::UsageEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<Checked>> {
        let mut validator = Validator::new();
        let mut seen = HashMap::new();
        let mut customers: Vec<Option<Customer>> = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let field = |name: &str| format!("events[{index}].{name}");
            // Field names are only formatted for an event that is invalid.
            if event.event_id.trim().is_empty() {
                validator.require(&field("eventId"), &event.event_id);
            }
            if event.event_id.len() > 128 {
                validator.max_len(&field("eventId"), &event.event_id, 128);
            }
            if event.metric_id.trim().is_empty() {
                validator.require(&field("metricId"), &event.metric_id);
            }
            if event.quantity < 0 {
                validator.invalid(field("quantity"), "must not be negative");
            }
            if let Some(first) = seen.insert(event.event_id.as_str(), index)
                && !event.event_id.is_empty()
            {
                validator.invalid(
                    field("eventId"),
                    format!("repeats events[{first}].eventId in the same batch"),
                );
            }
            match from_optional_timestamp(&field("occurredAt"), event.occurred_at.as_ref()) {
                Ok(Some(at)) if at < now - ChronoDuration::days(MAX_EVENT_AGE_DAYS) => validator
                    .invalid(
                        field("occurredAt"),
                        format!("is more than {MAX_EVENT_AGE_DAYS} days old"),
                    ),
                Ok(Some(at)) if at > now + self.future_skew() => {
                    validator.invalid(field("occurredAt"), "is in the future")
                }
                Ok(_) => {}
                Err(error) => validator.invalid(field("occurredAt"), error.message().to_owned()),
            }
            customers.push(match &event.customer {
                Some(pb::usage_event::Customer::ResourceId(id)) if !id.is_empty() => {
                    Some(Customer::Resource(id.clone()))
                }
                Some(pb::usage_event::Customer::SubscriptionId(id)) if !id.is_empty() => {
                    Some(Customer::Subscription(id.clone()))
                }
                _ => {
                    validator.invalid(
                        field("customer"),
                        "a resourceId or subscriptionId is required",
                    );
                    None
                }
            });
        }
        validator.finish()?;

        let mut validator = Validator::new();
        let mut checked = Vec::with_capacity(events.len());
        let known = Known::load(&self.db, customers.iter().flatten()).await?;
        for (index, (event, customer)) in events.iter().zip(customers).enumerate() {
            let field = |name: &str| format!("events[{index}].{name}");
            let occurred_at = truncate_micros(
                from_optional_timestamp("occurredAt", event.occurred_at.as_ref())?.unwrap_or(now),
            );
            let resolved = customer
                .as_ref()
                .and_then(|customer| known.resolve(customer));
            let Some((subscription, resource_id)) = resolved else {
                validator.invalid(field("customer"), "unknown customer");
                continue;
            };
            if let Some(closed_before) = subscription.usage_closed_before
                && occurred_at < closed_before
            {
                validator.invalid(
                    field("occurredAt"),
                    format!(
                        "usage before {} was already reported to the marketplace",
                        to_rfc3339(closed_before)
                    ),
                );
                continue;
            }
            if let Some(closure) = known.closures.get(&subscription.account_id)
                && occurred_at >= closure.requested_at
            {
                validator.invalid(
                    field("occurredAt"),
                    format!(
                        "the account's billing was closed at {}",
                        to_rfc3339(closure.requested_at)
                    ),
                );
                continue;
            }
            let periods = known
                .periods
                .get(&subscription.subscription_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let Some(period) = Self::plan_at(periods, occurred_at) else {
                validator.invalid(
                    field("occurredAt"),
                    "the customer had no billable subscription at that time",
                );
                continue;
            };
            let plan = self
                .catalog
                .product(&subscription.product_id)
                .and_then(|p| p.plan(&period.plan_id));
            if plan.and_then(|p| p.metric(&event.metric_id)).is_none() {
                validator.invalid(
                    field("metricId"),
                    format!(
                        "plan `{}` has no metric `{}`",
                        period.plan_id, event.metric_id
                    ),
                );
                continue;
            }
            checked.push(Checked {
                event_id: event.event_id.clone(),
                subscription_id: subscription.subscription()?,
                resource_id: resource_id.to_owned(),
                metric_id: event.metric_id.clone(),
                quantity: event.quantity,
                occurred_at,
            });
        }
        validator.finish()?;
        Ok(checked)
    }

    async fn resolve(
        &self,
        customer: Option<&Customer>,
    ) -> Result<Option<(billing_subscription::Model, String)>> {
        let (subscription_id, resource_id) = match customer {
            Some(Customer::Resource(id)) => {
                let Some(mapping) = billing_resource::Entity::find_by_id(id.clone())
                    .one(&self.db)
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                (mapping.subscription_id, id.clone())
            }
            Some(Customer::Subscription(id)) => (id.clone(), String::new()),
            None => return Ok(None),
        };
        let subscription = billing_subscription::Entity::find_by_id(subscription_id)
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(subscription.map(|s| (s, resource_id)))
    }

    /// Hour windows and period totals for a customer.
    pub async fn query_usage(
        &self,
        request: pb::QueryUsageRequest,
    ) -> Result<pb::QueryUsageResponse> {
        let customer = match &request.customer {
            Some(pb::query_usage_request::Customer::ResourceId(id)) => {
                Customer::Resource(id.clone())
            }
            Some(pb::query_usage_request::Customer::SubscriptionId(id)) => {
                Customer::Subscription(id.clone())
            }
            None => {
                return Err(Error::invalid_field(
                    "customer",
                    "a resourceId or subscriptionId is required",
                ));
            }
        };
        let by_resource = matches!(customer, Customer::Resource(_));
        let (subscription, resource_id) = self
            .resolve(Some(&customer))
            .await?
            .ok_or_else(|| Error::not_found("unknown customer"))?;
        let now = self.now();
        let end = from_optional_timestamp("end", request.end.as_ref())?.unwrap_or(now);
        let start = from_optional_timestamp("start", request.start.as_ref())?
            .unwrap_or(billing_period(end).0);
        if start >= end {
            return Err(Error::invalid_field("start", "must be before end"));
        }
        // Running totals start at the beginning of the billing period.
        let scan_from = billing_period(start).0;
        let mut query = usage_window::Entity::find()
            .filter(usage_window::Column::SubscriptionId.eq(subscription.subscription_id.clone()))
            .filter(usage_window::Column::WindowStart.gte(scan_from))
            .filter(usage_window::Column::WindowStart.lt(end))
            .order_by_asc(usage_window::Column::MetricId)
            .order_by_asc(usage_window::Column::WindowStart);
        if by_resource {
            query = query.filter(usage_window::Column::ResourceId.eq(resource_id));
        }
        if !request.metric_id.is_empty() {
            query = query.filter(usage_window::Column::MetricId.eq(request.metric_id.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        // Merge rows of several resources in the same window.
        let mut merged: BTreeMap<(String, DateTime<Utc>), (i64, i64)> = BTreeMap::new();
        for row in rows {
            let entry = merged.entry((row.metric_id, row.window_start)).or_default();
            entry.0 += row.quantity;
            entry.1 += row.event_count;
        }
        let mut windows = Vec::new();
        let mut periods: BTreeMap<(String, DateTime<Utc>), i64> = BTreeMap::new();
        let mut running: HashMap<(String, DateTime<Utc>), i64> = HashMap::new();
        for ((metric_id, window_start), (quantity, count)) in merged {
            let period_start = billing_period(window_start).0;
            let total = running
                .entry((metric_id.clone(), period_start))
                .or_default();
            *total += quantity;
            if window_start >= hour_floor(start) {
                windows.push(pb::UsageWindow {
                    metric_id: metric_id.clone(),
                    start: Some(to_timestamp(window_start)),
                    end: Some(to_timestamp(window_start + ChronoDuration::hours(1))),
                    quantity,
                    period_total: *total,
                    event_count: count.max(0) as u64,
                });
                *periods.entry((metric_id, period_start)).or_default() += quantity;
            }
        }
        let periods = periods
            .into_iter()
            .map(|((metric_id, period_start), quantity)| pb::PeriodTotal {
                metric_id,
                period_start: Some(to_timestamp(period_start)),
                period_end: Some(to_timestamp(billing_period(period_start).1)),
                quantity,
            })
            .collect();
        Ok(pb::QueryUsageResponse { windows, periods })
    }
}

/// A window row's key: subscription, resource, metric, hour.
type WindowKey<'a> = (&'a str, &'a str, &'a str, DateTime<Utc>);

/// Most values bound to one statement: under SQLite's limit (32,766) and
/// PostgreSQL's (65,535), so a batch of 1,000 events is one insert.
const MAX_BINDS: usize = 30_000;

/// Inserts the events that are not recorded yet; returns the ids of those
/// inserted now.
async fn insert_new_events(
    conn: &impl ConnectionTrait,
    backend: Backend,
    events: &[Checked],
    now: DateTime<Utc>,
) -> Result<HashSet<String>> {
    const COLUMNS: usize = 8;
    let mut inserted = HashSet::with_capacity(events.len());
    for chunk in events.chunks(MAX_BINDS / COLUMNS) {
        // On SQLite the transaction holds the database's write lock, so the
        // ids already recorded, read first, are exactly the duplicates and
        // the insert needs to return nothing (each returned row would cross
        // from SQLite's thread on its own). On PostgreSQL a concurrent batch
        // may insert the same id meanwhile: the insert says what it kept.
        let recorded = match backend {
            Backend::Sqlite => recorded_ids(conn, chunk).await?,
            Backend::Postgres => HashSet::new(),
        };
        let fresh: Vec<&Checked> = chunk
            .iter()
            .filter(|event| !recorded.contains(event.event_id.as_str()))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let mut sql = String::with_capacity(200 + fresh.len() * COLUMNS * 8);
        sql.push_str(
            "INSERT INTO usage_events (event_id, subscription_id, resource_id, metric_id, \
             quantity, occurred_at, window_start, recorded_at) VALUES ",
        );
        push_rows(&mut sql, backend, fresh.len(), COLUMNS);
        sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(fresh.len() * COLUMNS);
        for event in &fresh {
            values.extend([
                event.event_id.clone().into(),
                event.subscription_id.as_str().into(),
                event.resource_id.clone().into(),
                event.metric_id.clone().into(),
                event.quantity.into(),
                event.occurred_at.into(),
                hour_floor(event.occurred_at).into(),
                now.into(),
            ]);
        }
        match backend {
            Backend::Sqlite => {
                let statement = Statement::from_sql_and_values(DbBackend::Sqlite, sql, values);
                let written = conn.execute_raw(statement).await.map_err(db_error)?;
                if written.rows_affected() != fresh.len() as u64 {
                    return Err(Error::internal(
                        "usage events were recorded by another writer during the batch",
                    ));
                }
                inserted.extend(fresh.iter().map(|event| event.event_id.clone()));
            }
            Backend::Postgres => {
                sql.push_str(" RETURNING event_id");
                let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
                let rows = conn.query_all_raw(statement).await.map_err(db_error)?;
                for row in rows {
                    inserted.insert(row.try_get::<String>("", "event_id").map_err(db_error)?);
                }
            }
        }
    }
    Ok(inserted)
}

/// The ids of `events` the ledger already holds (one statement).
async fn recorded_ids(conn: &impl ConnectionTrait, events: &[Checked]) -> Result<HashSet<String>> {
    let mut sql = String::with_capacity(64 + events.len() * 3);
    sql.push_str("SELECT event_id FROM usage_events WHERE event_id IN (");
    for index in 0..events.len() {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
    }
    sql.push(')');
    let values: Vec<sea_orm::Value> = events
        .iter()
        .map(|event| event.event_id.clone().into())
        .collect();
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "event_id").map_err(db_error))
        .collect()
}

/// Appends `rows` parenthesised groups of `columns` placeholders: `$1, $2, …`
/// on PostgreSQL, anonymous `?` on SQLite (sqlx looks every numbered SQLite
/// parameter's name up through a linear list, so thousands of `?N` cost a
/// quadratic bind).
fn push_rows(sql: &mut String, backend: Backend, rows: usize, columns: usize) {
    use std::fmt::Write;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    let _ = write!(sql, "${}", row * columns + column + 1);
                }
                Backend::Sqlite => sql.push('?'),
            }
        }
        sql.push(')');
    }
}

/// Adds each window's increment to its row, creating the rows that do not
/// exist yet: one statement per chunk, rows in key order (so concurrent
/// batches lock them in the same order).
async fn add_to_windows(
    conn: &impl ConnectionTrait,
    backend: Backend,
    increments: &BTreeMap<WindowKey<'_>, (i64, i64)>,
) -> Result<()> {
    const COLUMNS: usize = 6;
    let db_backend = match backend {
        Backend::Postgres => DbBackend::Postgres,
        Backend::Sqlite => DbBackend::Sqlite,
    };
    let rows: Vec<_> = increments.iter().collect();
    for chunk in rows.chunks(MAX_BINDS / COLUMNS) {
        let mut sql = String::from(
            "INSERT INTO usage_windows (subscription_id, resource_id, metric_id, window_start, quantity, event_count) VALUES ",
        );
        push_rows(&mut sql, backend, chunk.len(), COLUMNS);
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * COLUMNS);
        for ((subscription_id, resource_id, metric_id, window_start), (quantity, count)) in chunk {
            values.extend([
                (*subscription_id).into(),
                (*resource_id).into(),
                (*metric_id).into(),
                (*window_start).into(),
                (*quantity).into(),
                (*count).into(),
            ]);
        }
        sql.push_str(
            " ON CONFLICT (subscription_id, resource_id, metric_id, window_start) DO UPDATE SET \
             quantity = usage_windows.quantity + excluded.quantity, event_count = usage_windows.event_count + excluded.event_count",
        );
        conn.execute_raw(Statement::from_sql_and_values(db_backend, sql, values))
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// Locks the rows of the subscriptions a batch writes to, in id order, for
/// the rest of the transaction (`FOR SHARE` on PostgreSQL, so concurrent
/// batches do not wait for each other here but a report closing the ledger
/// does; on SQLite the transaction already holds the database's write lock),
/// and tells whether each still accepts usage from its earliest event on. `Some` names the first one that does not (in id
/// order), or that is gone.
async fn lock_open<'a>(
    conn: &impl ConnectionTrait,
    backend: Backend,
    earliest: &BTreeMap<&'a SubscriptionId, DateTime<Utc>>,
) -> Result<Option<(&'a SubscriptionId, DateTime<Utc>)>> {
    let ids: Vec<&str> = earliest.keys().map(|id| id.as_str()).collect();
    let mut closed: HashMap<String, Option<DateTime<Utc>>> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_BINDS) {
        let mut query = billing_subscription::Entity::find()
            .select_only()
            .column(billing_subscription::Column::SubscriptionId)
            .column(billing_subscription::Column::UsageClosedBefore)
            .filter(billing_subscription::Column::SubscriptionId.is_in(chunk.iter().copied()))
            .order_by_asc(billing_subscription::Column::SubscriptionId);
        if backend == Backend::Postgres {
            // Shared: batches of the same subscriptions run side by side,
            // while closing the ledger (an UPDATE of the row) waits for them
            // and they wait for it.
            query = query.lock_shared();
        }
        let rows: Vec<(String, Option<DateTime<Utc>>)> =
            query.into_tuple().all(conn).await.map_err(db_error)?;
        closed.extend(rows);
    }
    Ok(earliest
        .iter()
        .find(|(id, earliest)| match closed.get(id.as_str()) {
            Some(closed_before) => closed_before.is_some_and(|before| before > **earliest),
            None => true,
        })
        .map(|(id, earliest)| (*id, *earliest)))
}

/// What a batch's validation needs to know about the customers it names,
/// read with one statement per table (per chunk of ids).
#[derive(Default)]
struct Known {
    /// Resource id → subscription id.
    resources: HashMap<String, String>,
    /// Subscriptions by id.
    subscriptions: HashMap<String, billing_subscription::Model>,
    /// Closures by account id.
    closures: HashMap<String, account_closure::Model>,
    /// Plan periods by subscription id, oldest first.
    periods: HashMap<String, Vec<plan_period::Model>>,
}

impl Known {
    async fn load<'a>(
        db: &DatabaseConnection,
        customers: impl Iterator<Item = &'a Customer>,
    ) -> Result<Self> {
        let mut known = Known::default();
        let mut resource_ids = BTreeSet::new();
        let mut subscription_ids = BTreeSet::new();
        for customer in customers {
            match customer {
                Customer::Resource(id) => resource_ids.insert(id.as_str()),
                Customer::Subscription(id) => subscription_ids.insert(id.as_str()),
            };
        }
        let resource_ids: Vec<&str> = resource_ids.into_iter().collect();
        for chunk in resource_ids.chunks(MAX_BINDS) {
            let rows = billing_resource::Entity::find()
                .filter(billing_resource::Column::ResourceId.is_in(chunk.iter().copied()))
                .all(db)
                .await
                .map_err(db_error)?;
            known.resources.extend(
                rows.into_iter()
                    .map(|row| (row.resource_id, row.subscription_id)),
            );
        }
        let mut subscription_ids: Vec<String> =
            subscription_ids.into_iter().map(str::to_owned).collect();
        subscription_ids.extend(known.resources.values().cloned());
        subscription_ids.sort_unstable();
        subscription_ids.dedup();
        for chunk in subscription_ids.chunks(MAX_BINDS) {
            let rows = billing_subscription::Entity::find()
                .filter(billing_subscription::Column::SubscriptionId.is_in(chunk.iter().cloned()))
                .all(db)
                .await
                .map_err(db_error)?;
            known.subscriptions.extend(
                rows.into_iter()
                    .map(|row| (row.subscription_id.clone(), row)),
            );
        }
        let mut account_ids: Vec<&str> = known
            .subscriptions
            .values()
            .map(|s| s.account_id.as_str())
            .collect();
        account_ids.sort_unstable();
        account_ids.dedup();
        for chunk in account_ids.chunks(MAX_BINDS) {
            let rows = account_closure::Entity::find()
                .filter(account_closure::Column::AccountId.is_in(chunk.iter().copied()))
                .all(db)
                .await
                .map_err(db_error)?;
            known
                .closures
                .extend(rows.into_iter().map(|row| (row.account_id.clone(), row)));
        }
        let subscription_ids: Vec<&str> = known.subscriptions.keys().map(String::as_str).collect();
        for chunk in subscription_ids.chunks(MAX_BINDS) {
            let rows = plan_period::Entity::find()
                .filter(plan_period::Column::SubscriptionId.is_in(chunk.iter().copied()))
                .order_by_asc(plan_period::Column::SubscriptionId)
                .order_by_asc(plan_period::Column::StartsAt)
                .all(db)
                .await
                .map_err(db_error)?;
            for row in rows {
                known
                    .periods
                    .entry(row.subscription_id.clone())
                    .or_default()
                    .push(row);
            }
        }
        Ok(known)
    }

    /// The subscription a customer names and its resource id (empty for a
    /// subscription named directly).
    fn resolve<'a>(
        &'a self,
        customer: &'a Customer,
    ) -> Option<(&'a billing_subscription::Model, &'a str)> {
        match customer {
            Customer::Resource(id) => {
                let subscription_id = self.resources.get(id)?;
                Some((self.subscriptions.get(subscription_id)?, id.as_str()))
            }
            Customer::Subscription(id) => Some((self.subscriptions.get(id)?, "")),
        }
    }
}

impl BillingDomain {
    /// Moves where a subscription's ledger is closed from `expected` (what
    /// the caller read) to `closed_before`, locking the row for the rest of
    /// the transaction. False when another run moved it first.
    pub(crate) async fn close_usage_before(
        &self,
        conn: &impl ConnectionTrait,
        subscription_id: &SubscriptionId,
        expected: Option<DateTime<Utc>>,
        closed_before: DateTime<Utc>,
    ) -> Result<bool> {
        let mut update = billing_subscription::Entity::update_many()
            .col_expr(
                billing_subscription::Column::UsageClosedBefore,
                Expr::value(closed_before),
            )
            .filter(billing_subscription::Column::SubscriptionId.eq(subscription_id.as_str()));
        update = match expected {
            Some(expected) => {
                update.filter(billing_subscription::Column::UsageClosedBefore.eq(expected))
            }
            None => update.filter(billing_subscription::Column::UsageClosedBefore.is_null()),
        };
        let moved = update.exec(conn).await.map_err(db_error)?;
        Ok(moved.rows_affected == 1)
    }
}
