//! Configuration for every marketbridge component, in one place.
//!
//! Layers, each overriding the one before: built-in defaults, a TOML file
//! (`--config` or `MARKETBRIDGE_CONFIG`), then environment variables named
//! `MARKETBRIDGE_<SECTION>__<KEY>` (for example `MARKETBRIDGE_GATEWAY__LISTEN`).
//! Every external endpoint and trust anchor is a setting here; README.md has
//! the reference table, and a test keeps the two in step.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod aws;
mod azure;

pub use aws::{AwsOptions, AwsProductType};
pub use azure::{AZURE_MARKETPLACE_RESOURCE, AzureOptions};

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "MARKETBRIDGE_";
/// Environment variable naming the TOML file.
pub const CONFIG_FILE_ENV: &str = "MARKETBRIDGE_CONFIG";

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where embedded databases and generated keys live.
    pub data: DataOptions,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryOptions,
    /// Encryption at rest.
    pub security: SecurityOptions,
    /// TLS for the gateway, the services and the calls between them.
    pub tls: TlsOptions,
    /// The account service.
    pub account: AccountOptions,
    /// The provisioning service and its drivers.
    pub provisioning: ProvisioningOptions,
    /// The billing service.
    pub billing: BillingOptions,
    /// The REST gateway.
    pub gateway: GatewayOptions,
    /// The product and plan catalog.
    pub catalog: CatalogOptions,
    /// The outbox worker's retry policy.
    pub outbox: OutboxOptions,
    /// Vercel Marketplace.
    pub vercel: VercelOptions,
    /// Google Cloud Marketplace.
    pub google: GoogleOptions,
    /// AWS Marketplace.
    pub aws: AwsOptions,
    /// Azure Marketplace.
    pub azure: AzureOptions,
}

/// Where local state lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataOptions {
    /// Folder for SQLite files and the generated development key.
    pub dir: String,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self { dir: "data".into() }
    }
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryOptions {
    /// OTLP/gRPC endpoint for traces and metrics (`http://127.0.0.1:4317`);
    /// empty disables export.
    pub otlp_endpoint: String,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Log filter in `tracing` syntax.
    pub log_filter: String,
    /// Interval of the OTLP metric export, in milliseconds.
    pub metrics_export_interval_ms: u64,
    /// Fraction of traces recorded and exported when `otlp_endpoint` is
    /// set, from 0 to 1 (a trace whose caller sent a sampled `traceparent`
    /// follows the caller's choice). Without an endpoint no span is recorded
    /// and log lines carry no trace ids.
    pub trace_sampling_ratio: f64,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            log_format: "text".into(),
            log_filter: "info,sqlx=warn,sea_orm=warn,h2=warn,tower=warn,hyper=warn".into(),
            metrics_export_interval_ms: 10_000,
            trace_sampling_ratio: 1.0,
        }
    }
}

/// Secrets and who may call the services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityOptions {
    /// Base64 of a 32-byte AES-256-GCM key for secrets at rest. When empty,
    /// it is read from `secrets_dir`; `marketbridge up` creates one in the
    /// data folder; the services alone refuse to start without one.
    pub encryption_key: String,
    /// Folder of generated secret files (`encryption.key`, `session.secret`,
    /// `service.token`, `database.password`), as `marketbridge secrets init`
    /// writes them; a secret set directly wins over its file.
    pub secrets_dir: String,
    /// Bearer token the parts of a set present to each other's gRPC
    /// services (at least 32 characters); every service accepts it as the
    /// caller `marketbridge` with every scope.
    pub service_token: String,
    /// Further gRPC callers, separated by commas or new lines, each
    /// `NAME:SCOPES:CREDENTIAL`: SCOPES joined by `+` from `admin`,
    /// `secrets`, `entitlements`, `usage`; CREDENTIAL is `sha256:<hex of the
    /// SHA-256 of the bearer token>` or `cert-sha256:<hex of the SHA-256 of
    /// the client certificate (DER)>` for mTLS. `marketbridge token NAME
    /// SCOPES` makes one.
    pub grpc_clients: String,
    /// Serve gRPC to anyone without credentials. For a closed test network
    /// only; logged loudly at start.
    pub allow_unauthenticated: bool,
    /// How long stored idempotent answers are kept for replays, in seconds;
    /// a purge removes older ones.
    pub idempotency_retention_seconds: u64,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            encryption_key: String::new(),
            secrets_dir: String::new(),
            service_token: String::new(),
            grpc_clients: String::new(),
            allow_unauthenticated: false,
            idempotency_retention_seconds: 2 * 24 * 3600,
        }
    }
}

/// TLS settings. Empty paths mean plain TCP on loopback.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM certificate chain the gateway serves HTTPS with.
    pub gateway_cert: String,
    /// PEM private key of `gateway_cert`.
    pub gateway_key: String,
    /// PEM certificate chain the gRPC services serve with.
    pub service_cert: String,
    /// PEM private key of `service_cert`.
    pub service_key: String,
    /// PEM CA bundle; when set, services require client certificates signed
    /// by it (mTLS).
    pub service_client_ca: String,
    /// PEM CA bundle clients trust for the services' certificates.
    pub client_ca: String,
    /// PEM client certificate presented to services (mTLS).
    pub client_cert: String,
    /// PEM private key of `client_cert`.
    pub client_key: String,
    /// PEM CA bundle trusted for outbound HTTPS in addition to the system
    /// roots (a private marketplace endpoint, a simulator).
    pub outbound_extra_ca: String,
}

/// The account service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccountOptions {
    /// gRPC listen address.
    pub listen: String,
    /// Database URL; empty means a SQLite file in the data folder.
    pub database_url: String,
    /// Address serving Prometheus `/metrics`; empty disables it.
    pub metrics_listen: String,
    /// Most account lookups (by our id or by the marketplace's) kept in
    /// memory to answer `GetAccount` without a database read; any committed
    /// change to the account database empties the cache (on PostgreSQL, any
    /// replica's change to `accounts`, announced through `LISTEN`/`NOTIFY`).
    /// 0 turns the cache off.
    pub account_cache_entries: usize,
}

impl Default for AccountOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            database_url: String::new(),
            metrics_listen: String::new(),
            account_cache_entries: 10_000,
        }
    }
}

/// The provisioning service: a gRPC service, its usage meter, and the
/// settings of the built-in `postgres` and `plugin` drivers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisioningOptions {
    /// gRPC listen address.
    pub listen: String,
    /// Database URL; empty means a SQLite file in the data folder.
    pub database_url: String,
    /// Address serving Prometheus `/metrics`; empty disables it.
    pub metrics_listen: String,
    /// How often drivers measure the usage of every live resource (database
    /// size, connections, plug-in usage) and record it in billing, in
    /// seconds; 0 turns the meter off.
    pub usage_interval_seconds: u64,
    /// Admin connection of the PostgreSQL server the `postgres` driver
    /// creates customer databases on (`postgres://admin:pw@host:5432/postgres`).
    /// The role needs CREATEDB and CREATEROLE (or superuser). Empty leaves the
    /// `postgres` driver out, and a catalog product naming it is refused.
    pub postgres_admin_url: String,
    /// Host customers connect to (in `DATABASE_URL` and `PGHOST`); empty
    /// means the host of `postgres_admin_url`.
    pub postgres_host: String,
    /// Port customers connect to; 0 means the port of `postgres_admin_url`.
    pub postgres_port: u16,
    /// Query parameters added to every customer `DATABASE_URL`, for example
    /// `sslmode=require`.
    pub postgres_url_parameters: String,
    /// How long a deleted database is kept (connections refused) before it
    /// and its roles are dropped, in seconds.
    pub postgres_deletion_grace_seconds: u64,
    /// Deadline of one call to a provisioner plug-in, in milliseconds, unless
    /// the product's `[products.plugin]` table sets `timeout_ms`.
    pub plugin_timeout_ms: u64,
    /// Bearer token sent to provisioner plug-ins (`authorization` metadata);
    /// empty sends none.
    pub plugin_token: String,
    /// Most resource rows kept in memory to answer single-resource reads
    /// (`GetResource`, a resource's secrets, the console) without a database
    /// read; any committed change empties the cache (on PostgreSQL, any
    /// replica's change to `resources`, announced through `LISTEN`/`NOTIFY`).
    /// 0 turns the cache off.
    pub resource_cache_entries: usize,
}

impl Default for ProvisioningOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50052".into(),
            database_url: String::new(),
            metrics_listen: String::new(),
            usage_interval_seconds: 3600,
            postgres_admin_url: String::new(),
            postgres_host: String::new(),
            postgres_port: 0,
            postgres_url_parameters: String::new(),
            postgres_deletion_grace_seconds: 7 * 24 * 3600,
            plugin_timeout_ms: 10_000,
            plugin_token: String::new(),
            resource_cache_entries: 10_000,
        }
    }
}

/// The billing service: a gRPC service plus its schedules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BillingOptions {
    /// gRPC listen address.
    pub listen: String,
    /// Database URL; empty means a SQLite file in the data folder.
    pub database_url: String,
    /// Address serving Prometheus `/metrics`; empty disables it.
    pub metrics_listen: String,
    /// How often the billing scheduler runs the due work (usage reports,
    /// interim billing, balances, period-end invoices, closings), in
    /// seconds.
    pub report_interval_seconds: u64,
    /// How long after an hour (or billing period) ends its usage is taken as
    /// complete and reported, in seconds. Usage recorded later for a time
    /// already reported is refused.
    pub usage_settle_seconds: u64,
    /// How far in the future a usage event's time may be (clock skew between
    /// the provider's meters and marketbridge), in seconds. A closing bills
    /// usage up to the uninstall plus this much.
    pub usage_future_skew_seconds: u64,
    /// Send Vercel invoices in test mode (hidden from dashboards).
    pub test_invoices: bool,
    /// The outcome test invoices ask the marketplace to simulate (`paid`,
    /// `notpaid`, `overdue`); empty for the marketplace's default.
    pub test_invoice_result: String,
}

impl Default for BillingOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50053".into(),
            database_url: String::new(),
            metrics_listen: String::new(),
            report_interval_seconds: 300,
            usage_settle_seconds: 300,
            usage_future_skew_seconds: 300,
            test_invoices: false,
            test_invoice_result: String::new(),
        }
    }
}

/// The REST gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayOptions {
    /// HTTP(S) listen address.
    pub listen: String,
    /// The URL marketplaces and browsers reach the gateway at.
    pub public_url: String,
    /// Account service gRPC URL.
    pub account_url: String,
    /// Provisioning service gRPC URL.
    pub provisioning_url: String,
    /// Billing service gRPC URL.
    pub billing_url: String,
    /// End-to-end deadline of one marketplace call, in milliseconds.
    pub request_timeout_ms: u64,
    /// Base64 of at least 32 random bytes, signing session cookies and
    /// signup tickets; never the encryption key. When empty, it is read from
    /// `security.secrets_dir` (`session.secret`); `marketbridge up` creates
    /// one in the data folder; the gateway alone refuses to start without
    /// one.
    pub session_secret: String,
    /// Address serving Prometheus `/metrics` (an internal port; the public
    /// listener serves none); empty disables it.
    pub metrics_listen: String,
    /// How long a client may take to send a request's headers, in
    /// milliseconds; the connection is closed after that.
    pub header_read_timeout_ms: u64,
    /// How long a kept-alive connection may sit idle between requests, in
    /// milliseconds, before it is closed.
    pub idle_timeout_ms: u64,
    /// Most connections served at once; further connections wait in the
    /// listen backlog until one closes.
    pub max_connections: u32,
    /// How long fetched signing keys (Vercel's and Google's JWKS) are fresh,
    /// in seconds; they are refetched in the background before that.
    pub jwks_cache_seconds: u64,
    /// How long past their freshness keys are still used while the key
    /// endpoint fails, in seconds.
    pub jwks_max_stale_seconds: u64,
    /// Serves the operator console under `/console` (operators sign in with
    /// a gRPC caller token holding the `admin` scope).
    pub console_enabled: bool,
    /// How long an operator's console session lasts, in seconds.
    pub console_session_seconds: u64,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            account_url: "http://127.0.0.1:50051".into(),
            provisioning_url: "http://127.0.0.1:50052".into(),
            billing_url: "http://127.0.0.1:50053".into(),
            request_timeout_ms: 3000,
            session_secret: String::new(),
            metrics_listen: "127.0.0.1:9464".into(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            jwks_cache_seconds: 600,
            jwks_max_stale_seconds: 86_400,
            console_enabled: true,
            console_session_seconds: 8 * 3600,
        }
    }
}

/// The product and plan catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogOptions {
    /// Path of the catalog TOML file; empty means the built-in example
    /// catalog.
    pub path: String,
}

/// Retry policy of the outbox worker that carries every outbound call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxOptions {
    /// Pause between polls when the queue is empty, in milliseconds; also the
    /// longest a new job waits while the worker's only due jobs are those of
    /// kinds whose lanes are full.
    pub poll_interval_ms: u64,
    /// Jobs a worker runs at once; one kind of job takes at most a quarter
    /// of them, so a slow marketplace delays only its own work. A job holds
    /// its slot until its handler returns, so a kind drains at about a
    /// quarter of this divided by a job's time including its claim.
    pub batch_size: u32,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay, in milliseconds; doubled on every attempt.
    pub backoff_initial_ms: u64,
    /// Largest retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// How long a claimed job is hidden from other workers, in seconds; the
    /// worker renews it every third of that while the job runs.
    pub lease_seconds: u64,
    /// How long a replica keeps a periodic task (scheduler, usage meter,
    /// reconciliations) without renewing, in seconds; another replica takes
    /// the task over after that.
    pub leader_lease_seconds: u64,
    /// Longest a call that causes a job waits, before its transaction, for
    /// a slot in the lane of that job while the lane is full and its jobs
    /// are finishing, in milliseconds: the API takes work no faster than
    /// the worker runs it. A lane where no job finished for this long is
    /// not waited for. 0 turns the wait off.
    pub intake_wait_ms: u64,
    /// How long finished jobs (done or discarded) are kept, in seconds; a
    /// sweep removes older ones, leaving their dedupe keys behind so no
    /// job with one of those keys is enqueued again. Dead jobs stay until
    /// an operator retries or discards them. 0 keeps every job forever.
    pub retention_seconds: u64,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            batch_size: 128,
            max_attempts: 12,
            backoff_initial_ms: 1000,
            backoff_max_ms: 300_000,
            lease_seconds: 60,
            leader_lease_seconds: 30,
            intake_wait_ms: 100,
            retention_seconds: 7 * 24 * 3600,
        }
    }
}

/// Vercel Marketplace settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VercelOptions {
    /// Expected `iss` of Vercel's OIDC tokens.
    pub oidc_issuer: String,
    /// Where Vercel's signing keys are published.
    pub jwks_url: String,
    /// The integration client id (`oac_...`); the expected `aud`.
    pub client_id: String,
    /// The integration client secret (webhook signatures, SSO, token
    /// rotation).
    pub client_secret: String,
    /// Base URL of the Vercel REST API.
    pub api_base_url: String,
    /// Path prefix the partner API is served under (the integration's "Base
    /// URL" path), for example `/vercel`.
    pub base_path: String,
    /// Plan assigned to new installations when installation-level billing is
    /// on; empty when billing is per resource.
    pub default_installation_plan: String,
    /// The integration's URL slug. When set, a provider page opened without
    /// a session sends the browser through Vercel's sign-in
    /// (`{dashboard_url}/sso/integrations/{slug}/{installation}`) and back.
    pub integration_slug: String,
    /// Base URL of the Vercel dashboard (provider-initiated SSO).
    pub dashboard_url: String,
    /// Origins the import flow may send the browser back to (the `return`
    /// of the Import Resource URL), comma-separated. Vercel's own origin
    /// is derived from its example (UNVERIFIED that no other is used).
    pub import_return_origins: String,
    /// Field of an Update Resource body naming the resource's allowed
    /// environments (`["production"]` alone makes it production-only);
    /// empty ignores any such field. Vercel documents none (UNVERIFIED).
    pub allowed_environments_field: String,
    /// Longest lifetime (`exp` minus `iat`) of a Vercel token accepted, in
    /// seconds; a token meant to live longer is refused.
    pub token_max_lifetime_seconds: u64,
    /// Which installation token calls to Vercel use: `short-lived` (1-hour
    /// tokens from the client-credentials grant, falling back to the stored
    /// long-lived token while the grant fails) or `long-lived` (the stored
    /// token only).
    pub installation_tokens: String,
    /// Where short-lived installation tokens are requested: a URL, or a path
    /// under `api_base_url` (UNVERIFIED).
    pub token_endpoint: String,
    /// How the token request is encoded: `form` or `json` (UNVERIFIED).
    pub token_request_encoding: String,
    /// The `grant_type` of the token request (UNVERIFIED).
    pub token_grant_type: String,
    /// The token request's field carrying the client id (UNVERIFIED).
    pub token_client_id_field: String,
    /// The token request's field carrying the client secret (UNVERIFIED).
    pub token_client_secret_field: String,
    /// The token request's field naming the installation (UNVERIFIED).
    pub token_installation_field: String,
    /// The token answer's field holding the token (UNVERIFIED).
    pub token_response_token_field: String,
    /// The token answer's field holding the lifetime in seconds
    /// (UNVERIFIED).
    pub token_response_expires_field: String,
    /// How long before its expiry a short-lived token is replaced, in
    /// seconds.
    pub token_refresh_margin_seconds: u64,
    /// The field of `credentials/revoke` naming the credential to retire
    /// (UNVERIFIED).
    pub revoke_token_field: String,
    /// Rotate every installation's credential after this many days (through
    /// `credentials/rotate` and `credentials/revoke`); 0 turns scheduled
    /// rotation off.
    pub credential_rotation_days: u64,
}

impl Default for VercelOptions {
    fn default() -> Self {
        Self {
            oidc_issuer: "https://marketplace.vercel.com".into(),
            jwks_url: "https://marketplace.vercel.com/.well-known/jwks".into(),
            client_id: String::new(),
            client_secret: String::new(),
            api_base_url: "https://api.vercel.com".into(),
            base_path: "/vercel".into(),
            default_installation_plan: String::new(),
            integration_slug: String::new(),
            dashboard_url: "https://vercel.com".into(),
            import_return_origins: "https://vercel.com".into(),
            allowed_environments_field: String::new(),
            token_max_lifetime_seconds: 24 * 3600,
            installation_tokens: "short-lived".into(),
            token_endpoint: "/login/oauth/token".into(),
            token_request_encoding: "form".into(),
            token_grant_type: "client_credentials".into(),
            token_client_id_field: "client_id".into(),
            token_client_secret_field: "client_secret".into(),
            token_installation_field: "installation_id".into(),
            token_response_token_field: "access_token".into(),
            token_response_expires_field: "expires_in".into(),
            token_refresh_margin_seconds: 300,
            revoke_token_field: "token".into(),
            credential_rotation_days: 0,
        }
    }
}

/// Google Cloud Marketplace settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleOptions {
    /// The provider id Google assigned (`DEMO-project` in the codelab).
    pub provider_id: String,
    /// Expected `aud` of Pub/Sub push tokens.
    pub pubsub_push_audience: String,
    /// Expected `email` of Pub/Sub push tokens (the push service account).
    pub pubsub_push_service_account: String,
    /// Where Google's OIDC signing keys are published.
    pub oidc_jwks_url: String,
    /// Accepted `iss` values of Pub/Sub push tokens, comma-separated.
    pub oidc_issuers: String,
    /// Pinned `iss` of signup tokens (`x-gcp-marketplace-token`).
    pub signup_issuer: String,
    /// Where the signup token keys are published (JWK form).
    pub signup_jwks_url: String,
    /// Expected `aud` of signup tokens (the product's domain).
    pub signup_audience: String,
    /// Base URL of the Partner Procurement API.
    pub procurement_base_url: String,
    /// Base URL of Service Control.
    pub service_control_base_url: String,
    /// Base URL of the Pub/Sub REST API (pull mode).
    pub pubsub_base_url: String,
    /// OAuth token endpoint; empty means the key file's `token_uri`.
    pub oauth_token_url: String,
    /// Path of the service-account JSON key used to call Google.
    pub service_account_key_file: String,
    /// Service Control service name (the product's service domain).
    pub service_name: String,
    /// Full Pub/Sub subscription name for pull mode
    /// (`projects/p/subscriptions/s`); empty disables pulling.
    pub pull_subscription: String,
    /// How often the reconciliation job runs, in seconds.
    pub reconcile_interval_seconds: u64,
    /// Gateway path Pub/Sub push deliveries are POSTed to (the push
    /// subscription's endpoint is `gateway.public_url` + this path).
    pub push_path: String,
    /// Gateway path of the signup page (the product's "Sign up URL" is
    /// `gateway.public_url` + this path).
    pub signup_path: String,
    /// Gateway path under which the A2A Agent Card of every agent product
    /// is served, at `{agents_path}/{product}/agent-card.json`.
    pub agents_path: String,
    /// How long usage windows Google cannot take (Service Control failing,
    /// check errors) are kept and retried, in days from the window's end;
    /// past it a window is marked failed and no longer sent. Google
    /// recommends a grace period of at most 30 days.
    pub report_grace_days: u64,
}

impl Default for GoogleOptions {
    fn default() -> Self {
        Self {
            provider_id: String::new(),
            pubsub_push_audience: String::new(),
            pubsub_push_service_account: String::new(),
            oidc_jwks_url: "https://www.googleapis.com/oauth2/v3/certs".into(),
            oidc_issuers: "https://accounts.google.com,accounts.google.com".into(),
            signup_issuer:
                "https://www.googleapis.com/robot/v1/metadata/x509/cloud-commerce-partner@system.gserviceaccount.com"
                    .into(),
            signup_jwks_url:
                "https://www.googleapis.com/robot/v1/metadata/jwk/cloud-commerce-partner@system.gserviceaccount.com"
                    .into(),
            signup_audience: String::new(),
            procurement_base_url: "https://cloudcommerceprocurement.googleapis.com".into(),
            service_control_base_url: "https://servicecontrol.googleapis.com".into(),
            pubsub_base_url: "https://pubsub.googleapis.com".into(),
            oauth_token_url: String::new(),
            service_account_key_file: String::new(),
            service_name: String::new(),
            pull_subscription: String::new(),
            reconcile_interval_seconds: 3600,
            push_path: "/google/pubsub".into(),
            signup_path: "/google/signup".into(),
            agents_path: "/google/agents".into(),
            report_grace_days: 30,
        }
    }
}

impl Default for Config {
    /// The defaults every deployment starts from: the three services on their
    /// well-known loopback ports, SQLite files in `./data`.
    fn default() -> Self {
        Self {
            data: DataOptions::default(),
            telemetry: TelemetryOptions::default(),
            security: SecurityOptions::default(),
            tls: TlsOptions::default(),
            account: AccountOptions {
                listen: "127.0.0.1:50051".into(),
                ..AccountOptions::default()
            },
            provisioning: ProvisioningOptions::default(),
            billing: BillingOptions::default(),
            gateway: GatewayOptions::default(),
            catalog: CatalogOptions::default(),
            outbox: OutboxOptions::default(),
            vercel: VercelOptions::default(),
            google: GoogleOptions::default(),
            aws: AwsOptions::default(),
            azure: AzureOptions::default(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (or the file named by
    /// `MARKETBRIDGE_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        Self::figment(file.as_deref())
            .extract()
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The layered sources, for callers that add their own.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only `MARKETBRIDGE_<SECTION>__<KEY>` names are settings; other
        // `MARKETBRIDGE_*` variables (the config file, test switches) are not.
        figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
    }

    /// Every setting as `section.key`, in declaration order.
    pub fn keys() -> Vec<String> {
        let value = serde_json::to_value(Config::default()).unwrap_or_default();
        let mut keys = Vec::new();
        if let serde_json::Value::Object(sections) = value {
            for (section, fields) in sections {
                if let serde_json::Value::Object(fields) = fields {
                    keys.extend(fields.keys().map(|key| format!("{section}.{key}")));
                }
            }
        }
        keys
    }

    /// The environment variable that sets `section.key`.
    pub fn env_var(key: &str) -> String {
        format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
    }

    /// The database URL of a service: the configured one, or a SQLite file
    /// named after the service in the data folder.
    pub fn database_url(&self, configured: &str, service: &str) -> String {
        if !configured.is_empty() {
            return configured.to_owned();
        }
        let path = Path::new(&self.data.dir).join(format!("{service}.db"));
        format!("sqlite://{}?mode=rwc", path.display())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "mb.toml",
                r#"
                [gateway]
                listen = "0.0.0.0:9000"
                request_timeout_ms = 2500
                [vercel]
                client_id = "oac_file"
                "#,
            )?;
            jail.set_env("MARKETBRIDGE_VERCEL__CLIENT_ID", "oac_env");
            jail.set_env("MARKETBRIDGE_OUTBOX__MAX_ATTEMPTS", "3");
            jail.set_env("MARKETBRIDGE_SOMETHING_ELSE", "ignored");
            let config = Config::load(Some(Path::new("mb.toml"))).expect("loads");
            assert_eq!(config.gateway.listen, "0.0.0.0:9000");
            assert_eq!(config.gateway.request_timeout_ms, 2500);
            assert_eq!(config.vercel.client_id, "oac_env");
            assert_eq!(config.outbox.max_attempts, 3);
            assert_eq!(config.account.listen, "127.0.0.1:50051");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("mb.toml", "[gateway]\nlisten_addr = \"x\"\n")?;
            let error = Config::load(Some(Path::new("mb.toml"))).unwrap_err();
            assert!(error.to_string().contains("listen_addr"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn keys_and_env_names() {
        let keys = Config::keys();
        assert!(keys.contains(&"gateway.listen".to_owned()));
        assert!(keys.contains(&"google.signup_audience".to_owned()));
        assert_eq!(
            Config::env_var("gateway.public_url"),
            "MARKETBRIDGE_GATEWAY__PUBLIC_URL"
        );
        let config = Config::default();
        assert_eq!(
            config.database_url("", "account"),
            "sqlite://data/account.db?mode=rwc"
        );
        assert_eq!(
            config.database_url("postgres://x/y", "account"),
            "postgres://x/y"
        );
    }
}
