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
use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};
use tokio::sync::{oneshot, watch};

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
    /// The CPU priority of the worker's threads beside request handling.
    pub priority: Priority,
}

/// The CPU priority of the delivery threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    /// As request handling.
    Normal,
    /// Below request handling (Linux niceness 19): while requests keep the CPUs busy, a busy
    /// delivery thread gets about a seventieth of the CPU time of a busy request thread, so a
    /// burst of writes is barely slowed by the deliveries it causes, which still progress and
    /// catch up after it.
    #[default]
    Low,
    /// Only when no request needs the CPU (Linux `SCHED_IDLE`): a burst of writes keeps
    /// all the CPU, and deliveries wait for a CPU to fall idle. On a machine whose CPUs stay
    /// busy, deliveries barely progress. Elsewhere than Linux, as `Low`.
    Idle,
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
            priority: Priority::Low,
        }
    }
}

/// The running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<()>,
}

/// The scheduling priority of the worker's threads at [`Priority::Low`]: on Linux, niceness 19,
/// the lowest of the normal policy (the scheduler then gives a busy request thread about
/// seventy times the CPU time of a busy delivery thread, and the deliveries all of it when
/// requests idle).
const LOW_PRIORITY: u8 = 0;

impl Worker {
    /// Starts the worker on `store`, on threads of its own.
    pub fn start(store: Arc<dyn Store>, config: WorkerConfig) -> Result<Worker, String> {
        let client = OutboundClient::new(config.http.clone())?;
        let (stop, stopped) = watch::channel(false);
        let (finished, done) = oneshot::channel();
        let priority = config.priority;
        let deliverer = Deliverer {
            store,
            requests: tokio::runtime::Handle::current(),
            client,
            tokens: TokenCache::default(),
            connectors: ConnectorState::default(),
            config,
        };
        std::thread::Builder::new()
            .name("assent-deliveries".into())
            .spawn(move || {
                // Threads inherit the priority of the thread that starts them: the runtime's
                // threads below are all lowered with this one.
                lower_priority(priority);
                match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("assent-delivery")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(deliverer, stopped)),
                    Err(e) => tracing::error!(error = %e, "cannot start the delivery runtime"),
                }
                let _ = finished.send(());
            })
            .map_err(|e| format!("cannot start the delivery thread: {e}"))?;
        Ok(Worker { stop, done })
    }

    /// Stops taking deliveries and waits for the round under way (its attempts are recorded).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Lowers the calling thread's scheduling priority to `priority` (a failure is logged and
/// ignored: the deliveries then run at the priority of requests).
fn lower_priority(priority: Priority) {
    let lowered = match priority {
        Priority::Normal => return,
        #[cfg(target_os = "linux")]
        Priority::Idle => {
            use thread_priority::{
                NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
                thread_native_id,
            };
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Min,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            )
            .map_err(|e| format!("{e:?}"))
        }
        _ => ThreadPriorityValue::try_from(LOW_PRIORITY)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                set_current_thread_priority(ThreadPriority::Crossplatform(p))
                    .map_err(|e| format!("{e:?}"))
            }),
    };
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "cannot lower the priority of the delivery threads");
    }
}

/// What a round needs.
struct Deliverer {
    store: Arc<dyn Store>,
    /// The runtime that serves requests: the store is called there, so that what it starts
    /// (a database connection's driver, say) does not run at the deliveries' priority.
    requests: tokio::runtime::Handle,
    client: OutboundClient,
    tokens: TokenCache,
    connectors: ConnectorState,
    config: WorkerConfig,
}

async fn run(d: Deliverer, mut stopped: watch::Receiver<bool>) {
    let d = Arc::new(d);
    let mut last_prune: Option<Instant> = None;
    // Also ends if the worker was dropped without being stopped (its sender is gone).
    while !*stopped.borrow() && stopped.has_changed().is_ok() {
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            last_prune = Some(Instant::now());
            let before = Timestamp::from_millis(
                Timestamp::now().millis() - d.config.retention.as_millis() as i64,
            );
            let store = d.store.clone();
            let pruned = d
                .on_requests(async move { store.prune_deliveries(before).await })
                .await;
            if let Err(e) = pruned {
                tracing::warn!(error = %e, "forgetting old deliveries failed");
            }
        }
        let store = d.store.clone();
        let active = d
            .on_requests(async move { store.active_integrations().await })
            .await;
        let busy = match active {
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
    /// Runs a store call on the request runtime and waits for its result here.
    async fn on_requests<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, assent_store::StoreError>> + Send + 'static,
    ) -> Result<T, assent_store::StoreError> {
        self.requests.spawn(call).await.unwrap_or_else(|e| {
            Err(assent_store::StoreError::Internal(format!(
                "store call failed: {e}"
            )))
        })
    }

    /// One round for one integration; returns whether it found work.
    async fn round(&self, integration: &Integration) -> bool {
        let lease = self.config.http.timeout * 2 + Duration::from_secs(30);
        let (store, claimed, batch) = (self.store.clone(), integration.clone(), self.config.batch);
        let due = match self
            .on_requests(async move {
                store
                    .claim_deliveries(&claimed, Timestamp::now(), batch, lease)
                    .await
            })
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
        // Here, not on the request runtime: rendering runs at the deliveries' priority.
        let due = match self.store.render_due(due).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(integration = %integration.id, error = %e, "rendering deliveries failed");
                return false;
            }
        };
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
        let (store, recorded) = (self.store.clone(), integration.clone());
        let outcome = self
            .on_requests(async move { store.record_attempts(&recorded, results).await })
            .await;
        if let Err(e) = outcome {
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
        // Never expected: the store could not render the change (it logged why). The attempt
        // fails and follows the schedule, so the delivery ends parked, not stuck.
        _ if due.unrendered.is_some() => Err(webhook::Failure {
            response_code: None,
            error: "the change could not be rendered; the server log says why".to_owned(),
            retry_after: None,
            gone: false,
        }),
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
