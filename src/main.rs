//! `marketbridge`: run the whole set, or one part of it.
//!
//! ```text
//! marketbridge up                 all three services and the gateway, SQLite in ./data
//! marketbridge account            the account service alone (likewise provisioning, billing, gateway)
//! marketbridge config             every setting and its environment variable
//! marketbridge sim vercel         the Vercel simulator alone, with a config snippet
//! marketbridge demo vercel        the set and the simulator, walking the Vercel flow
//! marketbridge sim google         the Google Cloud Marketplace simulator, for local trials
//! marketbridge demo google        the whole set plus the simulator, walking the Google lifecycle
//! marketbridge sim aws            the AWS Marketplace simulator, for local trials
//! marketbridge demo aws           the whole set plus the simulator, walking an AWS license's lifecycle
//! marketbridge sim azure          the Azure Marketplace simulator, for local trials
//! marketbridge demo azure         the whole set plus the simulator, walking an Azure SaaS subscription's lifecycle
//! ```

mod redact;

use clap::{Parser, Subcommand};
use marketbridge::set::{RunningSet, SetOptions};
use marketbridge_config::Config;
use marketbridge_rpc::process::{exit_code, load_cipher, run_process};
use marketbridge_rpc::secrets::Needs;
use marketbridge_simulators::vercel::{VercelSimulator, VercelSimulatorOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "marketbridge",
    version,
    about = "An open backend for SaaS sold through cloud marketplaces"
)]
struct Cli {
    /// Configuration file (TOML); `MARKETBRIDGE_CONFIG` also names one.
    #[arg(long, global = true, env = "MARKETBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the account, provisioning and billing services and the gateway
    /// together (SQLite files in the data folder unless configured).
    Up,
    /// Run the account service alone.
    Account,
    /// Run the provisioning service alone.
    Provisioning,
    /// Run the billing service alone.
    Billing,
    /// Run the gateway alone.
    Gateway,
    /// Print every setting with its default and environment variable.
    Config,
    /// Create the secret files a deployment needs (encryption key, session
    /// secret, service token, database password) in a folder, keeping those
    /// that exist; compose runs it on first start.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Make a credential for a new gRPC caller: prints the bearer token to
    /// give the caller and the `security.grpc_clients` entry for the
    /// services (which hold only its hash).
    Token {
        /// The caller's name (shown in logs and traces).
        name: String,
        /// Scopes joined by `+`: admin, secrets, entitlements, usage.
        scopes: String,
    },
    /// Run a marketplace simulator (for trying marketbridge locally).
    Sim {
        #[command(subcommand)]
        marketplace: SimMarketplace,
    },
    /// Start the set and a simulator, and walk a marketplace's whole flow.
    Demo {
        #[command(subcommand)]
        marketplace: DemoMarketplace,
    },
    /// Exit 0 when the target is healthy: `grpc://host:port` asks the gRPC
    /// health service, `http(s)://…` expects a 2xx (health checks in images).
    Probe {
        /// The target.
        target: String,
    },
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Write the missing secret files into DIR.
    Init {
        /// The folder (`security.secrets_dir` of every part).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SimMarketplace {
    /// Plays Vercel: tokens, JWKS, the Vercel API, webhooks and SSO.
    Vercel {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8484")]
        listen: String,
        /// Integration client id; a fresh one when absent.
        #[arg(long)]
        client_id: Option<String>,
        /// Integration client secret; a fresh one when absent.
        #[arg(long)]
        client_secret: Option<String>,
    },
    /// Google Cloud Marketplace: Procurement API, OAuth, Pub/Sub push and
    /// pull, signup tokens, Service Control.
    Google {
        /// Address the simulator listens on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// Where to write the service-account key marketbridge uses
        /// (default: `google-service-account.json` in the data folder).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The gateway's public URL (default: `gateway.public_url`).
        #[arg(long)]
        gateway_url: Option<String>,
        /// Do not push notifications (marketbridge pulls them).
        #[arg(long)]
        no_push: bool,
    },
    /// AWS Marketplace: ResolveCustomer, GetEntitlements and BatchMeterUsage
    /// (SigV4-checked), the buyer's registration POST, EventBridge and SNS.
    Aws {
        /// Address the simulator listens on.
        #[arg(long, default_value = "127.0.0.1:8092")]
        listen: String,
        /// The gateway's public URL (default: `gateway.public_url`).
        #[arg(long)]
        gateway_url: Option<String>,
    },
    /// Azure Marketplace: an Entra tenant, the SaaS Fulfillment API v2 and
    /// the metering API, signed connection webhook calls.
    Azure {
        /// Address the simulator listens on.
        #[arg(long, default_value = "127.0.0.1:8094")]
        listen: String,
        /// The gateway's public URL (default: `gateway.public_url`).
        #[arg(long)]
        gateway_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum DemoMarketplace {
    /// install → plans → provision → get → change plan → rotate → delete →
    /// uninstall, against the Vercel simulator.
    Vercel,
    /// Google Cloud Marketplace, from purchase to account deletion.
    Google {
        /// Pull notifications instead of receiving pushes.
        #[arg(long)]
        pull: bool,
    },
    /// AWS Marketplace, from purchase to deprovisioning.
    Aws,
    /// Azure Marketplace, from purchase to cancellation.
    Azure,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.config {
        // SAFETY: set before any thread starts; `run_process` reads it.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(marketbridge_config::CONFIG_FILE_ENV, path);
        }
    }
    match cli.command {
        Command::Up => run_process("marketbridge", |mut config, shutdown| async move {
            // The development secrets live in the data folder (or
            // `security.secrets_dir`) and are shared by every part.
            marketbridge_rpc::secrets::resolve(&mut config, Needs::all(), true)?;
            let cipher = load_cipher(&config)?;
            let options = SetOptions {
                config,
                clock: marketbridge_core::time::system_clock(),
                cipher,
                run_workers: true,
            };
            let set = RunningSet::start(options).await?;
            marketbridge_rpc::process::release_free_memory();
            let a = set.addresses;
            println!("marketbridge is up (Ctrl-C stops it)");
            println!(
                "  gateway       {}   (/healthz, /readyz)",
                set.gateway_url()
            );
            if let Some(metrics) = a.metrics {
                println!("  metrics       http://{metrics}/metrics");
            }
            println!("  account       grpc://{}", a.account);
            println!("  provisioning  grpc://{}", a.provisioning);
            println!("  billing       grpc://{}", a.billing);
            println!(
                "  gRPC token    {}   (authorization: Bearer …)",
                std::path::Path::new(&set.config.data.dir)
                    .join(marketbridge_rpc::secrets::SERVICE_TOKEN_FILE)
                    .display()
            );
            println!(
                "  data          {}",
                std::path::Path::new(&set.config.data.dir).display()
            );
            let stop = set.shutdown_token();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stop.cancel();
            });
            set.wait().await
        }),
        Command::Account => run_process("marketbridge-account", |config, shutdown| async move {
            marketbridge_account::run(&config, shutdown).await
        }),
        Command::Provisioning => {
            run_process("marketbridge-provisioning", |config, shutdown| async move {
                marketbridge_provisioning::run(&config, shutdown).await
            })
        }
        Command::Billing => run_process("marketbridge-billing", |config, shutdown| async move {
            marketbridge_billing::run(&config, shutdown).await
        }),
        Command::Gateway => run_process("marketbridge-gateway", |config, shutdown| async move {
            marketbridge_gateway::run(&config, shutdown).await
        }),
        Command::Probe { target } => {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|runtime| {
                    runtime
                        .block_on(marketbridge::probe::probe(&target))
                        .map_err(|e| e.to_string())
                });
            exit_code("marketbridge probe", outcome)
        }
        Command::Config => exit_code("marketbridge config", print_config(cli.config.as_deref())),
        Command::Secrets {
            action: SecretsAction::Init { dir },
        } => exit_code(
            "marketbridge secrets init",
            marketbridge_rpc::secrets::init_dir(&dir)
                .map(|created| {
                    for file in created {
                        println!("created {}", dir.join(file).display());
                    }
                })
                .map_err(|e| e.to_string()),
        ),
        Command::Token { name, scopes } => exit_code(
            "marketbridge token",
            marketbridge_rpc::auth::new_client_entry(&name, &scopes)
                .map(|(entry, token)| {
                    println!("token for {name} (give it to the caller; shown once):");
                    println!("  {token}");
                    println!("entry for security.grpc_clients (holds only the token's hash):");
                    println!("  {entry}");
                })
                .map_err(|e| e.to_string()),
        ),
        Command::Sim {
            marketplace:
                SimMarketplace::Vercel {
                    listen,
                    client_id,
                    client_secret,
                },
        } => run_process("marketbridge-sim-vercel", |config, shutdown| async move {
            let defaults = VercelSimulatorOptions::default();
            let options = VercelSimulatorOptions {
                client_id: client_id.unwrap_or(defaults.client_id),
                client_secret: client_secret.unwrap_or(defaults.client_secret),
                issuer: None,
            };
            let sim = VercelSimulator::start(options, &listen)
                .await
                .map_err(|e| {
                    marketbridge_core::Error::unavailable(format!("cannot listen on {listen}: {e}"))
                })?;
            let redirect_login_url = format!(
                "{}{}/sso",
                config.gateway.public_url.trim_end_matches('/'),
                marketbridge_gateway::vercel::base_path(&config.vercel.base_path)
            );
            sim.set_redirect_login_url(&redirect_login_url);
            println!("Vercel simulator on {} (Ctrl-C stops it)", sim.url());
            println!("  Vercel API     {}/v1/...", sim.url());
            println!("  JWKS           {}", sim.jwks_url());
            println!(
                "  discovery      {}/.well-known/openid-configuration",
                sim.url()
            );
            println!();
            println!("Point marketbridge at it with this configuration:");
            println!();
            println!("{}", sim.config_snippet());
            println!("or these environment variables:");
            println!();
            println!("MARKETBRIDGE_VERCEL__OIDC_ISSUER={}", sim.issuer());
            println!("MARKETBRIDGE_VERCEL__JWKS_URL={}", sim.jwks_url());
            println!("MARKETBRIDGE_VERCEL__API_BASE_URL={}", sim.url());
            println!("MARKETBRIDGE_VERCEL__CLIENT_ID={}", sim.client_id());
            println!("MARKETBRIDGE_VERCEL__CLIENT_SECRET={}", sim.client_secret());
            println!("MARKETBRIDGE_VERCEL__DASHBOARD_URL={}", sim.url());
            println!("MARKETBRIDGE_VERCEL__INTEGRATION_SLUG=marketbridge-demo");
            println!();
            println!("Its dashboard sends sign-ins to the Redirect Login URL {redirect_login_url}");
            println!();
            println!("Act as Vercel (see README, \"Try the Vercel flow locally\"):");
            println!(
                "  curl -s -X POST {}/_sim/installations          an installation, its token and user/system tokens",
                sim.url()
            );
            println!(
                "  curl -s -X POST {}/_sim/tokens -d '{{\"installationId\":\"icfg_...\",\"role\":\"ADMIN\"}}'",
                sim.url()
            );
            println!(
                "  curl -s {}/_sim/installations/icfg_...         what Vercel received",
                sim.url()
            );
            shutdown.cancelled().await;
            Ok(())
        }),
        Command::Demo {
            marketplace: DemoMarketplace::Vercel,
        } => run_quiet_process("marketbridge demo vercel", |config| async move {
            marketbridge::demo::run_vercel_demo(&config).await
        }),
        Command::Sim {
            marketplace:
                SimMarketplace::Google {
                    listen,
                    key_file,
                    gateway_url,
                    no_push,
                },
        } => run_process("marketbridge-sim-google", |config, shutdown| async move {
            simulate_google(config, shutdown, listen, key_file, gateway_url, no_push).await
        }),
        Command::Demo {
            marketplace: DemoMarketplace::Google { pull },
        } => run_quiet_process("marketbridge demo google", |_config| async move {
            marketbridge::demo::google(pull).await
        }),
        Command::Sim {
            marketplace:
                SimMarketplace::Aws {
                    listen,
                    gateway_url,
                },
        } => run_process("marketbridge-sim-aws", |config, shutdown| async move {
            simulate_aws(config, shutdown, listen, gateway_url).await
        }),
        Command::Demo {
            marketplace: DemoMarketplace::Aws,
        } => run_quiet_process("marketbridge demo aws", |_config| async move {
            marketbridge::demo::aws().await
        }),
        Command::Sim {
            marketplace:
                SimMarketplace::Azure {
                    listen,
                    gateway_url,
                },
        } => run_process("marketbridge-sim-azure", |config, shutdown| async move {
            marketbridge::demo::simulate_azure(config, shutdown, listen, gateway_url).await
        }),
        Command::Demo {
            marketplace: DemoMarketplace::Azure,
        } => run_quiet_process("marketbridge demo azure", |_config| async move {
            marketbridge::demo::azure().await
        }),
    }
}

/// Runs a command whose output is the point: logs only show warnings unless
/// `RUST_LOG` says otherwise.
fn run_quiet_process<F, Fut>(name: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = marketbridge_core::Result<()>>,
{
    let outcome = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async move {
                let mut config =
                    Config::load(marketbridge_rpc::process::config_path_from_args().as_deref())
                        .map_err(|e| e.to_string())?;
                config.telemetry.log_filter = "warn".to_owned();
                let telemetry = marketbridge_telemetry::init(name, &config.telemetry)
                    .map_err(|e| e.to_string())?;
                marketbridge_rpc::tls::install_crypto_provider();
                let result = body(config).await;
                telemetry.shutdown();
                result.map_err(|e| e.to_string())
            })
        });
    exit_code(name, outcome)
}

/// Prints every setting, its value and its variable; every secret is
/// masked wherever it appears ([`redact`]).
fn print_config(path: Option<&std::path::Path>) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let values = serde_json::to_value(&config).map_err(|e| e.to_string())?;
    for key in Config::keys() {
        let (section, field) = key.split_once('.').unwrap_or((&key, ""));
        let shown = redact::redact_setting(&key, &values[section][field]);
        println!("{key} = {shown}    # {}", Config::env_var(&key));
    }
    Ok(())
}

/// Runs the Google simulator until `shutdown`, pointed at the gateway, and
/// prints the settings that point marketbridge at it.
async fn simulate_google(
    config: Config,
    shutdown: tokio_util::sync::CancellationToken,
    listen: String,
    key_file: Option<PathBuf>,
    gateway_url: Option<String>,
    no_push: bool,
) -> marketbridge_core::Result<()> {
    use marketbridge_simulators::google::{GoogleSimulator, GoogleSimulatorOptions, PUSH_AUDIENCE};
    let unavailable = |e: std::io::Error| marketbridge_core::Error::unavailable(e.to_string());
    let mut options = GoogleSimulatorOptions::new(marketbridge_core::time::system_clock());
    options.listen = listen;
    let sim = std::sync::Arc::new(GoogleSimulator::start(options).await.map_err(unavailable)?);
    let key_file = key_file.unwrap_or_else(|| {
        std::path::Path::new(&config.data.dir).join("google-service-account.json")
    });
    let key_file = sim
        .write_service_account_key(&key_file)
        .map_err(unavailable)?;
    let key_file = std::fs::canonicalize(&key_file).unwrap_or(key_file);
    let gateway = gateway_url
        .unwrap_or_else(|| config.gateway.public_url.clone())
        .trim_end_matches('/')
        .to_owned();
    sim.set_signup_url(&format!("{gateway}{}", config.google.signup_path));
    println!(
        "Google Cloud Marketplace simulator at {} (Ctrl-C stops it)",
        sim.url()
    );
    println!("\nPoint marketbridge at it:");
    for (key, value) in sim.settings(&key_file) {
        println!(
            "  export {}='{value}'",
            Config::env_var(&format!("google.{key}"))
        );
    }
    if no_push {
        println!(
            "  export {}='{}'",
            Config::env_var("google.pull_subscription"),
            sim.pull_subscription()
        );
    } else {
        let endpoint = format!("{gateway}{}", config.google.push_path);
        sim.set_push_endpoint(&endpoint, PUSH_AUDIENCE);
        sim.start_auto_push(std::time::Duration::from_millis(250));
        println!("\nPub/Sub pushes to {endpoint}");
    }
    let control = format!("{}/simulator", sim.url());
    println!("\nAct as the customer:");
    println!("  curl -s {control}                                  # Google's state");
    println!("  curl -s -XPOST {control}/purchases -d '{{\"plan\":\"pro-plan\"}}'");
    println!("  open {control}/accounts/<account>/signup             # \"Sign up with provider\"");
    println!(
        "  curl -s -XPOST {control}/entitlements/<entitlement>/plan-change -d '{{\"plan\":\"free-plan\"}}'"
    );
    println!(
        "  curl -s -XPOST {control}/entitlements/<entitlement>/cancel   (revert-cancellation, end-term, delete)"
    );
    println!("  curl -s -XPOST {control}/accounts/<account>/delete");
    shutdown.cancelled().await;
    Ok(())
}

/// Runs the AWS Marketplace simulator until `shutdown`, pointed at the
/// gateway, and prints the settings that point marketbridge at it.
async fn simulate_aws(
    config: Config,
    shutdown: tokio_util::sync::CancellationToken,
    listen: String,
    gateway_url: Option<String>,
) -> marketbridge_core::Result<()> {
    use marketbridge_simulators::aws::{
        ACCESS_KEY_ID, AwsSimulator, AwsSimulatorOptions, ENTITLEMENT_TOPIC, Endpoints,
        PRODUCT_CODE, SECRET_ACCESS_KEY, SUBSCRIPTION_TOPIC,
    };
    let unavailable = |e: std::io::Error| marketbridge_core::Error::unavailable(e.to_string());
    let mut options = AwsSimulatorOptions::new(marketbridge_core::time::system_clock());
    options.listen = listen;
    let sim = AwsSimulator::start(options).await.map_err(unavailable)?;
    let gateway = gateway_url
        .unwrap_or_else(|| config.gateway.public_url.clone())
        .trim_end_matches('/')
        .to_owned();
    let event_key = if config.aws.event_key.is_empty() {
        marketbridge_core::crypto::random_token(24)
    } else {
        config.aws.event_key.clone()
    };
    sim.set_endpoints(Endpoints {
        fulfillment_url: format!("{gateway}{}", config.aws.fulfillment_path),
        events_url: format!("{gateway}{}", config.aws.events_path),
        sns_url: format!("{gateway}{}", config.aws.sns_path),
        event_key: event_key.clone(),
    });
    println!(
        "AWS Marketplace simulator at {} (Ctrl-C stops it)",
        sim.url()
    );
    println!("\nPoint marketbridge at it:");
    for (key, value) in [
        ("product_code", PRODUCT_CODE.to_owned()),
        ("access_key_id", ACCESS_KEY_ID.to_owned()),
        ("secret_access_key", SECRET_ACCESS_KEY.to_owned()),
        ("metering_url", sim.url().to_owned()),
        ("entitlement_url", sim.url().to_owned()),
        ("event_key", event_key),
        (
            "sns_topic_arns",
            format!("{SUBSCRIPTION_TOPIC},{ENTITLEMENT_TOPIC}"),
        ),
        ("sns_certificate_url_pattern", sim.certificate_url_pattern()),
    ] {
        println!(
            "  export {}='{value}'",
            Config::env_var(&format!("aws.{key}"))
        );
    }
    let control = format!("{}/simulator", sim.url());
    println!("\nAct as the buyer:");
    println!("  curl -s {control}                                  # what AWS holds");
    println!(
        "  curl -s -XPOST {control}/purchases -H 'content-type: application/json' -d '{{\"entitlements\":{{\"pro_tier\":5}}}}'"
    );
    println!("  open {control}/licenses/<license>/setup          # \"Set up your account\"");
    println!(
        "  curl -s -XPOST {control}/licenses/<license>/entitlements -H 'content-type: application/json' -d '{{\"entitlements\":{{\"free_tier\":1}}}}'"
    );
    println!("  curl -s -XPOST {control}/licenses/<license>/deprovision");
    shutdown.cancelled().await;
    Ok(())
}
