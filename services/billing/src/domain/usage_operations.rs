//! Usage reported as metering operations (Google Service Control): per
//! subscription, contiguous windows from the start of billing, each ending
//! at the next hour, plan change, cancellation or Pacific month boundary,
//! each with the metric names of the plan in force. Reporting a window closes
//! the ledger before its end, so usage can no longer change under a report
//! already sent.
//!
//! Deadlines (Google's reporting best practices, contract §4.1): a window
//! must reach Google within the hour after it ends, and a month's last
//! window by 01:00 Pacific on the 1st. A window is recorded once the settle
//! delay after its end has passed, capped at [`MAX_SETTLE`] so the
//! scheduler's next run still makes the hour; a window ending at a
//! cancellation (no billable period follows it) is recorded at once, when
//! billing learns of the cancellation.

use super::BillingDomain;
use super::reports::{NewReport, settle_delay};
use super::usage_sums::{per_metric, usage_on_plan};
use crate::entity::{billing_subscription, plan_period, usage_report};
use crate::lifecycle::report::ReportStatus;
use crate::marketplace::UsageReporter;
use crate::submission::{MetricValue, Submission, SubmissionKind, UsageOperation};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ids::SubscriptionId;
use marketbridge_core::time::{hour_floor, pacific_month_cutoff, pacific_month_end, to_rfc3339};
use marketbridge_core::{Marketplace, Result};
use marketbridge_storage::UnitOfWork;
use marketbridge_storage::db_error;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most windows reported per subscription in one run (a week of hours), so
/// one run stays short after a long pause.
pub const MAX_WINDOWS_PER_RUN: usize = 168;

/// Longest wait after a window ends before it is recorded, whatever
/// `billing.usage_settle_seconds` says: a quarter of Google's hour, leaving
/// the rest for the scheduler's next run and for retries.
pub const MAX_SETTLE: ChronoDuration = ChronoDuration::minutes(15);

/// How long Google gives for a window after it ends.
pub const REPORT_WITHIN: ChronoDuration = ChronoDuration::hours(1);

/// The namespace of operation ids: UUIDv5 of the ledger key in it.
const OPERATION_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d62_7573_6167_6552_8a8c_5e0f_3b6e_1d42);

/// The operation id of a subscription's window: the same on every retry and
/// after any restart. `subscription_id` is a [`SubscriptionId`] (or its
/// text, as the tests hold it).
pub fn operation_id(
    subscription_id: &SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    let key = format!(
        "usage:{subscription_id}:{}:{}",
        start.timestamp_micros(),
        end.timestamp_micros()
    );
    uuid::Uuid::new_v5(&OPERATION_NAMESPACE, key.as_bytes()).to_string()
}

/// A window of a subscription's usage, as the ledger reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window<'a> {
    /// First instant covered.
    pub start: DateTime<Utc>,
    /// First instant not covered.
    pub end: DateTime<Utc>,
    /// The plan period it belongs to.
    pub period: &'a plan_period::Model,
    /// True when no billable period follows it (a cancellation): nothing
    /// can be recorded after it, so it is reported at once.
    pub last: bool,
}

impl Window<'_> {
    /// When the window is recorded for reporting: at once when it is the
    /// last, otherwise after the settle delay (at most [`MAX_SETTLE`]).
    pub fn due_at(&self, settle: ChronoDuration) -> DateTime<Utc> {
        if self.last {
            self.end
        } else {
            self.end + settle.min(MAX_SETTLE)
        }
    }
}

/// When Google must have a window ending at `end`: within the hour, and a
/// month's usage by the month-end cutoff (01:00 Pacific on the 1st).
pub fn report_deadline(end: DateTime<Utc>) -> DateTime<Utc> {
    let month_of_usage = end - ChronoDuration::microseconds(1);
    (end + REPORT_WITHIN).min(pacific_month_cutoff(month_of_usage))
}

/// The next window of a subscription from `cursor`, given its plan periods
/// (oldest first): up to the next hour, plan boundary or Pacific month
/// boundary, whichever comes first. `None` when nothing is billable from
/// `cursor` on.
pub(crate) fn next_window(
    periods: &[plan_period::Model],
    cursor: DateTime<Utc>,
) -> Option<Window<'_>> {
    let period = periods
        .iter()
        .find(|p| p.ends_at.is_none_or(|end| end > cursor) && p.starts_at <= cursor)
        .or_else(|| periods.iter().find(|p| p.starts_at > cursor))?;
    let start = cursor.max(period.starts_at);
    // Pacific offsets are whole hours today, so the month boundary is an
    // hour boundary; it is kept explicit so no window ever straddles it.
    let hour_end = (hour_floor(start) + ChronoDuration::hours(1)).min(pacific_month_end(start));
    let end = period.ends_at.map_or(hour_end, |ends| ends.min(hour_end));
    let last = period.ends_at == Some(end)
        && !periods
            .iter()
            .any(|p| p.starts_at <= end && p.ends_at.is_none_or(|e| e > end));
    Some(Window {
        start,
        end,
        period,
        last,
    })
}

impl BillingDomain {
    /// Reports every due window of every subscription at marketplaces that
    /// meter usage by operations. Returns how many reports were made.
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

    /// Reports a subscription's due windows now, without waiting for the
    /// scheduler: after a cancellation the open window ends there and goes
    /// out at once. A failure is logged; the scheduler's next run retries.
    pub(crate) async fn report_windows_now(&self, subscription_id: &SubscriptionId) {
        let result = async {
            let Some(subscription) =
                billing_subscription::Entity::find_by_id(subscription_id.as_str())
                    .one(&self.db)
                    .await
                    .map_err(db_error)?
            else {
                return Ok(0);
            };
            let marketplace = Marketplace::parse("marketplace", &subscription.marketplace)?;
            let Some(reporter) = self
                .marketplaces
                .reporter(marketplace)
                .filter(|reporter| reporter.plan().usage_operations)
                .cloned()
            else {
                return Ok(0);
            };
            self.report_subscription_windows(marketplace, &reporter, &subscription, self.now())
                .await
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(made) => {
                // Each window's unit of work woke the worker.
                tracing::info!(subscription.id = %subscription_id, windows = made, "usage windows recorded at once");
            }
            Err(error) => {
                tracing::error!(subscription.id = %subscription_id, error = %error, "usage windows could not be recorded at once; the scheduler retries")
            }
        }
    }

    /// Watches the usage windows of marketplaces with a grace period
    /// (Google, Azure): gives up the windows past it, and shows how far behind
    /// reporting is (the age of the oldest window not accepted, the grace
    /// left for the oldest blocked one) as metrics and, hourly while it
    /// lasts, as a log line: a warning once a window misses its deadline, an
    /// error when a fifth of the grace period is left. Returns how many
    /// windows were given up.
    pub(crate) async fn watch_usage_grace(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut expired = 0;
        let reporters = self
            .marketplaces
            .reporters_that(|plan| plan.usage_operations);
        for (marketplace, reporter) in reporters {
            let Some(grace) = reporter.usage_grace() else {
                continue;
            };
            let open = usage_report::Entity::find()
                .filter(usage_report::Column::Marketplace.eq(marketplace.as_str()))
                .filter(usage_report::Column::Kind.eq(SubmissionKind::Usage))
                .filter(usage_report::Column::Status.is_in(ReportStatus::OPEN))
                .order_by_asc(usage_report::Column::WindowEnd)
                .all(&self.db)
                .await
                .map_err(db_error)?;
            let mut oldest: Option<DateTime<Utc>> = None;
            let mut oldest_blocked: Option<&usage_report::Model> = None;
            let mut backlog = 0;
            for row in &open {
                let Some(end) = row.window_end else {
                    continue;
                };
                if now > end + grace {
                    expired += usize::from(self.expire_report(row, grace).await?);
                    continue;
                }
                backlog += 1;
                oldest = Some(oldest.map_or(end, |o| o.min(end)));
                let blocked = row.attempts > 0 || row.status == ReportStatus::Suspended;
                if blocked && oldest_blocked.is_none() {
                    oldest_blocked = Some(row);
                }
            }
            let age = oldest.map_or(ChronoDuration::zero(), |end| now - end);
            let remaining = oldest_blocked
                .and_then(|row| row.window_end)
                .map_or(grace, |end| end + grace - now);
            marketbridge_telemetry::metrics().record_usage_backlog(
                marketplace.as_str(),
                age.num_milliseconds() as f64 / 1000.0,
                remaining.num_milliseconds() as f64 / 1000.0,
            );
            let interval = ChronoDuration::seconds(
                self.options.report_interval_seconds.clamp(1, 86_400) as i64,
            );
            let first_run_of_hour = hour_floor(now) != hour_floor(now - interval);
            let Some(oldest) = oldest else {
                continue;
            };
            let deadline = report_deadline(oldest);
            if let Some(blocked) = oldest_blocked
                && remaining <= grace / 5
                && first_run_of_hour
            {
                tracing::error!(
                    marketplace = %marketplace,
                    subscription.id = %blocked.subscription_id,
                    report.id = %blocked.id,
                    windows_waiting = backlog,
                    grace_left_hours = remaining.num_hours(),
                    give_up_at = %to_rfc3339(now + remaining),
                    answer = %blocked.response,
                    "usage reporting is still blocked and the grace period is running out: windows past it are given up and not billed"
                );
            } else if now > deadline && first_run_of_hour {
                tracing::warn!(
                    marketplace = %marketplace,
                    windows_waiting = backlog,
                    oldest_window_end = %to_rfc3339(oldest),
                    deadline = %to_rfc3339(deadline),
                    grace_left_hours = remaining.num_hours(),
                    "usage windows are past Google's reporting deadline; they are kept and sent in order"
                );
            }
        }
        Ok(expired)
    }

    async fn report_subscription_windows(
        &self,
        marketplace: Marketplace,
        reporter: &Arc<dyn UsageReporter>,
        subscription: &billing_subscription::Model,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let settle = settle_delay(self.options.usage_settle_seconds);
        let subscription_id = subscription.subscription()?;
        let periods = self.plan_periods(&subscription_id).await?;
        let Some(first) = periods.first() else {
            return Ok(0);
        };
        let mut closed_before = subscription.usage_closed_before;
        let due = next_window(&periods, closed_before.unwrap_or(first.starts_at))
            .is_some_and(|window| window.due_at(settle) <= now);
        if !due {
            return Ok(0);
        }
        if subscription.usage_reporting_id.is_empty() {
            tracing::warn!(subscription.id = %subscription.subscription_id, "usage is due but the subscription has no usage reporting id yet");
            return Ok(0);
        }
        // Windows keep being recorded while the marketplace cannot take
        // them (check errors, an outage): each is kept as it is, one hour
        // at most, and delivered in order once it can be.
        let mut made = 0;
        let mut late: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        let mut late_count = 0;
        for _ in 0..MAX_WINDOWS_PER_RUN {
            let cursor = closed_before.unwrap_or(first.starts_at);
            let Some(window) = next_window(&periods, cursor) else {
                break;
            };
            if window.due_at(settle) > now {
                break;
            }
            let Window {
                start, end, period, ..
            } = window;
            let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
            if !self
                .close_usage_before(&*work, &subscription_id, closed_before, end)
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
                let usage =
                    per_metric(&usage_on_plan(&*work, &subscription_id, plan, start, end).await?);
                let values = metered
                    .into_iter()
                    .map(|(metric_id, metric_name)| MetricValue {
                        metric_name,
                        value: usage.get(&metric_id).copied().unwrap_or(0),
                    })
                    .collect();
                let operation_id = operation_id(&subscription_id, start, end);
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
                        &mut work,
                        reporter,
                        NewReport {
                            account_id: subscription.account()?,
                            subscription_id: Some(subscription_id.clone()),
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
            work.commit().await?;
            closed_before = Some(end);
            if now > report_deadline(end) {
                late.get_or_insert((start, end)).1 = end;
                late_count += 1;
            }
        }
        if let Some((first_start, last_end)) = late {
            // Still reported: late usage may miss an invoice, it is not
            // refused.
            tracing::warn!(subscription.id = %subscription.subscription_id, windows = late_count, from = %to_rfc3339(first_start), to = %to_rfc3339(last_end), "usage windows were recorded after Google's reporting deadline (was the billing scheduler stopped?)");
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
            next_window(&periods, at(cursor))
                .map(|w| (w.start, w.end, w.period.plan_id.clone(), w.last))
        };
        assert_eq!(
            window("2026-11-23T12:20:00Z"),
            Some((
                at("2026-11-23T12:20:00Z"),
                at("2026-11-23T13:00:00Z"),
                "free".into(),
                false
            ))
        );
        assert_eq!(
            window("2026-11-23T14:00:00Z"),
            Some((
                at("2026-11-23T14:00:00Z"),
                at("2026-11-23T14:30:00Z"),
                "free".into(),
                false
            )),
            "a plan change is no last window"
        );
        assert_eq!(
            window("2026-11-23T14:30:00Z"),
            Some((
                at("2026-11-23T14:30:00Z"),
                at("2026-11-23T15:00:00Z"),
                "pro".into(),
                false
            ))
        );
        assert_eq!(
            window("2026-11-23T15:00:00Z"),
            Some((
                at("2026-11-23T15:00:00Z"),
                at("2026-11-23T15:10:00Z"),
                "pro".into(),
                true
            )),
            "nothing billable follows: the last window before the gap"
        );
        assert_eq!(
            window("2026-11-23T15:10:00Z"),
            Some((
                at("2026-11-23T18:00:00Z"),
                at("2026-11-23T19:00:00Z"),
                "pro".into(),
                false
            )),
            "the unbillable gap is skipped"
        );
    }

    #[test]
    fn windows_never_straddle_the_pacific_month_boundary() {
        // A plan starting at a half hour: windows run to the hour, and the
        // one before Pacific midnight ends exactly there, in summer (UTC-7),
        // in winter (UTC-8) and on the night daylight saving ends.
        for (start, boundary) in [
            ("2026-06-30T20:30:00Z", "2026-07-01T07:00:00Z"),
            ("2026-12-31T21:30:00Z", "2027-01-01T08:00:00Z"),
            ("2026-10-31T21:30:00Z", "2026-11-01T07:00:00Z"),
            ("2027-02-28T22:30:00Z", "2027-03-01T08:00:00Z"),
        ] {
            let periods = vec![period("pro", start, None)];
            let boundary = at(boundary);
            let mut cursor = at(start);
            let mut windows = Vec::new();
            while cursor < boundary + ChronoDuration::hours(2) {
                let w = next_window(&periods, cursor).unwrap();
                assert!(w.end - w.start <= ChronoDuration::hours(1));
                assert!(
                    !(w.start < boundary && boundary < w.end),
                    "{} to {} straddles {boundary}",
                    w.start,
                    w.end
                );
                windows.push((w.start, w.end));
                cursor = w.end;
            }
            assert!(windows.iter().any(|(_, end)| *end == boundary));
            assert!(windows.iter().any(|(start, _)| *start == boundary));
            assert_eq!(
                windows[0],
                (at(start), hour_floor(at(start)) + ChronoDuration::hours(1))
            );
        }
    }

    #[test]
    fn deadlines_are_an_hour_and_the_month_end_cutoff() {
        // Within the hour after the window ends.
        assert_eq!(
            report_deadline(at("2026-11-23T13:00:00Z")),
            at("2026-11-23T14:00:00Z")
        );
        // A cancellation at 13:40: by 14:40.
        assert_eq!(
            report_deadline(at("2026-11-23T13:40:00Z")),
            at("2026-11-23T14:40:00Z")
        );
        // October's last window ends at Pacific midnight (07:00 UTC, PDT)
        // and is due by 01:00 PDT, even though 01:00 comes twice that night.
        assert_eq!(
            report_deadline(at("2026-11-01T07:00:00Z")),
            at("2026-11-01T08:00:00Z")
        );
        // December's (PST): by 01:00 PST on January 1st.
        assert_eq!(
            report_deadline(at("2027-01-01T08:00:00Z")),
            at("2027-01-01T09:00:00Z")
        );
        assert_eq!(
            pacific_month_cutoff(at("2027-01-01T07:59:00Z")),
            at("2027-01-01T09:00:00Z")
        );
    }

    #[test]
    fn windows_are_due_after_the_settle_delay_and_the_last_at_once() {
        let periods = vec![period(
            "pro",
            "2026-11-23T12:00:00Z",
            Some("2026-11-23T13:40:00Z"),
        )];
        let first = next_window(&periods, at("2026-11-23T12:00:00Z")).unwrap();
        assert_eq!(
            first.due_at(ChronoDuration::minutes(5)),
            at("2026-11-23T13:05:00Z")
        );
        assert_eq!(
            first.due_at(ChronoDuration::hours(2)),
            at("2026-11-23T13:15:00Z"),
            "a long settle delay is capped so the hour is kept"
        );
        assert!(first.due_at(ChronoDuration::hours(2)) < report_deadline(first.end));
        let last = next_window(&periods, first.end).unwrap();
        assert!(last.last);
        assert_eq!(
            last.due_at(ChronoDuration::minutes(5)),
            at("2026-11-23T13:40:00Z"),
            "the window ending at the cancellation is due at once"
        );
    }

    #[test]
    fn operation_ids_are_stable_uuids() {
        let start = at("2026-11-23T12:00:00Z");
        let end = at("2026-11-23T13:00:00Z");
        let (one, two) = (SubscriptionId::generate(), SubscriptionId::generate());
        let id = operation_id(&one, start, end);
        assert_eq!(id, operation_id(&one, start, end));
        assert_ne!(id, operation_id(&two, start, end));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 5);
    }
}
