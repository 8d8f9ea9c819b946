//! A webhook receiver on loopback for the tests: a real HTTP server that records every delivery
//! (headers and body), answers 500 as many times as told, and can go away and come back on its
//! port. It also verifies Standard Webhooks signatures with its own implementation of the
//! specification (HMAC-SHA256 over `{id}.{timestamp}.{body}`), not the server's code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// How long a test waits for deliveries (the workers are woken at once; this is a ceiling).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A secret in the Standard Webhooks form (24 bytes), and a second one for rotation.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const WEBHOOK_SECRET_2: &str = "whsec_c2Vjb25kIHNlY3JldCwgMjQgYnl0ZXMh";

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HashMap<String, String>,
    pub body: String,
    pub status: u16,
}

impl Delivery {
    pub fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().expect("type").to_owned()
    }
}

#[derive(Default)]
struct Shared {
    deliveries: Mutex<Vec<Delivery>>,
    /// Requests still to be answered 500.
    failures: AtomicUsize,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = listen(0).await;
        let port = listener.local_addr().unwrap().port();
        let receiver = Receiver {
            port,
            shared: Arc::new(Shared::default()),
            server: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    /// The URL deliveries are posted to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// The next `n` requests are answered 500 (and recorded).
    pub fn fail_next(&self, n: usize) {
        self.shared.failures.store(n, Ordering::SeqCst);
    }

    /// Closes the port: deliveries now get "connection refused".
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let listener = listen(self.port).await;
        self.serve(listener);
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(self.shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock().unwrap() = Some(server);
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Delivery> {
        self.all().into_iter().filter(|d| d.status < 300).collect()
    }

    /// Waits until `n` requests were answered 2xx, and returns them.
    pub async fn wait_delivered(&self, n: usize) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} deliveries, expected {n}: {:?}",
                got.len(),
                got.iter().map(Delivery::event_type).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = shared
        .failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    shared.deliveries.lock().unwrap().push(Delivery {
        headers,
        body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
        status: status.as_u16(),
    });
    status
}

/// A listener on 127.0.0.1:`port` (0: any), reusing the address so a port closed a moment ago
/// can be listened on again.
async fn listen(port: u16) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        let bound = socket
            .bind(([127, 0, 0, 1], port).into())
            .and_then(|()| socket.listen(128));
        match bound {
            Ok(listener) => return listener,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on port {port}: {e}"),
        }
    }
}

/// The Standard Webhooks check, written from the specification: the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}`, the key the base64 after `whsec_`, the header a
/// space-separated list of `v1,<base64 HMAC-SHA256>`; one of them must match, and the timestamp
/// must be within five minutes of now. Returns how many signatures matched.
pub fn verify_signature(delivery: &Delivery, secret: &str) -> usize {
    let id = &delivery.headers["webhook-id"];
    let timestamp = &delivery.headers["webhook-timestamp"];
    let seconds: i64 = timestamp.parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - seconds).abs() <= 300,
        "timestamp {seconds} is not now ({now})"
    );
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", delivery.body).as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    delivery.headers["webhook-signature"]
        .split(' ')
        .filter(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
        .count()
}
