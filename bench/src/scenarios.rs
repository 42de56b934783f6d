//! The scenarios: what is called, how it is timed and what CPU it is
//! charged, and the issue's target for each.

use crate::grpc::{OutboxWatch, Services};
use crate::load::drive;
use crate::partner::{self, Auth, Tenant};
use crate::procfs::{CpuMeter, CpuUse};
use crate::report::{Row, cpu_ms, ms};
use crate::stats::Samples;
use crate::usage;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_simulators::vercel::VercelSimulator;
use reqwest::Method;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How hard each scenario pushes.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent connections of the gateway and gRPC scenarios.
    pub connections: usize,
    /// Calls per partner read route.
    pub reads: usize,
    /// Provisions of the provision scenario.
    pub provisions: usize,
    /// Plan listings per path.
    pub plan_calls: usize,
    /// Concurrent usage clients.
    pub usage_clients: usize,
    /// Clients of the informational usage run that shows queueing.
    pub usage_queue_clients: usize,
    /// Batches per usage client.
    pub usage_batches: usize,
    /// Events per batch.
    pub batch_size: usize,
    /// Resources usage is spread over.
    pub usage_resources: usize,
    /// Provisions of each measurement of the growing table.
    pub grow_sample: usize,
    /// Resources in the table before the second measurement.
    pub grow_to: usize,
    /// How long the outboxes may take to empty.
    pub drain_timeout: Duration,
}

/// The longest pause between two polls of the outboxes while they drain.
const OUTBOX_POLL: Duration = Duration::from_millis(100);

/// Targets of the issue.
const READ_CPU_MS: f64 = 0.1;
const READ_P99_MS: f64 = 3.0;
const PROVISION_CPU_MS: f64 = 1.0;
const PROVISION_P99_MS: f64 = 20.0;
const GATEWAY_GRPC_RATIO: f64 = 0.8;
const GRPC_CALLS_PER_SECOND: f64 = 20_000.0;
const USAGE_EVENTS_PER_SECOND: f64 = 100_000.0;
const USAGE_P99_MS: f64 = 50.0;
/// "Flat" as the table grows: the later CPU per provision at most this
/// multiple of the earlier.
const FLAT_GROWTH: f64 = 1.25;
/// Idle memory per process, and start-up to ready.
pub const IDLE_MEMORY_MB: f64 = 30.0;
/// Start-up to ready.
pub const STARTUP_MS: f64 = 100.0;

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// What the scenarios share.
pub struct Bench {
    /// Plays Vercel.
    pub vercel: Arc<VercelSimulator>,
    /// `{gateway}/vercel`.
    pub vercel_url: String,
    /// The services over gRPC.
    pub services: Services,
    /// CPU of the set and PostgreSQL.
    pub meter: CpuMeter,
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    /// How hard to push.
    pub load: Load,
    /// Rows so far.
    pub rows: Vec<Row>,
    tenants: Vec<Tenant>,
    /// Resources created so far (the size of the resources table).
    resources: usize,
    /// Distinguishes the names (and idempotency keys) of provisions.
    batch: usize,
}

/// A batch of provisions and the background work they caused.
struct Provisions {
    samples: Samples,
    cpu: CpuUse,
    /// Jobs finished between the first POST and the outboxes emptying.
    jobs: u64,
    /// Jobs unfinished when the last POST was answered.
    backlog: u64,
    /// From the last POST's answer until the outboxes were empty.
    tail: Duration,
    /// From the first POST until the outboxes were empty.
    until_empty: Duration,
    /// `ListOutboxJobs` rounds while waiting (their CPU is counted).
    polls: u32,
}

impl Bench {
    /// A bench over a running set.
    pub fn new(
        vercel: Arc<VercelSimulator>,
        vercel_url: String,
        services: Services,
        meter: CpuMeter,
        backend: &'static str,
        load: Load,
    ) -> Self {
        Self {
            vercel,
            vercel_url,
            services,
            meter,
            backend,
            load,
            rows: Vec::new(),
            tenants: Vec::new(),
            resources: 0,
            batch: 0,
        }
    }

    fn postgres(&self) -> bool {
        self.backend == "PostgreSQL"
    }

    fn push(&mut self, row: Row) {
        println!("  {}", row.summary());
        self.rows.push(row);
    }

    /// Runs `work` and returns what it gave with the CPU it cost.
    async fn charged<T>(
        &self,
        work: impl Future<Output = Result<T, String>>,
    ) -> Result<(T, CpuUse), String> {
        let before = self.meter.read()?;
        let value = work.await?;
        let after = self.meter.read()?;
        Ok((value, self.meter.between(before, after)))
    }

    /// Start-up times and idle memory, as measured when the set started:
    /// the first start (which creates the schema, once per installation) is
    /// shown; a start on migrated databases (every restart, every new
    /// replica) is judged.
    pub fn record_start(
        &mut self,
        first_start: Duration,
        restart: Duration,
        idle_rss: u64,
        idle_cpu_per_second: Duration,
    ) {
        let backend = self.backend;
        let once = |duration: Duration| Row {
            backend,
            calls: Some(1),
            p50: Some(duration),
            p99: Some(duration),
            ..Row::default()
        };
        self.push(Row {
            scenario: "first start to ready, migrating fresh databases (spawn → /readyz 200)"
                .into(),
            ..once(first_start)
        });
        let restart_ms = millis(restart);
        let row = Row {
            scenario: "start-up to ready (spawn → /readyz 200)".into(),
            ..once(restart)
        }
        .judged(
            format!("< {STARTUP_MS:.0} ms"),
            format!("{restart_ms:.0} ms"),
            restart_ms < STARTUP_MS,
        );
        self.push(row);
        let megabytes = idle_rss as f64 / (1024.0 * 1024.0);
        let row = Row {
            scenario: "idle memory (VmRSS of `marketbridge up`)".into(),
            backend: self.backend,
            ..Row::default()
        }
        .judged(
            format!("≤ {IDLE_MEMORY_MB:.0} MB per process"),
            format!(
                "{megabytes:.1} MB; idle CPU {} ms/s",
                cpu_ms(idle_cpu_per_second)
            ),
            megabytes <= IDLE_MEMORY_MB,
        );
        self.push(row);
    }

    /// Installs one Vercel team per connection, each with a resource, and
    /// waits until the background work is done.
    pub async fn setup(&mut self) -> Result<(), String> {
        let http = partner::connection()?;
        for index in 0..self.load.connections {
            let tenant = partner::install(
                &http,
                &self.vercel,
                &self.vercel_url,
                &format!("team{index}"),
            )
            .await?;
            self.tenants.push(tenant);
            self.resources += 1;
        }
        OutboxWatch::new(&self.services)?
            .wait_empty(OUTBOX_POLL, self.load.drain_timeout)
            .await?;
        Ok(())
    }

    /// (1) GET resource and GET plans through the gateway, as Vercel calls
    /// them (system tokens of the installation).
    pub async fn partner_reads(&mut self) -> Result<(), String> {
        let mut connections = Vec::new();
        for tenant in &self.tenants {
            let tokens = tenant.tokens(&self.vercel);
            connections.push(Arc::new((
                partner::connection()?,
                format!(
                    "{}/{}",
                    tenant.resources_url(&self.vercel_url),
                    tenant.resource_id
                ),
                tokens.system,
            )));
        }
        let reads = self.load.reads;
        let (samples, cpu) = self
            .charged(drive(connections.clone(), reads, |c, _| async move {
                let body =
                    partner::call(&c.0, Method::GET, &c.1, Auth::System(&c.2), None, None).await?;
                match body["id"].is_string() {
                    true => Ok(()),
                    false => Err(format!("GET {} answered no resource: {body}", c.1)),
                }
            }))
            .await?;
        let row = self.read_row("partner reads: GET resource (gateway)", &samples, cpu);
        self.push(row);
        let plans_url = format!("{}/v1/products/database/plans", self.vercel_url);
        let connections: Vec<_> = connections
            .into_iter()
            .map(|c| Arc::new((c.0.clone(), plans_url.clone(), c.2.clone())))
            .collect();
        let (samples, cpu) = self.charged(drive(connections, reads, plan_call)).await?;
        let row = self.read_row("partner reads: GET plans (gateway)", &samples, cpu);
        self.push(row);
        Ok(())
    }

    fn read_row(&self, scenario: &str, samples: &Samples, cpu: CpuUse) -> Row {
        let scenario = format!("{scenario}, c{}", self.load.connections);
        let row = Row::of(scenario, self.backend, samples, cpu, self.postgres());
        let (cpu_ms, p99) = (millis(row.cpu_total()), millis(samples.percentile(0.99)));
        row.judged(
            format!("≤ {READ_CPU_MS} ms CPU/call (all processes), p99 ≤ {READ_P99_MS:.0} ms"),
            format!("{cpu_ms:.3} ms CPU, p99 {p99:.2} ms"),
            cpu_ms <= READ_CPU_MS && p99 <= READ_P99_MS,
        )
    }

    /// Provisions `count` resources through the gateway and waits until
    /// every outbox is empty; the CPU is counted until then.
    async fn provisions(&mut self, count: usize) -> Result<Provisions, String> {
        self.batch += 1;
        let batch = self.batch;
        let mut connections = Vec::new();
        for tenant in &self.tenants {
            connections.push(Arc::new((
                partner::connection()?,
                tenant.resources_url(&self.vercel_url),
                tenant.tokens(&self.vercel).user,
            )));
        }
        let mut watch = OutboxWatch::new(&self.services)?;
        let before = watch.totals(false).await?;
        let drain_timeout = self.load.drain_timeout;
        let ((samples, backlog, tail, until_empty, polls), cpu) = self
            .charged(async {
                let started = Instant::now();
                let samples = drive(connections, count, move |c, index| async move {
                    partner::provision(&c.0, &c.1, &c.2, &format!("b{batch}-{index}"))
                        .await
                        .map(|_| ())
                })
                .await?;
                let answered = Instant::now();
                let backlog = watch.totals(true).await?.unfinished;
                let polls = watch.wait_empty(OUTBOX_POLL, drain_timeout).await?;
                let tail = answered.elapsed();
                Ok((samples, backlog, tail, started.elapsed(), polls + 1))
            })
            .await?;
        // Counted once the CPU is read: the count of done jobs reads them all.
        let after = watch.totals(false).await?;
        self.resources += count;
        if after.dead > before.dead {
            return Err(format!(
                "{} background jobs were dead-lettered (see ListOutboxJobs with status `dead`)",
                after.dead - before.dead
            ));
        }
        Ok(Provisions {
            samples,
            cpu,
            jobs: after.done.saturating_sub(before.done),
            backlog,
            tail,
            until_empty,
            polls,
        })
    }

    fn provision_row(&self, scenario: String, run: &Provisions) -> Row {
        let row = Row::of(
            scenario,
            self.backend,
            &run.samples,
            run.cpu,
            self.postgres(),
        );
        let (cpu_ms, p99) = (
            millis(row.cpu_total()),
            millis(run.samples.percentile(0.99)),
        );
        row.judged(
            format!(
                "≤ {PROVISION_CPU_MS:.0} ms CPU/provision with its jobs, p99 ≤ {PROVISION_P99_MS:.0} ms"
            ),
            format!("{cpu_ms:.3} ms CPU, p99 {p99:.2} ms"),
            cpu_ms <= PROVISION_CPU_MS && p99 <= PROVISION_P99_MS,
        )
    }

    /// (2) Provisions through the gateway, their background jobs, and the
    /// outbox drain rate.
    pub async fn provision_scenario(&mut self) -> Result<(), String> {
        let run = self.provisions(self.load.provisions).await?;
        let row = self.provision_row(
            format!(
                "provisions: POST resource (gateway) until outboxes empty, c{}",
                self.load.connections
            ),
            &run,
        );
        self.push(row);
        let rate = |jobs: u64, time: Duration| match time.as_secs_f64() {
            seconds if seconds > 0.0 => jobs as f64 / seconds,
            _ => 0.0,
        };
        let overall = rate(run.jobs, run.until_empty);
        let tail = rate(run.backlog, run.tail);
        // The outbox kept up when no more than the jobs of the provisions
        // in flight were left when the last one was answered: that is the
        // target (no backlog builds at the rate the API accepts), however
        // fast a backlog drains once the POSTs stop. Otherwise the row
        // shows that pace.
        let kept_up = run.backlog <= 2 * self.load.connections as u64;
        let row = Row {
            scenario: "provisions: outbox jobs (first POST → outboxes empty)".into(),
            backend: self.backend,
            calls: Some(usize::try_from(run.jobs).unwrap_or(usize::MAX)),
            per_second: Some(overall),
            ..Row::default()
        }
        .judged(
            format!(
                "no backlog builds at the rate the API accepts (≤ {} jobs left after the last POST)",
                2 * self.load.connections
            ),
            format!(
                "{:.2} jobs/provision; backlog {} after the last POST, empty {:.0} ms later ({}); {} polls",
                run.jobs as f64 / run.samples.count().max(1) as f64,
                run.backlog,
                millis(run.tail),
                if kept_up {
                    "kept up".to_owned()
                } else {
                    format!("{tail:.0} jobs/s")
                },
                run.polls
            ),
            kept_up,
        );
        self.push(row);
        Ok(())
    }

    /// (3) The plan listing through the gateway against
    /// `BillingService.ListPlans` over gRPC.
    pub async fn plan_listing(&mut self) -> Result<(), String> {
        let token = self.vercel.system_token(None);
        let url = format!("{}/v1/products/database/plans", self.vercel_url);
        let mut http = Vec::new();
        let mut grpc = Vec::new();
        for _ in 0..self.load.connections {
            http.push(Arc::new((
                partner::connection()?,
                url.clone(),
                token.clone(),
            )));
            grpc.push(self.services.plan_lister()?);
        }
        let calls = self.load.plan_calls;
        // One call on each connection first, so both paths start connected.
        drive(http.clone(), http.len(), plan_call).await?;
        drive(grpc.clone(), grpc.len(), list_plans).await?;
        let (gateway, gateway_cpu) = self.charged(drive(http, calls, plan_call)).await?;
        let (direct, direct_cpu) = self.charged(drive(grpc, calls, list_plans)).await?;
        let c = self.load.connections;
        let gateway_row = Row::of(
            format!("plans: GET plans (gateway, system token), c{c}"),
            self.backend,
            &gateway,
            gateway_cpu,
            self.postgres(),
        );
        self.push(gateway_row);
        let rate = direct.per_second(1);
        let direct_row = Row::of(
            format!("plans: BillingService.ListPlans (gRPC), c{c}"),
            self.backend,
            &direct,
            direct_cpu,
            self.postgres(),
        )
        .judged(
            format!("≥ {GRPC_CALLS_PER_SECOND:.0} calls/s"),
            format!("{rate:.0} calls/s"),
            rate >= GRPC_CALLS_PER_SECOND,
        );
        self.push(direct_row);
        let ratio = if rate > 0.0 {
            gateway.per_second(1) / rate
        } else {
            0.0
        };
        let row = Row {
            scenario: "plans: gateway ÷ gRPC (calls/s)".into(),
            backend: self.backend,
            ..Row::default()
        }
        .judged(
            format!("≥ {GATEWAY_GRPC_RATIO}"),
            format!(
                "{ratio:.2} (p50 {} vs {})",
                ms(gateway.percentile(0.5)),
                ms(direct.percentile(0.5))
            ),
            ratio >= GATEWAY_GRPC_RATIO,
        );
        self.push(row);
        Ok(())
    }

    /// (4) Usage recorded over gRPC in batches; the ledger must hold
    /// exactly what was sent. Judged at `usage_clients` (enough to keep the
    /// set's cores busy), then shown at `usage_queue_clients`: more clients
    /// than that only queue, which the second row's p99 shows.
    pub async fn usage_ingest(&mut self) -> Result<(), String> {
        let resources =
            usage::metered_resources(&self.services, self.load.usage_resources.max(1)).await?;
        self.resources += resources.len();
        OutboxWatch::new(&self.services)?
            .wait_empty(OUTBOX_POLL, self.load.drain_timeout)
            .await?;
        let mut sent_so_far = 0;
        let runs = [
            ("judged", self.load.usage_clients, true),
            ("queued", self.load.usage_queue_clients, false),
        ];
        for (run, clients, judged) in runs {
            if clients == 0 || (!judged && clients == self.load.usage_clients) {
                continue;
            }
            let load = usage::UsageLoad {
                run,
                clients,
                batches: (self.load.usage_batches * self.load.usage_clients.max(1) / clients)
                    .max(1),
                batch_size: self.load.batch_size,
            };
            let (outcome, cpu) = self
                .charged(usage::run(&self.services, &resources, load))
                .await?;
            sent_so_far += outcome.sent_total;
            let ledger = usage::ledger_total(&self.services, &resources).await?;
            if ledger != sent_so_far {
                return Err(format!(
                    "the ledger holds {ledger} but {sent_so_far} was sent"
                ));
            }
            let events_per_second = outcome.samples.per_second(load.batch_size);
            let p99 = millis(outcome.samples.percentile(0.99));
            let row = Row::of(
                format!(
                    "usage: RecordUsage (gRPC), batches of {}, c{clients}",
                    load.batch_size
                ),
                self.backend,
                &outcome.samples,
                cpu,
                self.postgres(),
            );
            let measured = format!(
                "{events_per_second:.0} events/s ({} accepted), p99 {p99:.2} ms, ledger {ledger} = sent",
                outcome.accepted
            );
            let row = if judged {
                row.judged(
                    format!(
                        "≥ {USAGE_EVENTS_PER_SECOND:.0} events/s, p99 ≤ {USAGE_P99_MS:.0} ms per batch, ledger exact"
                    ),
                    measured,
                    events_per_second >= USAGE_EVENTS_PER_SECOND && p99 <= USAGE_P99_MS,
                )
            } else {
                Row {
                    target: "— (more clients only queue)".into(),
                    measured,
                    ..row
                }
            };
            self.push(row);
        }
        Ok(())
    }

    /// (5) Provision cost now, and again once the resources table holds
    /// `grow_to` resources.
    pub async fn growing_table(&mut self) -> Result<(), String> {
        let sample = self.load.grow_sample.max(1);
        let at_start = self.resources;
        let first = self.provisions(sample).await?;
        let c = self.load.connections;
        let first_row = self.provision_row(
            format!("growing table: provisions at {at_start} resources, c{c}"),
            &first,
        );
        let first_cpu = millis(first_row.cpu_total());
        self.push(first_row);
        let started = Instant::now();
        let mut grown = 0;
        while self.resources < self.load.grow_to {
            // Fresh tokens for each chunk: a long growth outlives them.
            let chunk = (self.load.grow_to - self.resources).min(5000);
            self.provisions(chunk).await?;
            grown += chunk;
        }
        if grown > 0 {
            println!(
                "  grew the table by {grown} resources in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let at_end = self.resources;
        let second = self.provisions(sample).await?;
        let row = self.provision_row(
            format!("growing table: provisions at {at_end} resources, c{c}"),
            &second,
        );
        let (cpu, p99) = (
            millis(row.cpu_total()),
            millis(second.samples.percentile(0.99)),
        );
        let growth = if first_cpu > 0.0 {
            cpu / first_cpu
        } else {
            0.0
        };
        let row = row.judged(
            format!(
                "flat (≤ {FLAT_GROWTH}× the CPU at {at_start}; issue: 1k → 100k), ≤ {PROVISION_CPU_MS:.0} ms, p99 ≤ {PROVISION_P99_MS:.0} ms"
            ),
            format!("{cpu:.3} ms CPU ({growth:.2}×), p99 {p99:.2} ms"),
            growth <= FLAT_GROWTH && cpu <= PROVISION_CPU_MS && p99 <= PROVISION_P99_MS,
        );
        self.push(row);
        Ok(())
    }
}

/// One `GET …/plans` on a connection (`(client, url, system token)`).
async fn plan_call(c: Arc<(reqwest::Client, String, String)>, _: usize) -> Result<(), String> {
    let body = partner::send(&c.0, Method::GET, &c.1, Auth::System(&c.2), None, None).await?;
    // The answer is checked for a plan, not parsed (see `PlanListing`).
    match body.contains(r#""plans":[{"#) {
        true => Ok(()),
        false => Err(format!("GET {} listed no plans: {body}", c.1)),
    }
}

/// `ListPlans` as the gateway asks it for `GET /v1/products/database/plans`.
async fn list_plans(mut billing: crate::grpc::PlanLister, _: usize) -> Result<(), String> {
    let plans = billing
        .list_plans(billing_pb::ListPlansRequest {
            product_id: "database".into(),
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Resource as i32,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("ListPlans: {e}"))?;
    match plans.plans.is_empty() {
        true => Err("ListPlans listed no plans".into()),
        false => Ok(()),
    }
}
