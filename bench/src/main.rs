//! `marketbridge-bench`: starts the whole set in-process (SQLite by default,
//! PostgreSQL with `--postgres-url`) and measures
//!
//! - the usage ledger's write path: concurrent clients recording usage in
//!   batches over gRPC (events/s, p50/p99 batch latency);
//!
//! then prints the figures. It is a program, not a test: numbers depend on
//! the machine.

mod databases;
mod stats;
mod usage;

use clap::Parser;
use databases::RunDatabases;
use marketbridge::set::{RunningSet, SetOptions};
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use stats::millis;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "marketbridge-bench",
    about = "Measures the usage ledger and the gateway read path on an in-process set"
)]
struct Arguments {
    /// Admin URL of a PostgreSQL server to create the run's databases on
    /// (`postgres://postgres@127.0.0.1:5432/postgres`); SQLite files when
    /// absent.
    #[arg(long, env = "MARKETBRIDGE_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Concurrent usage clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Batches each client records.
    #[arg(long, default_value_t = 50)]
    batches: usize,
    /// Events per batch (1 to 1000).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Resources the usage is spread over.
    #[arg(long, default_value_t = 16)]
    resources: usize,
}

async fn start_set(databases: &RunDatabases) -> Result<RunningSet, String> {
    let mut config = Config::default();
    config.data.dir = databases.folder().display().to_string();
    config.account.listen = "127.0.0.1:0".into();
    config.provisioning.listen = "127.0.0.1:0".into();
    config.billing.listen = "127.0.0.1:0".into();
    config.gateway.listen = "127.0.0.1:0".into();
    config.gateway.public_url = String::new();
    config.account.database_url = databases.account.clone();
    config.provisioning.database_url = databases.provisioning.clone();
    config.billing.database_url = databases.billing.clone();
    config.outbox.poll_interval_ms = 20;
    config.security.encryption_key = Cipher::generate_base64_key();
    let cipher = Cipher::from_base64_key(&config.security.encryption_key)
        .map_err(|e| format!("encryption key: {e}"))?;
    RunningSet::start(SetOptions {
        config,
        clock: marketbridge_core::time::system_clock(),
        cipher,
        run_workers: true,
    })
    .await
    .map_err(|e| format!("the set did not start: {e}"))
}

async fn run(arguments: &Arguments, set: &RunningSet) -> Result<(), String> {
    if arguments.batch_size == 0 || arguments.batch_size > 1000 {
        return Err("--batch-size must be between 1 and 1000".into());
    }
    let resources = usage::metered_resources(set, arguments.resources.max(1)).await?;
    let load = usage::UsageLoad {
        clients: arguments.clients.max(1),
        batches: arguments.batches.max(1),
        batch_size: arguments.batch_size,
        resources: resources.len(),
    };
    let result = usage::run(set, &resources, load).await?;
    let samples = &result.samples;
    println!(
        "usage ledger: {} clients x {} batches x {} events over {} resources",
        load.clients, load.batches, load.batch_size, load.resources
    );
    println!(
        "  {} events in {:.2} s: {:.0} events/s, {:.1} batches/s",
        result.accepted,
        samples.elapsed.as_secs_f64(),
        samples.per_second(load.batch_size),
        samples.per_second(1)
    );
    println!(
        "  batch latency p50 {}, p99 {}, max {}",
        millis(samples.percentile(0.50)),
        millis(samples.percentile(0.99)),
        millis(samples.percentile(1.0))
    );
    if result.ledger_total != result.sent_total {
        return Err(format!(
            "the ledger holds {} but {} was sent",
            result.ledger_total, result.sent_total
        ));
    }
    println!(
        "  ledger total {} equals the total sent",
        result.ledger_total
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Arguments::parse();
    marketbridge_rpc::tls::install_crypto_provider();
    let databases = match RunDatabases::create(arguments.postgres_url.as_deref()).await {
        Ok(databases) => databases,
        Err(error) => {
            eprintln!("marketbridge-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "backend: {}",
        if arguments.postgres_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let outcome = match start_set(&databases).await {
        Ok(set) => {
            let outcome = run(&arguments, &set).await;
            let _ = set.stop().await;
            outcome
        }
        Err(error) => Err(error),
    };
    databases.remove().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("marketbridge-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
