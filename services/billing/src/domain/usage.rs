//! The usage ledger: events recorded once by their client id, summed into
//! hour windows in the same transaction.

use super::BillingDomain;
use crate::entity::{
    account_closure, billing_resource, billing_subscription, usage_event, usage_window,
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
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    Statement,
};
use std::collections::{BTreeMap, HashMap, HashSet};

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
        // Subscriptions are locked in id order, so concurrent batches cannot
        // deadlock, and a report closing the ledger either sees this batch
        // or makes it fail here.
        for (subscription_id, earliest) in earliest {
            if !still_open(txn, subscription_id, earliest).await? {
                return Err(Error::invalid_field(
                    "events",
                    format!(
                        "usage of {subscription_id} before {} was reported to the marketplace meanwhile",
                        to_rfc3339(earliest)
                    ),
                ));
            }
        }
        let backend = Backend::of(&self.db);
        let inserted = insert_new_events(txn, backend, &checked, now).await?;
        // One upsert per hour window touched, in key order.
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
        for (key, (quantity, count)) in increments {
            add_to_window(txn, backend, key, quantity, count).await?;
        }
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
            validator.require(&field("eventId"), &event.event_id);
            validator.max_len(&field("eventId"), &event.event_id, 128);
            validator.require(&field("metricId"), &event.metric_id);
            if event.quantity < 0 {
                validator.invalid(field("quantity"), "must not be negative");
            }
            if let Some(first) = seen.insert(event.event_id.clone(), index)
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
        let mut periods_cache = HashMap::new();
        let mut customers_cache = HashMap::new();
        let mut closures_cache = HashMap::new();
        for (index, (event, customer)) in events.iter().zip(customers).enumerate() {
            let field = |name: &str| format!("events[{index}].{name}");
            let occurred_at = truncate_micros(
                from_optional_timestamp("occurredAt", event.occurred_at.as_ref())?.unwrap_or(now),
            );
            let resolved = match customer {
                Some(customer) => {
                    if !customers_cache.contains_key(&customer) {
                        let resolved = self.resolve(Some(&customer)).await?;
                        customers_cache.insert(customer.clone(), resolved);
                    }
                    customers_cache[&customer].clone()
                }
                None => None,
            };
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
            if !closures_cache.contains_key(&subscription.account_id) {
                let closure = account_closure::Entity::find_by_id(subscription.account_id.clone())
                    .one(&self.db)
                    .await
                    .map_err(db_error)?;
                closures_cache.insert(subscription.account_id.clone(), closure);
            }
            if let Some(closure) = &closures_cache[&subscription.account_id]
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
            if !periods_cache.contains_key(&subscription.subscription_id) {
                let periods = self.plan_periods(&subscription.subscription()?).await?;
                periods_cache.insert(subscription.subscription_id.clone(), periods);
            }
            let periods = &periods_cache[&subscription.subscription_id];
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
                resource_id,
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

/// Most events written by one statement.
const INSERT_CHUNK: usize = 500;

/// Inserts the events that are not recorded yet; returns the ids of those
/// inserted now.
async fn insert_new_events(
    conn: &impl ConnectionTrait,
    backend: Backend,
    events: &[Checked],
    now: DateTime<Utc>,
) -> Result<HashSet<String>> {
    let db_backend = match backend {
        Backend::Postgres => DbBackend::Postgres,
        Backend::Sqlite => DbBackend::Sqlite,
    };
    let mut inserted = HashSet::with_capacity(events.len());
    for chunk in events.chunks(INSERT_CHUNK) {
        let mut statement = Query::insert();
        statement.into_table(usage_event::Entity).columns([
            usage_event::Column::EventId,
            usage_event::Column::SubscriptionId,
            usage_event::Column::ResourceId,
            usage_event::Column::MetricId,
            usage_event::Column::Quantity,
            usage_event::Column::OccurredAt,
            usage_event::Column::WindowStart,
            usage_event::Column::RecordedAt,
        ]);
        for event in chunk {
            statement
                .values([
                    event.event_id.clone().into(),
                    event.subscription_id.as_str().into(),
                    event.resource_id.clone().into(),
                    event.metric_id.clone().into(),
                    event.quantity.into(),
                    event.occurred_at.into(),
                    hour_floor(event.occurred_at).into(),
                    now.into(),
                ])
                .map_err(|e| Error::internal(format!("usage insert: {e}")))?;
        }
        statement
            .on_conflict(
                OnConflict::column(usage_event::Column::EventId)
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(usage_event::Column::EventId);
        let rows = conn
            .query_all_raw(db_backend.build(&statement))
            .await
            .map_err(db_error)?;
        for row in rows {
            inserted.insert(row.try_get::<String>("", "event_id").map_err(db_error)?);
        }
    }
    Ok(inserted)
}

async fn add_to_window(
    conn: &impl ConnectionTrait,
    backend: Backend,
    (subscription_id, resource_id, metric_id, window_start): WindowKey<'_>,
    quantity: i64,
    count: i64,
) -> Result<()> {
    let (db_backend, sql) = match backend {
        Backend::Postgres => (
            DbBackend::Postgres,
            "INSERT INTO usage_windows (subscription_id, resource_id, metric_id, window_start, quantity, event_count) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (subscription_id, resource_id, metric_id, window_start) DO UPDATE SET \
             quantity = usage_windows.quantity + excluded.quantity, event_count = usage_windows.event_count + excluded.event_count",
        ),
        Backend::Sqlite => (
            DbBackend::Sqlite,
            "INSERT INTO usage_windows (subscription_id, resource_id, metric_id, window_start, quantity, event_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (subscription_id, resource_id, metric_id, window_start) DO UPDATE SET \
             quantity = usage_windows.quantity + excluded.quantity, event_count = usage_windows.event_count + excluded.event_count",
        ),
    };
    let statement = Statement::from_sql_and_values(
        db_backend,
        sql,
        [
            subscription_id.into(),
            resource_id.into(),
            metric_id.into(),
            window_start.into(),
            quantity.into(),
            count.into(),
        ],
    );
    conn.execute_raw(statement).await.map_err(db_error)?;
    Ok(())
}

/// Locks a subscription's row for the rest of the transaction and tells
/// whether usage from `earliest` on is still accepted.
async fn still_open(
    conn: &impl ConnectionTrait,
    subscription_id: &SubscriptionId,
    earliest: DateTime<Utc>,
) -> Result<bool> {
    let locked = billing_subscription::Entity::update_many()
        .col_expr(
            billing_subscription::Column::UsageClosedBefore,
            Expr::col(billing_subscription::Column::UsageClosedBefore),
        )
        .filter(billing_subscription::Column::SubscriptionId.eq(subscription_id.as_str()))
        .filter(
            Condition::any()
                .add(billing_subscription::Column::UsageClosedBefore.is_null())
                .add(billing_subscription::Column::UsageClosedBefore.lte(earliest)),
        )
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(locked.rows_affected == 1)
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
