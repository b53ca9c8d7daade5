//! Deadlines for the fast path's reads and writes: one timer per connection, reset for each
//! wait and armed only when an operation has to wait at all.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The wait ran past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// A connection's reusable timer.
pub struct Timer(Pin<Box<Sleep>>);

impl Timer {
    pub fn new() -> Timer {
        Timer(Box::pin(tokio::time::sleep(Duration::ZERO)))
    }

    /// Runs `fut`; gives up `limit` after it first has to wait.
    pub async fn within<F: Future>(
        &mut self,
        limit: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        self.run(fut, || Instant::now() + limit).await
    }

    /// Runs `fut`; gives up at `deadline`.
    pub async fn until<F: Future>(
        &mut self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        self.run(fut, || deadline).await
    }

    async fn run<F: Future>(
        &mut self,
        fut: F,
        deadline: impl FnOnce() -> Instant,
    ) -> Result<F::Output, Elapsed> {
        let mut fut = std::pin::pin!(fut);
        let mut deadline = Some(deadline);
        let sleep = &mut self.0;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if let Some(at) = deadline.take() {
                sleep.as_mut().reset(at());
            }
            sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_needs_no_timer_and_waiting_work_times_out() {
        let mut t = Timer::new();
        assert_eq!(t.within(Duration::ZERO, async { 7 }).await, Ok(7));
        let never = std::future::pending::<()>();
        assert_eq!(
            t.within(Duration::from_millis(20), never).await,
            Err(Elapsed)
        );
        // The same timer serves the next wait.
        let soon = tokio::time::sleep(Duration::from_millis(5));
        assert_eq!(t.within(Duration::from_secs(5), soon).await, Ok(()));
    }
}
