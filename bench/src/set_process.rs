//! The set under test as its own process: `marketbridge up`, configured by a
//! TOML file in the run's folder, logging to a file there.

use crate::databases::RunDatabases;
use marketbridge_config::Config;
use marketbridge_core::crypto::{Cipher, random_token};
use marketbridge_simulators::vercel::VercelSimulator;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The running `marketbridge up`.
pub struct SetProcess {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    binary: PathBuf,
    config_path: PathBuf,
    readyz: String,
    /// The gateway's base URL.
    pub gateway_url: String,
    /// The partner API's base URL (`{gateway}/vercel`).
    pub vercel_url: String,
    /// gRPC URLs of the services.
    pub account_url: String,
    /// Of the provisioning service.
    pub provisioning_url: String,
    /// Of the billing service.
    pub billing_url: String,
    /// The token of the benchmark's own gRPC caller (`admin+secrets+usage`).
    pub grpc_token: String,
    /// From spawning to the first `200` of `/readyz`, on fresh databases
    /// (the start migrates them).
    pub first_start: Duration,
}

/// The `marketbridge` binary: `--marketbridge-bin`, else the one next to
/// this program (cargo builds both into the same folder).
pub fn find_binary(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let candidate = me
        .parent()
        .map(|folder| folder.join("marketbridge"))
        .ok_or("this program has no folder")?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "no marketbridge binary at {} (build it: `cargo build -p marketbridge`, or pass --marketbridge-bin)",
            candidate.display()
        ))
    }
}

/// Free loopback ports, found by binding port 0 and letting go.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("no free port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// The set's configuration: loopback ports, the run's databases, Vercel
/// played by `vercel`, fresh secrets, and the benchmark as a gRPC caller.
/// Everything else keeps its default, as a user's set would.
fn configuration(
    databases: &RunDatabases,
    vercel: &VercelSimulator,
    bench_client_entry: &str,
) -> Result<Config, String> {
    let ports = free_ports(5)?;
    let at = |port: u16| format!("127.0.0.1:{port}");
    let mut config = Config::default();
    config.data.dir = databases.folder().display().to_string();
    config.account.listen = at(ports[0]);
    config.provisioning.listen = at(ports[1]);
    config.billing.listen = at(ports[2]);
    config.gateway.listen = at(ports[3]);
    config.gateway.metrics_listen = at(ports[4]);
    config.gateway.public_url = format!("http://{}", at(ports[3]));
    config.gateway.account_url = format!("http://{}", at(ports[0]));
    config.gateway.provisioning_url = format!("http://{}", at(ports[1]));
    config.gateway.billing_url = format!("http://{}", at(ports[2]));
    config.account.database_url = databases.account.clone();
    config.provisioning.database_url = databases.provisioning.clone();
    config.billing.database_url = databases.billing.clone();
    config.security.encryption_key = Cipher::generate_base64_key();
    config.gateway.session_secret = Cipher::generate_base64_key();
    config.security.service_token = random_token(32);
    config.security.grpc_clients = bench_client_entry.to_owned();
    config.vercel.oidc_issuer = vercel.issuer();
    config.vercel.jwks_url = vercel.jwks_url();
    config.vercel.api_base_url = vercel.url().to_owned();
    config.vercel.client_id = vercel.client_id().to_owned();
    config.vercel.client_secret = vercel.client_secret().to_owned();
    config.vercel.dashboard_url = vercel.url().to_owned();
    Ok(config)
}

/// `config` with `settings` (each `section.name=value`, as `--set` takes
/// them) applied: the value is read as TOML (a number, a boolean, a quoted
/// string), or taken as a string when it is not TOML. A setting the
/// configuration does not have, or a value of the wrong type, is refused.
pub fn with_settings(config: Config, settings: &[String]) -> Result<Config, String> {
    let mut tree = toml::Table::try_from(&config).map_err(|e| format!("configuration: {e}"))?;
    for setting in settings {
        let (path, text) = setting
            .split_once('=')
            .ok_or_else(|| format!("--set {setting}: expected section.name=value"))?;
        let text = text.trim();
        let value = toml::from_str::<toml::Table>(&format!("value = {text}"))
            .ok()
            .and_then(|mut parsed| parsed.remove("value"))
            .unwrap_or_else(|| toml::Value::String(text.to_owned()));
        let mut names = path.trim().split('.').peekable();
        let mut table = &mut tree;
        while let Some(name) = names.next() {
            if names.peek().is_none() {
                table.insert(name.to_owned(), value.clone());
                break;
            }
            table = table
                .entry(name)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| format!("--set {setting}: {name} is not a section"))?;
        }
    }
    tree.try_into::<Config>()
        .map_err(|e| format!("--set: {}", e.message()))
}

impl SetProcess {
    /// Writes the configuration (with `settings` applied, see
    /// [`with_settings`]), spawns `binary up` and waits until its gateway's
    /// `/readyz` answers 200 (at most `timeout`).
    pub async fn start(
        binary: &Path,
        databases: &RunDatabases,
        vercel: &VercelSimulator,
        settings: &[String],
        timeout: Duration,
    ) -> Result<Self, String> {
        let (entry, grpc_token) =
            marketbridge_rpc::auth::new_client_entry("bench", "admin+secrets+usage")
                .map_err(|e| e.to_string())?;
        let config = with_settings(configuration(databases, vercel, &entry)?, settings)?;
        let folder = databases.folder();
        let config_path = folder.join("marketbridge.toml");
        let text = toml::to_string(&config).map_err(|e| format!("configuration: {e}"))?;
        std::fs::write(&config_path, text)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let log = folder.join("marketbridge.log");
        let readyz = format!("{}/readyz", config.gateway.public_url);
        let (child, pid, first_start) =
            spawn_ready(binary, &config_path, &log, &readyz, timeout).await?;
        Ok(Self {
            child,
            pid,
            log,
            binary: binary.to_path_buf(),
            config_path,
            readyz,
            vercel_url: format!("{}{}", config.gateway.public_url, config.vercel.base_path),
            gateway_url: config.gateway.public_url,
            account_url: config.gateway.account_url,
            provisioning_url: config.gateway.provisioning_url,
            billing_url: config.gateway.billing_url,
            grpc_token,
            first_start,
        })
    }

    /// Stops the set (SIGTERM) and starts it again on the same
    /// configuration and the now migrated databases, as an operator's
    /// restart or a new replica would; returns the new start-up to ready.
    pub async fn restart(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.terminate(Duration::from_secs(20)).await?;
        let (child, pid, startup) = spawn_ready(
            &self.binary,
            &self.config_path,
            &self.log,
            &self.readyz,
            timeout,
        )
        .await?;
        self.child = child;
        self.pid = pid;
        Ok(startup)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Asks it to stop (SIGTERM, through `kill`) and waits; kills it after
    /// `grace`.
    pub async fn stop(mut self, grace: Duration) -> Result<(), String> {
        self.terminate(grace).await
    }

    async fn terminate(&mut self, grace: Duration) -> Result<(), String> {
        let asked = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if asked && let Ok(waited) = tokio::time::timeout(grace, self.child.wait()).await {
            let status = waited.map_err(|e| e.to_string())?;
            return match status.success() {
                true => Ok(()),
                false => Err(format!(
                    "marketbridge stopped with {status}:\n{}",
                    log_tail(&self.log)
                )),
            };
        }
        let _ = self.child.kill().await;
        Err("marketbridge did not stop when asked; killed".into())
    }
}

/// Spawns `binary --config config_path up`, logging to `log` (appended), and
/// waits until `readyz` answers 200; the child, its pid and the time that
/// took.
async fn spawn_ready(
    binary: &Path,
    config_path: &Path,
    log: &Path,
    readyz: &str,
    timeout: Duration,
) -> Result<(tokio::process::Child, u32, Duration), String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the log: {e}"))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--config")
        .arg(config_path)
        .arg("up")
        .stdin(std::process::Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(true);
    // Settings come from the file alone: no `MARKETBRIDGE_*` of ours.
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .starts_with(marketbridge_config::ENV_PREFIX)
        {
            command.env_remove(name);
        }
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id().ok_or("the marketbridge process has no id")?;
    loop {
        if let Ok(response) = http.get(readyz).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok((child, pid, spawned.elapsed()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "marketbridge exited ({status}) before it was ready:\n{}",
                log_tail(log)
            ));
        }
        if spawned.elapsed() > timeout {
            let _ = child.kill().await;
            return Err(format!(
                "marketbridge was not ready after {} s:\n{}",
                timeout.as_secs(),
                log_tail(log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reach_the_configuration_and_unknown_ones_are_refused() {
        let settings = [
            "outbox.batch_size=512".to_owned(),
            "telemetry.log_format = json".to_owned(),
            "gateway.console_enabled=false".to_owned(),
        ];
        let config = with_settings(Config::default(), &settings).unwrap();
        assert_eq!(config.outbox.batch_size, 512);
        assert_eq!(config.telemetry.log_format, "json");
        assert!(!config.gateway.console_enabled);
        // Everything else keeps its value.
        let defaults = Config::default();
        assert_eq!(config.outbox.intake_wait_ms, defaults.outbox.intake_wait_ms);

        for wrong in ["outbox.batch_sise=512", "outbox.batch_size=many", "outbox"] {
            let refused = with_settings(Config::default(), &[wrong.to_owned()]);
            assert!(refused.is_err(), "{wrong} was taken: {refused:?}");
        }
    }
}
