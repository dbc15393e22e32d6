//! The webhook (WEBHOOK_URL): each event of [`EventRecord::for_webhook`] is POSTed as JSON.
//!
//! A slow or dead receiver never delays a transaction: the event listener only offers a record
//! to a bounded queue ([`Webhook::offer`] never waits) and counts what does not fit; one task
//! delivers the queue in order, each delivery within WEBHOOK_TIMEOUT, a failed one (no answer,
//! or a status other than 2xx) tried again WEBHOOK_RETRIES times after a pause of
//! WEBHOOK_BACKOFF doubling up to 1 minute. Logs show the URL without its path and query
//! ([`redact_url`]): a Home Assistant webhook id is a secret.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Uri};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::status::{redact_url, MAX_WEBHOOK_BACKOFF};
use crate::status::client;
use crate::status::history::EventRecord;
use crate::status::metrics::Metrics;

/// How to deliver.
#[derive(Clone)]
pub(crate) struct WebhookConfig {
    /// Where to (logged only [redacted](redact_url)).
    pub url: Uri,
    /// Limit of one delivery.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    /// First pause between tries.
    pub backoff: Duration,
    /// Queue capacity.
    pub queue: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("queue", &self.queue)
            .finish()
    }
}

/// The sending side of the queue.
#[derive(Debug)]
pub(crate) struct Webhook {
    tx: mpsc::Sender<EventRecord>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// Starts the delivery task; it ends once the [`Webhook`] is dropped and the queue is
    /// delivered.
    pub(crate) fn start(config: WebhookConfig, metrics: Arc<Metrics>) -> (Webhook, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let task = tokio::spawn(deliver_all(rx, config, Arc::clone(&metrics)));
        (Webhook { tx, metrics }, task)
    }

    /// Queues `record` for delivery; never waits. A full queue drops it (counted).
    pub(crate) fn offer(&self, record: EventRecord) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => {
                self.metrics.webhook_dropped();
                warn!(
                    event = r.event,
                    "webhook queue full (receiver slow or down): event dropped"
                );
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

async fn deliver_all(
    mut rx: mpsc::Receiver<EventRecord>,
    config: WebhookConfig,
    metrics: Arc<Metrics>,
) {
    while let Some(record) = rx.recv().await {
        let delivered = deliver(&config, &record).await;
        metrics.webhook(delivered);
    }
}

/// One event, with its retries; `true` once the receiver accepted it.
async fn deliver(config: &WebhookConfig, record: &EventRecord) -> bool {
    let body = match serde_json::to_vec(record) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot write the webhook's JSON");
            return false;
        }
    };
    let url = redact_url(&config.url);
    let mut pause = config.backoff;
    for attempt in 0..=config.retries {
        let sent = client::send(
            &config.url,
            Method::POST,
            Some(("application/json", body.clone())),
            None,
            config.timeout,
        )
        .await;
        match sent {
            Ok((status, _)) if status.is_success() => {
                debug!(event = record.event, attempt, "webhook delivered");
                return true;
            }
            Ok((status, _)) => {
                warn!(event = record.event, attempt, %status, %url, "webhook receiver refused the event");
            }
            Err(e) => {
                warn!(event = record.event, attempt, %url, "webhook delivery failed: {e}");
            }
        }
        if attempt < config.retries {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_WEBHOOK_BACKOFF);
        }
    }
    warn!(
        event = record.event,
        tries = config.retries + 1,
        "webhook event given up"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Log lines written by `tracing`, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn failed_delivery_logs_the_receiver_without_the_webhook_id() {
        // A loopback port nobody listens on: the delivery fails and is logged.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let secret = "ha-webhook-s3cret-id";
        let url: Uri = format!("http://127.0.0.1:{port}/api/webhook/{secret}?token={secret}")
            .parse()
            .unwrap();
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let config = WebhookConfig {
            url,
            timeout: Duration::from_secs(2),
            retries: 0,
            backoff: Duration::from_millis(1),
            queue: 1,
        };
        let record = EventRecord {
            event: "upstream_healed",
            message: "test".into(),
            ..EventRecord::default()
        };
        assert!(!deliver(&config, &record).await);
        let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        assert!(text.contains("webhook delivery failed"), "{text}");
        assert!(
            text.contains(&format!("http://127.0.0.1:{port}/***")),
            "{text}"
        );
        assert!(!text.contains(secret), "{text}");
        assert!(!format!("{config:?}").contains(secret));
    }
}
