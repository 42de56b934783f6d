//! What every marketbridge process does around its work: read the
//! configuration, start telemetry, stop cleanly on Ctrl-C or SIGTERM.

use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::{Error, Result};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The `--config FILE` argument, if given.
pub fn config_path_from_args() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    None
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a process: loads the configuration (`--config` or
/// `MARKETBRIDGE_CONFIG`, then the environment), starts telemetry as
/// `service_name`, runs `body` until it returns, then flushes telemetry.
/// A failure is printed on stderr and the exit status is 1.
pub fn run_process<F, Fut>(service_name: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    limit_allocator_arenas();
    let outcome = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async move {
                let config =
                    Config::load(config_path_from_args().as_deref()).map_err(|e| e.to_string())?;
                let telemetry = marketbridge_telemetry::init(service_name, &config.telemetry)
                    .map_err(|e| e.to_string())?;
                crate::tls::install_crypto_provider();
                let shutdown = shutdown_on_signal();
                // A part alone has no moment it calls ready: soon after it
                // started serving, what start-up freed goes back.
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    release_free_memory();
                });
                let result = body(config, shutdown).await;
                telemetry.shutdown();
                result.map_err(|e| e.to_string())
            })
        });
    exit_code(service_name, outcome)
}

/// Caps glibc's malloc at two arenas before any thread starts. By default it
/// gives each thread that allocates its own arena (up to eight per core), and
/// SQLite's connection threads, tokio's workers and its blocking pool each
/// keep freed memory in theirs; two arenas serve the process's allocations
/// with less memory held and no measurable contention (see the benchmark).
fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes malloc's parameters; it is called before
    // the runtime starts any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives the memory malloc holds free back to the system (start-up parses
/// certificates, migrates and builds the OpenAPI document, then frees most of
/// it). Call once the process serves.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` is thread-safe and only returns free pages.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Prints a failure on stderr and turns the outcome into an exit status.
pub fn exit_code(name: &str, outcome: std::result::Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The cipher for secrets at rest, from `security.encryption_key` as
/// [`crate::secrets::resolve`] left it.
pub fn load_cipher(config: &Config) -> Result<Cipher> {
    crate::secrets::validate(config)?;
    Cipher::from_base64_key(&config.security.encryption_key)
        .map_err(|e| Error::validation(format!("security.encryption_key: {}", e.message())))
}

/// Serves Prometheus `/metrics` on `address` until `shutdown`, when an
/// address is configured.
pub async fn spawn_metrics_listener(address: &str, shutdown: CancellationToken) -> Result<()> {
    if address.is_empty() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {address}: {e}")))?;
    tracing::info!(listen = %address, "metrics listening");
    tokio::spawn(marketbridge_telemetry::serve_metrics(
        listener,
        async move { shutdown.cancelled().await },
    ));
    Ok(())
}
