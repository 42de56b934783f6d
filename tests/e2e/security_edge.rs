//! The edge trusts nothing by default (issue 10, items 5–7): Vercel tokens
//! are checked in every claim (times, type, subject, kind), ids in paths
//! never steer a redirect, a sign-in opens a session only in the browser that
//! asked for it, pages say nothing an upstream said and cannot be framed,
//! `marketbridge config` prints no secret, and `billing/provision` credits
//! only prepayment purchases.

use crate::google_support::{Delivery, start};
use crate::vercel_support::{
    VercelOptions, assert_error, installation_path, provision_body, resource_path, sign_in,
    vercel_set,
};
use marketbridge_simulators::vercel::TokenFlaw;
use marketbridge_simulators::vercel::tokens::{SimUser, TokenSpec};
use marketbridge_storage::backend_test;
use serde_json::json;

const SESSION_COOKIE: &str = "mb_vercel_session";
const STATE_COOKIE: &str = "mb_vercel_sso_state";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of every `Set-Cookie` naming `name`.
fn set_cookies(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
        .collect()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Checks an HTML answer carries the page headers.
fn assert_page_headers(response: &reqwest::Response) {
    assert_page_header_map(response.headers());
}

fn assert_page_header_map(headers: &reqwest::header::HeaderMap) {
    let content_type = headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let csp = headers
        .get("content-security-policy")
        .expect("a Content-Security-Policy")
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
}

backend_test!(tokens_are_checked_in_every_claim, |database| async move {
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
    let rotate_path = format!("{read_path}/secrets/rotate");
    let versions_before = vercel.stored_resource(&resource_id).await.secrets_version;

    // Signed by the trusted key, yet wrong: a future `nbf`, an `iat` a
    // year ahead, a ten-year lifetime, an id token as a bearer, a
    // subject of no known form, a user without a role.
    for flaw in [
        TokenFlaw::NotYetValid,
        TokenFlaw::IssuedInFuture,
        TokenFlaw::LongLived,
        TokenFlaw::IdToken,
        TokenFlaw::MalformedSubject,
        TokenFlaw::NoUserRole,
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
        // Declaring it a system token does not help either.
        let rotate = partner.post(&rotate_path).system(&token).send().await;
        assert_error(&rotate, 401, "unauthenticated");
    }
    // System tokens: the subject must have the system form, the type
    // must be the access token's, the times hold too.
    for flaw in [
        TokenFlaw::MalformedSubject,
        TokenFlaw::IdToken,
        TokenFlaw::LongLived,
        TokenFlaw::NotYetValid,
    ] {
        let token = sim.token(
            &TokenSpec::system(Some(&installation.id), Some(&installation.team_id)).with_flaw(flaw),
        );
        let read = partner
            .get(&installation_path(&installation))
            .system(&token)
            .send()
            .await;
        assert_error(&read, 401, "unauthenticated");
    }
    // A user token without `user_role`, sent as Vercel's own, used to
    // rotate the secrets.
    let roleless = sim.token(
        &TokenSpec::user(&installation.id, &installation.team_id, SimUser::admin())
            .with_flaw(TokenFlaw::NoUserRole),
    );
    let disguised = partner
        .post(&rotate_path)
        .bearer(&roleless)
        .header("X-Vercel-Auth", "system")
        .send()
        .await;
    assert_error(&disguised, 401, "unauthenticated");
    assert_eq!(
        vercel.stored_resource(&resource_id).await.secrets_version,
        versions_before
    );
    assert_eq!(
        vercel.stored_resource(&resource_id).await.name,
        "db",
        "no flawed token changed anything"
    );

    // Good tokens still pass.
    let read = partner.get(&read_path).user(&admin).send().await;
    assert_eq!(read.status, 200, "{}", read.text);
    let system = sim.system_token(Some(&installation));
    let read = partner.get(&read_path).system(&system).send().await;
    assert_eq!(read.status, 200, "{}", read.text);

    // The console: Vercel itself reads, but never runs a command that
    // may write; an admin does.
    let repl = format!("{read_path}/repl");
    let system_reads = partner
        .post(&repl)
        .system(&system)
        .json(&json!({"input": "info", "readOnly": true}))
        .send()
        .await;
    assert_eq!(system_reads.status, 200, "{}", system_reads.text);
    let system_writes = partner
        .post(&repl)
        .system(&system)
        .json(&json!({"input": "info", "readOnly": false}))
        .send()
        .await;
    assert_error(&system_writes, 403, "forbidden");
    let admin_writes = partner
        .post(&repl)
        .user(&admin)
        .json(&json!({"input": "info", "readOnly": false}))
        .send()
        .await;
    assert_eq!(admin_writes.status, 200, "{}", admin_writes.text);

    // SSO takes an id token, and only a sound one.
    let browser = no_redirects();
    let sso = vercel.url("/sso");
    for flaw in [
        TokenFlaw::AccessToken,
        TokenFlaw::LongLived,
        TokenFlaw::NoUserRole,
    ] {
        let code = sim.issue_flawed_sso_code(&installation, &SimUser::admin(), flaw);
        let answer = browser
            .get(sim.sso_redirect_url(&sso, &code, &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{flaw:?}");
        assert!(set_cookies(&answer, SESSION_COOKIE).is_empty(), "{flaw:?}");
    }
    vercel.stop().await;
});

backend_test!(ids_in_paths_never_steer_a_redirect, |database| async move {
    let options = VercelOptions {
        integration_slug: Some("acme-db".into()),
        ..Default::default()
    };
    let vercel = vercel_set(&database, options).await;
    let browser = no_redirects();
    let (installation, _) = vercel.install().await;
    for path in [
        "/vercel/dashboard/..%2F..%2F..%2Fevil.example",
        "/vercel/dashboard/..%2F..%2F..%2Fevil.example/resources/res_x",
        "/vercel/dashboard/icfg_a%2F..%2F..%2Fevil/invoices/inv_1",
        "/vercel/dashboard/icfg_a%3Fx=1",
        "/vercel/dashboard/%2F%2Fevil.example",
    ] {
        let answer = browser.get(vercel.test.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{path}");
        assert!(answer.headers().get("location").is_none(), "{path}");
    }
    // A well-formed id still goes through Vercel's sign-in, with the id
    // as one path segment.
    let answer = browser
        .get(vercel.url(&format!("/dashboard/{}", installation.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let to_vercel = url::Url::parse(&location(&answer)).unwrap();
    assert_eq!(
        to_vercel.path(),
        format!("/sso/integrations/acme-db/{}", installation.id)
    );
    vercel.stop().await;
});

backend_test!(
    a_sign_in_opens_a_session_only_in_the_browser_that_asked,
    |database| async move {
        let options = VercelOptions {
            integration_slug: Some("acme-db".into()),
            ..Default::default()
        };
        let vercel = vercel_set(&database, options).await;
        let sim = &vercel.sim;
        let sso = vercel.url("/sso");
        let exchanges = || {
            sim.recorder()
                .accepted("POST", "/v1/integrations/sso/token")
                .len()
        };
        // The attacker's installation, and an unused sign-in link for it.
        let (attackers, _) = vercel.install().await;
        let attacker = SimUser::admin();
        let code = sim.issue_sso_code(&attackers, &attacker);
        let link = sim.sso_redirect_url(&sso, &code, &[("path", "billing")]);

        // The victim's browser follows it: no session is opened; the browser
        // is sent through Vercel's sign-in, bound to it by a nonce cookie.
        let victim = no_redirects();
        let answer = victim.get(&link).send().await.unwrap();
        assert_eq!(answer.status(), 303);
        assert!(set_cookies(&answer, SESSION_COOKIE).is_empty());
        let nonce_cookie = set_cookies(&answer, STATE_COOKIE);
        assert_eq!(nonce_cookie.len(), 1);
        let to_vercel = url::Url::parse(&location(&answer)).unwrap();
        assert_eq!(
            to_vercel.path(),
            format!("/sso/integrations/acme-db/{}", attackers.id)
        );
        let query: std::collections::BTreeMap<_, _> =
            to_vercel.query_pairs().into_owned().collect();
        let nonce = query["mb_state"].clone();
        assert_eq!(nonce_cookie[0], format!("{STATE_COOKIE}={nonce}"));
        assert_eq!(
            query["url"],
            format!("/vercel/dashboard/{}?section=billing", attackers.id)
        );

        // A link carrying a nonce this browser does not hold is refused
        // before its code is spent.
        let code = sim.issue_sso_code(&attackers, &attacker);
        let spent = exchanges();
        let forged = victim
            .get(sim.sso_redirect_url(&sso, &code, &[("mb_state", &nonce)]))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
        assert!(set_cookies(&forged, SESSION_COOKIE).is_empty());
        assert_eq!(exchanges(), spent, "the code was not spent");
        let guessed = victim
            .get(sim.sso_redirect_url(&sso, &code, &[("mb_state", "guess")]))
            .header("cookie", format!("{STATE_COOKIE}=other"))
            .send()
            .await
            .unwrap();
        assert_eq!(guessed.status(), 403);

        // Vercel signs in whoever really uses the browser (the simulator's
        // dashboard: a team admin of that installation) and sends it back
        // with the nonce; the browser holding the cookie gets the session
        // and loses the nonce.
        let answer = victim.get(to_vercel.as_str()).send().await.unwrap();
        assert_eq!(answer.status(), 302);
        let back = location(&answer);
        assert!(back.contains("mb_state="), "{back}");
        let elsewhere = no_redirects().get(&back).send().await.unwrap();
        assert_eq!(elsewhere.status(), 403, "another browser cannot use it");
        let answer = victim
            .get(&back)
            .header("cookie", &nonce_cookie[0])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 303);
        assert_eq!(
            location(&answer),
            format!("/vercel/dashboard/{}?section=billing", attackers.id)
        );
        assert_eq!(set_cookies(&answer, SESSION_COOKIE).len(), 1);
        assert_eq!(
            set_cookies(&answer, STATE_COOKIE),
            vec![format!("{STATE_COOKIE}=")]
        );
        vercel.stop().await;
    }
);

backend_test!(
    pages_are_generic_and_cannot_be_framed,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        let browser = no_redirects();
        let sso = vercel.url("/sso");
        let (installation, _) = vercel.install().await;

        // Vercel refuses the code with its own words: the page does not
        // repeat them, and shows a reference instead.
        let code = marketbridge_simulators::vercel::SsoCode {
            code: "not-a-code".into(),
            state: "s".into(),
        };
        let refused = browser
            .get(sim.sso_redirect_url(&sso, &code, &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let headers = refused.headers().clone();
        let html = refused.text().await.unwrap();
        assert!(!html.contains("unknown or used code"), "{html}");
        assert!(!html.contains("refused"), "{html}");
        assert!(html.contains("Reference: <code>"), "{html}");
        assert_page_header_map(&headers);

        // The sign-in confirmation, a page signed in and an error page carry
        // the page headers.
        let code = sim.issue_sso_code(&installation, &SimUser::admin());
        let link = sim.sso_redirect_url(&sso, &code, &[]);
        let confirmation = browser.get(&link).send().await.unwrap();
        assert_eq!(confirmation.status(), 200);
        assert_page_headers(&confirmation);
        let code = sim.issue_sso_code(&installation, &SimUser::admin());
        let landing = sign_in(&browser, &sim.sso_redirect_url(&sso, &code, &[])).await;
        assert_eq!(landing.status(), 303);
        let cookie = set_cookies(&landing, SESSION_COOKIE).remove(0);
        let page = browser
            .get(vercel.test.url(&location(&landing)))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert_page_headers(&page);
        let anonymous = browser
            .get(vercel.url(&format!("/dashboard/{}", installation.id)))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
        assert_page_headers(&anonymous);
        // JSON answers are not pages.
        let api = browser
            .get(vercel.url(&format!("/v1/installations/{}", installation.id)))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 401);
        assert!(api.headers().get("content-security-policy").is_none());
        vercel.stop().await;
    }
);

backend_test!(
    google_signup_pages_cannot_be_framed,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let visit = google
            .test
            .http
            .get(google.test.url(&google.test.set.config.google.signup_path))
            .send()
            .await
            .unwrap();
        assert_eq!(visit.status(), 400);
        assert_page_headers(&visit);
        google.stop().await;
    }
);

backend_test!(
    only_prepayment_purchases_are_credited,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, admin) = vercel.install().await;
        let provision = format!("{}/billing/provision", installation_path(&installation));
        let now = chrono::Utc::now();
        let period = json!({
            "start": (now - chrono::Duration::days(30)).to_rfc3339(),
            "end": now.to_rfc3339(),
        });
        let item = json!({
            "billingPlanId": "pro", "name": "Database (pro)", "price": "25.00",
            "quantity": 1, "units": "month", "total": "25.00",
        });
        let http = reqwest::Client::new();
        let submit = |body: serde_json::Value| {
            let http = http.clone();
            let url = format!(
                "{}/v1/installations/{}/billing/invoices",
                vercel.sim.url(),
                installation.id
            );
            let token = installation.token.clone();
            async move {
                let answer = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(answer.status().is_success(), "{}", answer.status());
                let body: serde_json::Value = answer.json().await.unwrap();
                body["invoiceId"].as_str().unwrap().to_owned()
            }
        };

        // An invoice marketbridge submitted (it carries our external id),
        // paid: not a purchase of credit.
        let ours = submit(json!({
            "externalId": "inv_ours_1", "invoiceDate": now.to_rfc3339(),
            "period": period, "items": [item],
        }))
        .await;
        vercel
            .sim
            .set_invoice_state(&installation.id, &ours, "paid");
        let refused = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({"invoiceId": ours}))
            .send()
            .await;
        assert_error(&refused, 422, "unprocessable");
        // One without an external id that bills a subscription plan is not
        // one either.
        let subscription = submit(json!({
            "invoiceDate": now.to_rfc3339(), "period": period, "items": [item],
        }))
        .await;
        vercel
            .sim
            .set_invoice_state(&installation.id, &subscription, "paid");
        let refused = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({"invoiceId": subscription}))
            .send()
            .await;
        assert_error(&refused, 422, "unprocessable");

        // A purchase Vercel made is credited.
        let purchase = vercel.sim.create_invoice(&installation.id, "12.00", "paid");
        let credited = vercel
            .partner
            .post(&provision)
            .user(&admin)
            .json(&json!({"invoiceId": purchase}))
            .send()
            .await;
        assert_eq!(credited.status, 200, "{}", credited.text);
        assert_eq!(credited.body["balances"][0]["currencyValueInCents"], 1200);
        vercel.stop().await;
    }
);

#[test]
fn config_output_masks_every_secret() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_marketbridge"))
        .arg("config")
        .env(
            "MARKETBRIDGE_ACCOUNT__DATABASE_URL",
            "postgres://u@h/db?password=query-secret-1",
        )
        .env(
            "MARKETBRIDGE_BILLING__DATABASE_URL",
            "postgres://u:userinfo-secret-2@h/db",
        )
        .env(
            "MARKETBRIDGE_PROVISIONING__POSTGRES_URL_PARAMETERS",
            "sslmode=require&sslpassword=param-secret-3",
        )
        .env("MARKETBRIDGE_VERCEL__CLIENT_SECRET", "field-secret-4")
        .env("MARKETBRIDGE_GATEWAY__SESSION_SECRET", "field-secret-5")
        .env("MARKETBRIDGE_PROVISIONING__PLUGIN_TOKEN", "field-secret-6")
        .output()
        .expect("marketbridge config runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    for secret in [
        "query-secret-1",
        "userinfo-secret-2",
        "param-secret-3",
        "field-secret-4",
        "field-secret-5",
        "field-secret-6",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(printed.contains("account.database_url = \"postgres://u@h/db?password=***\""));
    assert!(printed.contains("sslmode=require&sslpassword=***"));
}
