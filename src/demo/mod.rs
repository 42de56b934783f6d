//! `marketbridge demo <marketplace>`: the whole set on SQLite in a temporary
//! folder next to a marketplace simulator, with a customer's lifecycle walked
//! step by step and printed.

mod aws;
mod azure;
mod google;
mod vercel;

pub use aws::aws;
pub use azure::{azure, simulate as simulate_azure};
pub use google::google;
pub use vercel::{demo_config, run_vercel_demo};

use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::{Error, Result};
use std::path::{Path, PathBuf};

/// A fresh temporary folder for the demo `name`'s SQLite files.
fn demo_folder(name: &str) -> Result<PathBuf> {
    let folder =
        std::env::temp_dir().join(format!("marketbridge-demo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&folder)
        .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", folder.display())))?;
    Ok(folder)
}

/// Every part and the metrics listener on loopback port 0, the public URL
/// taken from where the gateway listens.
fn on_loopback(config: &mut Config) {
    for listen in [
        &mut config.account.listen,
        &mut config.provisioning.listen,
        &mut config.billing.listen,
        &mut config.gateway.listen,
        &mut config.gateway.metrics_listen,
    ] {
        *listen = "127.0.0.1:0".into();
    }
    config.gateway.public_url = String::new();
}

/// A demo set's configuration before its marketplace is added: every part
/// (and the metrics listener) on loopback port 0, so demos and a running set
/// never collide, SQLite in `folder`, a fresh encryption key, an outbox
/// that looks for work often.
fn local_config(folder: &Path) -> Config {
    let mut config = Config::default();
    config.data.dir = folder.display().to_string();
    on_loopback(&mut config);
    config.outbox.poll_interval_ms = 50;
    config.security.encryption_key = Cipher::generate_base64_key();
    config
}
