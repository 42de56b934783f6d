//! The signup ticket: what a verified or resolved marketplace token proved,
//! signed by us (HMAC-SHA256) and carried as a hidden form field until the
//! customer submits the form. The gateway stays stateless and the
//! marketplace's token never leaves the request that brought it. A ticket
//! names its marketplace: one issued on one marketplace's page is refused on
//! another's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use marketbridge_config::Config;
use marketbridge_core::Marketplace;
use marketbridge_core::crypto::random_token;
use marketbridge_core::time::SharedClock;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a customer has to fill the form, in seconds.
pub const TICKET_LIFETIME_SECONDS: i64 = 30 * 60;

/// What a ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The marketplace whose page issued it (`google`, `aws`, `azure`).
    pub marketplace: String,
    /// The account's id at the marketplace (Google's procurement account,
    /// AWS's license or customer, Azure's subscription).
    pub account: String,
    /// Obfuscated id of the person, when the token had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Their roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Order ids, when several orders are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// A random value that makes every ticket unique.
    pub nonce: String,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketProblem {
    /// Not a ticket we issued (or altered).
    Invalid,
    /// Issued by us but too old.
    Expired,
}

/// Signs and checks tickets with one key.
#[derive(Clone)]
pub struct TicketSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner(..)")
    }
}

impl TicketSigner {
    /// The key, derived from `gateway.session_secret` (resolved and
    /// validated at start; never the encryption key). Without one, tickets
    /// use a key of this process only and do not survive a restart.
    pub fn from_config(config: &Config) -> Self {
        let secret = config.gateway.session_secret.trim();
        if !secret.is_empty() {
            return Self::new(derive(secret.as_bytes(), b"marketbridge signup ticket"));
        }
        tracing::warn!(
            "no session secret is configured; signup tickets use a key of this process only"
        );
        Self::new(marketbridge_core::crypto::random_token(32).into_bytes())
    }

    /// A signer with `key`.
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The ticket as text: `base64url(json).base64url(mac)`.
    pub fn seal(&self, ticket: &Ticket) -> String {
        let json = serde_json::to_string(ticket).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        format!("{payload}.{mac}")
    }

    /// Checks a sealed ticket at `now`.
    pub fn open(&self, sealed: &str, now: DateTime<Utc>) -> Result<Ticket, TicketProblem> {
        let (payload, mac) = sealed
            .trim()
            .split_once('.')
            .ok_or(TicketProblem::Invalid)?;
        let given = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TicketProblem::Invalid)?;
        let expected = self.mac(payload);
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_slice(), expected.as_slice()).into();
        if !same {
            return Err(TicketProblem::Invalid);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TicketProblem::Invalid)?;
        let ticket: Ticket = serde_json::from_slice(&json).map_err(|_| TicketProblem::Invalid)?;
        if ticket.exp < now.timestamp() {
            return Err(TicketProblem::Expired);
        }
        Ok(ticket)
    }
}

/// What a marketplace's module proved about the buyer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The account's id at the marketplace.
    pub account: String,
    /// The person's id at the marketplace, when it gave one.
    pub user: Option<String>,
    /// Their roles.
    pub roles: Vec<String>,
    /// Order (or subscription) ids the token named.
    pub orders: Vec<String>,
}

/// The ticket signer and the clock its lifetimes are checked with.
#[derive(Clone)]
pub struct SignupTickets {
    signer: TicketSigner,
    clock: SharedClock,
}

impl SignupTickets {
    /// Tickets keyed from `gateway.session_secret`.
    pub fn new(config: &Config, clock: SharedClock) -> Self {
        Self {
            signer: TicketSigner::from_config(config),
            clock,
        }
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub(crate) fn issue(&self, marketplace: Marketplace, verified: &Verified) -> (Ticket, String) {
        let ticket = Ticket {
            marketplace: marketplace.as_str().to_owned(),
            account: verified.account.clone(),
            user: verified.user.clone(),
            roles: verified.roles.clone(),
            orders: verified.orders.clone(),
            exp: self.clock.now().timestamp() + TICKET_LIFETIME_SECONDS,
            nonce: random_token(16),
        };
        let sealed = self.signer.seal(&ticket);
        (ticket, sealed)
    }

    /// Opens a ticket issued on `marketplace`'s page; one from another
    /// marketplace's page is invalid here.
    pub(crate) fn open(
        &self,
        marketplace: Marketplace,
        sealed: &str,
    ) -> Result<Ticket, TicketProblem> {
        let ticket = self.signer.open(sealed, self.clock.now())?;
        if ticket.marketplace != marketplace.as_str() {
            return Err(TicketProblem::Invalid);
        }
        Ok(ticket)
    }
}

fn derive(secret: &[u8], purpose: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_ticket_from_one_marketplace_is_refused_on_another() {
        let tickets = SignupTickets {
            signer: TicketSigner::new(b"k".repeat(32)),
            clock: marketbridge_core::time::system_clock(),
        };
        let verified = Verified {
            account: "acct-1".into(),
            ..Default::default()
        };
        let (ticket, sealed) = tickets.issue(Marketplace::Google, &verified);
        assert_eq!(tickets.open(Marketplace::Google, &sealed), Ok(ticket));
        assert_eq!(
            tickets.open(Marketplace::Aws, &sealed),
            Err(TicketProblem::Invalid)
        );
    }

    #[test]
    fn tickets_round_trip_and_resist_tampering() {
        let signer = TicketSigner::new(b"k".repeat(32));
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let ticket = Ticket {
            marketplace: "google".into(),
            account: "acct-1".into(),
            user: Some("u".into()),
            roles: vec![],
            orders: vec!["o-1".into()],
            exp: now.timestamp() + 60,
            nonce: "n".into(),
        };
        let sealed = signer.seal(&ticket);
        assert_eq!(signer.open(&sealed, now), Ok(ticket.clone()));
        let (payload, mac) = sealed.split_once('.').unwrap();
        let mut forged = ticket.clone();
        forged.account = "acct-2".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&forged).unwrap());
        assert_eq!(
            signer.open(&format!("{forged_payload}.{mac}"), now),
            Err(TicketProblem::Invalid)
        );
        assert_eq!(signer.open(payload, now), Err(TicketProblem::Invalid));
        let other = TicketSigner::new(b"x".repeat(32));
        assert_eq!(other.open(&sealed, now), Err(TicketProblem::Invalid));
        assert_eq!(
            signer.open(&sealed, now + chrono::Duration::seconds(61)),
            Err(TicketProblem::Expired)
        );
    }
}
