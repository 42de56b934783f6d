//! What every marketbridge process does around its work: read the
//! configuration, start telemetry, stop cleanly on Ctrl-C or SIGTERM.

use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::{Error, Result};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// File (in the data folder) holding the development encryption key.
pub const DEV_KEY_FILE: &str = "encryption.key";

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
                let result = body(config, shutdown).await;
                telemetry.shutdown();
                result.map_err(|e| e.to_string())
            })
        });
    exit_code(service_name, outcome)
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

/// The cipher for secrets at rest: `security.encryption_key`, or with
/// `allow_dev_key` a key kept in the data folder (created on first use).
pub fn load_cipher(config: &Config, allow_dev_key: bool) -> Result<Cipher> {
    Cipher::from_base64_key(&encryption_key(config, allow_dev_key)?)
        .map_err(|e| Error::validation(format!("security.encryption_key: {}", e.message())))
}

/// The encryption key text: `security.encryption_key`, or with
/// `allow_dev_key` the development key kept in the data folder (created on
/// first use). Every part of a set must use the same key.
pub fn encryption_key(config: &Config, allow_dev_key: bool) -> Result<String> {
    if !config.security.encryption_key.is_empty() {
        return Ok(config.security.encryption_key.clone());
    }
    if !allow_dev_key {
        return Err(Error::validation(
            "security.encryption_key is not set (MARKETBRIDGE_SECURITY__ENCRYPTION_KEY: base64 of 32 random bytes)",
        ));
    }
    let path = Path::new(&config.data.dir).join(DEV_KEY_FILE);
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_owned());
    }
    std::fs::create_dir_all(&config.data.dir)
        .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", config.data.dir)))?;
    let key = Cipher::generate_base64_key();
    write_private(&path, &key)?;
    tracing::warn!(path = %path.display(), "generated a development encryption key; set security.encryption_key in production");
    Ok(key)
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::unavailable(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::unavailable(format!("cannot write {}: {e}", path.display())))
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
