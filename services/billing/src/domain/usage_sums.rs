//! Exact usage of a subscription between two instants. Interval metrics
//! (requests) add up: whole hours come from the hour windows, the parts of
//! hours at either end from the events, so a boundary inside an hour (a plan
//! change, a cancellation) splits usage exactly where the events fall. Total
//! and rate metrics (storage in use) are measurements: what counts is the
//! latest one at the end of the stretch.

use crate::entity::{usage_event, usage_window};
use crate::model::ids::MetricId;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_catalog::{MetricKind, Plan};
use marketbridge_core::Result;
use marketbridge_core::ids::SubscriptionId;
use marketbridge_core::time::hour_floor;
use marketbridge_storage::db_error;
use sea_orm::sea_query::{Alias, Expr, Func};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::BTreeMap;

/// Quantities keyed by (resource id, metric id); the resource id is empty
/// for usage recorded against the subscription itself.
pub type UsageTotals = BTreeMap<(String, String), i64>;

/// The first hour boundary at or after `time`.
pub fn hour_ceil(time: DateTime<Utc>) -> DateTime<Utc> {
    let floor = hour_floor(time);
    if floor == time {
        floor
    } else {
        floor + ChronoDuration::hours(1)
    }
}

/// Usage of `subscription_id` that occurred in `[start, end)`.
pub async fn usage_between(
    conn: &impl ConnectionTrait,
    subscription_id: &SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<UsageTotals> {
    let mut totals = UsageTotals::new();
    if start >= end {
        return Ok(totals);
    }
    let first_whole_hour = hour_ceil(start);
    let last_whole_hour_end = hour_floor(end);
    if first_whole_hour >= last_whole_hour_end {
        add_events(conn, &mut totals, subscription_id, start, end).await?;
        return Ok(totals);
    }
    if start < first_whole_hour {
        add_events(conn, &mut totals, subscription_id, start, first_whole_hour).await?;
    }
    add_windows(
        conn,
        &mut totals,
        subscription_id,
        first_whole_hour,
        last_whole_hour_end,
    )
    .await?;
    if last_whole_hour_end < end {
        add_events(conn, &mut totals, subscription_id, last_whole_hour_end, end).await?;
    }
    Ok(totals)
}

/// Usage of `subscription_id` in `[start, end)` as `plan` counts it: sums
/// of its interval metrics, and for its total and rate metrics the latest
/// measurement before `end` (a measurement stays true until the next one).
/// Metrics the plan does not know add up.
pub async fn usage_on_plan(
    conn: &impl ConnectionTrait,
    subscription_id: &SubscriptionId,
    plan: &Plan,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<UsageTotals> {
    let mut totals = usage_between(conn, subscription_id, start, end).await?;
    let measured: Vec<MetricId> = plan
        .metrics
        .iter()
        .filter(|metric| metric.kind != MetricKind::Interval)
        .map(|metric| MetricId::new(metric.id.clone()))
        .collect();
    if measured.is_empty() {
        return Ok(totals);
    }
    totals.retain(|(_, metric_id), _| !measured.iter().any(|m| m.as_str() == metric_id));
    totals.extend(latest_measurements(conn, subscription_id, &measured, end).await?);
    Ok(totals)
}

/// The latest measurement before `end` of each of `metric_ids`, per
/// resource.
async fn latest_measurements(
    conn: &impl ConnectionTrait,
    subscription_id: &SubscriptionId,
    metric_ids: &[MetricId],
    end: DateTime<Utc>,
) -> Result<UsageTotals> {
    let pairs: Vec<(String, String)> = usage_window::Entity::find()
        .select_only()
        .column(usage_window::Column::ResourceId)
        .column(usage_window::Column::MetricId)
        .distinct()
        .filter(usage_window::Column::SubscriptionId.eq(subscription_id.as_str()))
        .filter(usage_window::Column::MetricId.is_in(metric_ids.iter().map(MetricId::as_str)))
        .filter(usage_window::Column::WindowStart.lt(end))
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    let mut latest = UsageTotals::new();
    for (resource_id, metric_id) in pairs {
        let last = usage_event::Entity::find()
            .filter(usage_event::Column::SubscriptionId.eq(subscription_id.as_str()))
            .filter(usage_event::Column::ResourceId.eq(resource_id.clone()))
            .filter(usage_event::Column::MetricId.eq(metric_id.clone()))
            .filter(usage_event::Column::OccurredAt.lt(end))
            .order_by_desc(usage_event::Column::OccurredAt)
            .order_by_desc(usage_event::Column::RecordedAt)
            .order_by_desc(usage_event::Column::EventId)
            .one(conn)
            .await
            .map_err(db_error)?;
        if let Some(last) = last {
            latest.insert((resource_id, metric_id), last.quantity);
        }
    }
    Ok(latest)
}

/// Sums per metric, over every resource.
pub fn per_metric(totals: &UsageTotals) -> BTreeMap<String, i64> {
    let mut sums = BTreeMap::new();
    for ((_, metric_id), quantity) in totals {
        *sums.entry(metric_id.clone()).or_default() += quantity;
    }
    sums
}

async fn add_events(
    conn: &impl ConnectionTrait,
    totals: &mut UsageTotals,
    subscription_id: &SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<()> {
    let rows: Vec<(String, String, i64)> = usage_event::Entity::find()
        .select_only()
        .column(usage_event::Column::ResourceId)
        .column(usage_event::Column::MetricId)
        .column_as(
            Expr::from(Func::cast_as(
                Func::sum(Expr::col(usage_event::Column::Quantity)),
                Alias::new("BIGINT"),
            )),
            "total",
        )
        .filter(usage_event::Column::SubscriptionId.eq(subscription_id.as_str()))
        .filter(usage_event::Column::OccurredAt.gte(start))
        .filter(usage_event::Column::OccurredAt.lt(end))
        .group_by(usage_event::Column::ResourceId)
        .group_by(usage_event::Column::MetricId)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    for (resource_id, metric_id, quantity) in rows {
        *totals.entry((resource_id, metric_id)).or_default() += quantity;
    }
    Ok(())
}

async fn add_windows(
    conn: &impl ConnectionTrait,
    totals: &mut UsageTotals,
    subscription_id: &SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<()> {
    let rows: Vec<(String, String, i64)> = usage_window::Entity::find()
        .select_only()
        .column(usage_window::Column::ResourceId)
        .column(usage_window::Column::MetricId)
        .column_as(
            Expr::from(Func::cast_as(
                Func::sum(Expr::col(usage_window::Column::Quantity)),
                Alias::new("BIGINT"),
            )),
            "total",
        )
        .filter(usage_window::Column::SubscriptionId.eq(subscription_id.as_str()))
        .filter(usage_window::Column::WindowStart.gte(start))
        .filter(usage_window::Column::WindowStart.lt(end))
        .group_by(usage_window::Column::ResourceId)
        .group_by(usage_window::Column::MetricId)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    for (resource_id, metric_id, quantity) in rows {
        *totals.entry((resource_id, metric_id)).or_default() += quantity;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketbridge_core::time::parse_rfc3339;

    #[test]
    fn hour_ceil_keeps_boundaries() {
        let on = parse_rfc3339("t", "2026-11-23T12:00:00Z").unwrap();
        let inside = parse_rfc3339("t", "2026-11-23T12:00:00.001Z").unwrap();
        assert_eq!(hour_ceil(on), on);
        assert_eq!(hour_ceil(inside), on + ChronoDuration::hours(1));
    }
}
