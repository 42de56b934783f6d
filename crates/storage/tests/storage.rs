//! The outbox and idempotency records, on SQLite and PostgreSQL.

use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use marketbridge_config::OutboxOptions;
use marketbridge_core::ErrorCode;
use marketbridge_core::time::{Clock, ManualClock, SharedClock};
use marketbridge_proto::common::v1::MarketplaceRef;
use marketbridge_storage::outbox::{Job, JobError, JobHandler, NewJob, Outbox, status};
use marketbridge_storage::sea_orm::{DatabaseConnection, TransactionTrait};
use marketbridge_storage::sea_orm_migration::prelude::*;
use marketbridge_storage::testing::open_with_shared_tables;
use marketbridge_storage::{Call, backend_test, connect};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap())
}

fn options() -> OutboxOptions {
    OutboxOptions {
        max_attempts: 4,
        backoff_initial_ms: 1000,
        backoff_max_ms: 10_000,
        lease_seconds: 30,
        ..Default::default()
    }
}

/// Counts calls per job id and fails the first `failures` attempts of each.
#[derive(Default)]
struct CountingHandler {
    calls: Mutex<HashMap<String, u32>>,
    failures: u32,
    permanent: bool,
}

#[async_trait]
impl JobHandler for CountingHandler {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let mut calls = self.calls.lock().unwrap();
        let count = calls.entry(job.id.clone()).or_default();
        *count += 1;
        if *count <= self.failures {
            return Err(if self.permanent {
                JobError::Permanent("refused".into())
            } else {
                JobError::Retry("upstream 503".into())
            });
        }
        Ok(())
    }
}

backend_test!(
    a_rolled_back_change_leaves_no_job_and_a_committed_one_runs_once,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options());
        let txn = db.begin().await.unwrap();
        outbox
            .enqueue(&txn, NewJob::new("test.rolled_back", &"x").unwrap())
            .await
            .unwrap();
        txn.rollback().await.unwrap();
        let txn = db.begin().await.unwrap();
        outbox
            .enqueue(&txn, NewJob::new("test.committed", &"y").unwrap())
            .await
            .unwrap();
        txn.commit().await.unwrap();

        let handler = CountingHandler::default();
        assert_eq!(outbox.drain(&handler).await.unwrap(), 1);
        assert_eq!(outbox.drain(&handler).await.unwrap(), 0);
        assert!(
            outbox
                .jobs_of_kind("test.rolled_back")
                .await
                .unwrap()
                .is_empty()
        );
        let done = outbox.jobs_of_kind("test.committed").await.unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].status, status::DONE);
        assert_eq!(
            handler
                .calls
                .lock()
                .unwrap()
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![1]
        );
    }
);

backend_test!(failures_back_off_then_succeed, |database| async move {
    let db = open_with_shared_tables(&database).await;
    let clock = clock();
    let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options());
    outbox
        .enqueue(&db, NewJob::new("test.flaky", &1).unwrap())
        .await
        .unwrap();
    let handler = CountingHandler {
        failures: 2,
        ..Default::default()
    };

    assert_eq!(outbox.drain(&handler).await.unwrap(), 1, "first attempt");
    assert_eq!(
        outbox.drain(&handler).await.unwrap(),
        0,
        "not due before the backoff"
    );
    let job = &outbox.jobs_of_kind("test.flaky").await.unwrap()[0];
    assert_eq!((job.status.as_str(), job.attempts), (status::PENDING, 1));
    assert_eq!(job.last_error.as_deref(), Some("upstream 503"));
    assert!(job.run_at >= clock.now() + ChronoDuration::seconds(1));

    clock.advance(ChronoDuration::seconds(2));
    assert_eq!(outbox.drain(&handler).await.unwrap(), 1, "second attempt");
    clock.advance(ChronoDuration::seconds(1));
    assert_eq!(
        outbox.drain(&handler).await.unwrap(),
        0,
        "the delay doubled"
    );
    clock.advance(ChronoDuration::seconds(2));
    assert_eq!(
        outbox.drain(&handler).await.unwrap(),
        1,
        "third attempt succeeds"
    );
    let job = &outbox.jobs_of_kind("test.flaky").await.unwrap()[0];
    assert_eq!((job.status.as_str(), job.attempts), (status::DONE, 3));
});

backend_test!(
    exhausted_and_permanent_failures_are_dead_lettered_and_can_be_retried,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options());
        outbox
            .enqueue(&db, NewJob::new("test.always_failing", &1).unwrap())
            .await
            .unwrap();
        let handler = CountingHandler {
            failures: u32::MAX,
            ..Default::default()
        };
        for _ in 0..4 {
            outbox.drain(&handler).await.unwrap();
            clock.advance(ChronoDuration::seconds(60));
        }
        let dead = outbox.dead_jobs().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 4);

        outbox
            .enqueue(&db, NewJob::new("test.refused", &2).unwrap())
            .await
            .unwrap();
        let refusing = CountingHandler {
            failures: 1,
            permanent: true,
            ..Default::default()
        };
        outbox.drain(&refusing).await.unwrap();
        let dead = outbox.dead_jobs().await.unwrap();
        assert_eq!(dead.len(), 2);
        let refused = dead.iter().find(|j| j.kind == "test.refused").unwrap();
        assert_eq!(refused.attempts, 1, "a permanent failure is not retried");

        outbox.retry_dead(&refused.id).await.unwrap();
        outbox.drain(&refusing).await.unwrap();
        assert_eq!(
            outbox.jobs_of_kind("test.refused").await.unwrap()[0].status,
            status::DONE
        );
        assert_eq!(outbox.stats().await.unwrap().dead, 1);
    }
);

backend_test!(dedupe_keys_enqueue_once, |database| async move {
    let db = open_with_shared_tables(&database).await;
    let outbox = Outbox::new(db.clone(), Arc::new(clock()), options());
    let first = outbox
        .enqueue(&db, NewJob::new("test.once", &1).unwrap().dedupe_key("k1"))
        .await
        .unwrap();
    let txn = db.begin().await.unwrap();
    let second = outbox
        .enqueue(&txn, NewJob::new("test.once", &2).unwrap().dedupe_key("k1"))
        .await
        .unwrap();
    // The conflict must not poison the surrounding transaction (PostgreSQL).
    outbox
        .enqueue(&txn, NewJob::new("test.other", &3).unwrap())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert!(first.is_some());
    assert!(second.is_none());
    assert_eq!(outbox.jobs_of_kind("test.once").await.unwrap().len(), 1);
    assert_eq!(outbox.jobs_of_kind("test.other").await.unwrap().len(), 1);
});

backend_test!(
    concurrent_workers_never_run_a_job_twice,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock: SharedClock = Arc::new(clock());
        let options = OutboxOptions {
            batch_size: 3,
            ..options()
        };
        let outbox = Outbox::new(db.clone(), clock.clone(), options.clone());
        for n in 0..60 {
            outbox
                .enqueue(&db, NewJob::new("test.parallel", &n).unwrap())
                .await
                .unwrap();
        }
        let handler = Arc::new(CountingHandler::default());
        let mut workers = Vec::new();
        for _ in 0..3 {
            let outbox = Outbox::new(
                connect(database.url()).await.unwrap(),
                clock.clone(),
                options.clone(),
            );
            let handler = handler.clone();
            workers.push(tokio::spawn(async move {
                outbox.drain(handler.as_ref()).await.unwrap()
            }));
        }
        let mut total = 0;
        for worker in workers {
            total += worker.await.unwrap();
        }
        assert_eq!(total, 60);
        let calls = handler.calls.lock().unwrap();
        assert_eq!(calls.len(), 60);
        assert!(
            calls.values().all(|&n| n == 1),
            "a job ran twice: {calls:?}"
        );
    }
);

/// A receiving server that applies each delivery once per idempotency key,
/// and counts every request it sees.
#[derive(Default)]
struct Sink {
    requests: AtomicUsize,
    applied: Mutex<HashMap<String, String>>,
}

async fn receive(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: String) -> &'static str {
    sink.requests.fetch_add(1, Ordering::SeqCst);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    sink.applied.lock().unwrap().entry(key).or_insert(body);
    "ok"
}

/// Delivers the payload over HTTP with the job id as idempotency key. The
/// job named in `hang_on` hangs after delivering, like a process that dies
/// before recording success.
struct HttpDelivery {
    client: reqwest::Client,
    url: String,
    hang_on: Option<String>,
}

#[async_trait]
impl JobHandler for HttpDelivery {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let response = self
            .client
            .post(&self.url)
            .header("idempotency-key", &job.id)
            .body(job.payload.clone())
            .send()
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        if !response.status().is_success() {
            return Err(JobError::Retry(response.status().to_string()));
        }
        if self.hang_on.as_deref() == Some(job.payload.as_str()) {
            futures::future::pending::<()>().await;
        }
        Ok(())
    }
}

backend_test!(
    deliveries_are_applied_exactly_once_across_a_worker_restart,
    |database| async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sink = Arc::new(Sink::default());
        let app = axum::Router::new()
            .route("/deliver", axum::routing::post(receive))
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/deliver", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let options = OutboxOptions {
            batch_size: 4,
            ..options()
        };
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options.clone());
        for n in 0..20 {
            outbox
                .enqueue(
                    &db,
                    NewJob::new("test.deliver", &format!("delivery-{n:02}")).unwrap(),
                )
                .await
                .unwrap();
        }

        // First worker: hangs after delivering delivery-06, then is killed.
        let first = HttpDelivery {
            client: reqwest::Client::new(),
            url: url.clone(),
            hang_on: Some("\"delivery-06\"".into()),
        };
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(Arc::new(first), shutdown.clone()));
        while sink.applied.lock().unwrap().len() < 7 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        worker.abort();
        let _ = worker.await;
        drop(db);

        // Restart: a new pool and worker, after the dead worker's lease expired.
        clock.advance(ChronoDuration::seconds(31));
        let db = connect(database.url()).await.unwrap();
        let restarted = Outbox::new(db.clone(), Arc::new(clock.clone()), options);
        let second = HttpDelivery {
            client: reqwest::Client::new(),
            url,
            hang_on: None,
        };
        restarted.drain(&second).await.unwrap();

        let applied = sink.applied.lock().unwrap().clone();
        let mut bodies: Vec<String> = applied.values().cloned().collect();
        bodies.sort();
        let expected: Vec<String> = (0..20).map(|n| format!("\"delivery-{n:02}\"")).collect();
        assert_eq!(bodies, expected, "every delivery applied exactly once");
        assert!(sink.requests.load(Ordering::SeqCst) >= 20);
        let stats = restarted.stats().await.unwrap();
        assert_eq!(
            (stats.done, stats.pending, stats.running, stats.dead),
            (20, 0, 0, 0)
        );
    }
);

fn request(external_id: &str) -> MarketplaceRef {
    MarketplaceRef {
        marketplace: 1,
        external_id: external_id.into(),
    }
}

/// The side effect: a job per successful call.
async fn idempotent_call(
    db: &DatabaseConnection,
    outbox: &Outbox,
    key: &str,
    body: &MarketplaceRef,
) -> marketbridge_core::Result<MarketplaceRef> {
    let call = Call::new("test.Call", key, body, Utc::now());
    let mut work = marketbridge_storage::unit_of_work!(call, db, outbox);
    work.enqueue(NewJob::new("test.effect", &body.external_id)?)
        .await?;
    let response = MarketplaceRef {
        marketplace: 2,
        external_id: format!("done-{}", body.external_id),
    };
    work.finish(response).await
}

backend_test!(
    idempotency_keys_replay_and_refuse_reuse,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options());
        let body = request("a");
        let first = idempotent_call(&db, &outbox, "key-1", &body).await.unwrap();
        let replay = idempotent_call(&db, &outbox, "key-1", &body).await.unwrap();
        assert_eq!(first, replay);
        assert_eq!(
            outbox.jobs_of_kind("test.effect").await.unwrap().len(),
            1,
            "one side effect"
        );

        let error = idempotent_call(&db, &outbox, "key-1", &request("b"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::IdempotencyKeyReused);
        assert_eq!(outbox.jobs_of_kind("test.effect").await.unwrap().len(), 1);

        // No key: every call acts.
        idempotent_call(&db, &outbox, "", &body).await.unwrap();
        idempotent_call(&db, &outbox, "", &body).await.unwrap();
        assert_eq!(outbox.jobs_of_kind("test.effect").await.unwrap().len(), 3);
    }
);

backend_test!(
    concurrent_calls_with_one_key_act_once,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options());
        let body = request("same");
        let calls = (0..8).map(|_| {
            let db = db.clone();
            let outbox = outbox.clone();
            let body = body.clone();
            tokio::spawn(async move { idempotent_call(&db, &outbox, "race", &body).await })
        });
        let mut answers = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(answer) => answers.push(answer),
                // SQLite may refuse a writer while another holds the lock.
                Err(error) => assert!(error.code().is_transient(), "{error}"),
            }
        }
        assert!(!answers.is_empty());
        assert!(answers.iter().all(|a| a.external_id == "done-same"));
        assert_eq!(
            outbox.jobs_of_kind("test.effect").await.unwrap().len(),
            1,
            "one side effect"
        );
    }
);

/// A side effect that waits at a gate first (when it has one), then checks
/// the job's lease right before acting, as marketplace handlers do.
struct GatedEffect {
    started: Arc<tokio::sync::Semaphore>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
    effects: Arc<Mutex<Vec<(String, String)>>>,
}

#[async_trait]
impl JobHandler for GatedEffect {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        self.started.add_permits(1);
        if let Some(gate) = &self.gate {
            let _open = gate.acquire().await.expect("gate");
        }
        job.ensure_held().await?;
        self.effects
            .lock()
            .unwrap()
            .push((job.kind.clone(), job.id.clone()));
        Ok(())
    }
}

/// A worker running jobs with a [`GatedEffect`] whose gate is closed: each
/// job it starts waits until a permit is added to `gate`.
struct GatedWorker {
    worker: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    gate: Arc<tokio::sync::Semaphore>,
    /// One permit per job started.
    started: Arc<tokio::sync::Semaphore>,
    effects: Arc<Mutex<Vec<(String, String)>>>,
}

impl GatedWorker {
    fn start(outbox: &Outbox) -> Self {
        let effects = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(tokio::sync::Semaphore::new(0));
        let handler = GatedEffect {
            started: started.clone(),
            gate: Some(gate.clone()),
            effects: effects.clone(),
        };
        let stop = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(Arc::new(handler), stop.clone()));
        Self {
            worker,
            stop,
            gate,
            started,
            effects,
        }
    }
}

/// Opens `gate` (each job passing returns its permit) and waits until the
/// outbox counts `jobs` jobs done.
async fn open_gate_until_done(outbox: &Outbox, gate: &tokio::sync::Semaphore, jobs: u64) {
    gate.add_permits(1);
    while outbox.stats().await.unwrap().done < jobs {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn job_row(db: &DatabaseConnection, id: &str) -> marketbridge_storage::outbox::entity::Model {
    use marketbridge_storage::sea_orm::EntityTrait;
    marketbridge_storage::outbox::entity::Entity::find_by_id(id.to_owned())
        .one(db)
        .await
        .unwrap()
        .expect("job row")
}

backend_test!(
    a_worker_whose_lease_expired_does_not_act_while_another_has_the_job,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        // A lease far longer than the test: the first worker's heartbeat
        // never fires, as if its process were frozen.
        let options = OutboxOptions {
            lease_seconds: 600,
            ..options()
        };
        let first = Outbox::new(db.clone(), Arc::new(clock.clone()), options.clone());
        let second = Outbox::new(db.clone(), Arc::new(clock.clone()), options);
        let id = first
            .enqueue(&db, NewJob::new("test.effect", &"once").unwrap())
            .await
            .unwrap()
            .unwrap();
        let GatedWorker {
            worker,
            stop,
            gate,
            started: first_started,
            effects,
        } = GatedWorker::start(&first);
        let _ = first_started.acquire().await.unwrap();

        // The lease runs out; a second worker claims the job and acts.
        clock.advance(ChronoDuration::seconds(601));
        let prompt = GatedEffect {
            started: Arc::new(tokio::sync::Semaphore::new(0)),
            gate: None,
            effects: effects.clone(),
        };
        assert_eq!(second.run_once(&prompt).await.unwrap(), 1);
        assert_eq!(effects.lock().unwrap().len(), 1);

        // The first worker wakes up: it must not act, nor record anything.
        gate.add_permits(1);
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(
            effects.lock().unwrap().clone(),
            vec![("test.effect".to_owned(), id.to_string())],
            "one side effect for the job"
        );
        let row = job_row(&db, id.as_ref()).await;
        assert_eq!((row.status.as_str(), row.attempts), (status::DONE, 2));
    }
);

backend_test!(
    a_long_job_keeps_its_lease_by_renewal,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        // A one-second lease: the heartbeat renews it every third of a second.
        let options = OutboxOptions {
            lease_seconds: 1,
            ..options()
        };
        let runner = Outbox::new(db.clone(), Arc::new(clock.clone()), options.clone());
        let other = Outbox::new(db.clone(), Arc::new(clock.clone()), options);
        let id = runner
            .enqueue(&db, NewJob::new("test.effect", &"long").unwrap())
            .await
            .unwrap()
            .unwrap();
        let GatedWorker {
            worker,
            stop,
            gate,
            started,
            effects,
        } = GatedWorker::start(&runner);
        let _ = started.acquire().await.unwrap();

        let idle = GatedEffect {
            started: Arc::new(tokio::sync::Semaphore::new(0)),
            gate: None,
            effects: effects.clone(),
        };
        // Four times 600 ms of (manual) time: well past the first lease.
        for _ in 0..4 {
            clock.advance(ChronoDuration::milliseconds(600));
            let wanted = clock.now() + ChronoDuration::milliseconds(500);
            let mut renewed = false;
            for _ in 0..600 {
                if job_row(&db, id.as_ref()).await.locked_until > Some(wanted) {
                    renewed = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(renewed, "the running job's lease was renewed");
            assert_eq!(
                other.run_once(&idle).await.unwrap(),
                0,
                "nobody else claims it"
            );
        }
        gate.add_permits(1);
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(effects.lock().unwrap().len(), 1);
        let row = job_row(&db, id.as_ref()).await;
        assert_eq!((row.status.as_str(), row.attempts), (status::DONE, 1));
    }
);

backend_test!(
    by_default_one_kind_of_job_runs_thirty_two_at_once,
    |database| async move {
        // A job keeps its slot until its outcome is committed, so one kind
        // drains at its lane's width over a job's time: the default lane
        // must be wide enough for a provision's job to keep up with the
        // provisions (see README, Benchmark).
        let db = open_with_shared_tables(&database).await;
        let outbox = Outbox::new(db.clone(), Arc::new(clock()), options());
        for n in 0..40 {
            outbox
                .enqueue(&db, NewJob::new("test.bulk", &n).unwrap())
                .await
                .unwrap();
        }
        let GatedWorker {
            worker,
            stop,
            gate,
            started,
            effects,
        } = GatedWorker::start(&outbox);
        let _all_started =
            tokio::time::timeout(std::time::Duration::from_secs(30), started.acquire_many(32))
                .await
                .expect("32 jobs started side by side")
                .unwrap();
        assert_eq!(
            outbox.stats().await.unwrap().running,
            32,
            "the lane holds 32 jobs; the other 8 wait for a slot"
        );
        assert!(effects.lock().unwrap().is_empty(), "none finished yet");
        open_gate_until_done(&outbox, &gate, 40).await;
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(effects.lock().unwrap().len(), 40, "each job acted once");
    }
);

backend_test!(
    a_slow_kind_of_job_does_not_hold_up_other_kinds,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let options = OutboxOptions {
            batch_size: 8,
            ..options()
        };
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options);
        // Slow jobs first in line, then quick ones of another kind.
        for n in 0..6 {
            outbox
                .enqueue(&db, NewJob::new("test.slow", &n).unwrap())
                .await
                .unwrap();
        }
        clock.advance(ChronoDuration::seconds(1));
        for n in 0..3 {
            outbox
                .enqueue(&db, NewJob::new("test.quick", &n).unwrap())
                .await
                .unwrap();
        }
        let effects = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(tokio::sync::Semaphore::new(0));
        // One handler: slow jobs wait at the gate, quick ones do not.
        struct ByKind {
            slow: GatedEffect,
            quick: GatedEffect,
        }
        #[async_trait]
        impl JobHandler for ByKind {
            async fn handle(&self, job: &Job) -> Result<(), JobError> {
                match job.kind.as_str() {
                    "test.slow" => self.slow.handle(job).await,
                    _ => self.quick.handle(job).await,
                }
            }
        }
        let handler = ByKind {
            slow: GatedEffect {
                started: started.clone(),
                gate: Some(gate.clone()),
                effects: effects.clone(),
            },
            quick: GatedEffect {
                started: Arc::new(tokio::sync::Semaphore::new(0)),
                gate: None,
                effects: effects.clone(),
            },
        };
        let stop = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(Arc::new(handler), stop.clone()));
        let quick_done = || {
            effects
                .lock()
                .unwrap()
                .iter()
                .filter(|(kind, _)| kind == "test.quick")
                .count()
        };
        for _ in 0..600 {
            if quick_done() == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(quick_done(), 3, "quick jobs ran while slow ones waited");
        assert!(
            effects
                .lock()
                .unwrap()
                .iter()
                .all(|(kind, _)| kind == "test.quick"),
            "no slow job finished yet"
        );
        // The slow lane holds at most a quarter of the slots.
        let running = outbox.stats().await.unwrap().running;
        assert_eq!(running, 2, "two slow jobs run at once");

        open_gate_until_done(&outbox, &gate, 9).await;
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(effects.lock().unwrap().len(), 9, "each job acted once");
    }
);

backend_test!(
    one_replica_leads_a_task_and_another_takes_over_when_its_lease_runs_out,
    |database| async move {
        use marketbridge_storage::leader::Leadership;
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let first = Leadership::new(db.clone(), Arc::new(clock.clone()), "replica-a", 30);
        let second = Leadership::new(db.clone(), Arc::new(clock.clone()), "replica-b", 30);

        assert_eq!(first.try_lead("billing.scheduler").await.unwrap(), Some(1));
        assert_eq!(second.try_lead("billing.scheduler").await.unwrap(), None);
        // Another task is elected on its own.
        assert_eq!(
            second.try_lead("provisioning.usage_meter").await.unwrap(),
            Some(1)
        );
        clock.advance(ChronoDuration::seconds(20));
        assert_eq!(
            first.try_lead("billing.scheduler").await.unwrap(),
            Some(1),
            "renewed"
        );
        clock.advance(ChronoDuration::seconds(20));
        assert_eq!(
            second.try_lead("billing.scheduler").await.unwrap(),
            None,
            "renewal counts"
        );

        // The leader stops renewing (it died): the lease runs out.
        clock.advance(ChronoDuration::seconds(11));
        assert_eq!(second.try_lead("billing.scheduler").await.unwrap(), Some(2));
        assert_eq!(first.try_lead("billing.scheduler").await.unwrap(), None);
        let lease = second.current("billing.scheduler").await.unwrap().unwrap();
        assert_eq!((lease.holder.as_str(), lease.term), ("replica-b", 2));

        // A clean stop hands the task over at once.
        second.step_down("billing.scheduler").await.unwrap();
        assert_eq!(first.try_lead("billing.scheduler").await.unwrap(), Some(3));
    }
);

backend_test!(
    a_periodic_task_runs_on_one_replica_and_the_survivor_takes_it_over,
    |database| async move {
        use marketbridge_storage::leader::Leadership;
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let ticks: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(Vec::new()));
        let replica = |name: &'static str, stop: CancellationToken| {
            let leadership = Leadership::new(db.clone(), Arc::new(clock.clone()), name, 1);
            let ticks = ticks.clone();
            tokio::spawn(async move {
                leadership
                    .run_elected(
                        "test.periodic",
                        std::time::Duration::from_millis(10),
                        stop,
                        || {
                            let ticks = ticks.clone();
                            async move { ticks.lock().unwrap().push(name) }
                        },
                    )
                    .await
            })
        };
        let count = |name: &str| ticks.lock().unwrap().iter().filter(|n| **n == name).count();
        let wait_for = |name: &'static str, at_least: usize| {
            let ticks = ticks.clone();
            async move {
                for _ in 0..1200 {
                    if ticks.lock().unwrap().iter().filter(|n| **n == name).count() >= at_least {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                panic!("{name} never ran the task {at_least} times");
            }
        };

        let first = replica("a", CancellationToken::new());
        wait_for("a", 1).await;
        let second_stop = CancellationToken::new();
        let second = replica("b", second_stop.clone());
        let before = count("a");
        wait_for("a", before + 10).await;
        assert_eq!(count("b"), 0, "the follower never ran the task");

        // The leader dies without stepping down; its lease runs out.
        first.abort();
        let _ = first.await;
        let after_death = count("a");
        clock.advance(ChronoDuration::seconds(2));
        wait_for("b", 3).await;
        assert_eq!(count("a"), after_death);

        // A clean stop steps down: the lease is free at once.
        second_stop.cancel();
        second.await.unwrap();
        let probe = Leadership::new(db.clone(), Arc::new(clock.clone()), "c", 1);
        assert_eq!(probe.try_lead("test.periodic").await.unwrap(), Some(3));
    }
);

backend_test!(
    a_pooled_connection_the_server_dropped_while_idle_is_replaced,
    |database| async move {
        use marketbridge_storage::sea_orm::{ConnectionTrait, DbBackend, Statement};
        if database.backend() != marketbridge_storage::testing::TestBackend::Postgres {
            // SQLite connections are a local file's: nothing drops them.
            return;
        }
        let backend_pid = |db: DatabaseConnection| async move {
            db.query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_backend_pid() AS pid",
            ))
            .await
            .map(|row| row.expect("a row").try_get::<i32>("", "pid").expect("pid"))
        };
        let db = connect(database.url()).await.expect("connect");
        let pid = backend_pid(db.clone()).await.expect("first query");
        // The server (an operator, a failover, a proxy's timeout) ends the
        // pooled session while it sits idle.
        let admin = connect(database.url()).await.expect("connect");
        admin
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_terminate_backend($1)",
                [pid.into()],
            ))
            .await
            .expect("terminate");
        tokio::time::sleep(
            marketbridge_storage::db::PING_IF_IDLE_FOR + std::time::Duration::from_millis(500),
        )
        .await;
        // Checked out after that long idle, it is pinged, found gone and
        // replaced: the query runs on a fresh session.
        let fresh = backend_pid(db.clone())
            .await
            .expect("a query after the drop");
        assert_ne!(fresh, pid);

        // Connections ended while in use (not idle long enough to be
        // pinged) fail the statement that meets them as `unavailable`, a
        // retryable answer, and are not handed out again: retries reach a
        // fresh session.
        let ended = |pids: &'static str| {
            Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT {pids} FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ),
            )
        };
        // The pool may open a session of its own accord (to keep its
        // minimum) just after the others were ended; a statement that lands
        // on it rightly succeeds, and the sessions are ended once more.
        let mut rounds = 0;
        let error = loop {
            let terminated: Vec<i32> = admin
                .query_all_raw(ended("pid, pg_terminate_backend(pid) AS ended"))
                .await
                .expect("terminate")
                .iter()
                .map(|row| row.try_get::<i32>("", "pid").expect("pid"))
                .collect();
            // The sessions end a moment after the signal.
            for _ in 0..500 {
                if admin
                    .query_all_raw(ended("pid"))
                    .await
                    .expect("sessions")
                    .is_empty()
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            match backend_pid(db.clone()).await {
                Err(error) => break error,
                Ok(pid) => {
                    assert!(
                        !terminated.contains(&pid),
                        "an ended session answered a statement"
                    );
                    rounds += 1;
                    assert!(rounds < 5, "the pool never met an ended session");
                }
            }
        };
        let mut errors = vec![marketbridge_storage::db_error(error)];
        let next = loop {
            match backend_pid(db.clone()).await {
                Ok(pid) => break pid,
                Err(error) if errors.len() < 20 => {
                    errors.push(marketbridge_storage::db_error(error))
                }
                Err(error) => panic!("no retry reached a fresh session: {error}"),
            }
        };
        assert!(
            errors
                .iter()
                .all(|error| error.code() == ErrorCode::Unavailable),
            "{errors:?}"
        );
        assert_ne!(next, fresh);
    }
);

/// Waits until `outbox`'s worker takes jobs of `kind` handed over at a
/// commit (it has started and made its first claim, and has a slot free in
/// that lane).
async fn until_handed_over(outbox: &Outbox, kind: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !outbox.hands_over(kind) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never took hand-overs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Waits until `count` jobs are done.
async fn until_done(outbox: &Outbox, count: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stats = outbox.stats().await.unwrap();
        if stats.done >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs never finished: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// An outbox on `database` whose worker runs `handler` and takes jobs of
/// `kind` handed over at a commit.
struct Worked {
    db: DatabaseConnection,
    outbox: Outbox,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
}

async fn worked(
    database: &marketbridge_storage::testing::TestDatabase,
    options: OutboxOptions,
    handler: Arc<dyn JobHandler>,
    kind: &str,
) -> Worked {
    let db = open_with_shared_tables(database).await;
    let outbox = Outbox::new(db.clone(), Arc::new(clock()), options);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(outbox.clone().run(handler, shutdown.clone()));
    until_handed_over(&outbox, kind).await;
    Worked {
        db,
        outbox,
        shutdown,
        worker,
    }
}

/// The claims sent between two snapshots of the recorded statements.
fn claims_between(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> u64 {
    marketbridge_storage::testing::statements_between(before, after)
        .iter()
        .filter(|(sql, _)| sql.starts_with("UPDATE outbox_jobs SET status = 'running'"))
        .map(|(_, count)| count)
        .sum()
}

backend_test!(
    jobs_enqueued_while_the_worker_runs_are_handed_over_at_the_commit_and_run_once_unclaimed,
    |database| async move {
        use marketbridge_storage::UnitOfWork;
        use marketbridge_storage::testing::{record_statements, statement_counts};
        record_statements();
        // No poll during the test: a claim is made only when a job is left
        // pending (and the worker woken for it).
        let options = OutboxOptions {
            poll_interval_ms: 600_000,
            ..options()
        };
        let handler = Arc::new(CountingHandler::default());
        let Worked {
            db,
            outbox,
            shutdown,
            worker,
        } = worked(&database, options, handler.clone(), "test.handed").await;

        // Both ways a unit of work enqueues: at its commit's insert (without
        // a dedupe key, or with one declared new), and at once (a dedupe key
        // is fine there: the insert tells whether it was kept).
        let before = statement_counts();
        for n in 0..12 {
            let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
            let job = NewJob::new("test.handed", &n).unwrap();
            match n % 3 {
                0 => {
                    work.enqueue_at_commit(job);
                }
                1 => {
                    work.enqueue_at_commit(job.dedupe_key(format!("new-{n}")).key_is_new());
                }
                _ => {
                    let job = job.dedupe_key(format!("handed-{n}"));
                    assert!(work.enqueue(job).await.unwrap().is_some());
                }
            }
            work.commit().await.unwrap();
        }
        until_done(&outbox, 12).await;
        let handed = statement_counts();
        assert_eq!(
            claims_between(&before, &handed),
            0,
            "a job handed over is never claimed"
        );

        // A key that may be taken already cannot be handed over by the
        // commit's insert: the job is left pending and claimed.
        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        work.enqueue_at_commit(
            NewJob::new("test.handed", &"keyed")
                .unwrap()
                .dedupe_key("maybe-taken"),
        );
        work.commit().await.unwrap();
        until_done(&outbox, 13).await;
        assert!(claims_between(&handed, &statement_counts()) >= 1);

        shutdown.cancel();
        worker.await.unwrap();
        let calls = handler.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 13);
        assert!(
            calls.values().all(|&n| n == 1),
            "a job ran twice: {calls:?}"
        );
        for row in outbox.jobs_of_kind("test.handed").await.unwrap() {
            assert_eq!((row.status.as_str(), row.attempts), (status::DONE, 1));
        }
    }
);

backend_test!(
    a_job_handed_over_in_a_transaction_that_rolls_back_leaves_no_row_and_gives_its_slot_back,
    |database| async move {
        use marketbridge_storage::UnitOfWork;
        // One slot per lane: a slot not given back would stop hand-overs.
        let options = OutboxOptions {
            batch_size: 4,
            poll_interval_ms: 600_000,
            ..options()
        };
        let handler = Arc::new(CountingHandler::default());
        let Worked {
            db,
            outbox,
            shutdown,
            worker,
        } = worked(&database, options, handler.clone(), "test.rolled_back").await;

        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        work.enqueue_at_commit(NewJob::new("test.rolled_back", &"x").unwrap());
        assert!(
            !outbox.hands_over("test.rolled_back"),
            "the lane's one slot is promised to the job"
        );
        drop(work);
        assert!(outbox.hands_over("test.rolled_back"));
        assert!(
            outbox
                .jobs_of_kind("test.rolled_back")
                .await
                .unwrap()
                .is_empty()
        );

        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        work.enqueue_at_commit(NewJob::new("test.rolled_back", &"y").unwrap());
        work.commit().await.unwrap();
        until_done(&outbox, 1).await;
        shutdown.cancel();
        worker.await.unwrap();
        assert_eq!(handler.calls.lock().unwrap().len(), 1);
    }
);

/// Signals when a job starts, then never finishes it (a process that dies
/// while the job runs).
#[derive(Default)]
struct Hangs {
    started: tokio::sync::Notify,
}

#[async_trait]
impl JobHandler for Hangs {
    async fn handle(&self, _job: &Job) -> Result<(), JobError> {
        self.started.notify_one();
        futures::future::pending::<()>().await;
        Ok(())
    }
}

backend_test!(
    a_handed_over_job_is_no_other_replicas_until_its_lease_runs_out,
    |database| async move {
        use marketbridge_storage::UnitOfWork;
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let options = OutboxOptions {
            poll_interval_ms: 600_000,
            ..options()
        };
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options.clone());
        let hangs = Arc::new(Hangs::default());
        let worker = tokio::spawn(outbox.clone().run(hangs.clone(), CancellationToken::new()));
        until_handed_over(&outbox, "test.orphan").await;
        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        work.enqueue_at_commit(NewJob::new("test.orphan", &"z").unwrap());
        work.commit().await.unwrap();
        hangs.started.notified().await;

        // Another replica finds nothing to claim while the lease holds.
        let replica = Outbox::new(
            connect(database.url()).await.unwrap(),
            Arc::new(clock.clone()),
            options,
        );
        let counting = CountingHandler::default();
        assert_eq!(replica.drain(&counting).await.unwrap(), 0);

        // The process dies with the job running: its jobs are no longer
        // handed over, and the replica takes the job once the lease ends.
        worker.abort();
        let _ = worker.await;
        assert!(!outbox.hands_over("test.orphan"));
        clock.advance(ChronoDuration::seconds(31));
        assert_eq!(replica.drain(&counting).await.unwrap(), 1);
        let rows = replica.jobs_of_kind("test.orphan").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].status.as_str(), rows[0].attempts),
            (status::DONE, 2)
        );
        assert_eq!(
            counting
                .calls
                .lock()
                .unwrap()
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![1]
        );
    }
);

/// Runs each job once it is let through (`gate`), counting the runs per job.
struct Gated {
    gate: tokio::sync::Semaphore,
    runs: Mutex<HashMap<String, u32>>,
}

impl Default for Gated {
    fn default() -> Self {
        Self {
            gate: tokio::sync::Semaphore::new(0),
            runs: Mutex::default(),
        }
    }
}

#[async_trait]
impl JobHandler for Gated {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        self.gate
            .acquire()
            .await
            .expect("the gate stays open")
            .forget();
        *self.runs.lock().unwrap().entry(job.id.clone()).or_default() += 1;
        Ok(())
    }
}

/// Runs `call`, failing with `what` if it is kept waiting (the intake
/// waits of these tests are ten minutes).
async fn unhindered(call: impl std::future::Future<Output = ()>, what: &str) {
    if tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .is_err()
    {
        panic!("{what}");
    }
}

/// A worker (see [`worked`]) whose jobs wait at a closed gate, with lanes
/// of a quarter of `batch_size`; its polls and intake waits last ten
/// minutes, so only a freed slot moves a waiting call on here.
async fn gated_worked(
    database: &marketbridge_storage::testing::TestDatabase,
    batch_size: u32,
    kind: &str,
) -> (Arc<Gated>, Worked) {
    let options = OutboxOptions {
        batch_size,
        poll_interval_ms: 600_000,
        intake_wait_ms: 600_000,
        ..options()
    };
    let handler = Arc::new(Gated::default());
    let worked = worked(database, options, handler.clone(), kind).await;
    (handler, worked)
}

/// A call admitted for a job of `kind` that enqueues one and commits.
async fn admitted_call(db: &DatabaseConnection, outbox: &Outbox, kind: &str, n: u32) {
    use marketbridge_storage::idempotency::Started;
    let now = outbox.clock().now();
    let Started::Fresh(mut work) = Call::internal(now)
        .admitting(kind)
        .begin::<()>(db, outbox)
        .await
        .unwrap()
    else {
        unreachable!("a call without a key never replays")
    };
    work.enqueue_at_commit(NewJob::new(kind, &n).unwrap());
    work.commit().await.unwrap();
}

backend_test!(
    a_call_causing_a_job_waits_for_a_slot_of_its_lane_and_hands_its_job_over_in_it,
    |database| async move {
        use marketbridge_storage::idempotency::Started;
        use marketbridge_storage::testing::{record_statements, statement_counts};
        record_statements();
        // Lanes of 4 slots, of which calls fill 3 (one is kept for claims).
        let (
            handler,
            Worked {
                db,
                outbox,
                shutdown,
                worker,
            },
        ) = gated_worked(&database, 16, "test.intake").await;
        let before = statement_counts();

        // A call admitted that causes no job (it fails before its commit)
        // gives its slot back.
        let now = outbox.clock().now();
        let Started::Fresh(work) = Call::internal(now)
            .admitting("test.intake")
            .begin::<()>(&db, &outbox)
            .await
            .unwrap()
        else {
            unreachable!()
        };
        drop(work);

        // Three calls take the three slots, their jobs running (held at the
        // gate); none waits.
        for n in 0..3 {
            unhindered(
                admitted_call(&db, &outbox, "test.intake", n),
                "a call waited: a slot was not given back",
            )
            .await;
        }
        // The fourth waits for one of them to finish.
        let fourth = tokio::spawn({
            let (db, outbox) = (db.clone(), outbox.clone());
            async move { admitted_call(&db, &outbox, "test.intake", 3).await }
        });
        let mut fourth = std::pin::pin!(fourth);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), &mut fourth)
                .await
                .is_err(),
            "a call went on while its job's lane was full and moving"
        );
        // Another kind's lane is not full: its calls do not wait.
        unhindered(
            admitted_call(&db, &outbox, "test.other", 0),
            "a call waited for another kind's lane",
        )
        .await;
        handler.gate.add_permits(1);
        tokio::time::timeout(std::time::Duration::from_secs(20), &mut fourth)
            .await
            .expect("a finished job frees its slot for the waiting call")
            .unwrap();

        handler.gate.add_permits(100);
        until_done(&outbox, 5).await;
        assert_eq!(
            claims_between(&before, &statement_counts()),
            0,
            "every admitted call's job was handed over in its slot"
        );
        shutdown.cancel();
        worker.await.unwrap();
        let runs = handler.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 5);
        assert!(runs.values().all(|&n| n == 1), "a job ran twice: {runs:?}");
        for kind in ["test.intake", "test.other"] {
            for row in outbox.jobs_of_kind(kind).await.unwrap() {
                assert_eq!((row.status.as_str(), row.attempts), (status::DONE, 1));
            }
        }
    }
);

backend_test!(
    a_job_frees_its_lane_slot_when_its_handler_returns_not_when_its_outcome_is_recorded,
    |database| async move {
        use marketbridge_storage::sea_orm::ConnectionTrait;
        // Lanes of one slot, none kept for claims.
        let (
            handler,
            Worked {
                db,
                outbox,
                shutdown,
                worker,
            },
        ) = gated_worked(&database, 4, "test.early").await;
        // The job holds the lane's slot while its handler waits at the gate.
        admitted_call(&db, &outbox, "test.early", 0).await;
        let job = outbox.jobs_of_kind("test.early").await.unwrap().remove(0);
        assert!(!outbox.hands_over("test.early"), "the lane is full");
        // Its outcome cannot be recorded for now: its row is written by a
        // transaction left open (on SQLite that holds every write back).
        let blocker = db.begin().await.unwrap();
        blocker
            .execute_unprepared(
                "UPDATE outbox_jobs SET updated_at = updated_at WHERE kind = 'test.early'",
            )
            .await
            .unwrap();
        handler.gate.add_permits(1);
        // Well inside SQLite's busy timeout (10 s), after which the held
        // outcome would fail and end the job's task anyway.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !outbox.hands_over("test.early") {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot waited for the outcome's statement"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(handler.runs.lock().unwrap().get(&job.id), Some(&1));
        assert_eq!(
            outbox.job(&job.id).await.unwrap().status,
            status::RUNNING,
            "the outcome was recorded before the slot freed"
        );
        // Once the row is free the outcome is recorded.
        blocker.rollback().await.unwrap();
        until_done(&outbox, 1).await;
        shutdown.cancel();
        worker.await.unwrap();
        assert_eq!(handler.runs.lock().unwrap().len(), 1);
    }
);

backend_test!(
    a_call_does_not_wait_for_a_lane_whose_jobs_have_stopped_moving,
    |database| async move {
        let options = OutboxOptions {
            batch_size: 4,
            poll_interval_ms: 600_000,
            intake_wait_ms: 2_000,
            ..options()
        };
        let hangs = Arc::new(Hangs::default());
        let Worked {
            db, outbox, worker, ..
        } = worked(&database, options, hangs.clone(), "test.stuck").await;
        // The lane's one slot holds a job that never ends (a marketplace
        // that stopped answering).
        admitted_call(&db, &outbox, "test.stuck", 0).await;
        hangs.started.notified().await;
        // Once nothing has moved in the lane for a wait's length, a call
        // goes on at once, its job left pending for the lane.
        tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
        tokio::time::timeout(
            std::time::Duration::from_millis(1_500),
            admitted_call(&db, &outbox, "test.stuck", 1),
        )
        .await
        .expect("a call waited for a lane that was not moving");
        let rows = outbox.jobs_of_kind("test.stuck").await.unwrap();
        let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.contains(&status::RUNNING) && statuses.contains(&status::PENDING));
        worker.abort();
        let _ = worker.await;
    }
);

/// Fails the jobs of one kind for good; the others succeed.
struct Refuses(&'static str);

#[async_trait]
impl JobHandler for Refuses {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        if job.kind == self.0 {
            return Err(JobError::Permanent("refused".into()));
        }
        Ok(())
    }
}

/// The kinds of the jobs kept, sorted.
async fn kinds_kept(db: &DatabaseConnection) -> Vec<String> {
    use marketbridge_storage::outbox::entity;
    use marketbridge_storage::sea_orm::EntityTrait;
    let mut kinds: Vec<String> = entity::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.kind)
        .collect();
    kinds.sort();
    kinds
}

backend_test!(
    finished_jobs_go_after_their_retention_and_their_dedupe_keys_stay_spent,
    |database| async move {
        use marketbridge_storage::UnitOfWork;
        use marketbridge_storage::outbox::Swept;
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let options = OutboxOptions {
            retention_seconds: 3600,
            poll_interval_ms: 600_000,
            ..options()
        };
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options.clone());
        let job = |kind: &str| NewJob::new(kind, &kind).unwrap();
        for new in [
            job("test.keyed").dedupe_key("k-done"),
            job("test.plain"),
            job("test.refused").dedupe_key("k-dead"),
            job("test.discarded")
                .dedupe_key("k-discarded")
                .run_at(clock.now() + ChronoDuration::minutes(5)),
        ] {
            outbox.enqueue(&db, new).await.unwrap().expect("enqueued");
        }
        let discarded = outbox.jobs_of_kind("test.discarded").await.unwrap();
        outbox.discard_job(&db, &discarded[0].id).await.unwrap();
        assert_eq!(outbox.drain(&Refuses("test.refused")).await.unwrap(), 3);
        assert_eq!(outbox.dead_jobs().await.unwrap().len(), 1);

        // Within the retention nothing goes.
        clock.advance(ChronoDuration::minutes(30));
        assert_eq!(outbox.sweep_finished().await.unwrap(), Swept::default());
        // Past it, a job without a key goes at once; one with a key has its
        // key spent first, and goes a minute later. The dead job stays for
        // an operator, and a job finished since stays for its own retention.
        clock.advance(ChronoDuration::minutes(40));
        outbox.enqueue(&db, job("test.recent")).await.unwrap();
        assert_eq!(outbox.drain(&Refuses("none")).await.unwrap(), 1);
        assert_eq!(
            outbox.sweep_finished().await.unwrap(),
            Swept {
                keys_spent: 2,
                removed: 1
            }
        );
        assert_eq!(
            kinds_kept(&db).await,
            [
                "test.discarded",
                "test.keyed",
                "test.recent",
                "test.refused"
            ]
        );
        clock.advance(ChronoDuration::seconds(61));
        assert_eq!(
            outbox.sweep_finished().await.unwrap(),
            Swept {
                keys_spent: 0,
                removed: 2
            }
        );
        assert_eq!(kinds_kept(&db).await, ["test.recent", "test.refused"]);
        // Sweeping again changes nothing.
        assert_eq!(outbox.sweep_finished().await.unwrap(), Swept::default());

        // The spent keys keep their jobs from being enqueued again, every
        // way a job is enqueued: at once, with a transaction's held
        // inserts, and by a unit of work whose job this process's worker
        // would take at the commit.
        let again = |key: &'static str| job("test.again").dedupe_key(key);
        assert_eq!(outbox.enqueue(&db, again("k-done")).await.unwrap(), None);
        let write = marketbridge_storage::db::begin_write(&db).await.unwrap();
        outbox.enqueue_at_commit(&write, again("k-discarded"));
        write.commit().await.unwrap();
        let stop = CancellationToken::new();
        let handler = Arc::new(CountingHandler::default());
        let worker = tokio::spawn(outbox.clone().run(handler.clone(), stop.clone()));
        until_handed_over(&outbox, "test.again").await;
        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        assert_eq!(work.enqueue(again("k-done")).await.unwrap(), None);
        // A key never used is taken as before, and handed over.
        assert!(work.enqueue(again("k-new")).await.unwrap().is_some());
        work.commit().await.unwrap();
        until_done(&outbox, 2).await;
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(handler.calls.lock().unwrap().len(), 1);
        assert_eq!(
            kinds_kept(&db).await,
            ["test.again", "test.recent", "test.refused"]
        );
    }
);

backend_test!(
    a_worker_sweeps_finished_jobs_past_their_retention_unless_it_is_zero,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let clock = clock();
        let keep_forever = OutboxOptions {
            retention_seconds: 0,
            ..options()
        };
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), keep_forever);
        for n in 0..3 {
            outbox
                .enqueue(&db, NewJob::new("test.old", &n).unwrap())
                .await
                .unwrap();
        }
        assert_eq!(outbox.drain(&Refuses("none")).await.unwrap(), 3);
        clock.advance(ChronoDuration::days(400));
        assert_eq!(outbox.sweep_finished().await.unwrap().removed, 0);
        assert_eq!(outbox.jobs_of_kind("test.old").await.unwrap().len(), 3);

        // A worker sweeps when it starts (and every ten minutes after).
        let outbox = Outbox::new(db.clone(), Arc::new(clock.clone()), options());
        let stop = CancellationToken::new();
        let worker = tokio::spawn(outbox.clone().run(Arc::new(Refuses("none")), stop.clone()));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !outbox.jobs_of_kind("test.old").await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not sweep"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.cancel();
        worker.await.unwrap();
    }
);
