//! The AWS Marketplace simulator. It plays AWS over real HTTP: the Metering
//! (`ResolveCustomer`, `BatchMeterUsage`) and Entitlement
//! (`GetEntitlements`) APIs as SigV4-signed JSON 1.1 on `POST /`, checking
//! every signature with the `aws-sigv4` crate; the buyer's registration
//! POST to the fulfillment URL; EventBridge deliveries to an API
//! destination (with the connection's API-key header); and legacy SNS
//! HTTPS deliveries, signed with its own RSA key whose self-signed
//! certificate it serves at `/sns/cert.pem`. Everything it receives is
//! recorded, and it can fail on demand.

mod control;
mod world;

pub use world::{AcceptedRecord, ApiError, LicenseState, SimLicense, World};

use crate::common::{Observed, SimServer, observe};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use marketbridge_aws::AwsCredentials;
use marketbridge_aws::events::{self, LegacyMessage};
use marketbridge_aws::sns::{SnsMessage, message_type};
use marketbridge_aws::{SIGNING_SERVICE, entitlement, metering, sigv4};
use marketbridge_core::time::SharedClock;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The simulated product.
pub const PRODUCT_CODE: &str = "mbsimproduct01";
/// The simulated seller's access key.
pub const ACCESS_KEY_ID: &str = "AKIASIMULATEDSELLER1";
/// The simulated seller's secret key.
pub const SECRET_ACCESS_KEY: &str = "simulated/seller/secret/key/for/tests0001";
/// The region the simulator answers for.
pub const REGION: &str = "us-east-1";
/// The EventBridge connection's API key header.
pub const EVENT_KEY_HEADER: &str = "x-marketbridge-key";
/// The legacy subscription topic.
pub const SUBSCRIPTION_TOPIC: &str =
    "arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-mbsimproduct01";
/// The legacy entitlement topic.
pub const ENTITLEMENT_TOPIC: &str =
    "arn:aws:sns:us-east-1:287250355862:aws-mp-entitlement-notification-mbsimproduct01";

/// How the simulator starts.
#[derive(Clone)]
pub struct AwsSimulatorOptions {
    /// Address to listen on (port 0 picks one).
    pub listen: String,
    /// Time source (share the services' clock in tests).
    pub clock: SharedClock,
    /// Dimensions of the listing.
    pub dimensions: Vec<String>,
}

impl AwsSimulatorOptions {
    /// Defaults: a free loopback port and the demo catalog's dimensions.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            clock,
            dimensions: ["free_tier", "pro_tier", "requests", "storage_gb"]
                .iter()
                .map(|d| d.to_string())
                .collect(),
        }
    }
}

/// Where marketbridge listens, and the secret EventBridge presents.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Fulfillment URL.
    pub fulfillment_url: String,
    /// EventBridge API destination.
    pub events_url: String,
    /// SNS HTTPS subscription endpoint.
    pub sns_url: String,
    /// The connection's API key.
    pub event_key: String,
}

/// How held deliveries go out.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryPlan {
    /// Send each twice.
    pub duplicate: bool,
    /// Shuffle with this seed.
    pub shuffle_seed: Option<u64>,
}

/// One delivery and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The event or message id.
    pub id: String,
    /// What it was (`detail-type` or SNS action).
    pub kind: String,
    /// The status (0 when unreachable).
    pub status: u16,
}

#[derive(Debug, Clone)]
enum Held {
    Event(Value),
    Sns(Box<SnsMessage>),
}

pub(crate) struct SimState {
    clock: SharedClock,
    observed: Arc<Observed>,
    credentials: AwsCredentials,
    world: Mutex<World>,
    endpoints: Mutex<Endpoints>,
    held: Mutex<Vec<Held>>,
    attempts: Mutex<Vec<DeliveryAttempt>>,
    confirmed_topics: Mutex<Vec<String>>,
    confirmation_tokens: Mutex<HashMap<String, String>>,
    signing_key: rsa::RsaPrivateKey,
    certificate_pem: String,
    base_url: OnceLock<String>,
    http: reqwest::Client,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn aws_error(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        [("content-type", marketbridge_aws::JSON_1_1)],
        json!({"__type": format!("com.amazonaws.marketplace#{}", error.name), "message": error.message})
            .to_string(),
    )
        .into_response();
    if let Ok(id) = uuid::Uuid::new_v4().to_string().parse() {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    response
}

fn aws_ok(value: &impl serde::Serialize) -> Response {
    (
        StatusCode::OK,
        [("content-type", marketbridge_aws::JSON_1_1)],
        serde_json::to_string(value).unwrap_or_default(),
    )
        .into_response()
}

async fn api(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let url = format!("http://{host}/");
    if let Err(refusal) = sigv4::verify(
        &state.credentials,
        REGION,
        SIGNING_SERVICE,
        Utc::now(),
        &url,
        &pairs,
        &body,
    ) {
        let name = match refusal {
            sigv4::Refusal::UnknownKey => marketbridge_aws::error::names::UNRECOGNIZED_CLIENT,
            _ => marketbridge_aws::error::names::INVALID_SIGNATURE,
        };
        let mut response = aws_error(&ApiError {
            status: 403,
            name,
            message: refusal.to_string(),
        });
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = state.clock.now();
    let mut world = lock(&state.world);
    if world.outage {
        return aws_error(&ApiError {
            status: 500,
            name: marketbridge_aws::error::names::INTERNAL,
            message: "Internal service error".into(),
        });
    }
    let invalid = |what: &str| {
        aws_error(&ApiError {
            status: 400,
            name: "SerializationException",
            message: format!("unreadable {what} request"),
        })
    };
    match target {
        metering::RESOLVE_CUSTOMER => {
            let Ok(request) = serde_json::from_slice::<metering::ResolveCustomerRequest>(&body)
            else {
                return invalid("ResolveCustomer");
            };
            match world.resolve_customer(&request.registration_token, now) {
                Ok(answer) => aws_ok(&answer),
                Err(error) => aws_error(&error),
            }
        }
        metering::BATCH_METER_USAGE => {
            if world.throttle_next > 0 {
                world.throttle_next -= 1;
                return aws_error(&ApiError {
                    status: 400,
                    name: marketbridge_aws::error::names::THROTTLING,
                    message: "Rate exceeded".into(),
                });
            }
            let Ok(request) = serde_json::from_slice::<metering::BatchMeterUsageRequest>(&body)
            else {
                return invalid("BatchMeterUsage");
            };
            match world.batch_meter_usage(&request, body.len(), now) {
                Ok(answer) => aws_ok(&answer),
                Err(error) => aws_error(&error),
            }
        }
        entitlement::GET_ENTITLEMENTS => {
            let Ok(request) = serde_json::from_slice::<entitlement::GetEntitlementsRequest>(&body)
            else {
                return invalid("GetEntitlements");
            };
            match world.get_entitlements(&request, now) {
                Ok(answer) => aws_ok(&answer),
                Err(error) => aws_error(&error),
            }
        }
        _ => aws_error(&ApiError {
            status: 400,
            name: "UnknownOperationException",
            message: format!("unknown target `{target}`"),
        }),
    }
}

async fn certificate(State(state): State<Arc<SimState>>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-pem-file")],
        state.certificate_pem.clone(),
    )
        .into_response()
}

async fn confirm(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = query.get("Token").cloned().unwrap_or_default();
    let topic = lock(&state.confirmation_tokens).get(&token).cloned();
    match topic {
        Some(topic) => {
            let mut confirmed = lock(&state.confirmed_topics);
            if !confirmed.contains(&topic) {
                confirmed.push(topic);
            }
            (StatusCode::OK, "<ConfirmSubscriptionResponse/>").into_response()
        }
        None => (StatusCode::NOT_FOUND, "<Error>unknown token</Error>").into_response(),
    }
}

fn router(state: Arc<SimState>) -> Router {
    let observed = state.observed.clone();
    Router::new()
        .route("/", post(api))
        .route("/sns/cert.pem", get(certificate))
        .route("/sns/confirm", get(confirm))
        .route("/simulator", get(control::overview))
        .route("/simulator/purchases", post(control::purchase))
        .route("/simulator/licenses/{key}/setup", get(control::setup))
        .route(
            "/simulator/licenses/{key}/entitlements",
            post(control::change),
        )
        .route(
            "/simulator/licenses/{key}/deprovision",
            post(control::deprovision),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(observed, observe))
}

impl SimState {
    fn event(&self, key: &str, detail_type: &str) -> Option<Value> {
        let license = lock(&self.world).licenses.get(key).cloned()?;
        let detail = json!({
            "agreement": {"id": license.agreement_id, "status": match license.state {
                LicenseState::Active => "ACTIVE",
                LicenseState::Deprovisioned(_) | LicenseState::Ended => "CANCELLED",
            }},
            "product": {"code": PRODUCT_CODE, "id": "prod-simulated01"},
            // AWS's example shows the ARN without its `arn:` prefix.
            "license": {"arn": license.license_arn.trim_start_matches("arn:")},
            "acceptor": {"accountId": license.customer_aws_account_id},
            "proposer": {"accountId": "294406891311"},
            "offer": {"id": license.offer_id},
        });
        Some(self.held_event(&license.agreement_id, detail_type, detail))
    }

    /// An agreement event (no license in it, as AWS sends them).
    fn agreement_event(&self, key: &str, detail_type: &str, status: &str) -> Option<Value> {
        let license = lock(&self.world).licenses.get(key).cloned()?;
        let mut agreement = json!({"id": license.agreement_id, "status": status});
        if let Some(previous) = &license.previous_agreement_id {
            agreement["intent"] = json!("RENEW");
            agreement["previousAgreementId"] = json!(previous);
        }
        let detail = json!({
            "agreement": agreement,
            "product": {"id": "prod-simulated01", "title": "Simulated product"},
            "resaleAuthorization": null,
            "acceptor": {"accountId": license.customer_aws_account_id},
            "proposer": {"accountId": "294406891311"},
            "offer": {"id": license.offer_id},
        });
        Some(self.held_event(&license.agreement_id, detail_type, detail))
    }

    /// An EventBridge event about an agreement, as AWS Marketplace wraps
    /// `detail`, held for delivery.
    fn held_event(&self, agreement_id: &str, detail_type: &str, mut detail: Value) -> Value {
        detail["requestId"] = json!(uuid::Uuid::new_v4().to_string());
        detail["catalog"] = json!("AWSMarketplace");
        let event = json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": detail_type,
            "source": events::SOURCE,
            "account": "294406891311",
            "time": marketbridge_core::time::to_rfc3339(self.clock.now()),
            "region": "us-east-1",
            "resources": [format!("arn:aws:aws-marketplace:us-east-1:294406891311:AWSMarketplace/Agreement/{agreement_id}")],
            "detail": detail,
        });
        lock(&self.held).push(Held::Event(event.clone()));
        event
    }

    fn sign_sns(&self, mut message: SnsMessage, version: &str) -> SnsMessage {
        message.signature_version = version.to_owned();
        message.signing_cert_url = format!(
            "{}/sns/cert.pem",
            self.base_url.get().cloned().unwrap_or_default()
        );
        let text = message.string_to_sign().unwrap_or_default();
        let signature = match version {
            "1" => {
                use sha1::Digest;
                let digest = sha1::Sha1::digest(text.as_bytes());
                self.signing_key
                    .sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
            }
            _ => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(text.as_bytes());
                self.signing_key
                    .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            }
        }
        .unwrap_or_default();
        message.signature = STANDARD.encode(signature);
        message
    }

    async fn post(&self, held: &Held) -> DeliveryAttempt {
        let endpoints = lock(&self.endpoints).clone();
        let (id, kind, request) = match held {
            Held::Event(event) => (
                event["id"].as_str().unwrap_or_default().to_owned(),
                event["detail-type"].as_str().unwrap_or_default().to_owned(),
                self.http
                    .post(&endpoints.events_url)
                    .header("content-type", "application/json")
                    .header(EVENT_KEY_HEADER, &endpoints.event_key)
                    .body(event.to_string()),
            ),
            Held::Sns(message) => (
                message.message_id.clone(),
                LegacyMessage::parse(&message.message)
                    .map(|m| m.action)
                    .unwrap_or_else(|| message.kind.clone()),
                self.http
                    .post(&endpoints.sns_url)
                    .header("content-type", "text/plain; charset=UTF-8")
                    .header("x-amz-sns-message-type", &message.kind)
                    .header("x-amz-sns-message-id", &message.message_id)
                    .header("x-amz-sns-topic-arn", &message.topic_arn)
                    .body(serde_json::to_string(message).unwrap_or_default()),
            ),
        };
        let status = match request.timeout(Duration::from_secs(5)).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        let attempt = DeliveryAttempt { id, kind, status };
        lock(&self.attempts).push(attempt.clone());
        attempt
    }
}

/// The simulator; stops when dropped.
pub struct AwsSimulator {
    state: Arc<SimState>,
    server: SimServer,
}

impl std::fmt::Debug for AwsSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSimulator")
            .field("url", &self.server.url)
            .finish_non_exhaustive()
    }
}

impl AwsSimulator {
    /// Starts the simulator (generates its SNS signing key and certificate).
    pub async fn start(options: AwsSimulatorOptions) -> std::io::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let signing_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .map_err(std::io::Error::other)?;
        let pem = signing_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(std::io::Error::other)?;
        let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
            .map_err(std::io::Error::other)?;
        let certificate = rcgen::CertificateParams::new(vec!["sns.us-east-1.amazonaws.com".into()])
            .and_then(|params| params.self_signed(&key_pair))
            .map_err(std::io::Error::other)?;
        let dimensions: Vec<&str> = options.dimensions.iter().map(String::as_str).collect();
        let state = Arc::new(SimState {
            clock: options.clock.clone(),
            observed: Arc::new(Observed::default()),
            credentials: AwsCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None),
            world: Mutex::new(World::new(PRODUCT_CODE, &dimensions)),
            endpoints: Mutex::new(Endpoints::default()),
            held: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            confirmed_topics: Mutex::new(Vec::new()),
            confirmation_tokens: Mutex::new(HashMap::new()),
            signing_key,
            certificate_pem: certificate.pem(),
            base_url: OnceLock::new(),
            http,
        });
        let server = SimServer::start(router(state.clone()), &options.listen).await?;
        let _ = state.base_url.set(server.url.clone());
        Ok(Self { state, server })
    }

    /// The base URL (the Metering and Entitlement APIs at `/`).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The pattern of the simulator's SNS certificate URLs, for
    /// `aws.sns_certificate_url_pattern`.
    pub fn certificate_url_pattern(&self) -> String {
        format!("{}/sns/*.pem", self.server.url)
    }

    /// Recording and fault injection.
    pub fn observed(&self) -> &Arc<Observed> {
        &self.state.observed
    }

    /// The marketplace's state.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.state.world)
    }

    /// Where marketbridge listens.
    pub fn set_endpoints(&self, endpoints: Endpoints) {
        *lock(&self.state.endpoints) = endpoints;
    }

    /// The buyer buys: a license with contract entitlements (dimension,
    /// quantity). Returns the license key (`LicenseArn`, or the legacy
    /// customer identifier).
    pub fn purchase(&self, account: &str, entitlements: &[(&str, i64)], legacy: bool) -> String {
        self.world().purchase(account, entitlements, legacy, None)
    }

    /// The buyer clicks "Set up your account": a new registration token.
    pub fn registration_token(&self, key: &str) -> String {
        let now = self.state.clock.now();
        self.world().issue_token(key, now)
    }

    /// The buyer's browser POSTs the token to the fulfillment URL (form
    /// encoded). Redirects are not followed.
    pub async fn register(&self, token: &str) -> reqwest::Response {
        let url = lock(&self.state.endpoints).fulfillment_url.clone();
        no_redirects()
            .post(url)
            .form(&[("x-amzn-marketplace-token", token)])
            .send()
            .await
            .expect("fulfillment URL reachable")
    }

    /// The contract changes (upgrade, quantities).
    pub fn change_entitlements(&self, key: &str, entitlements: &[(&str, i64)]) {
        if let Some(license) = self.world().licenses.get_mut(key) {
            license.entitlements = entitlements
                .iter()
                .map(|(d, q)| (d.to_string(), *q))
                .collect();
        }
    }

    /// The license is revoked now; usage is accepted for the final window.
    pub fn deprovision(&self, key: &str) {
        let now = self.state.clock.now();
        if let Some(license) = self.world().licenses.get_mut(key) {
            license.state = LicenseState::Deprovisioned(now);
        }
    }

    /// The buyer unsubscribes for good (`unsubscribe-success`): AWS takes
    /// no more usage of the license.
    pub fn unsubscribe(&self, key: &str) {
        if let Some(license) = self.world().licenses.get_mut(key) {
            license.state = LicenseState::Ended;
        }
    }

    /// The agreement is renewed: the license now belongs to a new agreement
    /// that names the old one as its previous. Returns the new agreement id.
    pub fn renew(&self, key: &str) -> String {
        let mut world = self.world();
        let agreement = world.next_agreement_id();
        if let Some(license) = world.licenses.get_mut(key) {
            license.previous_agreement_id = Some(license.agreement_id.clone());
            license.agreement_id = agreement.clone();
        }
        agreement
    }

    /// The agreement event of `detail_type` (e.g. `Purchase Agreement
    /// Amended - Manufacturer`) of a license's agreement, with `status`;
    /// renewals carry `intent: RENEW` and `previousAgreementId`. It names
    /// no license. Held until [`Self::deliver`].
    pub fn agreement_event(&self, key: &str, detail_type: &str, status: &str) -> Value {
        self.state
            .agreement_event(key, detail_type, status)
            .expect("a known license")
    }

    /// The EventBridge event of `detail_type` (e.g. `License Updated -
    /// Manufacturer`) about a license, held until [`Self::deliver`].
    pub fn event(&self, key: &str, detail_type: &str) -> Value {
        self.state.event(key, detail_type).expect("a known license")
    }

    /// A legacy SNS notification (`action` on the subscription topic, or
    /// `entitlement-updated` on the entitlement topic), signed with
    /// `signature_version` (`1` or `2`), held until [`Self::deliver`].
    pub fn sns_notification(&self, key: &str, action: &str, signature_version: &str) -> SnsMessage {
        let license = self
            .world()
            .licenses
            .get(key)
            .cloned()
            .expect("a known license");
        let mut message = json!({
            "action": action,
            "customer-identifier": license.customer_identifier.clone().unwrap_or_default(),
            "product-code": PRODUCT_CODE,
        });
        if action != events::action::ENTITLEMENT_UPDATED {
            message["isFreeTrialTermPresent"] = json!("false");
        }
        if matches!(
            action,
            events::action::SUBSCRIBE_SUCCESS | events::action::SUBSCRIBE_FAIL
        ) {
            message["offer-identifier"] = json!(license.offer_id);
        }
        let topic = if action == events::action::ENTITLEMENT_UPDATED {
            ENTITLEMENT_TOPIC
        } else {
            SUBSCRIPTION_TOPIC
        };
        let unsigned = SnsMessage {
            kind: message_type::NOTIFICATION.into(),
            message_id: uuid::Uuid::new_v4().to_string(),
            token: None,
            topic_arn: topic.into(),
            subject: None,
            message: message.to_string(),
            subscribe_url: None,
            unsubscribe_url: Some(format!("{}/sns/unsubscribe", self.server.url)),
            timestamp: sns_time(self.state.clock.now()),
            signature_version: String::new(),
            signature: String::new(),
            signing_cert_url: String::new(),
        };
        let signed = self.state.sign_sns(unsigned, signature_version);
        lock(&self.state.held).push(Held::Sns(Box::new(signed.clone())));
        signed
    }

    /// Sends the `SubscriptionConfirmation` of `topic` to the SNS endpoint
    /// now; returns the status.
    pub async fn subscribe(&self, topic: &str) -> u16 {
        let token = format!("{}", uuid::Uuid::new_v4().simple());
        lock(&self.state.confirmation_tokens).insert(token.clone(), topic.to_owned());
        let unsigned = SnsMessage {
            kind: message_type::SUBSCRIPTION_CONFIRMATION.into(),
            message_id: uuid::Uuid::new_v4().to_string(),
            token: Some(token.clone()),
            topic_arn: topic.into(),
            subject: None,
            message: format!(
                "You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
            ),
            subscribe_url: Some(format!(
                "{}/sns/confirm?Action=ConfirmSubscription&TopicArn={topic}&Token={token}",
                self.server.url
            )),
            unsubscribe_url: None,
            timestamp: sns_time(self.state.clock.now()),
            signature_version: String::new(),
            signature: String::new(),
            signing_cert_url: String::new(),
        };
        let signed = self.state.sign_sns(unsigned, "2");
        self.state.post(&Held::Sns(Box::new(signed))).await.status
    }

    /// Topics whose subscription marketbridge confirmed.
    pub fn confirmed_topics(&self) -> Vec<String> {
        lock(&self.state.confirmed_topics).clone()
    }

    /// Sends every held delivery, in order.
    pub async fn deliver(&self) -> Vec<DeliveryAttempt> {
        self.deliver_with(DeliveryPlan::default()).await
    }

    /// Sends every held delivery, duplicated and shuffled on demand.
    pub async fn deliver_with(&self, plan: DeliveryPlan) -> Vec<DeliveryAttempt> {
        let mut held: Vec<Held> = lock(&self.state.held).drain(..).collect();
        if plan.duplicate {
            held = held.into_iter().flat_map(|h| [h.clone(), h]).collect();
        }
        if let Some(seed) = plan.shuffle_seed {
            held.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        let mut attempts = Vec::new();
        for delivery in &held {
            attempts.push(self.state.post(delivery).await);
        }
        attempts
    }

    /// Sends a raw body to the events URL with `key` (or none) as the API
    /// key; returns the status.
    pub async fn post_event_raw(&self, body: &str, key: Option<&str>) -> u16 {
        let url = lock(&self.state.endpoints).events_url.clone();
        let mut request = self
            .state
            .http
            .post(url)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header(EVENT_KEY_HEADER, key);
        }
        request
            .body(body.to_owned())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Sends a raw SNS body; returns the status.
    pub async fn post_sns_raw(&self, message: &SnsMessage) -> u16 {
        self.state
            .post(&Held::Sns(Box::new(message.clone())))
            .await
            .status
    }

    /// Every delivery so far.
    pub fn attempts(&self) -> Vec<DeliveryAttempt> {
        lock(&self.state.attempts).clone()
    }

    /// Accepted usage records, oldest hour first.
    pub fn accepted(&self) -> Vec<AcceptedRecord> {
        let mut records: Vec<_> = self.world().accepted.values().cloned().collect();
        records.sort_by_key(|r| (r.hour, r.dimension.clone()));
        records
    }

    /// Metering calls received (any answer).
    pub fn metering_calls(&self) -> usize {
        self.state
            .observed
            .recorder
            .calls()
            .iter()
            .filter(|c| c.header("x-amz-target") == Some(metering::BATCH_METER_USAGE))
            .count()
    }

    /// AWS is down (every API call fails with a 500) until set back.
    pub fn set_outage(&self, down: bool) {
        self.world().outage = down;
    }

    /// The clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.state.clock.now()
    }
}

fn sns_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}
