//! `marketbridge-bench`: measures the set as a user meets it.
//!
//! The set runs as its own process (`marketbridge up`, the binary built next
//! to this one, configured by a file in a temporary folder), on SQLite or,
//! with `--postgres-url`, on fresh databases of a PostgreSQL server. This
//! program is the load generator, over real sockets, and plays Vercel (the
//! Vercel simulator, in process) to sign the tokens the gateway verifies.
//!
//! Scenarios, each with calls/s, p50/p99 latency and CPU per call read from
//! `/proc` (the set's process tree and, on PostgreSQL, the server's
//! processes serving the run's databases):
//!
//! 1. partner reads through the gateway: GET resource, GET plans;
//! 2. provisions through the gateway, charged the CPU of their background
//!    jobs until every outbox is empty, and the outbox drain rate;
//! 3. the plan listing through the gateway against `ListPlans` over gRPC;
//! 4. usage recorded over gRPC in batches, the ledger checked exactly;
//! 5. provision cost now and once the resources table has grown.
//!
//! Then one table, with the targets of issue 14 and whether each is met.
//! It is a program, not a test: the numbers depend on the machine.

mod databases;
mod grpc;
mod load;
mod partner;
mod procfs;
mod report;
mod scenarios;
mod set_process;
mod stats;
mod usage;

use clap::Parser;
use databases::RunDatabases;
use marketbridge_simulators::vercel::VercelSimulator;
use scenarios::{Bench, Load};
use set_process::SetProcess;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "marketbridge-bench",
    about = "Measures `marketbridge up` from outside: partner reads, provisions with their background jobs, plan listing, usage ingest, a growing table"
)]
struct Arguments {
    /// Admin URL of a PostgreSQL server to create the run's databases on
    /// (`postgres://postgres@127.0.0.1:5432/postgres`); they are dropped
    /// afterwards. SQLite files in a temporary folder when absent.
    #[arg(long, env = "MARKETBRIDGE_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The `marketbridge` binary; by default the one next to this program.
    #[arg(long)]
    marketbridge_bin: Option<PathBuf>,
    /// Concurrent connections of the gateway and gRPC scenarios (one Vercel
    /// installation each).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Calls per partner read route (GET resource, GET plans).
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    /// Provisions (POST resource) of the provision scenario.
    #[arg(long, default_value_t = 2_000)]
    provisions: usize,
    /// Plan listings per path (gateway, gRPC).
    #[arg(long, default_value_t = 20_000)]
    plan_calls: usize,
    /// Concurrent usage clients, each on its own connection: two keep a
    /// 2-core machine busy (one batch decoded while another is written).
    #[arg(long, default_value_t = 2)]
    usage_clients: usize,
    /// Clients of a second usage run, shown but not judged: beyond what keeps
    /// the cores busy, batches only queue (0 skips it).
    #[arg(long, default_value_t = 8)]
    usage_queue_clients: usize,
    /// Batches each client of the judged usage run records (the queueing run
    /// sends as many batches in all).
    #[arg(long, default_value_t = 100)]
    usage_batches: usize,
    /// Events per usage batch (1 to 1000).
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Resources the usage is spread over.
    #[arg(long, default_value_t = 16)]
    usage_resources: usize,
    /// Provisions of each measurement of the growing table.
    #[arg(long, default_value_t = 2_000)]
    grow_sample: usize,
    /// Resources the table grows to before the second measurement: the
    /// target is a cost flat from 1,000 to 100,000.
    #[arg(long, default_value_t = 100_000)]
    grow_to: usize,
    /// Longest wait for the outboxes to empty, in seconds.
    #[arg(long, default_value_t = 600)]
    drain_timeout: u64,
    /// Only these scenarios (comma-separated): reads, provisions, plans,
    /// usage, growth.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A setting of the set's configuration file, `section.name=value`
    /// (`--set outbox.batch_size=512`); repeat it for several. The set is
    /// configured by its file alone: `MARKETBRIDGE_*` variables do not
    /// reach it.
    #[arg(long = "set", value_name = "SETTING")]
    settings: Vec<String>,
}

const SCENARIOS: [&str; 5] = ["reads", "provisions", "plans", "usage", "growth"];

impl Arguments {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    fn load(&self) -> Load {
        Load {
            connections: self.connections.max(1),
            reads: self.reads.max(1),
            provisions: self.provisions.max(1),
            plan_calls: self.plan_calls.max(1),
            usage_clients: self.usage_clients.max(1),
            usage_queue_clients: self.usage_queue_clients,
            usage_batches: self.usage_batches.max(1),
            batch_size: self.batch_size,
            usage_resources: self.usage_resources.max(1),
            grow_sample: self.grow_sample.max(1),
            grow_to: self.grow_to,
            drain_timeout: Duration::from_secs(self.drain_timeout.max(1)),
        }
    }
}

/// Lets the set settle after start-up; returns its resident memory and its
/// CPU per second while idle.
async fn settle(set: &SetProcess, meter: &procfs::CpuMeter) -> Result<(u64, Duration), String> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = procfs::resident_bytes(set.pid()).ok_or("cannot read the set's memory")?;
    let before = meter.read()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = meter.between(before, meter.read()?).marketbridge / 2;
    Ok((rss, idle))
}

async fn run_scenarios(arguments: &Arguments, bench: &mut Bench) -> Result<(), String> {
    println!(
        "setting up: {} Vercel installations, one resource each",
        bench.load.connections
    );
    bench.setup().await?;
    if arguments.runs("reads") {
        println!("(1) partner reads");
        bench.partner_reads().await?;
    }
    if arguments.runs("provisions") {
        println!("(2) provisions");
        bench.provision_scenario().await?;
    }
    if arguments.runs("plans") {
        println!("(3) plan listing: gateway vs gRPC");
        bench.plan_listing().await?;
    }
    if arguments.runs("usage") {
        println!("(4) usage ingest");
        bench.usage_ingest().await?;
    }
    if arguments.runs("growth") {
        println!("(5) growing table");
        bench.growing_table().await?;
    }
    Ok(())
}

/// Starts the set, runs the scenarios, stops the set; the rows measured
/// (even when a scenario failed) and the outcome.
async fn run(
    arguments: &Arguments,
    binary: &std::path::Path,
    databases: &RunDatabases,
    vercel: Arc<VercelSimulator>,
    backend: &'static str,
) -> (Vec<report::Row>, Result<(), String>) {
    let mut set = match SetProcess::start(
        binary,
        databases,
        &vercel,
        &arguments.settings,
        Duration::from_secs(120),
    )
    .await
    {
        Ok(set) => set,
        Err(error) => return (Vec::new(), Err(error)),
    };
    println!(
        "marketbridge up (pid {}) ready in {:.0} ms on fresh databases; gateway {}",
        set.pid(),
        set.first_start.as_secs_f64() * 1000.0,
        set.gateway_url
    );
    // What a restart, a new replica or a crashed process's successor sees:
    // the databases migrated already.
    let restart = match set.restart(Duration::from_secs(120)).await {
        Ok(restart) => restart,
        Err(error) => return (Vec::new(), Err(error)),
    };
    println!(
        "marketbridge up restarted (pid {}), ready in {:.0} ms",
        set.pid(),
        restart.as_secs_f64() * 1000.0
    );
    let (ticks, asked) = procfs::clock_ticks_per_second();
    if !asked {
        println!("`getconf CLK_TCK` failed: assuming 100 clock ticks per second");
    }
    let meter = procfs::CpuMeter::new(set.pid(), databases.postgres_names(), ticks);
    let services = match grpc::Services::new(
        set.account_url.clone(),
        set.provisioning_url.clone(),
        set.billing_url.clone(),
        &set.grpc_token,
    ) {
        Ok(services) => services,
        Err(error) => return (Vec::new(), Err(error)),
    };
    let mut bench = Bench::new(
        vercel,
        set.vercel_url.clone(),
        services,
        meter.clone(),
        backend,
        arguments.load(),
    );
    let mut outcome = match settle(&set, &meter).await {
        Ok((rss, idle)) => {
            bench.record_start(set.first_start, restart, rss, idle);
            run_scenarios(arguments, &mut bench).await
        }
        Err(error) => Err(error),
    };
    if outcome.is_err() {
        outcome = outcome
            .map_err(|error| format!("{error}\nthe set's log ends with:\n{}", set.log_tail()));
    }
    let stopped = set.stop(Duration::from_secs(20)).await;
    (bench.rows, outcome.and(stopped))
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Arguments::parse();
    if arguments.batch_size == 0 || arguments.batch_size > 1000 {
        eprintln!("marketbridge-bench: --batch-size must be between 1 and 1000");
        return ExitCode::FAILURE;
    }
    if let Some(unknown) = arguments
        .only
        .iter()
        .find(|s| !SCENARIOS.contains(&s.as_str()))
    {
        eprintln!(
            "marketbridge-bench: unknown scenario `{unknown}` (known: {})",
            SCENARIOS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    marketbridge_rpc::tls::install_crypto_provider();
    let binary = match set_process::find_binary(arguments.marketbridge_bin.as_deref()) {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!("marketbridge-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let backend = match arguments.postgres_url {
        Some(_) => "PostgreSQL",
        None => "SQLite",
    };
    let databases = match RunDatabases::create(arguments.postgres_url.as_deref()).await {
        Ok(databases) => databases,
        Err(error) => {
            eprintln!("marketbridge-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("backend: {backend}; set: {} up", binary.display());
    let load = arguments.load();
    println!(
        "load: {} connections; {} calls per read route; {} provisions; {} plan listings per path; usage {} clients x {} batches x {} events (then {} clients, unjudged); growing table: {} provisions measured at the start and at {} resources",
        load.connections,
        load.reads,
        load.provisions,
        load.plan_calls,
        load.usage_clients,
        load.usage_batches,
        load.batch_size,
        load.usage_queue_clients,
        load.grow_sample,
        load.grow_to
    );
    if cfg!(debug_assertions) || binary.components().any(|c| c.as_os_str() == "debug") {
        println!(
            "note: a debug build (of the benchmark or of marketbridge): the figures say nothing of release performance"
        );
    }
    let vercel = match VercelSimulator::start_default().await {
        Ok(vercel) => Arc::new(vercel),
        Err(error) => {
            eprintln!("marketbridge-bench: the Vercel simulator did not start: {error}");
            databases.remove().await;
            return ExitCode::FAILURE;
        }
    };
    let (rows, outcome) = run(&arguments, &binary, &databases, vercel.clone(), backend).await;
    vercel.stop();
    databases.remove().await;
    if !rows.is_empty() {
        println!();
        print!("{}", report::render(&rows));
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("marketbridge-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
