//! The webhook (WEBHOOK_URL): each event of [`EventRecord::for_webhook`] is POSTed as JSON.
//!
//! A slow or dead receiver never delays a transaction: the event listener only offers a record
//! to a bounded queue ([`Webhook::offer`] never waits) and counts what does not fit; one task
//! delivers the queue in order, each delivery within WEBHOOK_TIMEOUT, a failed one (no answer,
//! or a status other than 2xx) tried again WEBHOOK_RETRIES times after a pause of
//! WEBHOOK_BACKOFF doubling up to 1 minute.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Uri};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::status::MAX_WEBHOOK_BACKOFF;
use crate::status::client;
use crate::status::history::EventRecord;
use crate::status::metrics::Metrics;

/// How to deliver.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Where to.
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

/// The sending side of the queue.
#[derive(Debug)]
pub struct Webhook {
    tx: mpsc::Sender<EventRecord>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// Starts the delivery task; it ends once the [`Webhook`] is dropped and the queue is
    /// delivered.
    pub fn start(config: WebhookConfig, metrics: Arc<Metrics>) -> (Webhook, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let task = tokio::spawn(deliver_all(rx, config, Arc::clone(&metrics)));
        (Webhook { tx, metrics }, task)
    }

    /// Queues `record` for delivery; never waits. A full queue drops it (counted).
    pub fn offer(&self, record: EventRecord) {
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
                warn!(event = record.event, attempt, %status, url = %config.url, "webhook receiver refused the event");
            }
            Err(e) => {
                warn!(event = record.event, attempt, url = %config.url, "webhook delivery failed: {e}");
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
