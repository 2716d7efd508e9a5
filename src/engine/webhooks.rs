//! Completion webhooks: the deliverer POSTs each finished task that carries a callback to its
//! URL, signed per the Standard Webhooks convention, and retries with backoff until the
//! receiver answers 2xx or the tries run out.
//!
//! The store holds the truth: a trigger writes one delivery row, in the transaction that ends
//! the task, and each try records its outcome there. So a delivery survives a restart, and
//! delivery is at-least-once: a try whose 2xx was not recorded yet (a crash, a shutdown in
//! the middle) is made again. Every try of one delivery carries the same `webhook-id`, by
//! which receivers deduplicate. A host the outbound allow-list refuses is not tried again.
//! A traced task's webhook carries its W3C `traceparent` (the submit's span) and `tracestate`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use sha2::Sha256;
use tokio::task::JoinSet;

use super::Inner;
use crate::outbound::{Outbound, OutboundError};
use crate::store::{Delivery, DeliveryOutcome, StoreError};
use crate::task::{Backoff, now_millis};

/// How often the deliverer looks for due deliveries when nothing woke it: retries fall due
/// on their own, and another node's finished tasks wake nobody here.
const POLL: Duration = Duration::from_secs(1);
/// How many deliveries are in flight at once: a slow receiver holds one slot, not the loop.
const MAX_IN_FLIGHT: usize = 16;
/// The longest wait between two tries of one delivery.
const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// How long the deliverer backs off after the store failed.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How completion webhooks are sent; each limit has a flag in `config`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The client, with the outbound allow-list.
    pub outbound: Outbound,
    /// Tries per delivery, the first included; then it has `failed`.
    pub max_attempts: u32,
    /// The wait after the first failed try; it doubles after each (jittered, capped at 1 h).
    pub backoff_base: Duration,
    /// How long one try may take, connecting and the receiver's answer included.
    pub timeout: Duration,
}

/// The deliverer loop: runs until the maintenance stops. Tries in flight then are abandoned;
/// their rows stay pending and are tried again after a restart.
pub(super) async fn run(inner: Arc<Inner>) {
    // Deliveries in flight by the task that tries them, so a due row is not tried twice at
    // once (its `next_at` moves only when the try is recorded).
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut trying: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        let mut pause = POLL;
        let free = MAX_IN_FLIGHT - trying.len();
        if free > 0 {
            match inner
                .store
                .deliveries_due(now_millis(), trying.len() + free)
                .await
            {
                Ok(due) => {
                    let busy: Vec<&String> = trying.values().collect();
                    let fresh: Vec<Delivery> = due
                        .into_iter()
                        .filter(|d| !busy.contains(&&d.id))
                        .take(free)
                        .collect();
                    for delivery in fresh {
                        let id = delivery.id.clone();
                        let handle = in_flight.spawn(try_once(Arc::clone(&inner), delivery));
                        trying.insert(handle.id(), id);
                    }
                }
                Err(StoreError::Unsupported(what)) => {
                    tracing::warn!(
                        what,
                        "this store keeps no webhook deliveries; none are sent"
                    );
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read due webhook deliveries");
                    pause = ERROR_BACKOFF;
                }
            }
        }
        tokio::select! {
            Some(done) = in_flight.join_next_with_id() => {
                let task = match done {
                    Ok((task, ())) => task,
                    Err(error) => {
                        tracing::error!(%error, "a webhook delivery try panicked");
                        error.id()
                    }
                };
                trying.remove(&task);
            }
            () = inner.deliveries.notified() => {}
            () = tokio::time::sleep(pause) => {}
            () = inner.stop_maintaining.cancelled() => return,
        }
    }
}

/// Makes one try and records it.
async fn try_once(inner: Arc<Inner>, mut delivery: Delivery) {
    // The receiver reads the task as any client would: secrets hidden.
    delivery.task = inner.shown(delivery.task);
    let outcome = send(&inner.config.webhooks, &delivery).await;
    crate::metrics::webhook_delivery(match &outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Retry { .. } => "retry",
        DeliveryOutcome::GaveUp { .. } => "gave_up",
    });
    match &outcome {
        DeliveryOutcome::Delivered { status } => {
            tracing::debug!(id = %delivery.id, task = %delivery.task.id, status, "webhook delivered")
        }
        DeliveryOutcome::Retry { error, .. } => {
            tracing::info!(id = %delivery.id, task = %delivery.task.id, %error, "webhook try failed; will retry")
        }
        DeliveryOutcome::GaveUp { error, .. } => {
            tracing::warn!(id = %delivery.id, task = %delivery.task.id, %error, "webhook delivery failed for good")
        }
    }
    if let Err(error) = inner
        .store
        .delivery_tried(delivery.id.clone(), outcome)
        .await
    {
        // The row stays due: the try is made again (at-least-once).
        tracing::error!(id = %delivery.id, %error, "cannot record a webhook try");
    }
}

/// POSTs the finished task once and says what to do next.
async fn send(config: &WebhookConfig, delivery: &Delivery) -> DeliveryOutcome {
    let this_try = delivery.attempts + 1;
    let url = match Url::parse(&delivery.url) {
        Ok(url) => url,
        Err(error) => {
            return DeliveryOutcome::GaveUp {
                status: None,
                error: format!("the callback URL is invalid: {error}"),
            };
        }
    };
    let body = match serde_json::to_vec(&delivery.task) {
        Ok(body) => body,
        Err(error) => {
            return DeliveryOutcome::GaveUp {
                status: None,
                error: format!("the task cannot be serialized: {error}"),
            };
        }
    };
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = config
        .outbound
        .request(Method::POST, url)
        .timeout(config.timeout)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string());
    // The receiver joins the task's trace: its parent is the span of the submit.
    if let Some(trace) = &delivery.task.trace {
        for (name, value) in trace.headers() {
            request = request.header(name, value);
        }
    }
    if let Some(secret) = &delivery.secret {
        let signature = signature(secret, &delivery.id, timestamp, &body);
        request = request.header("webhook-signature", signature);
    }
    let (status, error) = match config.outbound.send(request.body(body)).await {
        Ok(response) if response.status().is_success() => {
            return DeliveryOutcome::Delivered {
                status: response.status().as_u16(),
            };
        }
        Ok(response) => (
            Some(response.status().as_u16()),
            format!("the receiver answered {}", response.status()),
        ),
        Err(OutboundError::Refused(refused)) => {
            return DeliveryOutcome::GaveUp {
                status: None,
                error: refused.to_string(),
            };
        }
        Err(OutboundError::Timeout) => (
            None,
            format!("no answer within {} ms", config.timeout.as_millis()),
        ),
        Err(OutboundError::Failed(error)) => (None, error),
    };
    if this_try >= config.max_attempts {
        return DeliveryOutcome::GaveUp {
            status,
            error: format!("{error} (try {this_try} of {})", config.max_attempts),
        };
    }
    let backoff = Backoff {
        base_ms: config.backoff_base.as_millis() as u64,
        cap_ms: BACKOFF_CAP.as_millis() as u64,
    };
    DeliveryOutcome::Retry {
        status,
        error,
        next_at: now_millis() + backoff.delay_ms(this_try, fastrand::f64()) as i64,
    }
}

/// The `webhook-signature` header: `v1,` + base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}`. The key is the base64-decoded part after `whsec_` of a
/// Standard Webhooks secret, or else the secret's bytes as they are.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    // HMAC takes a key of any length (a long one is hashed first), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::signature;

    /// The Standard Webhooks reference vector (from the specification's libraries).
    #[test]
    fn signatures_match_the_reference_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_plain_secret_is_its_own_key() {
        let plain = signature("s3cret", "msg_1", 1, b"{}");
        assert!(plain.starts_with("v1,"));
        assert_ne!(plain, signature("s3cret!", "msg_1", 1, b"{}"));
        assert_ne!(plain, signature("s3cret", "msg_2", 1, b"{}"));
        assert_ne!(plain, signature("s3cret", "msg_1", 2, b"{}"));
    }
}
