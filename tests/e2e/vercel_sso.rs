//! "Open in provider": Vercel sends the browser to the Redirect Login URL
//! with a one-time code; the code becomes a verified id token, the person
//! confirms the sign-in in this browser (without the integration's slug the
//! gateway cannot bind it otherwise), a signed session cookie is set, and the
//! user lands on the page the deep link named.

use crate::vercel_support::{
    VercelOptions, confirmation_nonce, provision_body, sign_in, vercel_set,
};
use marketbridge_simulators::vercel::tokens::SimUser;
use marketbridge_storage::backend_test;
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn session_cookie(response: &reqwest::Response) -> String {
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    set_cookie.split(';').next().unwrap().to_owned()
}

backend_test!(
    sso_opens_a_session_and_lands_on_the_deep_link,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        let browser = no_redirects();
        let sso = vercel.url("/sso");
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "analytics-db", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        let mut user = SimUser::admin();
        user.name = "Grace Hopper".into();

        // A resource deep link.
        let code = sim.issue_sso_code(&installation, &user);
        let url = sim.sso_redirect_url(
            &sso,
            &code,
            &[("resource_id", &resource_id), ("path", "secrets")],
        );
        let landing = sign_in(&browser, &url).await;
        assert_eq!(landing.status(), 303);
        let location = landing.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(
            location,
            format!(
                "/vercel/dashboard/{}/resources/{resource_id}?section=secrets",
                installation.id
            )
        );
        let set_cookie = landing.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
        assert!(set_cookie.contains("Path=/vercel"), "{set_cookie}");
        assert!(
            !set_cookie.contains("Secure"),
            "plain HTTP here: {set_cookie}"
        );
        let cookie = session_cookie(&landing);
        let exchanges = sim
            .recorder()
            .accepted("POST", "/v1/integrations/sso/token");
        assert_eq!(exchanges.len(), 1);
        let exchange = exchanges[0].json();
        assert_eq!(exchange["code"], code.code.as_str());
        assert_eq!(exchange["state"], code.state.as_str());
        assert_eq!(exchange["client_id"], sim.client_id());
        assert_eq!(exchange["client_secret"], sim.client_secret());

        let page = browser
            .get(vercel.test.url(&location))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("analytics-db") && html.contains("Grace Hopper"),
            "{html}"
        );
        assert!(html.contains("secrets") && html.contains(&resource_id));
        let overview = browser
            .get(vercel.url(&format!("/dashboard/{}", installation.id)))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(overview.status(), 200);
        assert!(overview.text().await.unwrap().contains("analytics-db"));

        // Without the session, or with another installation's, no page.
        let anonymous = browser
            .get(vercel.test.url(&location))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
        let (other, _) = vercel.install().await;
        let foreign = browser
            .get(vercel.url(&format!("/dashboard/{}", other.id)))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 403);
        let tampered = browser
            .get(vercel.test.url(&location))
            .header("cookie", format!("{cookie}x"))
            .send()
            .await
            .unwrap();
        assert_eq!(tampered.status(), 401);

        // A code works once.
        let reused = browser.get(&url).send().await.unwrap();
        assert_eq!(reused.status(), 401);
        assert!(reused.headers().get("set-cookie").is_none());

        // Invoice and section deep links.
        let code = sim.issue_sso_code(&installation, &user);
        let landing = sign_in(
            &browser,
            &sim.sso_redirect_url(
                &sso,
                &code,
                &[("invoice_id", "inv_abc123"), ("path", "billing")],
            ),
        )
        .await;
        assert_eq!(
            landing.headers()["location"],
            format!(
                "/vercel/dashboard/{}/invoices/inv_abc123?section=billing",
                installation.id
            )
            .as_str()
        );
        let cookie = session_cookie(&landing);
        let invoice_page = browser
            .get(vercel.url(&format!(
                "/dashboard/{}/invoices/inv_abc123",
                installation.id
            )))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(invoice_page.status(), 200);
        assert!(invoice_page.text().await.unwrap().contains("inv_abc123"));
        let code = sim.issue_sso_code(&installation, &user);
        let landing = sign_in(
            &browser,
            &sim.sso_redirect_url(&sso, &code, &[("path", "usage")]),
        )
        .await;
        assert_eq!(
            landing.headers()["location"],
            format!("/vercel/dashboard/{}?section=usage", installation.id).as_str()
        );

        // A `url` is followed only to our own pages; anything else is
        // refused before the code is spent.
        let code = sim.issue_sso_code(&installation, &user);
        let evil = browser
            .get(sim.sso_redirect_url(&sso, &code, &[("url", "https://evil.example.com/steal")]))
            .send()
            .await
            .unwrap();
        assert_eq!(evil.status(), 400);
        let own = format!("/vercel/dashboard/{}?section=support", installation.id);
        let followed = sign_in(
            &browser,
            &sim.sso_redirect_url(&sso, &code, &[("url", &own)]),
        )
        .await;
        assert_eq!(
            followed.status(),
            303,
            "the code was not spent on the refusal"
        );
        assert_eq!(followed.headers()["location"], own.as_str());

        // Not an SSO redirect, or no code.
        let wrong = browser
            .get(format!("{sso}?mode=login&code=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let codeless = browser.get(format!("{sso}?mode=sso")).send().await.unwrap();
        assert_eq!(codeless.status(), 400);
        vercel.stop().await;
    }
);

backend_test!(
    a_page_opened_without_a_session_signs_in_through_vercel_and_comes_back,
    |database| async move {
        let options = VercelOptions {
            integration_slug: Some("acme-db".into()),
            ..Default::default()
        };
        let vercel = vercel_set(&database, options).await;
        let sim = &vercel.sim;
        let browser = no_redirects();
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "bookmarked", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap();
        let page = format!(
            "/vercel/dashboard/{}/resources/{resource_id}?section=usage",
            installation.id
        );

        // A bookmarked page without a session: off to Vercel's sign-in, with
        // the page to come back to and a nonce binding the sign-in to this
        // browser (also set as a cookie).
        let answer = browser.get(vercel.test.url(&page)).send().await.unwrap();
        assert_eq!(answer.status(), 303);
        let to_vercel = answer.headers()["location"].to_str().unwrap().to_owned();
        let state_cookie = answer.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let nonce = state_cookie
            .strip_prefix("mb_vercel_sso_state=")
            .expect("the sign-in nonce cookie")
            .to_owned();
        let expected = url::Url::parse_with_params(
            &format!("{}/sso/integrations/acme-db/{}", sim.url(), installation.id),
            &[("url", page.as_str()), ("mb_state", nonce.as_str())],
        )
        .unwrap();
        assert_eq!(to_vercel, expected.as_str());

        // Vercel signs the user in and sends the browser to the Redirect
        // Login URL with a code; the gateway opens a session and lands on
        // the page first asked for.
        let answer = browser.get(&to_vercel).send().await.unwrap();
        assert_eq!(answer.status(), 302);
        let to_gateway = answer.headers()["location"].to_str().unwrap().to_owned();
        assert!(to_gateway.contains("mode=sso"), "{to_gateway}");
        let answer = browser
            .get(&to_gateway)
            .header("cookie", &state_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 303);
        assert_eq!(answer.headers()["location"].to_str().unwrap(), page);
        let cookie = session_cookie(&answer);
        let shown = browser
            .get(vercel.test.url(&page))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(shown.status(), 200);
        assert!(shown.text().await.unwrap().contains("bookmarked"));

        // A session for another installation goes through sign-in too.
        let (other, _) = vercel.install().await;
        let answer = browser
            .get(vercel.url(&format!("/dashboard/{}", other.id)))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 303);
        assert!(
            answer.headers()["location"]
                .to_str()
                .unwrap()
                .contains(&format!("/sso/integrations/acme-db/{}", other.id))
        );
        vercel.stop().await;
    }
);

backend_test!(
    without_the_slug_a_sign_in_vercel_started_waits_for_the_person,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        let sso = vercel.url("/sso");
        // The attacker's installation, and an unused sign-in link for it.
        let (attackers, _) = vercel.install().await;
        let code = sim.issue_sso_code(&attackers, &SimUser::admin());
        let link = sim.sso_redirect_url(&sso, &code, &[("path", "billing")]);

        // The victim's browser follows it: a page asks to confirm, and no
        // session is opened.
        let victim = no_redirects();
        let answer = victim.get(&link).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let cookies: Vec<String> = answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(
            cookies.iter().all(|c| !c.starts_with("mb_vercel_session=")),
            "{cookies:?}"
        );
        let pending = cookies
            .iter()
            .find(|c| c.starts_with("mb_vercel_sso_pending="))
            .expect("the pending sign-in")
            .clone();
        assert!(pending.contains("HttpOnly") && pending.contains("SameSite=Lax"));
        let pending = pending.split(';').next().unwrap().to_owned();
        let page = answer.text().await.unwrap();
        assert!(
            page.contains(&attackers.id),
            "the page names the installation"
        );
        let nonce = confirmation_nonce(&page);

        // A cross-site page cannot confirm it: its post carries no cookie of
        // ours (SameSite=Lax), and a wrong nonce is refused too.
        let confirm = vercel.url("/sso/confirm");
        let without_cookie = victim
            .post(&confirm)
            .form(&[("nonce", nonce.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(without_cookie.status(), 403);
        assert!(without_cookie.headers().get("set-cookie").is_none());
        let wrong_nonce = victim
            .post(&confirm)
            .header("cookie", &pending)
            .form(&[("nonce", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_nonce.status(), 403);
        assert!(wrong_nonce.headers().get("set-cookie").is_none());

        // The person who did open it confirms, and only then is signed in.
        let confirmed = victim
            .post(&confirm)
            .header("cookie", &pending)
            .form(&[("nonce", nonce.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 303);
        assert_eq!(
            confirmed.headers()["location"],
            format!("/vercel/dashboard/{}?section=billing", attackers.id).as_str()
        );
        assert!(session_cookie(&confirmed).starts_with("mb_vercel_session="));
        vercel.stop().await;
    }
);
