//! The Google Cloud Marketplace simulator. It plays Google over real HTTP:
//! the Partner Procurement API with its account and entitlement state
//! machines, an OAuth token endpoint that accepts the service-account key it
//! issued, Pub/Sub push deliveries (OIDC-signed, kept until acknowledged) and
//! a pull subscription, a signup-token issuer, Service Control, and the
//! customer's actions (purchase, plan change, cancellation, deletion) that
//! make Google publish notifications. Everything it receives and sends is
//! recorded, and its API can fail on demand.

mod api;
mod control;
mod topic;
mod world;

pub use topic::{Published, PushAttempt};
pub use world::{ApiError, PlanChangeTiming, SimAccount, SimEntitlement, World, state};

use crate::common::{Observed, SigningKey, SimServer};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::time::SharedClock;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use topic::Topic;

/// The issuer Google's signup tokens carry.
pub const SIGNUP_ISSUER: &str = "https://www.googleapis.com/robot/v1/metadata/x509/cloud-commerce-partner@system.gserviceaccount.com";
/// The issuer of Google's OIDC tokens.
pub const OIDC_ISSUER: &str = "https://accounts.google.com";
/// The service account Pub/Sub pushes as.
pub const PUSH_SERVICE_ACCOUNT: &str = "pubsub-push@marketbridge-demo.iam.gserviceaccount.com";
/// The audience push tokens are minted for.
pub const PUSH_AUDIENCE: &str = "https://marketbridge.example/google/pubsub";
/// The product domain signup tokens are minted for.
pub const SIGNUP_AUDIENCE: &str = "database.endpoints.marketbridge-demo.cloud.goog";
/// The Service Control service name.
pub const SERVICE_NAME: &str = "database.endpoints.marketbridge-demo.cloud.goog";
/// The product's external name.
pub const PRODUCT: &str = "database";

/// How the simulator starts.
#[derive(Clone)]
pub struct GoogleSimulatorOptions {
    /// The provider id.
    pub provider_id: String,
    /// Address to listen on (port 0 picks one).
    pub listen: String,
    /// Time source (share the services' clock in tests).
    pub clock: SharedClock,
    /// Ack deadline of the pull subscription, in seconds.
    pub ack_deadline_seconds: i64,
}

impl GoogleSimulatorOptions {
    /// Defaults: provider `DEMO-marketbridge`, a free loopback port.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            provider_id: "DEMO-marketbridge".into(),
            listen: "127.0.0.1:0".into(),
            clock,
            ack_deadline_seconds: 10,
        }
    }
}

/// The signing keys Google holds.
pub(crate) struct Keys {
    pub push_oidc: SigningKey,
    pub signup: SigningKey,
    pub service_account: SigningKey,
}

#[derive(Debug, Default)]
struct ServiceControlState {
    checks: Vec<Value>,
    reports: Vec<Value>,
    /// When each accepted operation arrived (same order as `reports`).
    reported_at: Vec<DateTime<Utc>>,
    /// Service Control is down: every call answers 503.
    outage: bool,
    check_errors: HashMap<String, Vec<Value>>,
    report_errors: HashMap<String, (i32, String)>,
}

/// Everything behind the simulator's API.
pub(crate) struct SimState {
    pub provider_id: String,
    pub project: String,
    pub pull_subscription: String,
    pub service_name: String,
    pub service_account_email: String,
    pub clock: SharedClock,
    pub observed: Arc<Observed>,
    pub keys: Keys,
    base_url: OnceLock<String>,
    world: Mutex<World>,
    topic: Mutex<Topic>,
    access_tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    service_control: Mutex<ServiceControlState>,
    push: Mutex<PushTarget>,
    signup_url: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Default)]
struct PushTarget {
    endpoint: Option<String>,
    audience: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimState {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    pub(crate) fn topic(&self) -> MutexGuard<'_, Topic> {
        lock(&self.topic)
    }

    pub(crate) fn token_url(&self) -> String {
        format!("{}/token", self.base_url.get().cloned().unwrap_or_default())
    }

    /// Runs a change and publishes the notifications it produced.
    pub(crate) fn change_world<T>(&self, change: impl FnOnce(&mut World) -> T) -> T {
        let (result, notices) = {
            let mut world = self.world();
            let result = change(&mut world);
            (result, world.take_outgoing())
        };
        if !notices.is_empty() {
            let now = self.now();
            let mut topic = self.topic();
            for notice in notices {
                let mut data = notice.payload;
                if let Some(event_type) = &notice.event_type {
                    data["eventType"] = json!(event_type);
                }
                topic.publish(notice.event_id, notice.event_type, data, now);
            }
        }
        result
    }

    pub(crate) fn signup_token(&self, account_id: &str) -> String {
        let now = self.now().timestamp();
        self.keys.signup.sign(&json!({
            "iss": SIGNUP_ISSUER,
            "iat": now,
            "exp": now + 300,
            "aud": SIGNUP_AUDIENCE,
            "sub": account_id,
            "google": {"roles": ["account_admin"], "user_identity": format!("user-{account_id}")},
        }))
    }

    pub(crate) fn signup_url(&self) -> Option<String> {
        lock(&self.signup_url).clone()
    }

    pub(crate) fn issue_access_token(&self) -> String {
        let token = format!("ya29.sim-{}", uuid::Uuid::new_v4().simple());
        lock(&self.access_tokens).insert(token.clone(), self.now() + ChronoDuration::seconds(3599));
        token
    }

    pub(crate) fn token_is_valid(&self, token: &str) -> bool {
        let now = self.now();
        lock(&self.access_tokens)
            .get(token)
            .is_some_and(|expires| *expires > now)
    }

    fn usage_ids(&self) -> Vec<String> {
        self.world()
            .entitlements
            .values()
            .filter_map(|e| e.usage_reporting_id.clone())
            .collect()
    }

    /// When the entitlement behind each cancelled usage reporting id ended.
    fn ended_usage_ids(&self) -> HashMap<String, DateTime<Utc>> {
        self.world()
            .entitlements
            .values()
            .filter(|e| e.state == world::state::CANCELLED)
            .filter_map(|e| Some((e.usage_reporting_id.clone()?, e.updated)))
            .collect()
    }

    /// Takes Service Control down or brings it back.
    pub(crate) fn set_service_control_outage(&self, down: bool) {
        lock(&self.service_control).outage = down;
    }

    /// True while Service Control is down (503 to every call).
    pub(crate) fn service_control_down(&self) -> bool {
        lock(&self.service_control).outage
    }

    pub(crate) fn service_check(&self, body: &Value) -> Result<Value, ApiError> {
        let operation = &body["operation"];
        validate_operation(operation)?;
        if operation.get("userLabels").is_some() {
            return Err(ApiError::invalid(
                "userLabels are not allowed in check requests.",
            ));
        }
        let consumer = operation["consumerId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let known = self.usage_ids().contains(&consumer);
        let mut control = lock(&self.service_control);
        control.checks.push(operation.clone());
        let mut errors = control
            .check_errors
            .get(&consumer)
            .cloned()
            .unwrap_or_default();
        if !known && errors.is_empty() {
            errors.push(json!({"code": "PROJECT_INVALID", "subject": consumer, "detail": "Unknown consumer."}));
        }
        let mut answer = json!({
            "operationId": operation["operationId"],
            "serviceConfigId": "2026-11-01r0",
            "serviceRolloutId": "2026-11-01r0",
        });
        if !errors.is_empty() {
            answer["checkErrors"] = Value::Array(errors);
        }
        Ok(answer)
    }

    pub(crate) fn service_report(&self, body: &Value) -> Result<Value, ApiError> {
        let operations = body["operations"]
            .as_array()
            .filter(|ops| !ops.is_empty())
            .ok_or_else(|| ApiError::invalid("operations are required."))?;
        for operation in operations {
            validate_operation(operation)?;
        }
        let known = self.usage_ids();
        let ended = self.ended_usage_ids();
        let now = self.now();
        let mut control = lock(&self.service_control);
        let mut report_errors = Vec::new();
        for operation in operations {
            let consumer = operation["consumerId"].as_str().unwrap_or_default();
            let failure = control.report_errors.get(consumer).cloned().or_else(|| {
                (!known.iter().any(|id| id == consumer))
                    .then(|| (3, format!("Unknown consumer {consumer}.")))
            });
            let failure = failure.or_else(|| after_entitlement_end(&ended, operation));
            match failure {
                Some((code, message)) => report_errors.push(json!({
                    "operationId": operation["operationId"],
                    "status": {"code": code, "message": message},
                })),
                None => {
                    control.reports.push(operation.clone());
                    control.reported_at.push(now);
                }
            }
        }
        let mut answer =
            json!({"serviceConfigId": "2026-11-01r0", "serviceRolloutId": "2026-11-01r0"});
        if !report_errors.is_empty() {
            answer["reportErrors"] = Value::Array(report_errors);
        }
        Ok(answer)
    }
}

/// Google's rule after a cancellation: usage is reported with the time it
/// happened, before the entitlement ended; nothing later is taken.
fn after_entitlement_end(
    ended: &HashMap<String, DateTime<Utc>>,
    operation: &Value,
) -> Option<(i32, String)> {
    let consumer = operation["consumerId"].as_str()?;
    let ended_at = ended.get(consumer)?;
    let end = DateTime::parse_from_rfc3339(operation["endTime"].as_str()?).ok()?;
    (end.with_timezone(&Utc) > *ended_at + ChronoDuration::milliseconds(1)).then(|| {
        (
            3,
            format!("Usage reported after the entitlement ended for consumer {consumer}."),
        )
    })
}

fn validate_operation(operation: &Value) -> Result<(), ApiError> {
    for field in [
        "operationId",
        "operationName",
        "consumerId",
        "startTime",
        "endTime",
    ] {
        if operation[field].as_str().is_none_or(str::is_empty) {
            return Err(ApiError::invalid(&format!(
                "operation.{field} is required."
            )));
        }
    }
    for set in operation["metricValueSets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if set["metricName"].as_str().is_none_or(str::is_empty) {
            return Err(ApiError::invalid("metricName is required."));
        }
        for value in set["metricValues"].as_array().into_iter().flatten() {
            if let Some(int64) = value.get("int64Value")
                && int64.as_str().is_none_or(|t| t.parse::<i64>().is_err())
            {
                return Err(ApiError::invalid(
                    "int64Value must be an integer in a string.",
                ));
            }
        }
    }
    Ok(())
}

/// How a batch of push deliveries is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryPlan {
    /// Shuffle the batch with this seed.
    pub shuffle_seed: Option<u64>,
    /// Deliver every message twice.
    pub duplicate: bool,
    /// At most this many messages (taken after shuffling, so the others
    /// are delayed to a later batch).
    pub limit: Option<usize>,
}

/// A purchase: the account and the new entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// Procurement account id.
    pub account_id: String,
    /// Entitlement id.
    pub entitlement_id: String,
}

/// A running Google simulator.
pub struct GoogleSimulator {
    state: Arc<SimState>,
    server: SimServer,
    http: reqwest::Client,
    auto_push: Mutex<Option<CancellationToken>>,
}

impl std::fmt::Debug for GoogleSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleSimulator")
            .field("url", &self.server.url)
            .finish_non_exhaustive()
    }
}

impl GoogleSimulator {
    /// Starts the simulator.
    pub async fn start(options: GoogleSimulatorOptions) -> std::io::Result<Self> {
        let project = "marketbridge-demo".to_owned();
        let state = Arc::new(SimState {
            provider_id: options.provider_id.clone(),
            pull_subscription: format!("projects/{project}/subscriptions/marketbridge-pull"),
            service_name: SERVICE_NAME.to_owned(),
            service_account_email: format!("marketbridge@{project}.iam.gserviceaccount.com"),
            project,
            clock: options.clock.clone(),
            observed: Arc::new(Observed::default()),
            keys: Keys {
                push_oidc: SigningKey::generate("google-oidc-1"),
                signup: SigningKey::generate("cloud-commerce-partner-1"),
                service_account: SigningKey::generate(uuid::Uuid::new_v4().simple().to_string()),
            },
            base_url: OnceLock::new(),
            world: Mutex::new(World::new(&options.provider_id)),
            topic: Mutex::new(Topic::new(options.ack_deadline_seconds)),
            access_tokens: Mutex::new(HashMap::new()),
            service_control: Mutex::new(ServiceControlState::default()),
            push: Mutex::new(PushTarget {
                endpoint: None,
                audience: PUSH_AUDIENCE.to_owned(),
            }),
            signup_url: Mutex::new(None),
        });
        let router = api::router(state.clone()).merge(control::router(state.clone()));
        let server = SimServer::start(router, &options.listen).await?;
        let _ = state.base_url.set(server.url.clone());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            state,
            server,
            http,
            auto_push: Mutex::new(None),
        })
    }

    /// The base URL (every Google API lives under it).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The provider id.
    pub fn provider_id(&self) -> &str {
        &self.state.provider_id
    }

    /// Recorded API requests and fault injection.
    pub fn api(&self) -> &Observed {
        &self.state.observed
    }

    /// The pull subscription's full name.
    pub fn pull_subscription(&self) -> &str {
        &self.state.pull_subscription
    }

    /// The service account the key file is for.
    pub fn service_account_email(&self) -> &str {
        &self.state.service_account_email
    }

    /// The URL of the push OIDC keys.
    pub fn oidc_jwks_url(&self) -> String {
        format!("{}/oauth2/v3/certs", self.url())
    }

    /// The URL of the signup token keys.
    pub fn signup_jwks_url(&self) -> String {
        format!(
            "{}/robot/v1/metadata/jwk/cloud-commerce-partner@system.gserviceaccount.com",
            self.url()
        )
    }

    /// The OAuth token endpoint.
    pub fn token_url(&self) -> String {
        self.state.token_url()
    }

    /// The service-account key file Google would let the provider download.
    pub fn service_account_key_json(&self) -> String {
        let key = &self.state.keys.service_account;
        json!({
            "type": "service_account",
            "project_id": self.state.project,
            "private_key_id": key.kid(),
            "private_key": key.private_key_pem(),
            "client_email": self.state.service_account_email,
            "client_id": "100000000000000000001",
            "token_uri": self.token_url(),
        })
        .to_string()
    }

    /// Writes the service-account key file to `path`.
    pub fn write_service_account_key(&self, path: &Path) -> std::io::Result<PathBuf> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, self.service_account_key_json())?;
        Ok(path.to_path_buf())
    }

    /// Every `google.*` setting that points marketbridge at this simulator,
    /// as `(key, value)` pairs (`key_file` is where the key was written).
    pub fn settings(&self, key_file: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("provider_id", self.state.provider_id.clone()),
            ("pubsub_push_audience", PUSH_AUDIENCE.to_owned()),
            (
                "pubsub_push_service_account",
                PUSH_SERVICE_ACCOUNT.to_owned(),
            ),
            ("oidc_jwks_url", self.oidc_jwks_url()),
            ("oidc_issuers", OIDC_ISSUER.to_owned()),
            ("signup_issuer", SIGNUP_ISSUER.to_owned()),
            ("signup_jwks_url", self.signup_jwks_url()),
            ("signup_audience", SIGNUP_AUDIENCE.to_owned()),
            ("procurement_base_url", self.url().to_owned()),
            ("service_control_base_url", self.url().to_owned()),
            ("pubsub_base_url", self.url().to_owned()),
            ("oauth_token_url", String::new()),
            ("service_account_key_file", key_file.display().to_string()),
            ("service_name", SERVICE_NAME.to_owned()),
        ]
    }

    /// Points `config.google` at this simulator (the key file must be
    /// written to `key_file` already).
    pub fn configure(&self, config: &mut marketbridge_config::Config, key_file: &Path) {
        let mut google = serde_json::to_value(&config.google).unwrap_or_default();
        for (key, value) in self.settings(key_file) {
            google[key] = Value::String(value);
        }
        if let Ok(configured) = serde_json::from_value(google) {
            config.google = configured;
        }
    }

    // ---- state for assertions ---------------------------------------------

    /// A copy of Google's state.
    pub fn with_world<T>(&self, read: impl FnOnce(&World) -> T) -> T {
        read(&self.state.world())
    }

    /// Changes how Google behaves (plan change timing, legacy events).
    pub fn configure_world(&self, change: impl FnOnce(&mut World)) {
        change(&mut self.state.world());
    }

    /// An account, if Google has it.
    pub fn account(&self, account_id: &str) -> Option<SimAccount> {
        self.state.world().accounts.get(account_id).cloned()
    }

    /// An entitlement, if Google has it.
    pub fn entitlement(&self, entitlement_id: &str) -> Option<SimEntitlement> {
        self.state.world().entitlements.get(entitlement_id).cloned()
    }

    /// Every message published so far, in order.
    pub fn published(&self) -> Vec<Published> {
        self.state.topic().published.clone()
    }

    /// Every push attempt so far, in order.
    pub fn push_attempts(&self) -> Vec<PushAttempt> {
        self.state.topic().push_attempts.clone()
    }

    /// Messages the push subscription still holds.
    pub fn pending_pushes(&self) -> usize {
        self.state.topic().push_queue.len()
    }

    /// Messages of the pull subscription not acknowledged yet.
    pub fn unacknowledged_pulls(&self) -> usize {
        self.state.topic().unacknowledged_pulls()
    }

    /// Drops every message the push subscription holds (lost notifications).
    pub fn drop_pending_pushes(&self) -> usize {
        let mut topic = self.state.topic();
        let count = topic.push_queue.len();
        topic.push_queue.clear();
        count
    }

    /// Operations Service Control checked.
    pub fn checked_operations(&self) -> Vec<Value> {
        lock(&self.state.service_control).checks.clone()
    }

    /// Operations Service Control accepted in reports.
    pub fn reported_operations(&self) -> Vec<Value> {
        lock(&self.state.service_control).reports.clone()
    }

    /// Operations Service Control accepted, each with the (simulator clock)
    /// time it arrived, in arrival order.
    pub fn reported_operations_at(&self) -> Vec<(DateTime<Utc>, Value)> {
        let control = lock(&self.state.service_control);
        control
            .reported_at
            .iter()
            .copied()
            .zip(control.reports.iter().cloned())
            .collect()
    }

    /// Takes Service Control down (every `services.check` and
    /// `services.report` answers 503 `UNAVAILABLE`) or brings it back.
    pub fn set_service_control_outage(&self, down: bool) {
        self.state.set_service_control_outage(down);
    }

    /// Makes `services.check` for `consumer_id` answer these `checkErrors`
    /// codes (empty clears).
    pub fn set_check_errors(&self, consumer_id: &str, codes: &[&str]) {
        let errors: Vec<Value> = codes
            .iter()
            .map(|code| json!({"code": code, "subject": consumer_id, "detail": format!("{code} for {consumer_id}")}))
            .collect();
        let mut control = lock(&self.state.service_control);
        if errors.is_empty() {
            control.check_errors.remove(consumer_id);
        } else {
            control.check_errors.insert(consumer_id.to_owned(), errors);
        }
    }

    /// Makes `services.report` refuse operations of `consumer_id` inside a
    /// 200 answer with this status (`None` clears).
    pub fn set_report_error(&self, consumer_id: &str, error: Option<(i32, &str)>) {
        let mut control = lock(&self.state.service_control);
        match error {
            Some((code, message)) => {
                control
                    .report_errors
                    .insert(consumer_id.to_owned(), (code, message.to_owned()));
            }
            None => {
                control.report_errors.remove(consumer_id);
            }
        }
    }

    // ---- tokens -------------------------------------------------------------

    /// A signup token for `account_id`, as Google posts it (valid 5 minutes).
    pub fn signup_token(&self, account_id: &str) -> String {
        self.state.signup_token(account_id)
    }

    /// Signs arbitrary signup claims with Google's signup key.
    pub fn sign_signup_claims(&self, claims: &Value) -> String {
        self.state.keys.signup.sign(claims)
    }

    /// The claims of a valid push token at this moment.
    pub fn push_claims(&self) -> Value {
        let now = self.state.now().timestamp();
        let audience = lock(&self.state.push).audience.clone();
        json!({
            "iss": OIDC_ISSUER,
            "aud": audience,
            "azp": "109876543210987654321",
            "sub": "109876543210987654321",
            "email": PUSH_SERVICE_ACCOUNT,
            "email_verified": true,
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// Signs arbitrary push token claims with Google's OIDC key.
    pub fn sign_push_claims(&self, claims: &Value) -> String {
        self.state.keys.push_oidc.sign(claims)
    }

    // ---- push delivery ------------------------------------------------------

    /// Where push deliveries go, and the audience their tokens carry.
    pub fn set_push_endpoint(&self, endpoint: &str, audience: &str) {
        let mut push = lock(&self.state.push);
        push.endpoint = Some(endpoint.to_owned());
        push.audience = audience.to_owned();
    }

    /// Where "Sign up with provider" sends the customer (the provider's
    /// signup URL), for the simulator's control pages.
    pub fn set_signup_url(&self, url: &str) {
        *lock(&self.state.signup_url) = Some(url.to_owned());
    }

    /// Posts one envelope for `message` to the push endpoint with a fresh
    /// token; returns the status (0 when unreachable).
    async fn push_one(&self, message: &Published) -> u16 {
        let endpoint = lock(&self.state.push).endpoint.clone();
        let Some(endpoint) = endpoint else {
            return 0;
        };
        let token = self.sign_push_claims(&self.push_claims());
        let envelope = json!({
            "message": message.message_json(true),
            "subscription": format!("projects/{}/subscriptions/marketbridge-push", self.state.project),
        });
        let status = match self
            .http
            .post(&endpoint)
            .bearer_auth(token)
            .json(&envelope)
            .send()
            .await
        {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        let attempt = PushAttempt {
            message_id: message.message_id.clone(),
            event_id: message.event_id.clone(),
            event_type: message.event_type.clone(),
            status,
        };
        self.state.topic().push_attempts.push(attempt);
        status
    }

    /// Delivers every held message once, in publish order; acknowledged ones
    /// are released, the others stay for redelivery. Returns the attempts.
    pub async fn deliver_pushes(&self) -> Vec<PushAttempt> {
        self.deliver_pushes_with(DeliveryPlan::default()).await
    }

    /// Delivers held messages as `plan` says (shuffled, duplicated, some).
    pub async fn deliver_pushes_with(&self, plan: DeliveryPlan) -> Vec<PushAttempt> {
        let mut batch: Vec<Published> = self
            .state
            .topic()
            .push_queue
            .iter()
            .map(|p| p.message.clone())
            .collect();
        let mut random = plan.shuffle_seed.map(rand::rngs::StdRng::seed_from_u64);
        if let Some(random) = random.as_mut() {
            batch.shuffle(random);
        }
        if let Some(limit) = plan.limit {
            batch.truncate(limit);
        }
        if plan.duplicate {
            batch = batch.iter().flat_map(|m| [m.clone(), m.clone()]).collect();
            if let Some(random) = random.as_mut() {
                batch.shuffle(random);
            }
        }
        self.deliver_batch(batch).await
    }

    async fn deliver_batch(&self, batch: Vec<Published>) -> Vec<PushAttempt> {
        let mut attempts = Vec::with_capacity(batch.len());
        for message in batch {
            let status = self.push_one(&message).await;
            let attempt = PushAttempt {
                message_id: message.message_id.clone(),
                event_id: message.event_id.clone(),
                event_type: message.event_type.clone(),
                status,
            };
            let mut topic = self.state.topic();
            if attempt.acknowledged() {
                topic
                    .push_queue
                    .retain(|p| p.message.message_id != message.message_id);
            } else if let Some(pending) = topic
                .push_queue
                .iter_mut()
                .find(|p| p.message.message_id == message.message_id)
            {
                pending.attempts += 1;
                let backoff = Duration::from_millis(25 * (1 << pending.attempts.min(5)));
                pending.next_attempt = Instant::now() + backoff;
            }
            attempts.push(attempt);
        }
        attempts
    }

    /// Pushes in the background every `interval`, retrying with backoff
    /// (as Pub/Sub does) until stopped or the simulator is dropped.
    pub fn start_auto_push(self: &Arc<Self>, interval: Duration) {
        let stop = CancellationToken::new();
        if let Some(previous) = lock(&self.auto_push).replace(stop.clone()) {
            previous.cancel();
        }
        let simulator = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let Some(simulator) = simulator.upgrade() else {
                    return;
                };
                let due: Vec<Published> = simulator
                    .state
                    .topic()
                    .push_queue
                    .iter()
                    .filter(|p| p.next_attempt <= Instant::now())
                    .map(|p| p.message.clone())
                    .collect();
                if !due.is_empty() {
                    simulator.deliver_batch(due).await;
                }
            }
        });
    }

    /// Stops background pushing.
    pub fn stop_auto_push(&self) {
        if let Some(stop) = lock(&self.auto_push).take() {
            stop.cancel();
        }
    }

    // ---- customer actions ---------------------------------------------------

    fn act(
        &self,
        action: impl FnOnce(&mut World, DateTime<Utc>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let now = self.state.now();
        self.state.change_world(|world| action(world, now))
    }

    /// A new customer buys `plan` of `product`: a new account (signup
    /// pending) and an entitlement waiting for approval.
    pub fn purchase(&self, product: &str, plan: &str) -> Purchase {
        let now = self.state.now();
        let (account_id, entitlement_id) = self
            .state
            .change_world(|world| world.purchase(now, None, product, plan));
        Purchase {
            account_id,
            entitlement_id,
        }
    }

    /// An existing account buys another order.
    pub fn purchase_for(&self, account_id: &str, product: &str, plan: &str) -> Purchase {
        let now = self.state.now();
        let (account_id, entitlement_id) = self
            .state
            .change_world(|world| world.purchase(now, Some(account_id), product, plan));
        Purchase {
            account_id,
            entitlement_id,
        }
    }

    /// A private offer with automatic approval is accepted; it starts at
    /// `start` (at once when `None`).
    pub fn accept_private_offer(
        &self,
        account_id: Option<&str>,
        product: &str,
        plan: &str,
        start: Option<DateTime<Utc>>,
    ) -> Purchase {
        let now = self.state.now();
        let (account_id, entitlement_id) = self.state.change_world(|world| {
            world.accept_private_offer(now, account_id, product, plan, start)
        });
        Purchase {
            account_id,
            entitlement_id,
        }
    }

    /// Approved offers whose start time passed become active.
    pub fn start_due_offers(&self) -> Vec<String> {
        let now = self.state.now();
        self.state.change_world(|world| world.start_due_offers(now))
    }

    /// The customer asks for another plan.
    pub fn request_plan_change(&self, entitlement_id: &str, plan: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.request_plan_change(now, entitlement_id, plan))
    }

    /// The customer withdraws a plan change.
    pub fn withdraw_plan_change(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.withdraw_plan_change(now, entitlement_id))
    }

    /// The billing cycle ends (an approved plan change takes effect).
    pub fn end_billing_cycle(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.end_billing_cycle(now, entitlement_id))
    }

    /// The customer cancels at the end of the term.
    pub fn cancel(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.cancel(now, entitlement_id))
    }

    /// The customer reverts the cancellation.
    pub fn revert_cancellation(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.revert_cancellation(now, entitlement_id))
    }

    /// The term ends: a pending cancellation becomes a cancellation.
    pub fn end_term(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.end_term(now, entitlement_id))
    }

    /// The entitlement is cancelled at once (billing disabled).
    pub fn cancel_immediately(&self, entitlement_id: &str, reason: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.cancel_immediately(now, entitlement_id, reason))
    }

    /// The entitlement renews.
    pub fn renew(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.renew(now, entitlement_id))
    }

    /// The private offer's term ends.
    pub fn end_offer(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.end_offer(now, entitlement_id))
    }

    /// A person approves the entitlement in Producer Portal: it activates
    /// (`ENTITLEMENT_ACTIVE`) without any call from the provider.
    pub fn approve_in_producer_portal(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.approve_in_producer_portal(now, entitlement_id))
    }

    /// The cancelled entitlement's record is deleted.
    pub fn delete_entitlement(&self, entitlement_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.delete_entitlement(now, entitlement_id))
    }

    /// The account is deleted from the Marketplace.
    pub fn delete_account(&self, account_id: &str) -> Result<(), ApiError> {
        self.act(|world, now| world.delete_account(now, account_id))
    }

    /// Publishes an arbitrary notification payload (unknown event types,
    /// hand-made messages).
    pub fn publish_raw(&self, payload: Value) {
        let event_id = payload["eventId"].as_str().unwrap_or_default().to_owned();
        let event_type = payload["eventType"].as_str().map(str::to_owned);
        let now = self.state.now();
        self.state
            .topic()
            .publish(event_id, event_type, payload, now);
    }
}

impl Drop for GoogleSimulator {
    fn drop(&mut self) {
        self.stop_auto_push();
        self.server.stop();
    }
}
