//! Argon2 work, off the async threads and bounded.
//!
//! It runs on a few dedicated threads, as many as there are permits, each reusing its own
//! ~19 MiB of working memory. (On tokio's blocking pool, every new thread that ran a hash kept a
//! freed copy in its own allocator arena: a burst of sign-ins left hundreds of MB resident.)

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{Semaphore, oneshot};

use crate::problem::ApiError;

type Work = Box<dyn FnOnce() + Send>;

/// A bounded pool of hashing threads.
pub struct HashingPool {
    permits: Semaphore,
    work: mpsc::Sender<Work>,
}

impl HashingPool {
    /// `threads` threads, and as many hashes at once.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (work, queue) = mpsc::channel::<Work>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("evisa-hash-{i}"))
                .spawn(move || {
                    loop {
                        // Ends when the pool (its sender) is dropped.
                        let next = queue.lock().map(|q| q.recv());
                        match next {
                            Ok(Ok(work)) => work(),
                            _ => return,
                        }
                    }
                })
                .expect("a hashing thread can be started");
        }
        Self {
            permits: Semaphore::new(threads),
            work,
        }
    }

    /// Runs `f` on a hashing thread once one is free. Waits up to `wait` for one, then answers
    /// 503 so callers retry later instead of piling up.
    pub async fn run<T: Send + 'static>(
        &self,
        wait: std::time::Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(wait, self.permits.acquire())
            .await
            .map_err(|_| ApiError::unavailable("sign-in is busy; try again shortly"))?
            .map_err(ApiError::internal)?;
        let (tx, rx) = oneshot::channel();
        self.work
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| ApiError::internal("the hashing threads stopped"))?;
        let out = rx
            .await
            .map_err(|_| ApiError::internal("a hash did not finish"))?;
        drop(permit);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::HashingPool;

    /// A flood of sign-ins never runs more hashes at once than there are threads, and what
    /// cannot get a turn in time is refused rather than queued without end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hashing_runs_at_most_the_threads_at_once() {
        let pool = Arc::new(HashingPool::new(2));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(Duration::from_millis(250), move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .is_ok()
            }));
        }
        let mut served = 0;
        for t in tasks {
            served += usize::from(t.await.unwrap());
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert!((2..12).contains(&served), "{served} served");
    }
}
