//! The verifier against the Vercel simulator's keys: valid tokens pass,
//! every flaw is refused, and a rotated key is fetched on first sight.

use marketbridge_simulators::vercel::tokens::{SimUser, TokenSpec};
use marketbridge_simulators::vercel::{TokenFlaw, VercelSimulator};
use marketbridge_vercel::oidc::{AuthKind, OidcVerifier};
use std::time::Duration;

fn http() -> reqwest::Client {
    marketbridge_rpc::http::outbound_client(&Default::default(), Duration::from_secs(5)).unwrap()
}

fn verifier(sim: &VercelSimulator) -> OidcVerifier {
    OidcVerifier::new(http(), &sim.jwks_url(), &sim.issuer(), sim.client_id())
        .with_refetch_interval(Duration::ZERO)
}

#[tokio::test]
async fn valid_tokens_pass_and_flawed_ones_do_not() {
    let sim = VercelSimulator::start_default().await.unwrap();
    let verifier = verifier(&sim);
    let installation = sim.new_installation();
    let claims = verifier
        .verify(&sim.admin_token(&installation))
        .await
        .unwrap();
    assert_eq!(
        claims.installation_id.as_deref(),
        Some(installation.id.as_str())
    );
    assert_eq!(
        claims.account_id.as_deref(),
        Some(installation.team_id.as_str())
    );
    assert!(claims.is_admin());
    assert!(claims.check_kind(AuthKind::User).is_ok());
    let system = verifier.verify(&sim.system_token(None)).await.unwrap();
    assert!(system.installation_id.is_none() && !system.has_user());
    for flaw in [
        TokenFlaw::Expired,
        TokenFlaw::WrongIssuer,
        TokenFlaw::WrongAudience,
        TokenFlaw::UnknownKey,
        TokenFlaw::ForgedKey,
        TokenFlaw::AlgNone,
        TokenFlaw::Hs256,
    ] {
        let error = verifier
            .verify(&sim.flawed_token(&installation, flaw))
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            marketbridge_core::ErrorCode::Unauthenticated,
            "{flaw:?}: {error}"
        );
    }
    // Within the ten seconds of leeway an expired token still passes.
    let mut barely = TokenSpec::user(&installation.id, &installation.team_id, SimUser::admin());
    barely.expires_in = -3;
    assert!(verifier.verify(&sim.token(&barely)).await.is_ok());
}

#[tokio::test]
async fn an_unknown_key_id_fetches_the_keys_again() {
    let sim = VercelSimulator::start_default().await.unwrap();
    let verifier = verifier(&sim);
    let installation = sim.new_installation();
    verifier
        .verify(&sim.admin_token(&installation))
        .await
        .unwrap();
    verifier
        .verify(&sim.admin_token(&installation))
        .await
        .unwrap();
    assert_eq!(sim.recorder().calls_to("GET", "/.well-known/jwks").len(), 1);
    sim.rotate_signing_key();
    verifier
        .verify(&sim.admin_token(&installation))
        .await
        .unwrap();
    assert_eq!(sim.recorder().calls_to("GET", "/.well-known/jwks").len(), 2);
}

#[tokio::test]
async fn refetching_is_throttled() {
    let sim = VercelSimulator::start_default().await.unwrap();
    let verifier = OidcVerifier::new(http(), &sim.jwks_url(), &sim.issuer(), sim.client_id())
        .with_refetch_interval(Duration::from_secs(3600));
    let installation = sim.new_installation();
    verifier
        .verify(&sim.admin_token(&installation))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(
            verifier
                .verify(&sim.flawed_token(&installation, TokenFlaw::UnknownKey))
                .await
                .is_err()
        );
    }
    assert_eq!(sim.recorder().calls_to("GET", "/.well-known/jwks").len(), 1);
}

#[tokio::test]
async fn a_token_verified_once_is_remembered_until_it_expires() {
    let sim = VercelSimulator::start_default().await.unwrap();
    let verifier = verifier(&sim);
    let installation = sim.new_installation();
    let token = sim.admin_token(&installation);
    let first = verifier.verify(&token).await.unwrap();
    assert_eq!(verifier.remembered_hits(), 0);
    for _ in 0..3 {
        assert!(verifier.verify(&token).await.unwrap() == first);
    }
    assert_eq!(verifier.remembered_hits(), 3, "answered from memory");
    // Another token is verified on its own, not mistaken for the first.
    let other = verifier.verify(&sim.system_token(None)).await.unwrap();
    assert!(other.installation_id.is_none());
    assert_eq!(verifier.remembered_hits(), 3);

    // A remembered token is refused once past `exp` and the leeway.
    let mut ending = TokenSpec::user(&installation.id, &installation.team_id, SimUser::admin());
    ending.expires_in = -7;
    let ending = sim.token(&ending);
    verifier.verify(&ending).await.unwrap();
    verifier.verify(&ending).await.unwrap();
    assert_eq!(verifier.remembered_hits(), 4);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let error = verifier.verify(&ending).await.unwrap_err();
    assert_eq!(
        error.code(),
        marketbridge_core::ErrorCode::Unauthenticated,
        "{error}"
    );
    assert!(error.to_string().contains("expired"), "{error}");
    assert_eq!(verifier.remembered_hits(), 4);
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_leaves_the_key_set() {
    let sim = VercelSimulator::start_default().await.unwrap();
    let verifier = verifier(&sim);
    let installation = sim.new_installation();
    let old = sim.admin_token(&installation);
    verifier.verify(&old).await.unwrap();
    verifier.verify(&old).await.unwrap();
    assert_eq!(verifier.remembered_hits(), 1);

    // Vercel rotates and stops publishing the old key; a token signed with
    // the new one makes the verifier read the keys again.
    sim.rotate_signing_key();
    sim.retire_old_signing_keys();
    verifier
        .verify(&sim.admin_token(&installation))
        .await
        .unwrap();
    let error = verifier.verify(&old).await.unwrap_err();
    assert_eq!(
        error.code(),
        marketbridge_core::ErrorCode::Unauthenticated,
        "{error}"
    );
    assert_eq!(verifier.remembered_hits(), 1, "not answered from memory");
}
