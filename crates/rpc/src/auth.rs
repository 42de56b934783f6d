//! Who may call the gRPC services, checked in one tower layer on every
//! server.
//!
//! Callers are named and hold scopes. They prove who they are with a bearer
//! token (`authorization: Bearer …`, compared by its SHA-256, so the
//! configuration holds no usable token) or with an mTLS client certificate
//! (compared by the SHA-256 of its DER). The set's own parts share
//! `security.service_token` and act as `marketbridge` with every scope.
//!
//! - `admin`: every RPC that does not hand out secrets.
//! - `secrets`: with `admin`, the RPCs that answer with secrets
//!   (`CreateResource`, `RotateSecrets`, `GetResourceSecrets`,
//!   `ImportResource`, `GetMarketplaceCredential`).
//! - `entitlements`: `CheckEntitlement`.
//! - `usage`: `RecordUsage` and `QueryUsage`.
//!
//! Health stays open (load balancers and probes); reflection and `WhoAmI`
//! need any caller.

use futures::future::BoxFuture;
use marketbridge_config::Config;
use marketbridge_core::crypto::sha256_hex;
use marketbridge_core::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// Name of the set's own parts as callers.
pub const SET_CALLER: &str = "marketbridge";

/// A permission a caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every RPC that does not hand out secrets.
    Admin,
    /// RPCs answering with secrets (together with `Admin`).
    Secrets,
    /// The entitlement check.
    Entitlements,
    /// Recording and querying usage.
    Usage,
}

impl Scope {
    const ALL: [Scope; 4] = [
        Scope::Admin,
        Scope::Secrets,
        Scope::Entitlements,
        Scope::Usage,
    ];

    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Secrets => "secrets",
            Scope::Entitlements => "entitlements",
            Scope::Usage => "usage",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.name() == text)
    }
}

/// An authenticated caller; handlers find it in the request's extensions.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured name.
    pub name: String,
    scopes: Vec<Scope>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Caller({})", self.name)
    }
}

impl Caller {
    /// The set's own caller, holding every scope: what the services see
    /// when they call each other.
    pub fn set() -> Self {
        Self {
            name: SET_CALLER.to_owned(),
            scopes: Scope::ALL.to_vec(),
        }
    }

    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The names of the scopes it holds.
    pub fn scope_names(&self) -> Vec<String> {
        self.scopes.iter().map(|s| s.name().to_owned()).collect()
    }
}

/// The name of the caller of `request` for the audit log (`anonymous` on a
/// server open to anyone).
pub fn caller_name<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "anonymous".to_owned(), |c| c.name.clone())
}

/// The caller of `request` when it is not the set itself: an operator (or a
/// named client) whose actions go to the audit log.
pub fn operator<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<Caller>()
        .filter(|c| c.name != SET_CALLER)
        .map(|c| c.name.clone())
}

/// `WhoAmI`: the caller of `request`, its name and scopes.
pub fn who_am_i<T>(request: &tonic::Request<T>) -> marketbridge_proto::common::v1::WhoAmIResponse {
    let caller = request.extensions().get::<Caller>();
    marketbridge_proto::common::v1::WhoAmIResponse {
        name: caller.map_or_else(|| "anonymous".to_owned(), |c| c.name.clone()),
        scopes: caller.map(Caller::scope_names).unwrap_or_default(),
    }
}

/// What a gRPC method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone (health).
    Open,
    /// Any authenticated caller (reflection).
    AnyCaller,
    /// `admin`, or the named narrower scope.
    AdminOr(Scope),
    /// `admin` and `secrets`.
    AdminAndSecrets,
    /// `admin`.
    Admin,
}

/// What calling `path` (`/package.Service/Method`) requires.
pub fn requirement(path: &str) -> Requirement {
    let trimmed = path.trim_start_matches('/');
    let (service, method) = trimmed.rsplit_once('/').unwrap_or((trimmed, ""));
    if service == "grpc.health.v1.Health" {
        return Requirement::Open;
    }
    if service.starts_with("grpc.reflection.")
        || (service, method) == ("marketbridge.account.v1.AccountService", "WhoAmI")
    {
        return Requirement::AnyCaller;
    }
    match (service, method) {
        (
            "marketbridge.provisioning.v1.ProvisioningService",
            "CreateResource" | "RotateSecrets" | "GetResourceSecrets" | "ImportResource",
        )
        | ("marketbridge.account.v1.AccountService", "GetMarketplaceCredential") => {
            Requirement::AdminAndSecrets
        }
        ("marketbridge.provisioning.v1.ProvisioningService", "CheckEntitlement") => {
            Requirement::AdminOr(Scope::Entitlements)
        }
        ("marketbridge.billing.v1.BillingService", "RecordUsage" | "QueryUsage") => {
            Requirement::AdminOr(Scope::Usage)
        }
        _ => Requirement::Admin,
    }
}

impl Requirement {
    fn allows(self, caller: &Caller) -> bool {
        match self {
            Requirement::Open | Requirement::AnyCaller => true,
            Requirement::AdminOr(scope) => caller.has(Scope::Admin) || caller.has(scope),
            Requirement::AdminAndSecrets => caller.has(Scope::Admin) && caller.has(Scope::Secrets),
            Requirement::Admin => caller.has(Scope::Admin),
        }
    }
}

/// Whether `caller` may call `path` (`/package.Service/Method`): the
/// refusal the services answer when it may not.
pub fn authorize(caller: &Caller, path: &str) -> std::result::Result<(), tonic::Status> {
    if requirement(path).allows(caller) {
        Ok(())
    } else {
        Err(tonic::Status::permission_denied(format!(
            "the caller `{}` may not call {path}",
            caller.name
        )))
    }
}

/// The callers a server accepts.
#[derive(Clone, Default)]
pub struct Callers {
    by_token: HashMap<String, Caller>,
    by_certificate: HashMap<String, Caller>,
    open: bool,
}

impl fmt::Debug for Callers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self
            .by_token
            .values()
            .chain(self.by_certificate.values())
            .map(|c| c.name.as_str())
            .collect();
        names.sort_unstable();
        f.debug_struct("Callers")
            .field("names", &names)
            .field("open", &self.open)
            .finish()
    }
}

impl Callers {
    /// The callers of `security.grpc_clients`, plus the set's own parts
    /// holding `security.service_token`. With
    /// `security.allow_unauthenticated` anyone may call (logged loudly).
    pub fn from_config(config: &Config) -> Result<Self> {
        let mut callers = Self::parse(&config.security.grpc_clients)?;
        let token = config.security.service_token.trim();
        if !token.is_empty() {
            callers.by_token.insert(
                sha256_hex(token.as_bytes()),
                Caller {
                    name: SET_CALLER.into(),
                    scopes: Scope::ALL.to_vec(),
                },
            );
        }
        if config.security.allow_unauthenticated {
            tracing::warn!(
                "security.allow_unauthenticated is on: the gRPC services answer ANY caller on the network, secrets included"
            );
            callers.open = true;
        } else if callers.by_token.is_empty() && callers.by_certificate.is_empty() {
            return Err(Error::validation(
                "no gRPC caller is configured: set security.service_token (and security.grpc_clients for other callers)",
            ));
        }
        Ok(callers)
    }

    /// Anyone may call: for servers that check callers themselves (a test
    /// stand-in for a provider's plug-in).
    pub fn anyone() -> Self {
        Self {
            open: true,
            ..Self::default()
        }
    }

    /// Parses `security.grpc_clients`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut callers = Self::default();
        let entries = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for entry in entries {
            let invalid = |why: &str| {
                Error::validation(format!(
                    "security.grpc_clients: `{}`: {why}",
                    entry.split(':').next().unwrap_or_default()
                ))
            };
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(scopes), Some(credential)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid("must be NAME:SCOPES:CREDENTIAL"));
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(invalid("the name takes letters, digits, `-`, `_` and `.`"));
            }
            let scopes = scopes
                .split('+')
                .map(|s| Scope::parse(s.trim()))
                .collect::<Option<Vec<_>>>()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    invalid("scopes are `admin`, `secrets`, `entitlements`, `usage` joined by `+`")
                })?;
            let caller = Caller {
                name: name.to_owned(),
                scopes,
            };
            let hex_digest = |value: &str| {
                let value = value.trim().to_ascii_lowercase();
                (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then_some(value)
                    .ok_or_else(|| invalid("the credential needs 64 hex digits of SHA-256"))
            };
            if let Some(digest) = credential.strip_prefix("sha256:") {
                callers.by_token.insert(hex_digest(digest)?, caller);
            } else if let Some(digest) = credential.strip_prefix("cert-sha256:") {
                callers.by_certificate.insert(hex_digest(digest)?, caller);
            } else {
                return Err(invalid(
                    "the credential is `sha256:<hex>` (a bearer token) or `cert-sha256:<hex>` (an mTLS certificate)",
                ));
            }
        }
        Ok(callers)
    }

    /// The caller whose bearer token is `token`, if any.
    pub fn by_token(&self, token: &str) -> Option<Caller> {
        self.by_token
            .get(&sha256_hex(token.trim().as_bytes()))
            .cloned()
    }

    /// The caller presenting `headers` (and, over mTLS, `certificates`).
    fn identify(&self, headers: &http::HeaderMap, certificates: &[Vec<u8>]) -> Option<Caller> {
        if let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            && let Some(caller) = self.by_token.get(&sha256_hex(token.trim().as_bytes()))
        {
            return Some(caller.clone());
        }
        certificates
            .iter()
            .find_map(|der| self.by_certificate.get(&sha256_hex(der)).cloned())
    }
}

/// A `security.grpc_clients` entry and the bearer token it accepts, for a
/// new caller `name` with `scopes` (`admin+secrets`).
pub fn new_client_entry(name: &str, scopes: &str) -> Result<(String, String)> {
    let token = marketbridge_core::crypto::random_token(32);
    let entry = format!("{name}:{scopes}:sha256:{}", sha256_hex(token.as_bytes()));
    Callers::parse(&entry)?;
    Ok((entry, token))
}

/// The tower layer checking callers; see the module documentation.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    callers: Arc<Callers>,
}

impl AuthLayer {
    /// A layer accepting `callers`.
    pub fn new(callers: Callers) -> Self {
        Self {
            callers: Arc::new(callers),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            callers: self.callers.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    callers: Arc<Callers>,
}

fn peer_certificates(extensions: &http::Extensions) -> Vec<Vec<u8>> {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default()
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let needed = requirement(&path);
        let caller = self
            .callers
            .identify(request.headers(), &peer_certificates(request.extensions()));
        // The server span is current only once the future runs.
        let verdict = match (&caller, needed) {
            (_, Requirement::Open) => Ok(()),
            (Some(caller), _) => authorize(caller, &path),
            (None, _) if self.callers.open => Ok(()),
            (None, _) => Err(tonic::Status::unauthenticated(
                "this service needs credentials: `authorization: Bearer <token>` or an mTLS client certificate",
            )),
        };
        if let Some(caller) = &caller {
            request.extensions_mut().insert(caller.clone());
        }
        let future = match verdict {
            Ok(()) => Ok(self.inner.call(request)),
            Err(status) => Err(status),
        };
        Box::pin(async move {
            let name = caller.as_ref().map_or("anonymous", |c| c.name.as_str());
            tracing::Span::current().record("rpc.caller", name);
            match future {
                Ok(future) => future.await,
                Err(status) => {
                    tracing::warn!(caller = name, method = %path, code = ?status.code(), "gRPC call refused");
                    Ok(status.into_http())
                }
            }
        })
    }
}
