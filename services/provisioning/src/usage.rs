//! The usage meter: every interval, each live resource's driver measures it
//! (database size, open connections, a plug-in's own figures) and the
//! measurements the resource's plan has metrics for are recorded in the
//! billing ledger.
//!
//! Event ids are derived from the resource, the metric and the interval
//! window, so measuring twice in one window (a restart, a second replica)
//! records once: billing answers the repeat as a duplicate.

use crate::domain::ProvisioningDomain;
use crate::entity::resource;
use crate::model::{MetricId, Ownership, ResourceStatus};
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::sha256_hex;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Result};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_rpc::BillingApi;
use marketbridge_storage::db_error;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Resources read from the database at a time.
const PAGE: u64 = 100;
/// Longest event id billing accepts.
const MAX_EVENT_ID: usize = 128;
/// Window used when the meter has no interval (rounds driven by hand).
const DEFAULT_WINDOW_SECONDS: i64 = 3600;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeterRound {
    /// Resources measured.
    pub resources: usize,
    /// Events billing recorded.
    pub accepted: u32,
    /// Events billing already had (a repeated round).
    pub duplicates: u32,
    /// Resources whose measurement or recording failed (logged; tried again
    /// next round).
    pub failed: usize,
}

/// See the module documentation.
#[derive(Clone)]
pub struct UsageMeter {
    domain: ProvisioningDomain,
    billing: Option<Arc<dyn BillingApi>>,
    interval: Duration,
}

/// The meter's name in the elections of periodic tasks.
pub const TASK: &str = "provisioning.usage_meter";

/// The deterministic id of one measurement.
pub fn event_id(
    resource_id: &ResourceId,
    metric_id: &MetricId,
    window_start: DateTime<Utc>,
) -> String {
    let id = format!(
        "usage:{resource_id}:{metric_id}:{}",
        window_start.timestamp()
    );
    if id.len() <= MAX_EVENT_ID {
        return id;
    }
    format!("usage:{}", sha256_hex(id.as_bytes()))
}

impl UsageMeter {
    /// A meter over `domain`'s resources, recording in `billing`, every
    /// `interval` (zero: only when [`UsageMeter::run_round`] is called).
    pub fn new(
        domain: ProvisioningDomain,
        billing: Option<Arc<dyn BillingApi>>,
        interval: Duration,
    ) -> Self {
        Self {
            domain,
            billing,
            interval,
        }
    }

    fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let seconds = match i64::try_from(self.interval.as_secs()) {
            Ok(seconds) if seconds > 0 => seconds,
            _ => DEFAULT_WINDOW_SECONDS,
        };
        let start = now.timestamp().div_euclid(seconds) * seconds;
        DateTime::from_timestamp(start, 0).unwrap_or(now)
    }

    async fn live_resources(&self, after: Option<&str>) -> Result<Vec<resource::Model>> {
        let mut query = resource::Entity::find()
            .filter(resource::Column::Status.is_in([
                ResourceStatus::Ready,
                ResourceStatus::Onboarding,
                ResourceStatus::Suspended,
            ]))
            // Imported resources are billed by the provider, not metered
            // for the marketplace.
            .filter(resource::Column::Ownership.ne(Ownership::Linked))
            .order_by_asc(resource::Column::Id)
            .limit(PAGE);
        if let Some(after) = after {
            query = query.filter(resource::Column::Id.gt(after.to_owned()));
        }
        query.all(self.domain.db()).await.map_err(db_error)
    }

    /// The events of one resource's measurement now.
    async fn measure(
        &self,
        row: &resource::Model,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<Vec<billing_pb::UsageEvent>> {
        let driver = self.domain.driver_for(row)?;
        let context = driver.context();
        let resource_id = row.resource_id()?;
        let measurements = driver.driver.measure(&context).await?;
        Ok(measurements
            .into_iter()
            .filter(|m| {
                let known = context.plan.metric(&m.metric_id).is_some();
                if !known {
                    tracing::debug!(resource.id = %row.id, metric = %m.metric_id, plan = %context.plan.id, "plan has no such metric; measurement not recorded");
                }
                known
            })
            .map(|m| billing_pb::UsageEvent {
                event_id: event_id(&resource_id, &MetricId::new(&m.metric_id), window_start),
                customer: Some(billing_pb::usage_event::Customer::ResourceId(
                    row.id.clone(),
                )),
                metric_id: m.metric_id,
                quantity: m.quantity,
                occurred_at: Some(to_timestamp(now)),
            })
            .collect())
    }

    /// Measures every live resource once and records the results. One
    /// resource failing does not stop the others.
    pub async fn run_round(&self) -> Result<MeterRound> {
        let Some(billing) = &self.billing else {
            return Err(Error::unavailable(
                "the billing service is not configured; usage cannot be recorded",
            ));
        };
        let now = self.domain.now();
        let window_start = self.window_start(now);
        let mut round = MeterRound::default();
        let mut after: Option<String> = None;
        loop {
            let rows = self.live_resources(after.as_deref()).await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some(last.id.clone());
            for row in &rows {
                round.resources += 1;
                let events = match self.measure(row, now, window_start).await {
                    Ok(events) => events,
                    Err(error) => {
                        tracing::warn!(resource.id = %row.id, error = %error, "usage measurement failed");
                        round.failed += 1;
                        continue;
                    }
                };
                if events.is_empty() {
                    continue;
                }
                match billing
                    .record_usage(billing_pb::RecordUsageRequest { events })
                    .await
                {
                    Ok(answer) => {
                        round.accepted += answer.accepted;
                        round.duplicates += answer.duplicates;
                    }
                    Err(error) => {
                        tracing::warn!(resource.id = %row.id, error = %error, "recording usage failed");
                        round.failed += 1;
                    }
                }
            }
            if (rows.len() as u64) < PAGE {
                break;
            }
        }
        Ok(round)
    }

    /// Runs a round every interval until `shutdown`, on the one replica
    /// that leads `provisioning.usage_meter` (another takes over when it
    /// dies); does nothing when the interval is zero.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let leadership = self.domain.outbox().leadership();
        leadership
            .run_elected(TASK, self.interval, shutdown, || async {
                let span = tracing::info_span!("usage.round", otel.name = "usage round");
                match self.run_round().instrument(span).await {
                    Ok(round) => {
                        tracing::info!(
                            resources = round.resources,
                            accepted = round.accepted,
                            duplicates = round.duplicates,
                            failed = round.failed,
                            "usage measured"
                        )
                    }
                    Err(error) => tracing::warn!(error = %error, "usage round failed"),
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn event_ids_are_stable_within_a_window() {
        let start = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let resource = ResourceId::generate();
        let id = event_id(&resource, &MetricId::new("storage_gb"), start);
        assert_eq!(
            id,
            format!("usage:{resource}:storage_gb:{}", start.timestamp())
        );
        let metric = MetricId::new("m".repeat(200));
        let long = event_id(&resource, &metric, start);
        assert!(long.len() <= MAX_EVENT_ID && long.starts_with("usage:"));
        assert_eq!(long, event_id(&resource, &metric, start));
    }
}
