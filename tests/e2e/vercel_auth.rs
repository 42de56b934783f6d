//! Who may call the partner API: every broken token is refused with 401,
//! every token that may not do the thing with 403, each with the contract's
//! error body; read-only users read, admins change, Vercel reads and
//! uninstalls.

use crate::vercel_support::{
    VercelOptions, assert_error, installation_path, provision_body, resource_path, vercel_set,
};
use marketbridge_simulators::vercel::TokenFlaw;
use marketbridge_simulators::vercel::tokens::{SimUser, TokenSpec};
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    the_auth_matrix_is_enforced_on_every_route,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        let partner = &vercel.partner;
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "free", "db", json!({})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        let read_path = resource_path(&installation, &resource_id);

        // No token, or not a bearer token.
        let missing = partner.get(&read_path).send().await;
        assert_error(&missing, 401, "unauthenticated");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
        let basic = partner
            .get(&read_path)
            .header("Authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await;
        assert_error(&basic, 401, "unauthenticated");
        let garbage = partner.get(&read_path).user("not-a-jwt").send().await;
        assert_error(&garbage, 401, "unauthenticated");

        // Every flawed token, on a read and on a change.
        for flaw in [
            TokenFlaw::Expired,
            TokenFlaw::WrongIssuer,
            TokenFlaw::WrongAudience,
            TokenFlaw::UnknownKey,
            TokenFlaw::ForgedKey,
            TokenFlaw::AlgNone,
            TokenFlaw::Hs256,
        ] {
            let token = sim.flawed_token(&installation, flaw);
            let read = partner.get(&read_path).user(&token).send().await;
            assert_error(&read, 401, "unauthenticated");
            let change = partner
                .patch(&read_path)
                .user(&token)
                .json(&json!({"name": "hijacked"}))
                .send()
                .await;
            assert_error(&change, 401, "unauthenticated");
        }
        assert_eq!(vercel.stored_resource(&resource_id).await.name, "db");

        // A token for another installation: 403 on reads and changes.
        let (other, other_admin) = vercel.install().await;
        for answer in [
            partner.get(&read_path).user(&other_admin).send().await,
            partner
                .get(&installation_path(&installation))
                .system(&sim.system_token(Some(&other)))
                .send()
                .await,
            partner
                .delete(&installation_path(&installation))
                .user(&other_admin)
                .send()
                .await,
            partner
                .post(&format!("{}/resources", installation_path(&installation)))
                .user(&other_admin)
                .json(&provision_body("database", "free", "x", json!({})))
                .send()
                .await,
        ] {
            assert_error(&answer, 403, "forbidden");
        }

        // A read-only (USER role) member reads but changes nothing.
        let viewer = sim.user_token(&installation, &SimUser::viewer());
        let read = partner.get(&read_path).user(&viewer).send().await;
        assert_eq!(read.status, 200, "{}", read.text);
        for answer in [
            partner
                .patch(&read_path)
                .user(&viewer)
                .json(&json!({"name": "renamed"}))
                .send()
                .await,
            partner.delete(&read_path).user(&viewer).send().await,
            partner
                .post(&format!("{}/secrets/rotate", read_path))
                .user(&viewer)
                .send()
                .await,
            partner
                .post(&format!("{}/resources", installation_path(&installation)))
                .user(&viewer)
                .json(&provision_body("database", "free", "x", json!({})))
                .send()
                .await,
            partner
                .put(&installation_path(&installation))
                .user(&viewer)
                .json(&installation.upsert_body())
                .send()
                .await,
            partner
                .delete(&installation_path(&installation))
                .user(&viewer)
                .send()
                .await,
        ] {
            assert_error(&answer, 403, "forbidden");
        }
        // Claiming to be Vercel does not help a user token.
        let disguised = partner
            .delete(&read_path)
            .bearer(&viewer)
            .header("X-Vercel-Auth", "system")
            .send()
            .await;
        assert_error(&disguised, 403, "forbidden");
        // A token declared as a user's must name one.
        let system = sim.system_token(Some(&installation));
        let declared = partner.get(&read_path).user(&system).send().await;
        assert_error(&declared, 401, "unauthenticated");

        // Vercel itself reads, but does not provision or install.
        let read = partner.get(&read_path).system(&system).send().await;
        assert_eq!(read.status, 200, "{}", read.text);
        let provision = partner
            .post(&format!("{}/resources", installation_path(&installation)))
            .system(&system)
            .json(&provision_body("database", "free", "x", json!({})))
            .send()
            .await;
        assert_error(&provision, 403, "forbidden");
        // A system token without an installation may only list product plans.
        let anonymous = sim.system_token(None);
        let plans = partner
            .get("/v1/products/database/plans")
            .system(&anonymous)
            .send()
            .await;
        assert_eq!(plans.status, 200, "{}", plans.text);
        let read = partner.get(&read_path).system(&anonymous).send().await;
        assert_error(&read, 403, "forbidden");

        // The webhook, SSO and flow routes are not open either.
        let flow = partner
            .get("/marketplace/plans?productId=database")
            .send()
            .await;
        assert_eq!(flow.status, 401);
        assert_eq!(flow.body["error"]["code"], "UNAUTHENTICATED");

        // Nothing any refused call tried happened.
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.name, "db");
        assert_eq!(stored.secrets_version, 1);
        let account = vercel.account(&installation).await;
        assert_eq!(vercel.stored_resources(&account.id).await.len(), 1);
        vercel.stop().await;
    }
);

backend_test!(
    signing_keys_are_fetched_once_and_cached,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        // Vercel signs with a rotated key; the gateway fetches the published
        // keys on first use and then verifies from its cache.
        sim.rotate_signing_key();
        let installation = sim.new_installation();
        let token = sim.token(&TokenSpec::user(
            &installation.id,
            &installation.team_id,
            SimUser::admin(),
        ));
        let answer = vercel
            .partner
            .put(&installation_path(&installation))
            .user(&token)
            .json(&installation.upsert_body())
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        for _ in 0..3 {
            let again = sim.admin_token(&installation);
            let answer = vercel
                .partner
                .get(&installation_path(&installation))
                .user(&again)
                .send()
                .await;
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
        assert_eq!(
            sim.recorder().calls_to("GET", "/.well-known/jwks").len(),
            1,
            "keys are cached"
        );
        // A token naming an unknown key is refused without hammering the
        // key endpoint.
        for _ in 0..3 {
            let unknown = sim.flawed_token(&installation, TokenFlaw::UnknownKey);
            let answer = vercel
                .partner
                .get(&installation_path(&installation))
                .user(&unknown)
                .send()
                .await;
            assert_eq!(answer.status, 401);
        }
        assert!(sim.recorder().calls_to("GET", "/.well-known/jwks").len() <= 2);
        vercel.stop().await;
    }
);
