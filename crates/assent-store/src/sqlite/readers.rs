//! A fixed pool of reader threads, each owning one read connection. A fixed pool keeps memory
//! bounded (each connection has its own page cache) and avoids spawning threads for reads
//! that take microseconds.

use super::shared::Shared;
use crate::StoreError;
use rusqlite::Connection;
use std::sync::Arc;
use tokio::sync::oneshot;

type Task = Box<dyn FnOnce(&Connection, &Shared) + Send>;

/// The reader threads and the queue that feeds them.
pub struct Readers {
    tasks: crossbeam_channel::Sender<Task>,
}

impl Readers {
    /// Starts `count` reader threads, each with a connection made by `open`.
    pub fn start(
        count: usize,
        shared: Arc<Shared>,
        open: impl Fn() -> Result<Connection, StoreError>,
    ) -> Result<Readers, StoreError> {
        let (tasks, queue) = crossbeam_channel::unbounded::<Task>();
        for i in 0..count {
            let conn = open()?;
            let (queue, shared) = (queue.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("assent-reader-{i}"))
                .spawn(move || {
                    for task in queue {
                        task(&conn, &shared);
                    }
                })
                .map_err(|e| StoreError::Internal(format!("cannot start a reader: {e}")))?;
        }
        Ok(Readers { tasks })
    }

    /// Runs `f` on a reader thread and waits for its answer.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Shared) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tasks
            .send(Box::new(move |conn, shared| {
                let _ = reply.send(f(conn, shared));
            }))
            .map_err(|_| StoreError::Unavailable("the readers have stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("a read failed unexpectedly".into()))?
    }
}
