//! The billing scheduler: a small clock-driven loop that runs the due work
//! every `billing.report_interval_seconds`. Each run reads the clock once
//! and records what is due at that instant (usage windows, interim billing,
//! balances, period-end and final invoices, closings, invoice reads, stalled
//! submissions); the outbox delivers it. Each run also gives up usage
//! windows past the marketplace's grace period and reports how far behind
//! usage reporting is (metrics, and a log line while it is late). Tests call
//! [`Scheduler::run_due`] after moving a manual clock, so nothing waits on
//! real time.

use crate::domain::BillingDomain;
use marketbridge_core::Result;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The scheduler's name in the elections of periodic tasks.
pub const TASK: &str = "billing.scheduler";

/// What one run recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueWork {
    /// Usage operations (one subscription, one window).
    pub usage_reports: usize,
    /// Invoices of ended billing periods.
    pub period_invoices: usize,
    /// Closings that moved forward.
    pub closures: usize,
    /// Interim billing submissions.
    pub interim_billing: usize,
    /// Balance submissions.
    pub balances: usize,
    /// Invoice reads queued.
    pub invoice_reads: usize,
    /// Stalled or suspended submissions queued again.
    pub requeued: usize,
    /// Usage windows given up after the marketplace's grace period.
    pub expired: usize,
}

impl DueWork {
    /// Everything recorded or queued.
    pub fn total(&self) -> usize {
        self.usage_reports
            + self.period_invoices
            + self.closures
            + self.interim_billing
            + self.balances
            + self.invoice_reads
            + self.requeued
            + self.expired
    }
}

/// Runs billing's due work on a schedule.
#[derive(Clone)]
pub struct Scheduler {
    domain: BillingDomain,
}

impl Scheduler {
    /// A scheduler over the domain.
    pub fn new(domain: BillingDomain) -> Self {
        Self { domain }
    }

    /// Records everything due now and wakes the outbox. Safe to run from
    /// several places at once: every submission has a deterministic key and
    /// every ledger cursor moves by compare-and-set.
    pub async fn run_due(&self) -> Result<DueWork> {
        let domain = &self.domain;
        let now = domain.clock().now();
        let work = DueWork {
            usage_reports: domain.report_usage_operations(now).await?,
            period_invoices: domain.invoice_ended_periods(now).await?,
            closures: domain.progress_closures(now).await?,
            interim_billing: domain.report_interim_billing(now).await?,
            balances: domain.report_balances(now).await?,
            invoice_reads: domain.queue_invoice_refreshes(now).await?,
            expired: domain.watch_usage_grace(now).await?,
            requeued: domain.requeue_stalled_reports().await?,
        };
        domain.outbox().wake();
        if work.total() > 0 {
            tracing::info!(
                usage_reports = work.usage_reports,
                period_invoices = work.period_invoices,
                closures = work.closures,
                interim_billing = work.interim_billing,
                balances = work.balances,
                invoice_reads = work.invoice_reads,
                requeued = work.requeued,
                expired = work.expired,
                "billing work recorded"
            );
        }
        Ok(work)
    }

    /// Runs [`Scheduler::run_due`] now and then every interval until
    /// `shutdown`, on the one replica that leads `billing.scheduler` (another
    /// takes over when it dies); a failed run is logged and retried at the
    /// next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        let seconds = self.domain.options().report_interval_seconds.max(1);
        let deadlines = self
            .domain
            .marketplaces()
            .reporters_that(|plan| plan.usage_operations)
            .iter()
            .any(|(_, reporter)| reporter.usage_grace().is_some());
        if deadlines && seconds > 1800 {
            tracing::warn!(
                report_interval_seconds = seconds,
                "billing.report_interval_seconds is over 30 minutes: usage windows may miss Google's one-hour reporting deadline"
            );
        }
        let leadership = self.domain.outbox().leadership();
        leadership
            .run_elected(TASK, Duration::from_secs(seconds), shutdown, || async {
                if let Err(error) = self.run_due().await {
                    tracing::warn!(error = %error, "billing scheduler run failed");
                }
            })
            .await;
    }
}
