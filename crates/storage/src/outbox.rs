//! The transactional outbox. Work that leaves the service (a call to Vercel or
//! Google, a call to another service) is written as a job in the same
//! transaction as the state change that causes it, so either both happen or
//! neither does. A worker claims due jobs, runs them, and retries failures
//! with exponential backoff until they succeed or are dead-lettered.
//!
//! Delivery is at least once: a job whose worker dies mid-run is claimed
//! again when its lease expires. Handlers make that exactly once by sending
//! the job id as an idempotency key, or by checking state before acting.
//!
//! The trace context of the code that enqueued a job is stored with it, and
//! the job runs in a span that continues that trace.

use crate::db::{Backend, db_error};
use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_config::OutboxOptions;
use marketbridge_core::ids::JobId;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Result};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbBackend, QueryOrder, Statement};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `outbox_jobs` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One unit of outbound work.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox_jobs")]
    pub struct Model {
        /// Job id (`job_...`); also the idempotency key handlers send.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// What to do (`vercel.resource_updated`, `google.approve_account`).
        pub kind: String,
        /// Arguments, as JSON.
        pub payload: String,
        /// At most one job per key is ever enqueued.
        pub dedupe_key: Option<String>,
        /// Trace context of the code that enqueued it.
        pub traceparent: Option<String>,
        /// `pending`, `running`, `done` or `dead`.
        pub status: String,
        /// Attempts started so far.
        pub attempts: i32,
        /// Attempts allowed before the job is dead-lettered.
        pub max_attempts: i32,
        /// Not before this time.
        pub run_at: ChronoDateTimeUtc,
        /// While `running`, hidden from other workers until then.
        pub locked_until: Option<ChronoDateTimeUtc>,
        /// The last failure.
        pub last_error: Option<String>,
        /// When it was enqueued.
        pub created_at: ChronoDateTimeUtc,
        /// When it last changed.
        pub updated_at: ChronoDateTimeUtc,
        /// When it finished (done or dead).
        pub finished_at: Option<ChronoDateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Job status names.
pub mod status {
    /// Waiting for `run_at`.
    pub const PENDING: &str = "pending";
    /// Claimed by a worker.
    pub const RUNNING: &str = "running";
    /// Finished successfully.
    pub const DONE: &str = "done";
    /// Failed for good; kept for operators.
    pub const DEAD: &str = "dead";
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: String,
    payload: String,
    dedupe_key: Option<String>,
    run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    /// A job of `kind` with a serializable payload.
    pub fn new(kind: impl Into<String>, payload: &impl Serialize) -> Result<Self> {
        let payload = serde_json::to_string(payload)
            .map_err(|e| Error::internal(format!("job payload: {e}")))?;
        Ok(Self {
            kind: kind.into(),
            payload,
            dedupe_key: None,
            run_at: None,
        })
    }

    /// Enqueue only if no job with this key was ever enqueued.
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Run no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
}

/// Microsecond precision, the finest both backends store.
pub fn truncate_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// Writes a job, usually inside the transaction of the change that causes it.
/// Returns `None` when a job with the same dedupe key already exists.
pub async fn enqueue(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    max_attempts: u32,
    job: NewJob,
) -> Result<Option<JobId>> {
    let id = JobId::generate();
    let now = truncate_micros(now);
    let row = entity::ActiveModel {
        id: Set(id.to_string()),
        kind: Set(job.kind.clone()),
        payload: Set(job.payload),
        dedupe_key: Set(job.dedupe_key),
        traceparent: Set(marketbridge_telemetry::current_traceparent()),
        status: Set(status::PENDING.to_owned()),
        attempts: Set(0),
        max_attempts: Set(max_attempts.max(1) as i32),
        run_at: Set(truncate_micros(job.run_at.unwrap_or(now))),
        locked_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    };
    let inserted = entity::Entity::insert(row)
        .on_conflict(
            OnConflict::column(entity::Column::DedupeKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    if inserted == 0 {
        return Ok(None);
    }
    tracing::debug!(job.id = %id, job.kind = %job.kind, "job enqueued");
    Ok(Some(id))
}

/// A claimed job, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id; send it as the idempotency key of the call it makes.
    pub id: String,
    /// What to do.
    pub kind: String,
    /// Arguments, as JSON text.
    pub payload: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
}

impl Job {
    /// The payload, deserialized. A payload that does not parse is a
    /// permanent failure.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.payload)
            .map_err(|e| JobError::Permanent(format!("unreadable {} payload: {e}", self.kind)))
    }
}

/// How a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Try again after the backoff delay.
    Retry(String),
    /// Try again no sooner than the given delay (a `Retry-After`).
    RetryAfter(Duration, String),
    /// Do not try again; dead-letter it.
    Permanent(String),
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        match error.code() {
            ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::Timeout
            | ErrorCode::Internal => JobError::Retry(error.to_string()),
            _ => JobError::Permanent(error.to_string()),
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Retry(message)
            | JobError::Permanent(message)
            | JobError::RetryAfter(_, message) => f.write_str(message),
        }
    }
}

/// Runs jobs of the kinds a service enqueues.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Does the job's work. Called at least once per job; must be safe to
    /// call again with the same job.
    async fn handle(&self, job: &Job) -> Result<(), JobError>;
}

/// Counts of jobs by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Waiting to run.
    pub pending: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Finished successfully.
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
}

/// The outbox of one service database.
#[derive(Clone)]
pub struct Outbox {
    db: DatabaseConnection,
    clock: SharedClock,
    options: OutboxOptions,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// The outbox in `db`.
    pub fn new(db: DatabaseConnection, clock: SharedClock, options: OutboxOptions) -> Self {
        Self {
            db,
            clock,
            options,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The retry policy.
    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    /// Enqueues a job in `conn` (a transaction of the caller's change). Call
    /// [`Outbox::wake`] after the transaction commits.
    pub async fn enqueue(&self, conn: &impl ConnectionTrait, job: NewJob) -> Result<Option<JobId>> {
        enqueue(conn, self.clock.now(), self.options.max_attempts, job).await
    }

    /// Tells the worker new jobs are waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The delay before attempt `attempts + 1`: doubling from the initial
    /// delay up to the cap, with a deterministic spread per job.
    pub fn backoff(&self, attempts: u32, job_id: &str) -> Duration {
        let initial = self.options.backoff_initial_ms.max(1);
        let exponent = attempts.saturating_sub(1).min(30);
        let delay = initial
            .saturating_mul(1_u64 << exponent)
            .min(self.options.backoff_max_ms.max(initial));
        let spread = job_id
            .bytes()
            .fold(0_u64, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u64))
            % 21;
        Duration::from_millis(delay + delay * spread / 100)
    }

    /// Claims due jobs (and jobs whose lease expired) for this worker.
    async fn claim(&self, now: DateTime<Utc>) -> Result<Vec<entity::Model>> {
        let now = truncate_micros(now);
        let lease_until = truncate_micros(
            now + ChronoDuration::seconds(self.options.lease_seconds.max(1) as i64),
        );
        let limit = i64::from(self.options.batch_size.max(1));
        let (backend, sql) = match Backend::of(&self.db) {
            Backend::Postgres => (
                DbBackend::Postgres,
                "UPDATE outbox_jobs SET status = 'running', attempts = attempts + 1, locked_until = $1, updated_at = $2 \
                 WHERE id IN (SELECT id FROM outbox_jobs \
                   WHERE (status = 'pending' AND run_at <= $2) OR (status = 'running' AND locked_until < $2) \
                   ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            ),
            Backend::Sqlite => (
                DbBackend::Sqlite,
                "UPDATE outbox_jobs SET status = 'running', attempts = attempts + 1, locked_until = ?1, updated_at = ?2 \
                 WHERE id IN (SELECT id FROM outbox_jobs \
                   WHERE (status = 'pending' AND run_at <= ?2) OR (status = 'running' AND locked_until < ?2) \
                   ORDER BY run_at, id LIMIT ?3) \
                 RETURNING *",
            ),
        };
        let statement = Statement::from_sql_and_values(
            backend,
            sql,
            [lease_until.into(), now.into(), limit.into()],
        );
        let mut jobs = entity::Entity::find()
            .from_raw_sql(statement)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        jobs.sort_by(|a, b| (a.run_at, &a.id).cmp(&(b.run_at, &b.id)));
        Ok(jobs)
    }

    /// Claims and runs one batch of due jobs; returns how many ran.
    pub async fn run_once(&self, handler: &dyn JobHandler) -> Result<usize> {
        let jobs = self.claim(self.clock.now()).await?;
        let count = jobs.len();
        for job in jobs {
            self.run_job(handler, job).await?;
        }
        Ok(count)
    }

    /// Runs batches until no job is due; returns how many ran. Tests use it to
    /// deliver deterministically.
    pub async fn drain(&self, handler: &dyn JobHandler) -> Result<usize> {
        let mut total = 0;
        loop {
            let ran = self.run_once(handler).await?;
            if ran == 0 {
                return Ok(total);
            }
            total += ran;
        }
    }

    async fn run_job(&self, handler: &dyn JobHandler, row: entity::Model) -> Result<()> {
        let attempt = row.attempts.max(1) as u32;
        let span = tracing::info_span!(
            "outbox.job",
            otel.name = %format!("outbox {}", row.kind),
            otel.kind = "consumer",
            job.id = %row.id,
            job.kind = %row.kind,
            job.attempt = attempt,
        );
        if let Some(traceparent) = &row.traceparent {
            let _ = span.set_parent(marketbridge_telemetry::context_from_traceparent(
                traceparent,
            ));
        }
        let job = Job {
            id: row.id.clone(),
            kind: row.kind.clone(),
            payload: row.payload.clone(),
            attempt,
            created_at: row.created_at,
        };
        let outcome = handler.handle(&job).instrument(span.clone()).await;
        let now = truncate_micros(self.clock.now());
        let mut update = entity::ActiveModel {
            id: Set(row.id.clone()),
            updated_at: Set(now),
            locked_until: Set(None),
            ..Default::default()
        };
        let metrics = marketbridge_telemetry::metrics();
        match outcome {
            Ok(()) => {
                update.status = Set(status::DONE.to_owned());
                update.finished_at = Set(Some(now));
                update.last_error = Set(None);
                metrics.record_outbox_job(&row.kind, "delivered");
                span.in_scope(|| tracing::debug!("job done"));
            }
            Err(error) => {
                let retry_after = match &error {
                    JobError::Permanent(_) => None,
                    JobError::Retry(_) => Some(self.backoff(attempt, &row.id)),
                    JobError::RetryAfter(delay, _) => {
                        Some((*delay).max(self.backoff(attempt, &row.id)))
                    }
                };
                update.last_error = Set(Some(truncate_text(&error.to_string(), 2000)));
                match retry_after {
                    Some(delay) if attempt < row.max_attempts as u32 => {
                        update.status = Set(status::PENDING.to_owned());
                        update.run_at = Set(truncate_micros(
                            now + ChronoDuration::from_std(delay)
                                .unwrap_or(ChronoDuration::seconds(1)),
                        ));
                        metrics.record_outbox_job(&row.kind, "retry");
                        span.in_scope(|| tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "job failed, will retry"));
                    }
                    _ => {
                        update.status = Set(status::DEAD.to_owned());
                        update.finished_at = Set(Some(now));
                        metrics.record_outbox_job(&row.kind, "dead");
                        span.in_scope(|| tracing::error!(error = %error, "job dead-lettered"));
                    }
                }
            }
        }
        // The attempt count fences a worker whose lease expired mid-run.
        let result = entity::Entity::update_many()
            .set(update)
            .filter(entity::Column::Id.eq(row.id.clone()))
            .filter(entity::Column::Attempts.eq(row.attempts))
            .exec(&self.db)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            tracing::warn!(job.id = %row.id, "job was claimed again by another worker while running");
        }
        Ok(())
    }

    /// Runs the worker until `shutdown` fires: polls for due jobs, wakes early
    /// when [`Outbox::wake`] is called, and keeps going through database
    /// errors.
    pub async fn run(self, handler: Arc<dyn JobHandler>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.options.poll_interval_ms.max(10));
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let ran = match self.run_once(handler.as_ref()).await {
                Ok(ran) => ran,
                Err(error) => {
                    tracing::warn!(error = %error, "outbox poll failed");
                    0
                }
            };
            if ran > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Counts jobs by status.
    pub async fn stats(&self) -> Result<OutboxStats> {
        let rows = entity::Entity::find()
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut stats = OutboxStats::default();
        for row in rows {
            match row.status.as_str() {
                status::PENDING => stats.pending += 1,
                status::RUNNING => stats.running += 1,
                status::DONE => stats.done += 1,
                _ => stats.dead += 1,
            }
        }
        Ok(stats)
    }

    /// Jobs of a kind, oldest first (for operators and tests).
    pub async fn jobs_of_kind(&self, kind: &str) -> Result<Vec<entity::Model>> {
        entity::Entity::find()
            .filter(entity::Column::Kind.eq(kind))
            .order_by_asc(entity::Column::CreatedAt)
            .order_by_asc(entity::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    /// Dead-lettered jobs, oldest first.
    pub async fn dead_jobs(&self) -> Result<Vec<entity::Model>> {
        entity::Entity::find()
            .filter(entity::Column::Status.eq(status::DEAD))
            .order_by_asc(entity::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    /// Puts a dead job back in the queue with a fresh attempt budget.
    pub async fn retry_dead(&self, job_id: &str) -> Result<()> {
        let now = truncate_micros(self.clock.now());
        let result = entity::Entity::update_many()
            .set(entity::ActiveModel {
                status: Set(status::PENDING.to_owned()),
                attempts: Set(0),
                run_at: Set(now),
                updated_at: Set(now),
                finished_at: Set(None),
                ..Default::default()
            })
            .filter(entity::Column::Id.eq(job_id))
            .filter(entity::Column::Status.eq(status::DEAD))
            .exec(&self.db)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            return Err(Error::not_found(format!("no dead job {job_id}")));
        }
        self.wake();
        Ok(())
    }
}

fn truncate_text(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
