//! The Azure Marketplace simulator. It plays Microsoft over real HTTP: an
//! Entra tenant (client-credentials token endpoint, OpenID configuration,
//! signing keys), the SaaS Fulfillment API v2 with its subscription and
//! operation state machines, the metering API, and the customer's actions
//! (purchase, plan and seat changes, suspension, reinstatement,
//! cancellation, renewal) that make Microsoft call the connection webhook
//! with an Entra-signed token. ChangePlan/ChangeQuantity wait for the
//! publisher's decision and are accepted on their own ten seconds (of the
//! simulator's clock) after a 2xx webhook answer. Everything it receives is
//! recorded, and its API can fail on demand.

mod api;
mod world;

pub use world::{
    AcceptedUsage, ApiError, DECISION_WINDOW, SimOperation, SimPlan, SimSubscription, World, status,
};

use crate::common::{Observed, SigningKey, SimServer};
use chrono::{DateTime, Utc};
use marketbridge_core::time::SharedClock;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The API version every Fulfillment and metering call must name.
pub const API_VERSION: &str = "2018-08-31";
/// The Marketplace SaaS API's Entra resource id.
pub const MARKETPLACE_RESOURCE: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";
/// The simulated publisher tenant.
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The provider's Entra app (the offer's technical configuration).
pub const CLIENT_ID: &str = "5b3c7d1e-0f1a-4c2b-9d3e-8f7a6b5c4d3e";

/// How the simulator starts.
#[derive(Clone)]
pub struct AzureSimulatorOptions {
    /// Address to listen on (port 0 picks one).
    pub listen: String,
    /// Time source (share the services' clock in tests).
    pub clock: SharedClock,
}

impl AzureSimulatorOptions {
    /// Defaults: a free loopback port.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            clock,
        }
    }
}

/// One webhook call and how it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// The operation.
    pub operation_id: String,
    /// Its action.
    pub action: String,
    /// The status (0 when unreachable).
    pub status: u16,
}

/// A purchase: the subscription and the landing page link.
#[derive(Debug, Clone)]
pub struct Purchase {
    /// The SaaS subscription id.
    pub subscription_id: String,
    /// The landing page token, raw (not URL-encoded).
    pub token: String,
    /// The landing page URL with the token, as the portal opens it.
    pub landing_url: String,
}

/// How held webhook calls are delivered.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryPlan {
    /// Send each call twice.
    pub duplicate: bool,
    /// Shuffle with this seed.
    pub shuffle_seed: Option<u64>,
}

pub(crate) struct Keys {
    pub entra: SigningKey,
}

/// Everything behind the simulator's API.
pub(crate) struct SimState {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub clock: SharedClock,
    pub observed: Arc<Observed>,
    pub keys: Keys,
    base_url: OnceLock<String>,
    world: Mutex<World>,
    access_tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    metering_outage: Mutex<bool>,
    webhook_url: Mutex<Option<String>>,
    landing_url: Mutex<Option<String>>,
    held_webhooks: Mutex<VecDeque<String>>,
    attempts: Mutex<Vec<WebhookAttempt>>,
    http: reqwest::Client,
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

    pub(crate) fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }

    pub(crate) fn metering_down(&self) -> bool {
        *lock(&self.metering_outage)
    }

    pub(crate) fn issue_access_token(&self) -> (String, i64) {
        let token = format!("azsim.{}", uuid::Uuid::new_v4().simple());
        let expires = self.now() + chrono::Duration::seconds(3599);
        lock(&self.access_tokens).insert(token.clone(), expires);
        (token, expires.timestamp())
    }

    pub(crate) fn access_token_valid(&self, token: &str) -> bool {
        lock(&self.access_tokens)
            .get(token)
            .is_some_and(|expires| *expires > self.now())
    }

    pub(crate) fn purchase(
        &self,
        plan: &str,
        quantity: Option<u64>,
        email: &str,
    ) -> Result<Purchase, ApiError> {
        let (subscription_id, token) = self.world().purchase(plan, quantity, email, self.now())?;
        Ok(Purchase {
            landing_url: self.landing_link(&token),
            subscription_id,
            token,
        })
    }

    fn landing_link(&self, token: &str) -> String {
        let base = lock(&self.landing_url)
            .clone()
            .unwrap_or_else(|| format!("{}/landing", self.base_url()));
        // The portal URL-encodes the token once.
        let encoded: String = url_encode(token);
        format!("{base}?token={encoded}")
    }

    pub(crate) fn queue_webhook(&self, operation_id: &str) {
        lock(&self.held_webhooks).push_back(operation_id.to_owned());
    }

    /// The claims of a valid webhook token now.
    pub(crate) fn webhook_claims(&self) -> Value {
        let now = self.now().timestamp();
        json!({
            "aud": self.client_id,
            "iss": format!("https://sts.windows.net/{}/", self.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": MARKETPLACE_RESOURCE,
            "appidacr": "2",
            "idp": format!("https://sts.windows.net/{}/", self.tenant_id),
            "oid": "e4a7c1d2-0000-4000-8000-00000000a11e",
            "sub": "e4a7c1d2-0000-4000-8000-00000000a11e",
            "tid": self.tenant_id,
            "ver": "1.0",
        })
    }

    async fn post_webhook(&self, operation_id: &str, token: Option<String>) -> WebhookAttempt {
        let endpoint = lock(&self.webhook_url).clone();
        let body = self.world().webhook_json(operation_id);
        let action = body
            .as_ref()
            .and_then(|b| b["action"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let status = match (endpoint, body) {
            (Some(endpoint), Some(body)) => {
                let mut request = self.http.post(&endpoint).json(&body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                match request.send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                }
            }
            _ => 0,
        };
        let now = self.now();
        {
            let mut world = self.world();
            let waiting = world
                .operation(operation_id)
                .is_some_and(|o| o.status == "InProgress");
            if waiting {
                if (200..300).contains(&status) {
                    // The decision window starts with the answer (if no
                    // decision came with it).
                    if let Some(operation) =
                        world.operations.iter_mut().find(|o| o.id == operation_id)
                        && operation.webhook_answered_at.is_none()
                    {
                        operation.webhook_answered_at = Some(now);
                    }
                } else {
                    world.fail(operation_id, &format!("the webhook answered {status}"));
                }
            }
        }
        let attempt = WebhookAttempt {
            operation_id: operation_id.to_owned(),
            action,
            status,
        };
        lock(&self.attempts).push(attempt.clone());
        attempt
    }

    pub(crate) async fn deliver_all(&self) -> Vec<WebhookAttempt> {
        self.deliver_with(DeliveryPlan::default()).await
    }

    async fn deliver_with(&self, plan: DeliveryPlan) -> Vec<WebhookAttempt> {
        let mut held: Vec<String> = lock(&self.held_webhooks).drain(..).collect();
        if plan.duplicate {
            held = held.into_iter().flat_map(|id| [id.clone(), id]).collect();
        }
        if let Some(seed) = plan.shuffle_seed {
            held.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        let mut attempts = Vec::new();
        for operation_id in held {
            let token = self.keys.entra.sign(&self.webhook_claims());
            attempts.push(self.post_webhook(&operation_id, Some(token)).await);
        }
        attempts
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The simulator; stops when dropped.
pub struct AzureSimulator {
    state: Arc<SimState>,
    server: SimServer,
    auto: Mutex<Option<CancellationToken>>,
}

impl std::fmt::Debug for AzureSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSimulator")
            .field("url", &self.server.url)
            .finish_non_exhaustive()
    }
}

impl AzureSimulator {
    /// Starts the simulator.
    pub async fn start(options: AzureSimulatorOptions) -> std::io::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(SimState {
            tenant_id: TENANT_ID.into(),
            client_id: CLIENT_ID.into(),
            client_secret: format!("azsim~{}", uuid::Uuid::new_v4().simple()),
            clock: options.clock.clone(),
            observed: Arc::new(Observed::default()),
            keys: Keys {
                entra: SigningKey::generate(format!(
                    "entra-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )),
            },
            base_url: OnceLock::new(),
            world: Mutex::new(World::new(&format!("{TENANT_ID}{CLIENT_ID}"))),
            access_tokens: Mutex::new(HashMap::new()),
            metering_outage: Mutex::new(false),
            webhook_url: Mutex::new(None),
            landing_url: Mutex::new(None),
            held_webhooks: Mutex::new(VecDeque::new()),
            attempts: Mutex::new(Vec::new()),
            http,
        });
        let server = SimServer::start(api::router(state.clone()), &options.listen).await?;
        let _ = state.base_url.set(server.url.clone());
        Ok(Self {
            state,
            server,
            auto: Mutex::new(None),
        })
    }

    /// The base URL (Entra lives at its root, the Marketplace APIs under
    /// `/api`).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Recorded requests and fault injection.
    pub fn api(&self) -> &Observed {
        &self.state.observed
    }

    /// The publisher tenant.
    pub fn tenant_id(&self) -> &str {
        &self.state.tenant_id
    }

    /// The provider's app id.
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// The app's client secret (generated per run).
    pub fn client_secret(&self) -> &str {
        &self.state.client_secret
    }

    /// Every `azure.*` setting that points marketbridge at this simulator.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", self.state.client_id.clone()),
            ("tenant_id", self.state.tenant_id.clone()),
            ("client_secret", self.state.client_secret.clone()),
            ("login_base_url", self.url().to_owned()),
            ("fulfillment_base_url", format!("{}/api", self.url())),
            ("metering_base_url", format!("{}/api", self.url())),
        ]
    }

    /// Points `config.azure` at this simulator.
    pub fn configure(&self, config: &mut marketbridge_config::Config) {
        let mut azure = serde_json::to_value(&config.azure).unwrap_or_default();
        for (key, value) in self.settings() {
            azure[key] = Value::String(value);
        }
        if let Ok(configured) = serde_json::from_value(azure) {
            config.azure = configured;
        }
    }

    /// Where webhook calls go (the offer's "Connection webhook").
    pub fn set_webhook_url(&self, url: &str) {
        *lock(&self.state.webhook_url) = Some(url.to_owned());
    }

    /// Where the portal sends buyers (the offer's "Landing page URL").
    pub fn set_landing_url(&self, url: &str) {
        *lock(&self.state.landing_url) = Some(url.to_owned());
    }

    // ---- the customer -------------------------------------------------------

    /// The customer buys `plan` (seats for per-seat plans).
    pub fn purchase(&self, plan: &str, quantity: Option<u64>) -> Purchase {
        self.state
            .purchase(plan, quantity, "buyer@contoso.example")
            .expect("the plan is in the offer")
    }

    /// A fresh landing page link for a subscription ("Manage account").
    pub fn landing_link(&self, subscription_id: &str) -> Purchase {
        let token = self
            .state
            .world()
            .issue_token(subscription_id, self.state.now());
        Purchase {
            subscription_id: subscription_id.to_owned(),
            landing_url: self.state.landing_link(&token),
            token,
        }
    }

    fn act(&self, result: Result<String, ApiError>) -> Result<String, ApiError> {
        let operation_id = result?;
        self.state.queue_webhook(&operation_id);
        Ok(operation_id)
    }

    /// The customer changes the plan in the portal (a ChangePlan webhook).
    pub fn change_plan(&self, subscription_id: &str, plan: &str) -> Result<String, ApiError> {
        let now = self.state.now();
        self.act(
            self.state
                .world()
                .change(subscription_id, Some(plan), None, "Azure", now),
        )
    }

    /// The customer changes the seats (a ChangeQuantity webhook).
    pub fn change_quantity(
        &self,
        subscription_id: &str,
        quantity: u64,
    ) -> Result<String, ApiError> {
        let now = self.state.now();
        self.act(
            self.state
                .world()
                .change(subscription_id, None, Some(quantity), "Azure", now),
        )
    }

    fn inform(&self, subscription_id: &str, action: &str) -> Result<String, ApiError> {
        let now = self.state.now();
        self.act(
            self.state
                .world()
                .inform(subscription_id, action, "Azure", now),
        )
    }

    /// Payment fails: `Suspend`.
    pub fn suspend(&self, subscription_id: &str) -> Result<String, ApiError> {
        self.inform(subscription_id, "Suspend")
    }

    /// Payment fixed: `Reinstate`.
    pub fn reinstate(&self, subscription_id: &str) -> Result<String, ApiError> {
        self.inform(subscription_id, "Reinstate")
    }

    /// The customer cancels: `Unsubscribe`.
    pub fn unsubscribe(&self, subscription_id: &str) -> Result<String, ApiError> {
        self.inform(subscription_id, "Unsubscribe")
    }

    /// The term renews: `Renew`.
    pub fn renew(&self, subscription_id: &str) -> Result<String, ApiError> {
        self.inform(subscription_id, "Renew")
    }

    /// Accepts the waiting changes whose decision window has passed on the
    /// simulator's clock (`all`: every waiting change, as if ten seconds
    /// had passed). Returns their operation ids.
    pub fn settle_waiting_operations(&self, all: bool) -> Vec<String> {
        let now = self.state.now();
        self.state.world().settle_waiting(now, all)
    }

    // ---- webhook delivery ---------------------------------------------------

    /// Calls the webhook for every held operation, in order.
    pub async fn deliver_webhooks(&self) -> Vec<WebhookAttempt> {
        self.state.deliver_all().await
    }

    /// Calls the webhook as `plan` says (duplicated, shuffled).
    pub async fn deliver_webhooks_with(&self, plan: DeliveryPlan) -> Vec<WebhookAttempt> {
        self.state.deliver_with(plan).await
    }

    /// Calls the webhook for `operation_id` with this `Authorization`
    /// token (`None`: no header), outside the held queue.
    pub async fn call_webhook_with(
        &self,
        operation_id: &str,
        token: Option<String>,
    ) -> WebhookAttempt {
        self.state.post_webhook(operation_id, token).await
    }

    /// Webhook calls held, not yet delivered.
    pub fn held_webhooks(&self) -> usize {
        lock(&self.state.held_webhooks).len()
    }

    /// Every webhook call so far.
    pub fn webhook_attempts(&self) -> Vec<WebhookAttempt> {
        lock(&self.state.attempts).clone()
    }

    /// The claims of a valid webhook token now (to forge variants).
    pub fn webhook_claims(&self) -> Value {
        self.state.webhook_claims()
    }

    /// Signs webhook claims with the tenant's published key.
    pub fn sign_webhook_claims(&self, claims: &Value) -> String {
        self.state.keys.entra.sign(claims)
    }

    /// Keeps calling the webhook for new operations and settling waiting
    /// changes every `interval` (for `marketbridge sim azure`).
    pub fn start_auto_delivery(self: &Arc<Self>, interval: Duration) {
        let stop = CancellationToken::new();
        *lock(&self.auto) = Some(stop.clone());
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
                simulator.deliver_webhooks().await;
                simulator.settle_waiting_operations(false);
            }
        });
    }

    // ---- state for assertions -----------------------------------------------

    /// A subscription, if Microsoft has it.
    pub fn subscription(&self, subscription_id: &str) -> Option<SimSubscription> {
        self.state
            .world()
            .subscriptions
            .get(subscription_id)
            .cloned()
    }

    /// An operation.
    pub fn operation(&self, operation_id: &str) -> Option<SimOperation> {
        self.state.world().operation(operation_id).cloned()
    }

    /// Reads or changes Microsoft's state.
    pub fn with_world<T>(&self, change: impl FnOnce(&mut World) -> T) -> T {
        change(&mut self.state.world())
    }

    /// Usage events accepted so far, in arrival order.
    pub fn usage(&self) -> Vec<AcceptedUsage> {
        self.state.world().usage.clone()
    }

    /// Takes the metering API down (503) or brings it back.
    pub fn set_metering_outage(&self, down: bool) {
        *lock(&self.state.metering_outage) = down;
    }
}

impl Drop for AzureSimulator {
    fn drop(&mut self) {
        if let Some(stop) = lock(&self.auto).take() {
            stop.cancel();
        }
    }
}
