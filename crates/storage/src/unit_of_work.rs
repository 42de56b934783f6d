//! One unit of work per write: the idempotency check, the transaction, the
//! jobs the change causes and the worker's wake-up, owned in one place.
//!
//! ```ignore
//! let mut call = Call::new("provisioning.CreateResource", &key, &request, now).sealed(&cipher);
//! if let Some(answer) = call.replayed(&db).await? {
//!     return Ok(answer);            // the same call was answered before
//! }
//! let account = accounts.get(id).await?;   // remote reads: before the transaction
//! let mut work = unit_of_work!(call, &db, &outbox);
//! /* read and write rows through `&*work` */
//! work.enqueue(NewJob::of(&Job::Provision { .. })?).await?;
//! work.finish(answer).await          // records the answer, commits, wakes the worker
//! ```
//!
//! Invariant: nothing here calls the network, and while a [`UnitOfWork`] is
//! alive its task counts as holding a transaction, so an outbound call made
//! meanwhile is caught (`marketbridge_telemetry::transactions`).

use crate::db::WriteTxn;
use crate::idempotency::{self, IdempotentTxn, Started};
use crate::outbox::{HandedOver, NewJob, Outbox};
use chrono::{DateTime, Utc};
use marketbridge_core::Result;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::ids::JobId;
use prost::Message;
use sea_orm::DatabaseConnection;
use std::ops::Deref;

/// A mutating call: its idempotency scope and key, its request's
/// fingerprint, its start time and whether its stored answer is sealed.
#[derive(Clone)]
pub struct Call<'a> {
    scope: &'a str,
    key: &'a str,
    request: Vec<u8>,
    now: DateTime<Utc>,
    seal: Option<&'a Cipher>,
    /// No earlier answer is looked for on PostgreSQL before the
    /// transaction's commit: [`Call::replayed`] found none, or the call goes
    /// on without asking ([`Call::optimistic`]).
    checked: bool,
    /// The kind of job the call will cause, admitted before its
    /// transaction ([`Call::admitting`]).
    admits: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call of `scope` (`provisioning.CreateResource`) with the caller's
    /// idempotency `key` (empty: not idempotent) for `request`.
    pub fn new(scope: &'a str, key: &'a str, request: &impl Message, now: DateTime<Utc>) -> Self {
        Self {
            scope,
            key,
            request: if key.is_empty() {
                Vec::new()
            } else {
                request.encode_to_vec()
            },
            now,
            seal: None,
            checked: false,
            admits: None,
        }
    }

    /// A write that is not a call (a job's, a scheduler's): no idempotency
    /// record, only the transaction and its jobs.
    pub fn internal(now: DateTime<Utc>) -> Self {
        Self {
            scope: "",
            key: "",
            request: Vec::new(),
            now,
            seal: None,
            checked: false,
            admits: None,
        }
    }

    /// The stored answer is sealed with `cipher` (answers carrying secrets
    /// or personal data).
    pub fn sealed(mut self, cipher: &'a Cipher) -> Self {
        self.seal = Some(cipher);
        self
    }

    /// The answer of an earlier identical call, read without a transaction,
    /// so a replay costs one read and no remote call. A different request
    /// under the same key is refused here.
    pub async fn replayed<M: Message + Default>(
        &mut self,
        db: &DatabaseConnection,
    ) -> Result<Option<M>> {
        let answer =
            idempotency::replayed(db, self.seal, self.scope, self.key, &self.request).await?;
        self.checked = answer.is_none();
        Ok(answer)
    }

    /// Goes on without reading for an earlier answer first, for a call
    /// whose reads and decisions before its transaction have no side effect
    /// (a repeated call may repeat them). An earlier identical call is then
    /// found by its record's key at the commit on PostgreSQL (its answer is
    /// returned and nothing of this one kept), and by the check inside the
    /// transaction on SQLite. A call that fails before either must ask
    /// [`Call::replayed`] before it answers with its error, so a repeated
    /// call still gets the first one's answer. Saves a read per call.
    pub fn optimistic(mut self) -> Self {
        self.checked = true;
        self
    }

    /// The call will cause a job of `kind`: before its transaction begins
    /// it waits, while this process's worker has that kind's lane full of
    /// jobs that are finishing, for one to end (`outbox.intake_wait_ms` at
    /// most), and its job is then handed to the worker in that slot. The
    /// API so takes work no faster than the worker runs it.
    pub fn admitting(mut self, kind: &'a str) -> Self {
        self.admits = Some(kind);
        self
    }

    /// Starts the transaction, checking the key again inside it, except on
    /// PostgreSQL after [`Call::replayed`] found nothing: there the check
    /// would read on the pool once more, and an identical call that commits
    /// in between is caught by the record's key at the commit anyway
    /// ([`UnitOfWork::finish`] answers with that call's answer and keeps
    /// nothing of this one).
    pub async fn begin<M: Message + Default>(
        self,
        db: &DatabaseConnection,
        outbox: &Outbox,
    ) -> Result<Started<M, UnitOfWork>> {
        let admitted = match self.admits {
            Some(kind) => outbox.admit(kind).await,
            None => None,
        };
        let started = idempotency::start_encoded(
            db,
            self.seal,
            self.scope,
            self.key,
            &self.request,
            self.now,
            self.checked,
        )
        .await?;
        Ok(match started {
            Started::Replay(answer) => Started::Replay(answer),
            Started::Fresh(txn) => Started::Fresh(UnitOfWork {
                txn,
                outbox: outbox.clone(),
                enqueued: 0,
                handed: Vec::new(),
                admitted: admitted.into_iter().collect(),
            }),
        })
    }
}

/// A transaction in progress, with the jobs it enqueued; see the module
/// documentation.
pub struct UnitOfWork {
    txn: IdempotentTxn,
    outbox: Outbox,
    /// Jobs left pending: the worker is woken for them after the commit.
    enqueued: usize,
    /// Jobs written claimed by this process's worker, given to it after the
    /// commit.
    handed: Vec<HandedOver>,
    /// Slots the call was admitted with and has not used yet; those left
    /// are given back when the work ends.
    admitted: Vec<HandedOver>,
}

impl Deref for UnitOfWork {
    type Target = WriteTxn;

    fn deref(&self) -> &WriteTxn {
        &self.txn
    }
}

impl UnitOfWork {
    /// A plain write transaction with jobs, for work that is not an
    /// idempotent call (jobs, scheduled work).
    pub async fn begin(db: &DatabaseConnection, outbox: &Outbox) -> Result<Self> {
        let now = outbox.clock().now();
        match Call::internal(now).begin::<()>(db, outbox).await? {
            Started::Fresh(work) => Ok(work),
            Started::Replay(()) => unreachable!("a call without a key never replays"),
        }
    }

    /// The time the call started at.
    pub fn now(&self) -> DateTime<Utc> {
        self.txn.now()
    }

    /// Names the account the call concerns (see
    /// [`IdempotentTxn::concerning`]).
    pub fn concerning(&mut self, account_id: impl AsRef<str>) {
        self.txn.concerning(account_id.as_ref());
    }

    /// Enqueues a job in this transaction; after the commit the worker is
    /// woken, or given the job at once when it has a slot for it (see
    /// [`HandedOver`]). `None` when a job with the same dedupe key exists.
    pub async fn enqueue(&mut self, job: NewJob) -> Result<Option<JobId>> {
        let (id, handed) = self
            .outbox
            .enqueue_here(&*self.txn, job, &mut self.admitted)
            .await?;
        self.keep(id.is_some(), handed);
        Ok(id)
    }

    /// Enqueues a job with the inserts this transaction holds for its next
    /// statement or its commit ([`WriteTxn::insert_at_commit`]): a call that
    /// only inserts is one statement on PostgreSQL. Unlike
    /// [`UnitOfWork::enqueue`] it cannot tell whether a job with the same
    /// dedupe key was there already (that one is kept), so a job with a key
    /// is handed to the worker only when the key is declared new
    /// ([`NewJob::key_is_new`]); otherwise the worker is woken after the
    /// commit.
    pub fn enqueue_at_commit(&mut self, job: NewJob) -> JobId {
        let (id, handed) = self
            .outbox
            .enqueue_at_commit_here(&self.txn, job, &mut self.admitted);
        self.keep(true, handed);
        id
    }

    fn keep(&mut self, enqueued: bool, handed: Option<HandedOver>) {
        match handed {
            Some(handed) => self.handed.push(handed),
            None => self.enqueued += usize::from(enqueued),
        }
    }

    /// Records `answer` (when the call had a key), commits, and wakes the
    /// worker or hands it the jobs enqueued. When a concurrent identical
    /// call won, its answer is returned and nothing of this one is kept.
    pub async fn finish<M: Message + Default>(self, answer: M) -> Result<M> {
        let UnitOfWork {
            txn,
            outbox,
            enqueued,
            handed,
            admitted,
        } = self;
        // Unused slots go back before the commit's wait, to calls waiting.
        drop(admitted);
        let (answer, committed) = txn.finish_committed(answer).await?;
        if committed {
            handed.into_iter().for_each(HandedOver::deliver);
        }
        if enqueued > 0 {
            outbox.wake();
        }
        Ok(answer)
    }

    /// Commits without recording an answer, and wakes the worker or hands
    /// it the jobs enqueued.
    pub async fn commit(self) -> Result<()> {
        let UnitOfWork {
            txn,
            outbox,
            enqueued,
            handed,
            admitted,
        } = self;
        // Unused slots go back before the commit's wait, to calls waiting.
        drop(admitted);
        txn.commit_without_record().await?;
        handed.into_iter().for_each(HandedOver::deliver);
        if enqueued > 0 {
            outbox.wake();
        }
        Ok(())
    }
}

/// Begins a [`UnitOfWork`] for a [`Call`] in a function returning
/// `Result<Answer>`: on a replay it returns the stored answer from the
/// enclosing function.
///
/// ```ignore
/// let mut work = unit_of_work!(call, &self.db, &self.outbox);
/// ```
#[macro_export]
macro_rules! unit_of_work {
    ($call:expr, $db:expr, $outbox:expr) => {
        match $call.begin($db, $outbox).await? {
            $crate::idempotency::Started::Replay(answer) => return Ok(answer),
            $crate::idempotency::Started::Fresh(work) => work,
        }
    };
}
