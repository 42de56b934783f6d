//! The key-set cache against a tiny JWKS endpoint that can fail: unknown key
//! ids refetch at most once per interval, known keys outlive the cache
//! lifetime while the endpoint fails (within the staleness bound), and
//! failed fetches back off.

use marketbridge_rpc::jwks::{KeyLookupError, KeySet, KeySetOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":"45Xh_Uv9B_x-a1Hfxh4B7nS1Ho6DfhWdQZRbMaKpZxlQ1cc26m1ODpp24vW0rSD1n87stfCoYXss9NxCE-lSeFKbnC6W4AcB3kWwhMZbzZ8B7JculIbI1zR7O7u8PMw9wAXQgH0fPMMaEL3JMQdMVk3PL6ZJge_FE60DYDKCvHsM3QI7daY8kJwY-Y5HDU_fkMOv5ec5Qaw4rbhyIlg0YR_ciMl7VBYJW0FUO39XI66FRjSE1hgJJpxCpc_6oLDe2KY7hRJP_IX4fqSNWxIn-3egu5VSM-yn9b2ELwv1o3ybm5MrAk2s1guWiwoxXwu2HQqZf6rNBK0RvcKkoFqZxQ","e":"AQAB"}]}"#;

/// A JWKS endpoint counting its requests; answers 503 while `failing`.
struct Endpoint {
    url: String,
    requests: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn endpoint() -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (counted, failure) = (requests.clone(), failing.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (counted, failure) = (counted.clone(), failure.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if failure.load(Ordering::SeqCst) {
                    ("503 Service Unavailable", "down")
                } else {
                    ("200 OK", JWKS)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Endpoint {
        url,
        requests,
        failing,
    }
}

fn key_set(url: &str, options: KeySetOptions) -> KeySet {
    marketbridge_rpc::tls::install_crypto_provider();
    KeySet::new(reqwest::Client::new(), url)
        .named("test")
        .with_options(options)
}

#[tokio::test]
async fn unknown_key_ids_refetch_at_most_once_per_interval() {
    let endpoint = endpoint().await;
    let keys = key_set(&endpoint.url, KeySetOptions::default());
    assert!(keys.key("k1").await.is_ok());
    for i in 0..50 {
        assert_eq!(
            keys.key(&format!("forged-{i}")).await.unwrap_err(),
            KeyLookupError::UnknownKey(format!("forged-{i}"))
        );
    }
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn known_keys_outlive_a_failing_endpoint_within_the_bound() {
    let endpoint = endpoint().await;
    let options = KeySetOptions {
        cache_lifetime: Duration::from_millis(100),
        max_stale: Duration::from_millis(400),
        retry_initial: Duration::from_secs(60),
        retry_max: Duration::from_secs(60),
        ..KeySetOptions::default()
    };
    let keys = key_set(&endpoint.url, options);
    assert!(keys.key("k1").await.is_ok());
    endpoint.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    for _ in 0..50 {
        assert!(keys.key("k1").await.is_ok(), "a known key is used stale");
    }
    assert!(matches!(
        keys.key("other").await,
        Err(KeyLookupError::Unavailable(_))
    ));
    let requests = endpoint.requests.load(Ordering::SeqCst);
    assert!(
        requests <= 3,
        "one failed fetch, then backoff, not one per lookup: {requests}"
    );
    // Past the staleness bound nothing is trusted any more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        keys.key("k1").await,
        Err(KeyLookupError::Unavailable(_))
    ));
}
