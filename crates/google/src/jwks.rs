//! Google's public keys (Pub/Sub push tokens, signup tokens), published as
//! JWKS documents: the shared key cache of `marketbridge_rpc::jwks`, which
//! refreshes them in the background, keeps using known keys (bounded) while
//! the endpoint fails, backs off failed fetches, and refetches for unknown
//! key ids at most once per interval.

pub use marketbridge_rpc::jwks::{KeyLookupError, KeySet, KeySetOptions};

/// The `key_set` name of the Pub/Sub push token keys.
pub const PUSH_KEY_SET: &str = "google-push";
/// The `key_set` name of the signup token keys.
pub const SIGNUP_KEY_SET: &str = "google-signup";
