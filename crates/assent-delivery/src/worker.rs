//! The delivery worker: runs inside `assent serve`, takes due deliveries from the store's
//! outbox, hands them to their destination, and records every attempt.
//!
//! Each round takes, per enabled integration, at most one delivery per user (the oldest not yet
//! delivered), so a user's changes reach a destination in order while different users go out
//! concurrently. A delivery is released only by recording its attempt; if the server dies
//! before that, the delivery is taken again after its lease: at least once, never lost.

use crate::connectors::{self, ConnectorState};
use crate::http::{HttpConfig, OutboundClient};
use crate::oauth::TokenCache;
use crate::schedule::RetrySchedule;
use crate::webhook;
use assent_model::Timestamp;
use assent_model::integration::{Attempt, Integration, IntegrationType};
use assent_store::Store;
use assent_store::integrations::{AttemptResult, DueDelivery, Outcome};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Delays between attempts; the delivery is parked when they run out.
    pub schedule: RetrySchedule,
    /// Outgoing HTTP: timeouts, response cap, addresses allowed.
    pub http: HttpConfig,
    /// Pause between rounds when there was nothing to do.
    pub idle: Duration,
    /// Most deliveries taken per integration and round.
    pub batch: usize,
    /// Most requests in flight per integration.
    pub concurrency: usize,
    /// Delivered deliveries (and the changes they carried) are forgotten after this long.
    pub retention: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            schedule: RetrySchedule::default(),
            http: HttpConfig::default(),
            idle: Duration::from_millis(200),
            batch: 256,
            concurrency: 32,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Worker {
    /// Starts the worker on `store`.
    pub fn start(store: Arc<dyn Store>, config: WorkerConfig) -> Result<Worker, String> {
        let client = OutboundClient::new(config.http.clone())?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            Deliverer {
                store,
                client,
                tokens: TokenCache::default(),
                connectors: ConnectorState::default(),
                config,
            },
            stopped,
        ));
        Ok(Worker { stop, task })
    }

    /// Stops taking deliveries and waits for the round under way (its attempts are recorded).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What a round needs.
struct Deliverer {
    store: Arc<dyn Store>,
    client: OutboundClient,
    tokens: TokenCache,
    connectors: ConnectorState,
    config: WorkerConfig,
}

async fn run(d: Deliverer, mut stopped: watch::Receiver<bool>) {
    let d = Arc::new(d);
    let mut last_prune: Option<Instant> = None;
    while !*stopped.borrow() {
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            last_prune = Some(Instant::now());
            let before = Timestamp::from_millis(
                Timestamp::now().millis() - d.config.retention.as_millis() as i64,
            );
            if let Err(e) = d.store.prune_deliveries(before).await {
                tracing::warn!(error = %e, "forgetting old deliveries failed");
            }
        }
        let busy = match d.store.active_integrations().await {
            Ok(integrations) => {
                let rounds = integrations.into_iter().map(|i| {
                    let d = d.clone();
                    tokio::spawn(async move { d.round(&i).await })
                });
                let mut busy = false;
                for round in rounds.collect::<Vec<_>>() {
                    busy |= round.await.unwrap_or(false);
                }
                busy
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the integrations failed; will retry");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(d.config.idle) => {}
                _ = stopped.changed() => {}
            }
        }
    }
}

impl Deliverer {
    /// One round for one integration; returns whether it found work.
    async fn round(&self, integration: &Integration) -> bool {
        let lease = self.config.http.timeout * 2 + Duration::from_secs(30);
        let due = match self
            .store
            .claim_deliveries(integration, Timestamp::now(), self.config.batch, lease)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(integration = %integration.id, error = %e, "taking deliveries failed");
                return false;
            }
        };
        if due.is_empty() {
            return false;
        }
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency.max(1)));
        let mut sends = tokio::task::JoinSet::new();
        for delivery in due {
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let (client, tokens, connectors, schedule, integration) = (
                self.client.clone(),
                self.tokens.clone(),
                self.connectors.clone(),
                self.config.schedule.clone(),
                integration.clone(),
            );
            sends.spawn(async move {
                let result = attempt(
                    &client,
                    &tokens,
                    &connectors,
                    &schedule,
                    &integration,
                    delivery,
                )
                .await;
                drop(permit);
                result
            });
        }
        let mut results = Vec::new();
        while let Some(r) = sends.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        for r in &results {
            let outcome = match r.outcome {
                Outcome::Delivered => "delivered",
                Outcome::RetryAt(_) => "retrying",
                Outcome::Park => "parked",
                Outcome::Gone => "gone",
            };
            metrics::counter!("assent_delivery_attempts_total", "outcome" => outcome).increment(1);
        }
        if let Err(e) = self.store.record_attempts(integration, results).await {
            // The deliveries stay taken until their lease ends, then go out again.
            tracing::warn!(integration = %integration.id, error = %e, "recording attempts failed");
        }
        true
    }
}

/// Makes one attempt and decides what comes next.
async fn attempt(
    client: &OutboundClient,
    tokens: &TokenCache,
    connectors: &ConnectorState,
    schedule: &RetrySchedule,
    integration: &Integration,
    due: DueDelivery,
) -> AttemptResult {
    let at = Timestamp::now();
    let started = Instant::now();
    let sent = match integration.type_id {
        IntegrationType::WebhookHttp => webhook::send(client, tokens, integration, &due)
            .await
            .map(connectors::Sent::Answered),
        IntegrationType::Actito => {
            connectors::actito::send(client, connectors, integration, &due).await
        }
        IntegrationType::Mparticle => {
            connectors::mparticle::send(client, connectors, integration, &due).await
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let failed_attempts = due.delivery.attempts.len() as u32 + 1;
    let (attempt, outcome) = match sent {
        Ok(sent) => (
            Attempt {
                at,
                response_code: sent.response_code(),
                duration_ms,
                error: None,
            },
            Outcome::Delivered,
        ),
        Err(f) => {
            let outcome = if f.gone {
                Outcome::Gone
            } else {
                match schedule.next_delay(failed_attempts, f.retry_after) {
                    Some(delay) => Outcome::RetryAt(Timestamp::from_millis(
                        Timestamp::now().millis() + delay.as_millis() as i64,
                    )),
                    None => Outcome::Park,
                }
            };
            (
                Attempt {
                    at,
                    response_code: f.response_code,
                    duration_ms,
                    error: Some(f.error),
                },
                outcome,
            )
        }
    };
    AttemptResult {
        delivery_id: due.delivery.id,
        attempt,
        outcome,
    }
}
