//! The Vercel Marketplace simulator. It plays every part Vercel has in a
//! native integration:
//!
//! - the token issuer: its own RSA keys, a JWKS and an OpenID discovery
//!   document, user and system tokens, and broken tokens for tests
//!   ([`tokens`]);
//! - the caller of the provider's partner API, with Vercel's headers
//!   ([`partner`]) and signed webhooks ([`webhooks`]);
//! - the Vercel API the provider calls back, which checks each
//!   installation's bearer token, remembers what it receives, and fails on
//!   demand ([`api`], [`state`]);
//! - controls under `/_sim/...` to create installations, mint tokens and
//!   start SSO by hand (`marketbridge sim vercel` prints how).

mod access;
mod api;
mod control;
pub mod partner;
mod refusal;
pub mod state;
pub mod tokens;
pub mod webhooks;

use crate::common::{Observed, Recorder, SigningKey, SimServer, jwks, observe};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use state::{PendingSso, SimInstallation, SimInvoice, SimResource, World};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokens::{SimUser, TokenSpec};

pub use partner::{PartnerAnswer, PartnerClient, PartnerRequest};
pub use tokens::TokenFlaw;
pub use webhooks::WebhookSender;

/// Random lowercase hex of `len` characters.
pub(crate) fn hex_id(len: usize) -> String {
    let mut text = String::new();
    while text.len() < len {
        text.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    text.truncate(len);
    text
}

/// Random alphanumerics of `len` characters (Vercel's id bodies).
pub(crate) fn alnum_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut text = String::with_capacity(len);
    while text.len() < len {
        for byte in uuid::Uuid::new_v4().as_bytes() {
            if text.len() < len {
                text.push(ALPHABET[*byte as usize % ALPHABET.len()] as char);
            }
        }
    }
    text
}

/// The Redirect Login URL with `mode=sso`, the code, its state and the
/// deep-link context appended.
pub(crate) fn redirect_url(
    redirect_login_url: &str,
    code: &SsoCode,
    context: &[(&str, &str)],
) -> String {
    let Ok(mut url) = reqwest::Url::parse(redirect_login_url) else {
        return redirect_login_url.to_owned();
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("mode", "sso");
        query.append_pair("code", &code.code);
        query.append_pair("state", &code.state);
        for (key, value) in context {
            query.append_pair(key, value);
        }
    }
    url.to_string()
}

/// A stable hex rendering of any id (token subjects are hex).
pub(crate) fn hex_of(id: &str) -> String {
    hex::encode(id.as_bytes())
}

struct KeyRing {
    published: Vec<Arc<SigningKey>>,
    generation: u32,
}

/// State shared by the simulator's handlers and its handle.
pub(crate) struct Shared {
    world: Mutex<World>,
    keys: Mutex<KeyRing>,
    unpublished: OnceLock<SigningKey>,
    forged: OnceLock<SigningKey>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    issuer: OnceLock<String>,
    base_url: OnceLock<String>,
}

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on installation `id`, or answers 404.
    pub(crate) fn with_installation<T>(
        &self,
        id: &str,
        change: impl FnOnce(&mut SimInstallation) -> T,
    ) -> Result<T, refusal::Refusal> {
        let mut world = self.world();
        match world.installations.get_mut(id) {
            Some(installation) => Ok(change(installation)),
            None => Err(refusal::not_found("no such installation")),
        }
    }

    fn current_key(&self) -> Arc<SigningKey> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.published[0].clone()
    }

    fn published_jwks(&self) -> Value {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let refs: Vec<&SigningKey> = keys.published.iter().map(|k| k.as_ref()).collect();
        jwks(&refs)
    }

    fn issuer(&self) -> String {
        self.issuer.get().cloned().unwrap_or_default()
    }

    fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }

    pub(crate) fn new_installation(&self) -> InstallationHandle {
        let handle = InstallationHandle {
            id: format!("icfg_{}", alnum_id(24)),
            team_id: format!("team_{}", alnum_id(24)),
            token: format!("vat_{}", alnum_id(32)),
        };
        let installation = SimInstallation {
            id: handle.id.clone(),
            team_id: handle.team_id.clone(),
            token: handle.token.clone(),
            rotated_tokens: Vec::new(),
            account: handle.upsert_body()["account"].clone(),
            members: BTreeMap::new(),
            finalized: false,
            updates: Vec::new(),
            resources: BTreeMap::new(),
            events: Vec::new(),
            billing_data: Vec::new(),
            invoices: BTreeMap::new(),
            balances: Vec::new(),
            connections: Vec::new(),
        };
        self.world()
            .installations
            .insert(handle.id.clone(), installation);
        handle
    }

    pub(crate) fn installation(&self, id: &str) -> Option<SimInstallation> {
        self.world().installations.get(id).cloned()
    }

    pub(crate) fn token(&self, spec: &TokenSpec) -> String {
        if let (Some(user), Some(installation_id)) = (&spec.user, &spec.installation_id)
            && let Some(installation) = self.world().installations.get_mut(installation_id)
        {
            installation.members.insert(
                user.id.clone(),
                json!({"id": user.id, "role": user.role, "userEmail": user.email}),
            );
        }
        self.mint(spec)
    }

    pub(crate) fn issue_sso_code(
        &self,
        installation: &InstallationHandle,
        user: &SimUser,
    ) -> SsoCode {
        self.issue_sso_code_with(installation, user, None)
    }

    pub(crate) fn issue_sso_code_with(
        &self,
        installation: &InstallationHandle,
        user: &SimUser,
        flaw: Option<TokenFlaw>,
    ) -> SsoCode {
        let mut spec = TokenSpec::user(&installation.id, &installation.team_id, user.clone());
        spec.token_type = "id_token".to_owned();
        if let Some(flaw) = flaw {
            spec = spec.with_flaw(flaw);
        }
        let id_token = self.token(&spec);
        let code = SsoCode {
            code: alnum_id(32),
            state: alnum_id(16),
        };
        self.world().sso_codes.insert(
            code.code.clone(),
            PendingSso {
                state: code.state.clone(),
                id_token,
            },
        );
        code
    }

    fn mint(&self, spec: &TokenSpec) -> String {
        let claims = tokens::claims(spec, &self.issuer(), &self.client_id);
        let published = self.current_key();
        let unpublished = self
            .unpublished
            .get_or_init(|| SigningKey::generate("vercel-sim-unpublished"));
        let forged = self
            .forged
            .get_or_init(|| SigningKey::generate(published.kid().to_owned()));
        tokens::sign(
            spec.signing,
            &claims,
            &published,
            unpublished,
            forged,
            &self.client_secret,
        )
    }
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct VercelSimulatorOptions {
    /// The integration client id (`oac_...`): the audience of every token.
    pub client_id: String,
    /// The integration client secret: webhook signatures, SSO, rotation.
    pub client_secret: String,
    /// The issuer of its tokens; `None` for its own URL.
    pub issuer: Option<String>,
}

impl Default for VercelSimulatorOptions {
    fn default() -> Self {
        Self {
            client_id: format!("oac_{}", alnum_id(24)),
            client_secret: alnum_id(40),
            issuer: None,
        }
    }
}

/// An installation the simulator created: its id, team and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationHandle {
    /// `icfg_...`.
    pub id: String,
    /// The team (`team_...`).
    pub team_id: String,
    /// The Vercel API token handed over at install.
    pub token: String,
}

impl InstallationHandle {
    /// The body Vercel sends with `PUT /v1/installations/{id}`.
    pub fn upsert_body(&self) -> Value {
        json!({
            "scopes": ["read:resource", "read-write:integration-resource"],
            "acceptedPolicies": {"toc": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
            "credentials": {"access_token": self.token, "token_type": "Bearer"},
            "account": {
                "name": format!("Team {}", &self.team_id[5..11]),
                "url": format!("https://vercel.com/{}", self.team_id),
                "contact": {"email": format!("owner@{}.example.com", self.team_id.to_lowercase()), "name": "Team Owner"}
            }
        })
    }
}

/// A code for the provider's Redirect Login URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoCode {
    /// The one-time code.
    pub code: String,
    /// The state that goes with it.
    pub state: String,
}

/// A running Vercel simulator.
pub struct VercelSimulator {
    shared: Arc<Shared>,
    observed: Arc<Observed>,
    server: SimServer,
}

impl std::fmt::Debug for VercelSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VercelSimulator")
            .field("url", &self.server.url)
            .finish_non_exhaustive()
    }
}

async fn jwks_document(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(shared.published_jwks())
}

async fn discovery_document(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let base = shared.base_url();
    axum::Json(json!({
        "issuer": shared.issuer(),
        "jwks_uri": format!("{base}/.well-known/jwks"),
        "token_endpoint": format!("{base}/v1/integrations/sso/token"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

impl VercelSimulator {
    /// Starts the simulator on `address` (`127.0.0.1:0` picks a port).
    pub async fn start(options: VercelSimulatorOptions, address: &str) -> std::io::Result<Self> {
        marketbridge_rpc::tls::install_crypto_provider();
        let shared = Arc::new(Shared {
            world: Mutex::new(World::default()),
            keys: Mutex::new(KeyRing {
                published: vec![Arc::new(SigningKey::generate("vercel-sim-1"))],
                generation: 1,
            }),
            unpublished: OnceLock::new(),
            forged: OnceLock::new(),
            client_id: options.client_id,
            client_secret: options.client_secret,
            issuer: OnceLock::new(),
            base_url: OnceLock::new(),
        });
        let observed = Arc::new(Observed::default());
        let router = Router::new()
            .merge(api::routes())
            .merge(tokens::credential_routes())
            .route("/.well-known/jwks", get(jwks_document))
            .route("/.well-known/jwks.json", get(jwks_document))
            .route("/.well-known/openid-configuration", get(discovery_document))
            .with_state(shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                observed.clone(),
                observe,
            ))
            .merge(control::routes(shared.clone()));
        let server = SimServer::start(router, address).await?;
        let _ = shared.base_url.set(server.url.clone());
        let _ = shared
            .issuer
            .set(options.issuer.unwrap_or_else(|| server.url.clone()));
        Ok(Self {
            shared,
            observed,
            server,
        })
    }

    /// Starts a simulator with fresh credentials on a free loopback port.
    pub async fn start_default() -> std::io::Result<Self> {
        Self::start(VercelSimulatorOptions::default(), "127.0.0.1:0").await
    }

    /// Base URL: the Vercel API, the JWKS and the discovery document.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The issuer of its tokens.
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    /// Where its keys are published.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks", self.server.url)
    }

    /// The integration client id.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The integration client secret.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Every request the API received.
    pub fn recorder(&self) -> &Recorder {
        &self.observed.recorder
    }

    /// Failures to inject into the API.
    pub fn faults(&self) -> &crate::common::Faults {
        &self.observed.faults
    }

    /// The settings pointing marketbridge at this simulator, as TOML.
    pub fn config_snippet(&self) -> String {
        format!(
            "[vercel]\noidc_issuer = \"{}\"\njwks_url = \"{}\"\napi_base_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\ndashboard_url = \"{}\"\nintegration_slug = \"marketbridge-demo\"\n",
            self.issuer(),
            self.jwks_url(),
            self.url(),
            self.client_id(),
            self.client_secret(),
            self.url()
        )
    }

    /// Creates an installation on a new team, with its API token.
    pub fn new_installation(&self) -> InstallationHandle {
        self.shared.new_installation()
    }

    /// What the simulator knows of an installation.
    pub fn installation(&self, id: &str) -> Option<SimInstallation> {
        self.shared.installation(id)
    }

    /// What the simulator knows of a resource.
    pub fn resource(&self, installation_id: &str, resource_id: &str) -> Option<SimResource> {
        self.installation(installation_id)?
            .resources
            .get(resource_id)
            .cloned()
    }

    /// Makes a resource known, as if Vercel had provisioned it.
    pub fn register_resource(&self, installation_id: &str, resource: SimResource) {
        if let Some(installation) = self.shared.world().installations.get_mut(installation_id) {
            installation.resources.insert(resource.id.clone(), resource);
        }
    }

    /// Changes what `GET .../account` answers.
    pub fn set_account(&self, installation_id: &str, account: Value) {
        if let Some(installation) = self.shared.world().installations.get_mut(installation_id) {
            installation.account = account;
        }
    }

    /// Creates an invoice at Vercel (a prepayment purchase) in `state`;
    /// returns its id.
    pub fn create_invoice(&self, installation_id: &str, total: &str, state: &str) -> String {
        let now = chrono::Utc::now();
        let invoice = SimInvoice {
            id: format!("inv_{}", alnum_id(20)),
            external_id: None,
            state: state.to_owned(),
            total: total.to_owned(),
            test: false,
            submission: Value::Null,
            refunds: Vec::new(),
            invoice_date: now.to_rfc3339(),
            period: json!({"start": now.to_rfc3339(), "end": now.to_rfc3339()}),
            created: now.to_rfc3339(),
        };
        let id = invoice.id.clone();
        if let Some(installation) = self.shared.world().installations.get_mut(installation_id) {
            installation.invoices.insert(id.clone(), invoice);
        }
        id
    }

    /// Moves an invoice to `state` (`paid`, `notpaid`, `refunded`, ...).
    pub fn set_invoice_state(&self, installation_id: &str, invoice_id: &str, state: &str) {
        if let Some(invoice) = self
            .shared
            .world()
            .installations
            .get_mut(installation_id)
            .and_then(|i| i.invoices.get_mut(invoice_id))
        {
            invoice.state = state.to_owned();
        }
    }

    /// An invoice.
    pub fn invoice(&self, installation_id: &str, invoice_id: &str) -> Option<SimInvoice> {
        self.installation(installation_id)?
            .invoices
            .get(invoice_id)
            .cloned()
    }

    /// Signs a token as `spec` says. User tokens also make their user a
    /// member of the installation.
    pub fn token(&self, spec: &TokenSpec) -> String {
        self.shared.token(spec)
    }

    /// A user token of `user` for `installation`.
    pub fn user_token(&self, installation: &InstallationHandle, user: &SimUser) -> String {
        self.token(&TokenSpec::user(
            &installation.id,
            &installation.team_id,
            user.clone(),
        ))
    }

    /// A user token of a new team admin for `installation`.
    pub fn admin_token(&self, installation: &InstallationHandle) -> String {
        self.user_token(installation, &SimUser::admin())
    }

    /// A system token, for an installation or (with `None`) for calls made
    /// before any installation exists.
    pub fn system_token(&self, installation: Option<&InstallationHandle>) -> String {
        self.token(&TokenSpec::system(
            installation.map(|i| i.id.as_str()),
            installation.map(|i| i.team_id.as_str()),
        ))
    }

    /// A token for `installation` that is wrong in the way `flaw` says.
    pub fn flawed_token(&self, installation: &InstallationHandle, flaw: TokenFlaw) -> String {
        self.token(
            &TokenSpec::user(&installation.id, &installation.team_id, SimUser::admin())
                .with_flaw(flaw),
        )
    }

    /// Starts signing with a new key, published next to the old one.
    pub fn rotate_signing_key(&self) -> String {
        let mut keys = self.shared.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.generation += 1;
        let kid = format!("vercel-sim-{}", keys.generation);
        keys.published
            .insert(0, Arc::new(SigningKey::generate(kid.clone())));
        kid
    }

    /// Stops publishing every signing key but the newest (after
    /// [`Self::rotate_signing_key`], the old key leaves the JWKS).
    pub fn retire_old_signing_keys(&self) {
        let mut keys = self.shared.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.published.truncate(1);
    }

    /// A one-time SSO code for `user` of `installation`, as Vercel appends
    /// to the Redirect Login URL.
    pub fn issue_sso_code(&self, installation: &InstallationHandle, user: &SimUser) -> SsoCode {
        self.shared.issue_sso_code(installation, user)
    }

    /// A one-time SSO code whose `id_token` is wrong in the way `flaw` says
    /// (`TokenFlaw::AccessToken`: a bearer token instead of an id token).
    pub fn issue_flawed_sso_code(
        &self,
        installation: &InstallationHandle,
        user: &SimUser,
        flaw: TokenFlaw,
    ) -> SsoCode {
        self.shared
            .issue_sso_code_with(installation, user, Some(flaw))
    }

    /// The URL Vercel redirects the browser to: the Redirect Login URL with
    /// `mode=sso`, the code, the state and any context (`resource_id`,
    /// `invoice_id`, `path`, `url`, ...).
    pub fn sso_redirect_url(
        &self,
        redirect_login_url: &str,
        code: &SsoCode,
        context: &[(&str, &str)],
    ) -> String {
        redirect_url(redirect_login_url, code, context)
    }

    /// Starts an import as Vercel does when a user picks "Import Existing":
    /// the provider's Import Resource URL (`import_url`) with
    /// `installation_id`, `product_id` (when given), a fresh single-use
    /// `state` and `return` (this simulator's completion page). Returns the
    /// URL and the state.
    pub fn start_import(
        &self,
        import_url: &str,
        installation_id: &str,
        product_id: Option<&str>,
    ) -> (String, String) {
        start_import_with(&self.shared, import_url, installation_id, product_id)
    }

    /// The `return` URL of imports: the completion page on this simulator.
    pub fn import_return_url(&self) -> String {
        import_return_url(&self.shared)
    }

    /// An import Vercel started, by its `state`.
    pub fn import(&self, state: &str) -> Option<state::SimImport> {
        self.shared.world().imports.get(state).cloned()
    }

    /// Sets the integration's Redirect Login URL, where the dashboard's
    /// sign-in (`GET /sso/integrations/{slug}/{installationId}`) sends the
    /// browser with a fresh code.
    pub fn set_redirect_login_url(&self, url: &str) {
        self.shared.world().redirect_login_url = Some(url.to_owned());
    }

    /// A client calling the provider's partner API at `base_url` (the
    /// integration's Base URL) the way Vercel does.
    pub fn partner(&self, base_url: &str) -> PartnerClient {
        PartnerClient::new(base_url, self.shared.clone())
    }

    /// A sender of signed webhooks to `url`.
    pub fn webhooks(&self, url: &str) -> WebhookSender {
        WebhookSender::new(url, &self.shared.client_secret)
    }

    /// How long short-lived installation tokens live from now on, in
    /// seconds (an hour unless set).
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.shared.world().credentials.lifetime_seconds = Some(seconds);
    }

    /// Makes every short-lived token of an installation expire now.
    pub fn expire_short_lived_tokens(&self, installation_id: &str) {
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        for (installation, expires_at) in self.shared.world().credentials.short_lived.values_mut() {
            if installation == installation_id {
                *expires_at = past;
            }
        }
    }

    /// How many short-lived tokens the grant issued for an installation.
    pub fn token_grants(&self, installation_id: &str) -> usize {
        self.shared
            .world()
            .credentials
            .grants
            .get(installation_id)
            .copied()
            .unwrap_or(0)
    }

    /// Makes the installation answer `410 Gone` to every call and grant
    /// (`true`), or answer normally again.
    pub fn set_gone(&self, installation_id: &str, gone: bool) {
        let mut world = self.shared.world();
        if gone {
            world.credentials.gone.insert(installation_id.to_owned());
        } else {
            world.credentials.gone.remove(installation_id);
        }
    }

    /// True when `authorization` (`Bearer …`) carries a token Vercel issued
    /// to the installation: its install or rotated token, or a short-lived
    /// one.
    pub fn is_installation_token(
        &self,
        installation_id: &str,
        authorization: Option<&str>,
    ) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        let short_lived = self
            .shared
            .world()
            .credentials
            .short_lived
            .get(token)
            .is_some_and(|(installation, _)| installation == installation_id);
        short_lived
            || self
                .installation(installation_id)
                .is_some_and(|i| i.token == token || i.rotated_tokens.iter().any(|t| t == token))
    }

    /// The installation's long-lived credentials that still work (the
    /// install token and rotated ones, minus the revoked).
    pub fn live_credentials(&self, installation_id: &str) -> Vec<String> {
        let world = self.shared.world();
        let Some(installation) = world.installations.get(installation_id) else {
            return Vec::new();
        };
        std::iter::once(installation.token.clone())
            .chain(installation.rotated_tokens.iter().cloned())
            .filter(|t| !world.credentials.revoked.contains(t))
            .collect()
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.server.stop();
    }
}

fn import_return_url(shared: &Shared) -> String {
    format!("{}{}", shared.base_url(), api::IMPORT_COMPLETE_PATH)
}

/// See [`VercelSimulator::start_import`].
pub(crate) fn start_import_with(
    shared: &Shared,
    import_url: &str,
    installation_id: &str,
    product_id: Option<&str>,
) -> (String, String) {
    let state = format!("imp_{}", alnum_id(32));
    shared.world().imports.insert(
        state.clone(),
        state::SimImport {
            state: state.clone(),
            installation_id: installation_id.to_owned(),
            product_id: product_id.map(str::to_owned),
            completed_resource_id: None,
        },
    );
    let return_url = import_return_url(shared);
    let Ok(mut url) = reqwest::Url::parse(import_url) else {
        return (import_url.to_owned(), state);
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("installation_id", installation_id);
        if let Some(product_id) = product_id {
            query.append_pair("product_id", product_id);
        }
        query.append_pair("state", &state);
        query.append_pair("return", &return_url);
    }
    (url.to_string(), state)
}
