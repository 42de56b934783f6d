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
//! Several workers (replicas) share one table. Each job has its own lease:
//! a worker claims due jobs in batches, one statement a batch (on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, so replicas take different
//! jobs), records finished jobs together, renews the lease of every job it
//! runs (a heartbeat at a third of the lease) and checks that the attempt is
//! still its own right before the handler's side effect ([`Job::ensure_held`];
//! within the first third of a lease the claim itself vouches for it) and
//! before recording the outcome. A worker that lost a lease stops the
//! handler and records nothing. Jobs run concurrently in lanes (one per job
//! kind, each with at most a quarter of the worker's slots), so a slow
//! marketplace delays only its own kind of work.
//!
//! A job a unit of work enqueues while this process's worker has a slot free
//! in its lane skips the claim: it is written already claimed by that
//! worker, its lease starting at the enqueue, and handed to it once the
//! transaction commits ([`HandedOver`]). Should the process stop before
//! running it, the job is claimed again when its lease runs out.
//! A call that will cause a job may first ask for a slot in its lane
//! ([`crate::Call::admitting`], [`Outbox::admit`]): while the lane is full
//! of jobs that are finishing it waits for one to end, so the API takes
//! work no faster than the worker runs it.
//!
//! Finished jobs are kept for `outbox.retention_seconds`, then swept away
//! beside the worker ([`Outbox::sweep_finished`]); a removed job leaves its
//! dedupe key behind in `outbox_spent_keys`, and an enqueue looks there too,
//! so a key still names at most one job ever enqueued.
//!
//! The trace context of the code that enqueued a job is stored with it, and
//! the job runs in a span that continues that trace.

use crate::db::{Backend, WriteTxn, db_error};
use crate::leader::Leadership;
use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_config::OutboxOptions;
use marketbridge_core::ids::JobId;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::common::v1 as pb;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Alias, Expr, InsertStatement, OnConflict, Query};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbBackend, QueryOrder, Statement};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
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
    /// Given up by an operator; never runs.
    pub const DISCARDED: &str = "discarded";
    /// Not a stored status: a pending job that failed before (operators'
    /// name for it).
    pub const RETRYING: &str = "retrying";
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: String,
    payload: String,
    dedupe_key: Option<String>,
    run_at: Option<DateTime<Utc>>,
    /// The dedupe key names something created in the same transaction.
    key_is_new: bool,
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
            key_is_new: false,
        })
    }

    /// One of a service's jobs: `job` is a value of the service's job enum,
    /// adjacently tagged `#[serde(tag = "kind", content = "payload")]` with each
    /// variant renamed to its stored kind (`provisioning.provision`). The kind
    /// and the payload are stored apart, as [`NewJob::new`] stores them, so
    /// rows written either way read back the same; [`Job::decode`] reverses it.
    pub fn of(job: &impl Serialize) -> Result<Self> {
        let encoded =
            serde_json::to_value(job).map_err(|e| Error::internal(format!("job payload: {e}")))?;
        let serde_json::Value::Object(mut fields) = encoded else {
            return Err(Error::internal(
                "a job enum must be tagged with `kind` and `payload`",
            ));
        };
        let Some(serde_json::Value::String(kind)) = fields.remove("kind") else {
            return Err(Error::internal("a job enum must be tagged with `kind`"));
        };
        let payload = fields.remove("payload").unwrap_or(serde_json::Value::Null);
        Ok(Self {
            kind,
            payload: payload.to_string(),
            dedupe_key: None,
            run_at: None,
            key_is_new: false,
        })
    }

    /// The kind this job is stored under.
    pub fn kind(&self) -> &str {
        &self.kind
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

    /// Declares the dedupe key new: it names something the enqueuing
    /// transaction creates (an id generated for it), so no job can hold the
    /// key yet. Such a job, like one without a key, may be handed to this
    /// process's worker at the commit ([`UnitOfWork::enqueue_at_commit`]
    /// cannot otherwise tell whether its insert was kept).
    ///
    /// [`UnitOfWork::enqueue_at_commit`]: crate::unit_of_work::UnitOfWork::enqueue_at_commit
    pub fn key_is_new(mut self) -> Self {
        self.key_is_new = true;
        self
    }

    /// Its dedupe key may be one a removed job left behind: it has one, not
    /// declared new.
    fn key_may_be_spent(&self) -> bool {
        self.dedupe_key.is_some() && !self.key_is_new
    }

    /// Due at once (no later `run_at` than `now`).
    fn due_by(&self, now: DateTime<Utc>) -> bool {
        self.run_at.is_none_or(|at| at <= now)
    }
}

pub use crate::db::truncate_micros;

/// Writes a job, usually inside the transaction of the change that causes it.
/// Returns `None` when a job with the same dedupe key already exists.
pub async fn enqueue(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    max_attempts: u32,
    job: NewJob,
) -> Result<Option<JobId>> {
    let kind = job.kind.clone();
    let (id, insert) = job_insert(now, max_attempts, job);
    let inserted = conn
        .execute_raw(conn.get_database_backend().build(&insert))
        .await
        .map_err(db_error)?
        .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    tracing::debug!(job.id = %id, job.kind = %kind, "job enqueued");
    Ok(Some(id))
}

/// The insert of a new job (none when a job with the same dedupe key
/// exists), with the id it gets.
pub(crate) fn job_insert(
    now: DateTime<Utc>,
    max_attempts: u32,
    job: NewJob,
) -> (JobId, sea_orm::sea_query::InsertStatement) {
    let id = JobId::generate();
    let spent_too = job.key_may_be_spent();
    let row = job_row(&id, now, max_attempts, job, None);
    (id, insert_of(row, spent_too))
}

/// A new job's row: pending, or (with `claimed_until`) already running its
/// first attempt under a lease until then.
fn job_row(
    id: &JobId,
    now: DateTime<Utc>,
    max_attempts: u32,
    job: NewJob,
    claimed_until: Option<DateTime<Utc>>,
) -> entity::Model {
    let now = truncate_micros(now);
    entity::Model {
        id: id.to_string(),
        kind: job.kind,
        payload: job.payload,
        dedupe_key: job.dedupe_key,
        traceparent: marketbridge_telemetry::current_traceparent(),
        status: if claimed_until.is_some() {
            status::RUNNING
        } else {
            status::PENDING
        }
        .to_owned(),
        attempts: i32::from(claimed_until.is_some()),
        max_attempts: max_attempts.max(1) as i32,
        run_at: truncate_micros(job.run_at.unwrap_or(now)),
        locked_until: claimed_until.map(truncate_micros),
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}

/// The insert of `row`, kept out when a job with its dedupe key exists;
/// with `spent_too`, also when a finished job the retention sweep removed
/// left the key behind ([`SPENT_KEYS`]): then the row is inserted from a
/// `SELECT` of its values that yields nothing when the key is spent.
fn insert_of(row: entity::Model, spent_too: bool) -> InsertStatement {
    use sea_orm::{ExprTrait, Iterable};
    let kept_out = OnConflict::column(entity::Column::DedupeKey)
        .do_nothing()
        .to_owned();
    let key = row.dedupe_key.clone().filter(|_| spent_too);
    let active = entity::ActiveModel::from(row);
    let Some(key) = key else {
        let insert = entity::Entity::insert(active.reset_all()).on_conflict(kept_out);
        return sea_orm::QueryTrait::into_query(insert);
    };
    let (columns, values): (Vec<_>, Vec<_>) = entity::Column::iter()
        .filter_map(|column| Some((column, Expr::val(active.get(column).into_value()?))))
        .unzip();
    let spent = Query::select()
        .expr(Expr::val(1))
        .from(Alias::new(SPENT_KEYS))
        .and_where(Expr::col(Alias::new("dedupe_key")).eq(key))
        .to_owned();
    let unless_spent = Query::select()
        .exprs(values)
        .and_where(Expr::not_exists(spent))
        .to_owned();
    let mut insert = Query::insert();
    insert.into_table(entity::Entity).columns(columns);
    insert
        .select_from(unless_spent)
        .expect("one value per column");
    insert.on_conflict(kept_out).to_owned()
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
    lease: Option<Lease>,
}

impl Job {
    /// Confirms this attempt still holds the job's lease (no other worker
    /// claimed it after the lease expired). Call it right before a side
    /// effect; the worker calls it before the handler runs.
    pub async fn ensure_held(&self) -> Result<(), JobError> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        match lease.held().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobError::LeaseLost),
            Err(error) => Err(JobError::Retry(format!(
                "cannot check the job's lease: {error}"
            ))),
        }
    }

    /// The job as a value of the service's job enum (see [`NewJob::of`]). A
    /// kind the enum does not know, or a payload that does not parse, is a
    /// permanent failure: retrying cannot make it readable.
    pub fn decode<J: DeserializeOwned>(&self) -> Result<J, JobError> {
        let payload: serde_json::Value = serde_json::from_str(&self.payload)
            .map_err(|e| JobError::Permanent(format!("unreadable {} payload: {e}", self.kind)))?;
        let mut tagged = serde_json::Map::with_capacity(2);
        tagged.insert(
            "kind".to_owned(),
            serde_json::Value::String(self.kind.clone()),
        );
        if !payload.is_null() {
            tagged.insert("payload".to_owned(), payload);
        }
        serde_json::from_value(serde_json::Value::Object(tagged))
            .map_err(|e| JobError::Permanent(format!("unreadable {} job: {e}", self.kind)))
    }

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
    /// Another worker claimed the job after this attempt's lease expired;
    /// this attempt records nothing.
    LeaseLost,
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        match error.code() {
            ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::Timeout
            | ErrorCode::Internal => JobError::Retry(error.chain()),
            _ => JobError::Permanent(error.chain()),
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Retry(message)
            | JobError::Permanent(message)
            | JobError::RetryAfter(_, message) => f.write_str(message),
            JobError::LeaseLost => f.write_str("the job's lease was lost to another worker"),
        }
    }
}

/// One attempt's hold on a job: the job id and the attempt count it was
/// claimed with (the fence).
#[derive(Clone)]
struct Lease {
    db: DatabaseConnection,
    clock: SharedClock,
    id: String,
    attempts: i32,
    seconds: u64,
    /// Until then the lease is known to be held without asking the
    /// database: a third of the lease after the claim that took it. Another
    /// worker can claim the job only once its own clock passes the lease's
    /// end, two thirds of a lease later, so this holds while the replicas'
    /// clocks agree within that (the heartbeat, at a third, assumes as much).
    /// A process frozen past it asks the database again.
    sure_until: DateTime<Utc>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// True while the job is running under this attempt and its lease has
    /// not run out.
    async fn held(&self) -> Result<bool> {
        let now = truncate_micros(self.clock.now());
        if now < self.sure_until {
            return Ok(true);
        }
        let row = entity::Entity::find_by_id(self.id.clone())
            .filter(entity::Column::Attempts.eq(self.attempts))
            .filter(entity::Column::Status.eq(status::RUNNING))
            .filter(entity::Column::LockedUntil.gt(now))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    /// Extends the lease from now; `None` when another worker claimed the
    /// job (the attempt count moved on). A lease that ran out but was not
    /// claimed by anyone is still ours: claims and renewals update the same
    /// row, so only one of them wins.
    async fn renew(&self) -> Result<Option<DateTime<Utc>>> {
        let now = truncate_micros(self.clock.now());
        let until = truncate_micros(now + ChronoDuration::seconds(self.seconds.max(1) as i64));
        let write = crate::db::write_once(&self.db).await?;
        let result = entity::Entity::update_many()
            .col_expr(entity::Column::LockedUntil, Expr::value(until))
            .filter(entity::Column::Id.eq(self.id.clone()))
            .filter(entity::Column::Attempts.eq(self.attempts))
            .filter(entity::Column::Status.eq(status::RUNNING))
            .exec(&write)
            .await
            .map_err(db_error)?;
        write.commit().await?;
        Ok((result.rows_affected > 0).then_some(until))
    }

    /// Renews the lease every third of its length; returns when it is lost
    /// (taken by another worker, or run out without a successful renewal).
    async fn keep(&self, mut until: DateTime<Utc>) {
        let every = Duration::from_millis((self.seconds.max(1) * 1000 / 3).max(50));
        loop {
            tokio::time::sleep(every).await;
            match self.renew().await {
                Ok(Some(renewed)) => until = renewed,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(job.id = %self.id, error = %error, "job lease renewal failed");
                    if self.clock.now() >= until {
                        return;
                    }
                }
            }
        }
    }
}

/// Most finished jobs recorded by one statement.
const COMPLETE_CHUNK: usize = 500;

/// Records jobs that finished, in groups: a job that finishes while a group
/// is being written waits for the next one, which then holds every job that
/// finished meanwhile. Each job's task waits until its own outcome is written
/// (so its slot frees only then, as before).
#[derive(Clone)]
struct Completions {
    sender: tokio::sync::mpsc::UnboundedSender<Completion>,
}

/// One finished job waiting to be recorded: its id, its attempt count (the
/// fence) and where to say whether it was recorded.
type Completion = (String, i32, tokio::sync::oneshot::Sender<Result<bool>>);

impl Completions {
    /// Starts the recorder of `outbox`; it stops when every sender is gone.
    fn start(outbox: Outbox) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Completion>();
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut group = vec![first];
                while group.len() < COMPLETE_CHUNK {
                    match receiver.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let finished: Vec<(String, i32)> = group
                    .iter()
                    .map(|(id, attempts, _)| (id.clone(), *attempts))
                    .collect();
                match outbox.complete(&finished).await {
                    Ok(recorded) => {
                        for (id, _, reply) in group {
                            let _ = reply.send(Ok(recorded.contains(&id)));
                        }
                    }
                    Err(error) => {
                        for (_, _, reply) in group {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { sender }
    }

    /// Records that the job is done; false when another worker claimed it
    /// meanwhile.
    async fn record(&self, id: String, attempts: i32) -> Result<bool> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.sender
            .send((id, attempts, reply))
            .map_err(|_| Error::unavailable("the outbox worker stopped"))?;
        answer
            .await
            .map_err(|_| Error::unavailable("the outbox worker stopped"))?
    }
}

/// The jobs this process's worker runs or has been promised, shared by the
/// worker ([`Outbox::run`]) and the writers that hand it jobs at their
/// commit ([`HandedOver`]).
#[derive(Default)]
struct Lanes(std::sync::Mutex<LaneState>);

#[derive(Default)]
struct LaneState {
    /// Where a job handed over at a commit goes; set while the worker runs.
    handoff: Option<tokio::sync::mpsc::UnboundedSender<entity::Model>>,
    /// The worker made its first claim and takes hand-overs.
    open: bool,
    /// Jobs of each kind (lane) the worker runs or has been promised.
    per_lane: HashMap<String, usize>,
    /// Their sum.
    total: usize,
    /// The worker's slots, and the most one lane may hold.
    slots: usize,
    lane_slots: usize,
    /// When each lane last started or finished a job: a lane that has not
    /// moved for an intake wait is not waited for ([`Outbox::admit`]).
    moved: HashMap<String, tokio::time::Instant>,
    /// What calls waiting for a slot of each lane wait on; a finished job
    /// wakes one.
    waiters: HashMap<String, Arc<Notify>>,
}

/// A quarter of a lane's slots, at least one: how many free slots a full
/// lane waits for before it claims again, and how many calls leave to
/// claims ([`Lanes::intake`]).
fn quarter(lane_slots: usize) -> usize {
    (lane_slots / 4).max(1)
}

/// What a call that will cause a job of some kind may do now
/// ([`Outbox::admit`]).
enum Intake {
    /// A slot of the lane is the call's.
    Slot,
    /// Wait for one: the lane is full and moving.
    Wait,
    /// Go on without one: no worker runs here, the worker's slots are
    /// taken by other lanes, or the lane has not moved for a while.
    Go,
}

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a job of `kind` could be handed over now: the worker runs
    /// and has a slot free in that lane. (Older jobs left pending when the
    /// lane was full are claimed as slots free, at the next wake-up or
    /// poll; a full lane takes no hand-over, so they are not overtaken for
    /// long.)
    fn open_to(state: &LaneState, kind: &str) -> bool {
        let worker_runs = state
            .handoff
            .as_ref()
            .is_some_and(|handoff| !handoff.is_closed());
        worker_runs
            && state.open
            && state.total < state.slots
            && state.per_lane.get(kind).copied().unwrap_or(0) < state.lane_slots
    }

    /// Takes a slot of `kind`'s lane for a job to hand over, when it can
    /// ([`Lanes::open_to`]).
    fn reserve(&self, kind: &str) -> bool {
        let mut state = self.lock();
        if !Self::open_to(&state, kind) {
            return false;
        }
        Self::take(&mut state, kind);
        true
    }

    /// Counts a claimed job of `kind`.
    fn add(&self, kind: &str) {
        let mut state = self.lock();
        Self::take(&mut state, kind);
    }

    /// Counts a job of `kind` in its lane (a lane that was empty starts
    /// moving now).
    fn take(state: &mut LaneState, kind: &str) {
        match state.per_lane.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                state.per_lane.insert(kind.to_owned(), 1);
                state
                    .moved
                    .insert(kind.to_owned(), tokio::time::Instant::now());
            }
        }
        state.total += 1;
    }

    /// Slots a lane keeps for claims: calls waiting for slots fill it only
    /// up to the rest, so due jobs left pending (another replica's, a
    /// retry's, one whose call did not wait) are claimed into the lane at
    /// the next wake-up or poll even while calls keep it busy.
    fn kept_for_claims(state: &LaneState) -> usize {
        match state.lane_slots {
            0 | 1 => 0,
            slots => quarter(slots),
        }
    }

    /// Takes a slot of `kind`'s lane for a call that will cause such a job,
    /// or says whether the call should wait for one; `stalled` is how long
    /// a lane may go without a job starting or finishing before it is no
    /// longer waited for.
    /// Each slot that frees wakes one waiting call ([`Lanes::release`]),
    /// so a call that takes a slot has nothing to pass on.
    fn intake(&self, kind: &str, stalled: Duration) -> Intake {
        let mut state = self.lock();
        let worker_runs = state
            .handoff
            .as_ref()
            .is_some_and(|handoff| !handoff.is_closed());
        if !worker_runs || !state.open || state.total >= state.slots {
            return Intake::Go;
        }
        let count = state.per_lane.get(kind).copied().unwrap_or(0);
        let room = state
            .lane_slots
            .saturating_sub(Self::kept_for_claims(&state));
        if count < room {
            Self::take(&mut state, kind);
            Intake::Slot
        } else if state
            .moved
            .get(kind)
            .is_some_and(|moved| moved.elapsed() < stalled)
        {
            Intake::Wait
        } else {
            Intake::Go
        }
    }

    /// What calls waiting for a slot of `kind`'s lane wait on.
    fn waiter(&self, kind: &str) -> Arc<Notify> {
        let mut state = self.lock();
        match state.waiters.get(kind) {
            Some(waiter) => waiter.clone(),
            None => state.waiters.entry(kind.to_owned()).or_default().clone(),
        }
    }

    /// Frees the slot of a job of `kind` (its handler returned, or it was
    /// never handed over).
    /// True when its lane now has `refill` slots free and had fewer before.
    fn release(&self, kind: &str, refill: usize) -> bool {
        let (refilling, waiter) = {
            let mut state = self.lock();
            let state = &mut *state;
            let lane_slots = state.lane_slots;
            let Some(count) = state.per_lane.get_mut(kind) else {
                return false;
            };
            let refilling = *count + refill == lane_slots + 1;
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_lane.remove(kind);
            }
            state.total = state.total.saturating_sub(1);
            if let Some(moved) = state.moved.get_mut(kind) {
                *moved = tokio::time::Instant::now();
            }
            (refilling, state.waiters.get(kind).cloned())
        };
        // A call waiting for a slot of this lane may take this one.
        if let Some(waiter) = waiter {
            waiter.notify_one();
        }
        refilling
    }

    /// Wakes every waiting call (the worker stops: none gets a slot now).
    fn wake_all(&self) {
        let waiters: Vec<Arc<Notify>> = self.lock().waiters.values().cloned().collect();
        for waiter in waiters {
            waiter.notify_waiters();
        }
    }
}

/// A job written already claimed by this process's worker: its first
/// attempt's lease starts at the enqueue, so no claim statement is spent on
/// it and no other worker (replica) can take it. Delivered to the worker
/// once the transaction that wrote it has committed; dropped instead (the
/// transaction failed, or its insert was kept out), it gives its lane slot
/// back. Should the process stop between the commit and the run, the job
/// is claimed again when its lease runs out, like a job whose worker died.
pub(crate) struct HandedOver {
    kind: String,
    row: Option<entity::Model>,
    lanes: Arc<Lanes>,
    /// The lane slot is still this hand-over's to give back.
    holds_slot: bool,
}

impl HandedOver {
    /// Gives the job to the worker (call it after the commit).
    pub(crate) fn deliver(mut self) {
        let Some(row) = self.row.take() else {
            return;
        };
        let sent = match &self.lanes.lock().handoff {
            Some(handoff) => handoff.send(row).is_ok(),
            None => false,
        };
        if sent {
            // The slot is the worker's now; it frees it when the job's
            // handler returns.
            self.holds_slot = false;
        }
        // Otherwise the worker stopped: the job waits for its lease to run
        // out, and the slot is given back below.
    }
}

impl Drop for HandedOver {
    fn drop(&mut self) {
        if self.holds_slot {
            self.lanes.release(&self.kind, 0);
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
    lanes: Arc<Lanes>,
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
            lanes: Arc::new(Lanes::default()),
        }
    }

    /// The time source.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The retry policy.
    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    /// The elections of periodic tasks in this outbox's database, with this
    /// process as the candidate.
    pub fn leadership(&self) -> Leadership {
        Leadership::new(
            self.db.clone(),
            self.clock.clone(),
            crate::leader::this_replica(),
            self.options.leader_lease_seconds,
        )
    }

    /// Enqueues a job in `conn` (a transaction of the caller's change). Call
    /// [`Outbox::wake`] after the transaction commits.
    pub async fn enqueue(&self, conn: &impl ConnectionTrait, job: NewJob) -> Result<Option<JobId>> {
        enqueue(conn, self.clock.now(), self.options.max_attempts, job).await
    }

    /// Enqueues a job with the other inserts `txn` holds for its commit
    /// ([`WriteTxn::insert_at_commit`]); a job with the same dedupe key
    /// already there is kept instead. Call [`Outbox::wake`] after the commit.
    pub fn enqueue_at_commit(&self, txn: &WriteTxn, job: NewJob) -> JobId {
        let (id, insert) = job_insert(self.clock.now(), self.options.max_attempts, job);
        txn.insert_at_commit(insert);
        id
    }

    /// [`Outbox::enqueue`], handing the job to this process's worker at the
    /// commit when it can take it at once (see [`HandedOver`]); otherwise
    /// the job is pending and the worker needs a wake-up.
    pub(crate) async fn enqueue_here(
        &self,
        conn: &impl ConnectionTrait,
        job: NewJob,
        admitted: &mut Vec<HandedOver>,
    ) -> Result<(Option<JobId>, Option<HandedOver>)> {
        let now = self.clock.now();
        let Some(handed) = self.reserve(&job, now, admitted) else {
            return Ok((self.enqueue(conn, job).await?, None));
        };
        let spent_too = job.key_may_be_spent();
        let (id, row, handed) = self.claimed_row(job, now, handed);
        let inserted = conn
            .execute_raw(
                conn.get_database_backend()
                    .build(&insert_of(row, spent_too)),
            )
            .await
            .map_err(db_error)?
            .rows_affected();
        // Kept out by a job with the same key: nothing to hand over.
        Ok(if inserted == 0 {
            (None, None)
        } else {
            (Some(id), Some(handed))
        })
    }

    /// [`Outbox::enqueue_at_commit`], handing the job to this process's
    /// worker at the commit when it can take it at once and its insert
    /// cannot be kept out (no dedupe key, or one declared new with
    /// [`NewJob::key_is_new`]).
    pub(crate) fn enqueue_at_commit_here(
        &self,
        txn: &WriteTxn,
        job: NewJob,
        admitted: &mut Vec<HandedOver>,
    ) -> (JobId, Option<HandedOver>) {
        let now = self.clock.now();
        let sure_to_insert = job.dedupe_key.is_none() || job.key_is_new;
        let Some(handed) = sure_to_insert
            .then(|| self.reserve(&job, now, admitted))
            .flatten()
        else {
            return (self.enqueue_at_commit(txn, job), None);
        };
        // Sure to insert: no key, or one declared new, so none spent.
        let (id, row, handed) = self.claimed_row(job, now, handed);
        txn.insert_at_commit(insert_of(row, false));
        (id, Some(handed))
    }

    /// A slot of the worker's lane for `job`, when it is due: one the call
    /// was admitted with ([`Outbox::admit`]), or one free now.
    fn reserve(
        &self,
        job: &NewJob,
        now: DateTime<Utc>,
        admitted: &mut Vec<HandedOver>,
    ) -> Option<HandedOver> {
        if !job.due_by(now) {
            return None;
        }
        if let Some(at) = admitted.iter().position(|slot| slot.kind == job.kind) {
            return Some(admitted.swap_remove(at));
        }
        self.lanes.reserve(&job.kind).then(|| self.slot(&job.kind))
    }

    /// A slot taken in `kind`'s lane, given back when dropped unused.
    fn slot(&self, kind: &str) -> HandedOver {
        HandedOver {
            kind: kind.to_owned(),
            row: None,
            lanes: self.lanes.clone(),
            holds_slot: true,
        }
    }

    /// Admits a call that will cause a job of `kind`, before its
    /// transaction begins. While this process's worker runs and the kind's
    /// lane is full of jobs that are finishing, the call waits for one of
    /// them to end (at most `outbox.intake_wait_ms`), so the API takes work
    /// no faster than the worker runs it instead of leaving a backlog. The
    /// slot it gets is the call's job's ([`Outbox::enqueue_here`] and
    /// [`Outbox::enqueue_at_commit_here`] hand the job over in it) and is
    /// given back if the call causes no such job. `None` when the call goes
    /// on without a slot: no worker runs here, the worker's slots are all
    /// taken by other lanes, the lane has not moved for a wait's length (a
    /// stuck marketplace is not waited for), or the wait ran out.
    pub(crate) async fn admit(&self, kind: &str) -> Option<HandedOver> {
        let wait = Duration::from_millis(self.options.intake_wait_ms);
        if wait.is_zero() {
            return None;
        }
        // Most calls find a slot at once, without waiting.
        match self.lanes.intake(kind, wait) {
            Intake::Slot => return Some(self.slot(kind)),
            Intake::Go => return None,
            Intake::Wait => {}
        }
        let deadline = tokio::time::Instant::now() + wait;
        let waiter = self.lanes.waiter(kind);
        loop {
            let notified = waiter.notified();
            tokio::pin!(notified);
            // Registered before looking, so a slot freed in between wakes it.
            notified.as_mut().enable();
            match self.lanes.intake(kind, wait) {
                Intake::Slot => return Some(self.slot(kind)),
                Intake::Go => return None,
                Intake::Wait => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The row of `job` claimed by this process's worker, its id, and the
    /// hand-over holding a copy for the worker.
    fn claimed_row(
        &self,
        job: NewJob,
        now: DateTime<Utc>,
        mut handed: HandedOver,
    ) -> (JobId, entity::Model, HandedOver) {
        let id = JobId::generate();
        let lease_until = now + ChronoDuration::seconds(self.options.lease_seconds.max(1) as i64);
        let row = job_row(&id, now, self.options.max_attempts, job, Some(lease_until));
        handed.row = Some(row.clone());
        (id, row, handed)
    }

    /// Whether a due job of `kind` enqueued now would be handed to this
    /// process's worker at the commit: a worker runs here and has a slot
    /// free in that lane.
    pub fn hands_over(&self, kind: &str) -> bool {
        Lanes::open_to(&self.lanes.lock(), kind)
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

    /// Claims up to `limit` due jobs (or jobs whose lease expired) in one
    /// statement, each under a fresh lease, oldest first. `running` counts
    /// the jobs of each kind this worker runs already: a kind gets at most
    /// `lane_cap` minus its running jobs. On PostgreSQL the candidates are
    /// locked with `FOR UPDATE SKIP LOCKED`, so replicas claiming at the same
    /// time take different jobs; on SQLite the statement runs under the
    /// database's single write lock (the process's write gate first).
    async fn claim(
        &self,
        now: DateTime<Utc>,
        running: &HashMap<String, usize>,
        lane_cap: usize,
        limit: usize,
    ) -> Result<Vec<entity::Model>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = truncate_micros(now);
        let lease_until = truncate_micros(
            now + ChronoDuration::seconds(self.options.lease_seconds.max(1) as i64),
        );
        let backend = Backend::of(&self.db);
        let mut values: Vec<sea_orm::Value> = vec![lease_until.into(), now.into()];
        let mut placeholder = |value: sea_orm::Value| {
            values.push(value);
            match backend {
                Backend::Postgres => format!("${}", values.len()),
                Backend::Sqlite => format!("?{}", values.len()),
            }
        };
        // Kinds with no slot left are not candidates; kinds with some left
        // get what is left.
        let mut busy: Vec<&str> = Vec::new();
        let mut partly: Vec<(&str, usize)> = Vec::new();
        for (kind, count) in running {
            if *count >= lane_cap {
                busy.push(kind);
            } else if *count > 0 {
                partly.push((kind, lane_cap - count));
            }
        }
        busy.sort_unstable();
        partly.sort_unstable();
        let excluded = if busy.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = busy
                .iter()
                .map(|kind| placeholder((*kind).to_owned().into()))
                .collect();
            format!(" AND kind NOT IN ({})", list.join(", "))
        };
        let scan = placeholder((limit.saturating_mul(4) as i64).into());
        let cap = placeholder((lane_cap as i64).into());
        let lane_limit = if partly.is_empty() {
            cap
        } else {
            let mut case = String::from("CASE kind");
            for (kind, left) in &partly {
                let kind = placeholder((*kind).to_owned().into());
                let left = placeholder((*left as i64).into());
                case.push_str(&format!(" WHEN {kind} THEN {left}"));
            }
            case.push_str(&format!(" ELSE {cap} END"));
            case
        };
        let limit = placeholder((limit as i64).into());
        let lock = match backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let (lease, now_at) = match backend {
            Backend::Postgres => ("$1", "$2"),
            Backend::Sqlite => ("?1", "?2"),
        };
        // Subqueries rather than named ones: PostgreSQL wants an alias for
        // each, SQLite's plans then name them as subqueries, not tables.
        let alias = |name: &'static str| match backend {
            Backend::Postgres => name,
            Backend::Sqlite => "",
        };
        let (due, expired, candidates, ranked) = (
            alias(" AS due"),
            alias(" AS expired"),
            alias(" AS candidates"),
            alias(" AS ranked"),
        );
        // The due jobs and the expired leases are read apart, each in the
        // order of `outbox_jobs_claim` (status, run_at, id), so each read
        // stops after `scan` rows however long the queue is; one condition
        // with an OR made both backends read and sort every due job first.
        let sql = format!(
            "UPDATE outbox_jobs SET status = 'running', attempts = attempts + 1, locked_until = {lease}, updated_at = {now_at} \
             WHERE id IN (SELECT id FROM (\
               SELECT id, kind, run_at, ROW_NUMBER() OVER (PARTITION BY kind ORDER BY run_at, id) AS lane_rank FROM (\
                 SELECT id, kind, run_at FROM (\
                   SELECT id, kind, run_at FROM outbox_jobs \
                   WHERE status = 'pending' AND run_at <= {now_at}{excluded} \
                   ORDER BY run_at, id LIMIT {scan}{lock}){due} \
                 UNION ALL SELECT id, kind, run_at FROM (\
                   SELECT id, kind, run_at FROM outbox_jobs \
                   WHERE status = 'running' AND locked_until < {now_at}{excluded} \
                   ORDER BY run_at, id LIMIT {scan}{lock}){expired} \
                 ORDER BY run_at, id LIMIT {scan}){candidates}){ranked} \
               WHERE lane_rank <= {lane_limit} ORDER BY run_at, id LIMIT {limit}) \
             RETURNING *",
        );
        let db_backend = match backend {
            Backend::Postgres => DbBackend::Postgres,
            Backend::Sqlite => DbBackend::Sqlite,
        };
        let write = crate::db::write_once(&self.db).await?;
        let mut rows = entity::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(db_backend, sql, values))
            .all(&write)
            .await
            .map_err(db_error)?;
        write.commit().await?;
        rows.sort_by(|a, b| (a.run_at, &a.id).cmp(&(b.run_at, &b.id)));
        Ok(rows)
    }

    /// Claims and runs due jobs one after the other, up to a batch; returns
    /// how many ran. Tests use it (and [`Outbox::drain`]) to deliver
    /// deterministically; the worker ([`Outbox::run`]) runs lanes
    /// concurrently.
    pub async fn run_once(&self, handler: &dyn JobHandler) -> Result<usize> {
        let batch = self.options.batch_size.max(1) as usize;
        let sqlite = Backend::of(&self.db) == Backend::Sqlite;
        let mut count = 0;
        while count < batch {
            let claimed =
                Box::pin(self.claim(self.clock.now(), &HashMap::new(), batch, batch - count))
                    .await?;
            if claimed.is_empty() {
                break;
            }
            // On SQLite a claim that took fewer than asked took every job
            // due (no lane is capped below the batch here, and claims never
            // skip rows another claim holds), so asking again would find
            // none; a job these enqueue is found by the next batch.
            let all_due = sqlite && claimed.len() < batch - count;
            for row in claimed {
                // Boxed: a job's future is large, and callers (tests drain
                // from deep inside theirs) should not carry it on their stack.
                Box::pin(self.run_job(handler, row, None, || ())).await?;
                count += 1;
            }
            if all_due {
                break;
            }
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

    /// Records that finished jobs are done, with one statement for all of
    /// them; each is fenced by the attempt count it was claimed with, so a
    /// job another worker claimed meanwhile is left alone. Returns the ids
    /// that were recorded.
    async fn complete(&self, finished: &[(String, i32)]) -> Result<HashSet<String>> {
        let now = truncate_micros(self.clock.now());
        let backend = Backend::of(&self.db);
        let mut recorded = HashSet::with_capacity(finished.len());
        // Two values a job, well under both backends' limits.
        for chunk in finished.chunks(COMPLETE_CHUNK) {
            let mut values: Vec<sea_orm::Value> = vec![now.into()];
            let mut placeholder = |value: sea_orm::Value| {
                values.push(value);
                match backend {
                    Backend::Postgres => format!("${}", values.len()),
                    Backend::Sqlite => format!("?{}", values.len()),
                }
            };
            let fences: Vec<String> = chunk
                .iter()
                .map(|(id, attempts)| {
                    let id = placeholder(id.clone().into());
                    let attempts = placeholder((*attempts).into());
                    format!("(id = {id} AND attempts = {attempts})")
                })
                .collect();
            let now_at = match backend {
                Backend::Postgres => "$1",
                Backend::Sqlite => "?1",
            };
            let sql = format!(
                "UPDATE outbox_jobs SET status = 'done', finished_at = {now_at}, updated_at = {now_at}, \
                 locked_until = NULL, last_error = NULL \
                 WHERE status = 'running' AND ({}) RETURNING id",
                fences.join(" OR ")
            );
            let db_backend = match backend {
                Backend::Postgres => DbBackend::Postgres,
                Backend::Sqlite => DbBackend::Sqlite,
            };
            let write = crate::db::write_once(&self.db).await?;
            let rows = write
                .query_all_raw(Statement::from_sql_and_values(db_backend, sql, values))
                .await
                .map_err(db_error)?;
            write.commit().await?;
            for row in rows {
                recorded.insert(row.try_get::<String>("", "id").map_err(db_error)?);
            }
        }
        Ok(recorded)
    }

    /// Runs one claimed job under its lease: renews the lease while the
    /// handler runs, stops the handler if the lease is lost, calls
    /// `handled` once the handler has returned (the worker frees the job's
    /// lane slot then: the marketplace call is over, and a call waiting
    /// for the slot need not wait for the outcome's statement too), and
    /// records the outcome only if the attempt still holds the job.
    async fn run_job(
        &self,
        handler: &dyn JobHandler,
        row: entity::Model,
        completions: Option<&Completions>,
        handled: impl FnOnce(),
    ) -> Result<()> {
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
        let leased_until = row.locked_until.unwrap_or_else(|| self.clock.now());
        let lease = Lease {
            db: self.db.clone(),
            clock: self.clock.clone(),
            id: row.id.clone(),
            attempts: row.attempts,
            seconds: self.options.lease_seconds,
            sure_until: leased_until
                - ChronoDuration::milliseconds(
                    (self.options.lease_seconds.max(1) * 2000 / 3) as i64,
                ),
        };
        let job = Job {
            id: row.id.clone(),
            kind: row.kind.clone(),
            payload: row.payload.clone(),
            attempt,
            created_at: row.created_at,
            lease: Some(lease.clone()),
        };
        let work = Box::pin(
            async {
                job.ensure_held().await?;
                handler.handle(&job).await
            }
            .instrument(span.clone()),
        );
        let keep = Box::pin(lease.keep(leased_until));
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = keep => Err(JobError::LeaseLost),
        };
        handled();
        let metrics = marketbridge_telemetry::metrics();
        if outcome.is_ok() {
            // Done: recorded together with the other jobs finishing now.
            let recorded = match completions {
                Some(completions) => completions.record(row.id.clone(), row.attempts).await?,
                None => self
                    .complete(&[(row.id.clone(), row.attempts)])
                    .await?
                    .contains(&row.id),
            };
            metrics.record_outbox_job(&row.kind, "delivered");
            span.in_scope(|| tracing::debug!("job done"));
            if !recorded {
                tracing::warn!(job.id = %row.id, "job was claimed again by another worker while running");
            }
            return Ok(());
        }
        let now = truncate_micros(self.clock.now());
        let mut update = entity::ActiveModel {
            id: Set(row.id.clone()),
            updated_at: Set(now),
            locked_until: Set(None),
            ..Default::default()
        };
        match outcome {
            Ok(()) => unreachable!("a job that succeeded was recorded above"),
            Err(JobError::LeaseLost) => {
                metrics.record_outbox_job(&row.kind, "lease_lost");
                span.in_scope(|| {
                    tracing::warn!("job lease lost to another worker; this attempt stops")
                });
                return Ok(());
            }
            Err(error) => {
                let retry_after = match &error {
                    JobError::Permanent(_) | JobError::LeaseLost => None,
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
        let write = crate::db::write_once(&self.db).await?;
        let result = entity::Entity::update_many()
            .set(update)
            .filter(entity::Column::Id.eq(row.id.clone()))
            .filter(entity::Column::Attempts.eq(row.attempts))
            .filter(entity::Column::Status.eq(status::RUNNING))
            .exec(&write)
            .await
            .map_err(db_error)?;
        write.commit().await?;
        if result.rows_affected == 0 {
            tracing::warn!(job.id = %row.id, "job was claimed again by another worker while running");
        }
        Ok(())
    }

    /// Most jobs of one kind (lane) a worker runs at once: a quarter of its
    /// slots, at least one.
    fn lane_slots(&self) -> usize {
        (self.options.batch_size.max(1) as usize / 4).max(1)
    }

    /// Runs the worker until `shutdown` fires: claims due jobs in batches
    /// into free slots (up to the batch size, at most a quarter of them per
    /// job kind, one statement a batch) and runs them concurrently, runs the
    /// jobs this process's writers hand it at their commit ([`HandedOver`])
    /// without claiming them, frees a job's lane slot when its handler
    /// returns, records the jobs that finish together (one statement for
    /// those finishing at the same time), polls when nothing is due, wakes
    /// at once when [`Outbox::wake`] is called or a job finishes, keeps
    /// going through database errors, and lets running jobs finish before
    /// it returns.
    pub async fn run(self, handler: Arc<dyn JobHandler>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.options.poll_interval_ms.max(10));
        // A steady poll, however often jobs finish in between.
        let mut polls = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slots = self.options.batch_size.max(1) as usize;
        let lane_slots = self.lane_slots();
        let sqlite = Backend::of(&self.db) == Backend::Sqlite;
        let completions = Completions::start(self.clone());
        // Finished jobs past their retention are swept beside the worker,
        // which stops the sweeps when it returns or is dropped.
        let sweeps = shutdown.child_token();
        let _sweeps_stop = sweeps.clone().drop_guard();
        let sweeping = tokio::spawn(self.clone().keep_retention(sweeps));
        let mut running: tokio::task::JoinSet<bool> = tokio::task::JoinSet::new();
        // Jobs handed over at a commit arrive here, once the first claim
        // took what was due before the worker started. One worker per
        // outbox takes them; a second one started on a clone (none is, but
        // nothing forbids it) keeps its own count and only claims.
        let (handoff, mut handed) = tokio::sync::mpsc::unbounded_channel::<entity::Model>();
        let lanes = {
            let mut state = self.lanes.lock();
            // A worker that was aborted left its channel closed behind.
            if state
                .handoff
                .as_ref()
                .is_none_or(|handoff| handoff.is_closed())
            {
                let waiters = std::mem::take(&mut state.waiters);
                *state = LaneState {
                    handoff: Some(handoff),
                    slots,
                    lane_slots,
                    waiters,
                    ..LaneState::default()
                };
                self.lanes.clone()
            } else {
                Arc::new(Lanes(std::sync::Mutex::new(LaneState {
                    slots,
                    lane_slots,
                    ..LaneState::default()
                })))
            }
        };
        // A full lane asks for more once a quarter of it is free, not at
        // every job that ends: one claim then fills several slots. Asked
        // slot by slot, a busy kind cost a claim (a flushed commit on
        // PostgreSQL) per job, and the worker, claiming one job at a time,
        // drained no faster than it could commit claims. A job waits no
        // longer for it than the next poll.
        let refill = quarter(lane_slots);
        // Each job frees its lane slot once its handler returns, and ends
        // saying whether its lane was then refilling (see `release`).
        let spawn = |row: entity::Model, running: &mut tokio::task::JoinSet<bool>| {
            let (outbox, handler, completions, lanes) = (
                self.clone(),
                handler.clone(),
                completions.clone(),
                lanes.clone(),
            );
            running.spawn(async move {
                let kind = row.kind.clone();
                let mut refilling = None;
                let handled = || refilling = Some(lanes.release(&kind, refill));
                if let Err(error) = outbox
                    .run_job(handler.as_ref(), row, Some(&completions), handled)
                    .await
                {
                    tracing::warn!(error = %error, "recording a job's outcome failed");
                }
                refilling.unwrap_or_else(|| lanes.release(&kind, refill))
            });
        };
        // True after a claim found no due job (and no lane was full): a slot
        // that frees then does not ask again until something may be due (a
        // wake-up, or the poll for other replicas' jobs and retries).
        let mut exhausted = false;
        // True after a claim took fewer jobs than it wanted while a lane was
        // full: what is left due belongs to full lanes. The next claim waits
        // for a lane to free (a job of it finishing) or for the poll; a
        // wake-up alone does not ask, since a claim that excludes a full
        // lane reads past every due job of that lane, and a busy kind can
        // have a long queue (a wake-up comes with every job enqueued).
        let mut blocked = false;
        let mut opened = false;
        loop {
            while let Some(done) = running.try_join_next() {
                // A lane that frees may have due jobs waiting.
                if let Ok(true) = done {
                    blocked = false;
                }
            }
            while let Ok(row) = handed.try_recv() {
                spawn(row, &mut running);
            }
            if shutdown.is_cancelled() {
                break;
            }
            loop {
                let (wanted, per_lane) = {
                    let state = lanes.lock();
                    (slots.saturating_sub(state.total), state.per_lane.clone())
                };
                if wanted == 0 || exhausted || blocked {
                    break;
                }
                // Boxed, as in `run_once`: the claim's future is large, and
                // the worker's would carry it inline.
                let claimed =
                    Box::pin(self.claim(self.clock.now(), &per_lane, lane_slots, wanted)).await;
                let claimed = match claimed {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::warn!(error = %error, "outbox poll failed");
                        break;
                    }
                };
                let claimed_count = claimed.len();
                for row in claimed {
                    lanes.add(&row.kind);
                    spawn(row, &mut running);
                }
                // Nothing claimed and no lane full: nothing else is due. A
                // claim that took some asks again on PostgreSQL (it may have
                // skipped jobs another replica's claim held for a moment); on
                // SQLite claims take turns and skip nothing, so one that took
                // fewer than wanted with no lane full took every job due.
                // With a lane full, one that took fewer than wanted leaves
                // due only jobs of full lanes (or, on PostgreSQL, ones
                // another replica held): it waits for a lane to free.
                let lanes_open = lanes
                    .lock()
                    .per_lane
                    .values()
                    .all(|count| *count < lane_slots);
                let took_all = claimed_count == 0 || (sqlite && claimed_count < wanted);
                exhausted = lanes_open && took_all;
                blocked = !lanes_open && claimed_count < wanted;
                if claimed_count == 0 || exhausted || blocked {
                    break;
                }
            }
            if !opened {
                lanes.lock().open = true;
                opened = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wake.notified() => exhausted = false,
                _ = polls.tick() => (exhausted, blocked) = (false, false),
                Some(row) = handed.recv() => spawn(row, &mut running),
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok(true) = done {
                        blocked = false;
                    }
                }
            }
        }
        // No more hand-overs; those already sent run like the others.
        lanes.lock().handoff = None;
        lanes.wake_all();
        handed.close();
        while let Some(row) = handed.recv().await {
            spawn(row, &mut running);
        }
        while running.join_next().await.is_some() {}
        let _ = sweeping.await;
    }

    /// Counts jobs by status (retrying ones as pending, discarded ones as
    /// done), counted by the database rather than read.
    pub async fn stats(&self) -> Result<OutboxStats> {
        let counts = self.counts(false).await?;
        Ok(OutboxStats {
            pending: counts.pending + counts.retrying,
            running: counts.running,
            done: counts.done + counts.discarded,
            dead: counts.dead,
        })
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
        let write = crate::db::write_once(&self.db).await?;
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
            .exec(&write)
            .await
            .map_err(db_error)?;
        write.commit().await?;
        if result.rows_affected == 0 {
            return Err(Error::not_found(format!("no dead job {job_id}")));
        }
        self.wake();
        Ok(())
    }
}

/// The table of spent dedupe keys: those of finished jobs the retention
/// sweep removed ([`Outbox::sweep_finished`]).
pub const SPENT_KEYS: &str = "outbox_spent_keys";

/// Finished jobs one step of the sweep reads, and removes at most.
const SWEEP_PAGE: usize = 500;

/// How often a worker sweeps away finished jobs past their retention.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How long a job's key has been spent before the job itself may go. An
/// enqueue is one statement that looks for the key among the spent ones,
/// then among the jobs; on PostgreSQL a statement that began before the key
/// was spent and reached the jobs after the job was removed would find it
/// in neither. Removing the job a minute after its key is spent leaves such
/// a statement a minute.
const SPENT_KEY_SETTLES: ChronoDuration = ChronoDuration::seconds(60);

/// What one sweep of finished jobs did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Dedupe keys of finished jobs newly recorded as spent; their jobs go
    /// at a later sweep, once the keys have settled.
    pub keys_spent: u64,
    /// Finished jobs removed.
    pub removed: u64,
}

/// A finished job past its retention, as the sweep reads it.
#[derive(Debug, sea_orm::FromQueryResult)]
struct Finished {
    id: String,
    kind: String,
    dedupe_key: Option<String>,
    run_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// Retention: finished jobs (done or discarded) are kept for
/// `outbox.retention_seconds`, then removed, each leaving its dedupe key
/// behind in [`SPENT_KEYS`] so the key still names a job enqueued once.
impl Outbox {
    /// Removes the finished jobs past their retention and spends their keys.
    /// A job with a dedupe key goes in two steps: this sweep records its key
    /// as spent, and a sweep at least [`SPENT_KEY_SETTLES`] later removes
    /// it (see there). The jobs are read in pages through the claim index
    /// (status, `run_at`, id: a job finished after it was due, so one that
    /// finished before the cutoff was due before it too), and each page is
    /// one short write. Dead jobs stay. Idempotent: replicas sweeping at
    /// once remove each job once.
    pub async fn sweep_finished(&self) -> Result<Swept> {
        let mut swept = Swept::default();
        if self.options.retention_seconds == 0 {
            return Ok(swept);
        }
        let now = truncate_micros(self.clock.now());
        let retention = i64::try_from(self.options.retention_seconds).unwrap_or(i64::MAX);
        let Some(cutoff) =
            ChronoDuration::try_seconds(retention).and_then(|r| now.checked_sub_signed(r))
        else {
            return Ok(swept);
        };
        for finished_status in [status::DONE, status::DISCARDED] {
            let mut after: Option<(DateTime<Utc>, String)> = None;
            loop {
                let page = self
                    .finished_page(finished_status, cutoff, after.as_ref())
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some((last.run_at, last.id.clone()));
                let full = page.len() == SWEEP_PAGE;
                let (spent, removed) = self.sweep_page(now, &page).await?;
                swept.keys_spent += spent;
                swept.removed += removed;
                if !full {
                    break;
                }
            }
        }
        if swept != Swept::default() {
            tracing::info!(
                keys_spent = swept.keys_spent,
                removed = swept.removed,
                "swept finished outbox jobs past their retention"
            );
        }
        Ok(swept)
    }

    /// Up to [`SWEEP_PAGE`] jobs of `finished_status` that finished before
    /// `cutoff`, in claim-index order after `after`.
    async fn finished_page(
        &self,
        finished_status: &str,
        cutoff: DateTime<Utc>,
        after: Option<&(DateTime<Utc>, String)>,
    ) -> Result<Vec<Finished>> {
        use sea_orm::QuerySelect;
        let mut query = entity::Entity::find()
            .select_only()
            .columns([
                entity::Column::Id,
                entity::Column::Kind,
                entity::Column::DedupeKey,
                entity::Column::RunAt,
                entity::Column::FinishedAt,
            ])
            .filter(entity::Column::Status.eq(finished_status))
            .filter(entity::Column::RunAt.lt(cutoff))
            .filter(entity::Column::FinishedAt.lt(cutoff));
        if let Some((run_at, id)) = after {
            query = query.filter(
                sea_orm::Condition::any()
                    .add(entity::Column::RunAt.gt(*run_at))
                    .add(
                        sea_orm::Condition::all()
                            .add(entity::Column::RunAt.eq(*run_at))
                            .add(entity::Column::Id.gt(id.as_str())),
                    ),
            );
        }
        query
            .order_by_asc(entity::Column::RunAt)
            .order_by_asc(entity::Column::Id)
            .limit(SWEEP_PAGE as u64)
            .into_model::<Finished>()
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    /// One write for a page of finished jobs: spends the keys not spent yet,
    /// and removes the jobs without a key or whose key settled. The removal
    /// checks the status again (an operator may have retried a discarded
    /// job since it was read).
    async fn sweep_page(&self, now: DateTime<Utc>, page: &[Finished]) -> Result<(u64, u64)> {
        use sea_orm::ExprTrait;
        let settled = now - SPENT_KEY_SETTLES;
        let backend = self.db.get_database_backend();
        // The keys of the page, when it has any.
        let mut spend: Option<InsertStatement> = None;
        for job in page {
            let Some(key) = &job.dedupe_key else { continue };
            let insert = spend.get_or_insert_with(|| {
                Query::insert()
                    .into_table(Alias::new(SPENT_KEYS))
                    .columns(["dedupe_key", "kind", "finished_at", "moved_at"].map(Alias::new))
                    .on_conflict(
                        OnConflict::column(Alias::new("dedupe_key"))
                            .do_nothing()
                            .to_owned(),
                    )
                    .to_owned()
            });
            let values: [sea_orm::Value; 4] = [
                key.clone().into(),
                job.kind.clone().into(),
                job.finished_at.into(),
                now.into(),
            ];
            insert.values_panic(values.map(Expr::val));
        }
        let settled_key = Query::select()
            .expr(Expr::val(1))
            .from(Alias::new(SPENT_KEYS))
            .and_where(
                Expr::col((Alias::new(SPENT_KEYS), Alias::new("dedupe_key")))
                    .equals((entity::Entity, entity::Column::DedupeKey)),
            )
            .and_where(Expr::col((Alias::new(SPENT_KEYS), Alias::new("moved_at"))).lte(settled))
            .to_owned();
        let remove = Query::delete()
            .from_table(entity::Entity)
            .and_where(Expr::col(entity::Column::Id).is_in(page.iter().map(|job| job.id.clone())))
            .and_where(Expr::col(entity::Column::Status).is_in([status::DONE, status::DISCARDED]))
            .cond_where(
                sea_orm::Condition::any()
                    .add(Expr::col(entity::Column::DedupeKey).is_null())
                    .add(Expr::exists(settled_key)),
            )
            .to_owned();
        let write = crate::db::write_once(&self.db).await?;
        let spent = match spend {
            Some(spend) => write
                .execute_raw(backend.build(&spend))
                .await
                .map_err(db_error)?
                .rows_affected(),
            None => 0,
        };
        let removed = write
            .execute_raw(backend.build(&remove))
            .await
            .map_err(db_error)?
            .rows_affected();
        write.commit().await?;
        Ok((spent, removed))
    }

    /// Sweeps finished jobs now and every [`SWEEP_EVERY`] until `shutdown`.
    async fn keep_retention(self, shutdown: CancellationToken) {
        if self.options.retention_seconds == 0 {
            return;
        }
        loop {
            if let Err(error) = Box::pin(self.sweep_finished()).await {
                tracing::warn!(%error, "sweeping finished outbox jobs failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }
}

/// What operators see of the outbox and may do to it, exposed by every
/// service as `ListOutboxJobs`, `RetryOutboxJob` and `DiscardOutboxJob`.
impl Outbox {
    /// Every job counted by status (`retrying` apart from `pending`); with
    /// `unfinished_only` the finished ones (done, discarded) are left at 0,
    /// and the count reads through the claim index (status first) only the
    /// jobs not finished, however many finished ones are kept.
    pub async fn counts(&self, unfinished_only: bool) -> Result<pb::OutboxCounts> {
        use sea_orm::{FromQueryResult, PaginatorTrait, QuerySelect};
        #[derive(FromQueryResult)]
        struct Count {
            status: String,
            count: i64,
        }
        let mut query = entity::Entity::find();
        if unfinished_only {
            query = query.filter(entity::Column::Status.is_in([
                status::PENDING,
                status::RUNNING,
                status::DEAD,
            ]));
        }
        let rows = query
            .select_only()
            .column(entity::Column::Status)
            .column_as(entity::Column::Id.count(), "count")
            .group_by(entity::Column::Status)
            .into_model::<Count>()
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let retrying = entity::Entity::find()
            .filter(entity::Column::Status.eq(status::PENDING))
            .filter(entity::Column::Attempts.gt(0))
            .count(&self.db)
            .await
            .map_err(db_error)?;
        let mut counts = pb::OutboxCounts::default();
        for row in rows {
            let count = row.count.max(0) as u64;
            match row.status.as_str() {
                status::PENDING => counts.pending += count.saturating_sub(retrying),
                status::RUNNING => counts.running += count,
                status::DONE => counts.done += count,
                status::DISCARDED => counts.discarded += count,
                _ => counts.dead += count,
            }
        }
        counts.retrying = retrying;
        Ok(counts)
    }

    /// A page of jobs, newest first, with the counts by status.
    pub async fn list_jobs(
        &self,
        request: &pb::ListOutboxJobsRequest,
    ) -> Result<pb::ListOutboxJobsResponse> {
        use sea_orm::QuerySelect;
        let page = crate::paging::Page::from_request(request.page.as_ref());
        let mut query = entity::Entity::find()
            .order_by_desc(entity::Column::Id)
            .limit(page.fetch_limit());
        query = match request.status.trim() {
            "" => query.filter(entity::Column::Status.is_in([
                status::PENDING,
                status::RUNNING,
                status::DEAD,
            ])),
            status::RETRYING => query
                .filter(entity::Column::Status.eq(status::PENDING))
                .filter(entity::Column::Attempts.gt(0)),
            status::PENDING => query
                .filter(entity::Column::Status.eq(status::PENDING))
                .filter(entity::Column::Attempts.eq(0)),
            wanted @ (status::RUNNING | status::DONE | status::DEAD | status::DISCARDED) => {
                query.filter(entity::Column::Status.eq(wanted))
            }
            _ => {
                return Err(Error::invalid_field(
                    "status",
                    "must be pending, retrying, running, done, dead or discarded",
                ));
            }
        };
        if !request.kind.trim().is_empty() {
            query = query.filter(entity::Column::Kind.eq(request.kind.trim()));
        }
        if let Some(after) = &page.after {
            query = query.filter(entity::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListOutboxJobsResponse {
            jobs: rows.iter().map(job_to_proto).collect(),
            page: Some(next),
            counts: Some(self.counts(request.unfinished_counts_only).await?),
        })
    }

    /// One job.
    pub async fn job(&self, job_id: &str) -> Result<entity::Model> {
        entity::Entity::find_by_id(job_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found(format!("no job {job_id}")))
    }

    /// Runs a dead-lettered, discarded or waiting job now with a fresh
    /// attempt budget, in `conn` (a transaction that also records who did
    /// it). A running or done job is a conflict. Call [`Outbox::wake`] after
    /// the transaction commits.
    pub async fn retry_job(
        &self,
        conn: &impl ConnectionTrait,
        job_id: &str,
    ) -> Result<entity::Model> {
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
            .filter(entity::Column::Status.is_in([
                status::DEAD,
                status::DISCARDED,
                status::PENDING,
            ]))
            .exec(conn)
            .await
            .map_err(db_error)?;
        self.after_action(conn, job_id, result.rows_affected, "retried")
            .await
    }

    /// Gives up a job that is pending or dead-lettered: it is marked
    /// `discarded` and never runs. Discarding a discarded job changes
    /// nothing; a running or done job is a conflict.
    pub async fn discard_job(
        &self,
        conn: &impl ConnectionTrait,
        job_id: &str,
    ) -> Result<entity::Model> {
        let now = truncate_micros(self.clock.now());
        let result = entity::Entity::update_many()
            .set(entity::ActiveModel {
                status: Set(status::DISCARDED.to_owned()),
                updated_at: Set(now),
                finished_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(entity::Column::Id.eq(job_id))
            .filter(entity::Column::Status.is_in([status::DEAD, status::PENDING]))
            .exec(conn)
            .await
            .map_err(db_error)?;
        let row = self
            .after_action(conn, job_id, result.rows_affected, "discarded")
            .await;
        match row {
            Err(error) if error.code() == ErrorCode::Conflict => {
                let row = job_in(conn, job_id).await?;
                if row.status == status::DISCARDED {
                    Ok(row)
                } else {
                    Err(error)
                }
            }
            other => other,
        }
    }

    async fn after_action(
        &self,
        conn: &impl ConnectionTrait,
        job_id: &str,
        changed: u64,
        done: &str,
    ) -> Result<entity::Model> {
        let row = job_in(conn, job_id).await?;
        if changed == 0 {
            return Err(Error::conflict(format!(
                "job {job_id} is {} and cannot be {done}",
                row.status
            )));
        }
        Ok(row)
    }
}

async fn job_in(conn: &impl ConnectionTrait, job_id: &str) -> Result<entity::Model> {
    entity::Entity::find_by_id(job_id.to_owned())
        .one(conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::not_found(format!("no job {job_id}")))
}

/// How operators name a job's status: a pending job that failed before is
/// `retrying`.
pub fn operator_status(row: &entity::Model) -> &str {
    if row.status == status::PENDING && row.attempts > 0 {
        status::RETRYING
    } else {
        &row.status
    }
}

/// A job as the admin API answers it.
pub fn job_to_proto(row: &entity::Model) -> pb::OutboxJob {
    use marketbridge_core::time::to_timestamp;
    pb::OutboxJob {
        id: row.id.clone(),
        kind: row.kind.clone(),
        payload_json: row.payload.clone(),
        status: operator_status(row).to_owned(),
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        run_at: Some(to_timestamp(row.run_at)),
        last_error: row.last_error.clone().unwrap_or_default(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        finished_at: row.finished_at.map(to_timestamp),
    }
}

fn truncate_text(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
