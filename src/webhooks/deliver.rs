//! One delivery: `POST` the stored body to the endpoint with the Standard Webhooks headers.

use std::sync::Arc;

use tokio::sync::Notify;
use url::Url;

use super::endpoint::Endpoint;
use super::sign::signature_header;
use crate::clock::Millis;
use crate::config::Settings;
use crate::store::webhooks::{Claimed, Routes};

/// Why a delivery failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth another attempt: no answer, or an answer other than 2xx.
    Retry(String),
    /// Never worth another attempt: the endpoint is no longer configured (no secret to sign with).
    Gone(String),
}

/// The configured endpoints and the HTTP client that reaches them; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    endpoints: Arc<[Endpoint]>,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

impl Webhooks {
    pub fn new(settings: &Settings) -> anyhow::Result<Webhooks> {
        let client = reqwest::Client::builder()
            .timeout(settings.webhook_timeout)
            // A receiver answers; it does not send latchkey elsewhere (a redirect would carry
            // the signed event to a URL nobody configured).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks {
            endpoints: settings.webhooks.clone().into(),
            client,
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Where the store's flows queue events, ringing this worker after their commit.
    pub fn routes(&self) -> Routes {
        Routes::new(&self.endpoints, self.wake.clone())
    }

    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Delivers a claimed row to its endpoint, signed with the endpoint's secrets of now.
    pub async fn deliver(&self, claimed: &Claimed, now: Millis) -> Result<(), SendError> {
        let Some(endpoint) = self
            .endpoints
            .iter()
            .find(|e| e.url.as_str() == claimed.endpoint)
        else {
            return Err(SendError::Gone(
                "the endpoint is no longer configured".into(),
            ));
        };
        match self
            .send(endpoint, &claimed.event_id, &claimed.payload, now)
            .await
        {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(SendError::Retry(format!("the receiver answered {status}"))),
            Err(error) => Err(SendError::Retry(error)),
        }
    }

    /// One signed `POST`; the status of the answer, or why there was none.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        event_id: &str,
        body: &str,
        now: Millis,
    ) -> Result<u16, String> {
        let timestamp = now.div_euclid(1000);
        let signature = signature_header(&endpoint.keys, event_id, timestamp, body);
        let sent = self
            .client
            .post(endpoint.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => Ok(response.status().as_u16()),
            // Without the URL: it may carry a token of the receiver's, and this text is logged
            // and stored.
            Err(error) => Err(error.without_url().to_string()),
        }
    }
}

/// An endpoint as logs show it: its origin only (a receiver's path or query may hold a token).
pub fn origin(endpoint: &str) -> String {
    Url::parse(endpoint)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "<unparseable>".to_owned())
}
