//! `marketbridge-bench`: starts the whole set in-process (SQLite by default,
//! PostgreSQL with `--postgres-url`) and measures
//!
//! - the usage ledger's write path: concurrent clients recording usage in
//!   batches over gRPC (events/s, p50/p99 batch latency);
//! - the read path: a plan listing through the gateway, authenticated like
//!   Vercel's calls (a token from the Vercel simulator), against the same
//!   listing over gRPC (calls/s, p50/p99, and the ratio of the two);
//!
//! then prints the figures. It is a program, not a test: numbers depend on
//! the machine.

mod databases;
mod read_path;
mod stats;
mod usage;

use clap::Parser;
use databases::RunDatabases;
use marketbridge::set::{RunningSet, SetOptions};
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_simulators::vercel::VercelSimulator;
use stats::{Samples, millis};
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
    /// Concurrent read clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    read_clients: usize,
    /// Plan listings each read client makes, per path.
    #[arg(long, default_value_t = 250)]
    reads: usize,
    /// Skip the read path.
    #[arg(long)]
    skip_reads: bool,
}

async fn start_set(
    databases: &RunDatabases,
    vercel: &VercelSimulator,
) -> Result<RunningSet, String> {
    let mut config = Config::default();
    config.vercel.oidc_issuer = vercel.issuer();
    config.vercel.jwks_url = vercel.jwks_url();
    config.vercel.api_base_url = vercel.url().to_owned();
    config.vercel.client_id = vercel.client_id().to_owned();
    config.vercel.client_secret = vercel.client_secret().to_owned();
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

fn print_read(name: &str, samples: &Samples) {
    println!(
        "  {name}: {} calls in {:.2} s: {:.0} calls/s, p50 {}, p99 {}",
        samples.count(),
        samples.elapsed.as_secs_f64(),
        samples.per_second(1),
        millis(samples.percentile(0.50)),
        millis(samples.percentile(0.99))
    );
}

async fn run_reads(
    arguments: &Arguments,
    set: &RunningSet,
    vercel: &VercelSimulator,
) -> Result<(), String> {
    let load = read_path::ReadLoad {
        clients: arguments.read_clients.max(1),
        calls: arguments.reads.max(1),
    };
    let token = vercel.system_token(None);
    // One call each to warm connections and the key cache.
    read_path::through_gateway(
        set,
        &token,
        read_path::ReadLoad {
            clients: 1,
            calls: 1,
        },
    )
    .await?;
    read_path::over_grpc(
        set,
        read_path::ReadLoad {
            clients: 1,
            calls: 1,
        },
    )
    .await?;
    let gateway = read_path::through_gateway(set, &token, load).await?;
    let grpc = read_path::over_grpc(set, load).await?;
    println!(
        "plan listing: {} clients x {} calls per path",
        load.clients, load.calls
    );
    print_read("gateway (Vercel route, token verified)", &gateway);
    print_read("gRPC (BillingService.ListPlans)", &grpc);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "  gateway/gRPC: throughput x{:.2}, p50 x{:.2}, p99 x{:.2}",
        ratio(gateway.per_second(1), grpc.per_second(1)),
        ratio(
            gateway.percentile(0.50).as_secs_f64(),
            grpc.percentile(0.50).as_secs_f64()
        ),
        ratio(
            gateway.percentile(0.99).as_secs_f64(),
            grpc.percentile(0.99).as_secs_f64()
        )
    );
    Ok(())
}

async fn run(
    arguments: &Arguments,
    set: &RunningSet,
    vercel: &VercelSimulator,
) -> Result<(), String> {
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
    if !arguments.skip_reads {
        run_reads(arguments, set, vercel).await?;
    }
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
    let vercel = match VercelSimulator::start_default().await {
        Ok(vercel) => vercel,
        Err(error) => {
            eprintln!("marketbridge-bench: the Vercel simulator did not start: {error}");
            databases.remove().await;
            return ExitCode::FAILURE;
        }
    };
    let outcome = match start_set(&databases, &vercel).await {
        Ok(set) => {
            let outcome = run(&arguments, &set, &vercel).await;
            let _ = set.stop().await;
            outcome
        }
        Err(error) => Err(error),
    };
    vercel.stop();
    databases.remove().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("marketbridge-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
