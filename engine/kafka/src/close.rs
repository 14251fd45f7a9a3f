//! Closing a group consumer without hanging on a broker that is gone.

use std::time::Duration;

/// Drops `client` on a thread of its own and waits at most `within` for it; returns whether it
/// finished in time.
///
/// Dropping a consumer in a group closes it: librdkafka leaves the group and commits what is
/// stored, and waits for the broker to answer for as long as it takes. With the broker gone that
/// is forever, and the thread doing it (an async runtime's worker, or the one a shutdown joins)
/// hangs with it. A client left behind here goes on closing until the process exits.
pub fn close_within<T: Send + 'static>(client: T, within: Duration) -> bool {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    drop_on_own_thread(client, move || {
        let _ = done_tx.send(());
    });
    // A sender dropped without a send also means the drop has ended (see `drop_on_own_thread`).
    !matches!(
        done_rx.recv_timeout(within),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
    )
}

/// [`close_within`] for async code: the wait holds no thread of the runtime.
pub async fn close_within_async<T: Send + 'static>(client: T, within: Duration) -> bool {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    drop_on_own_thread(client, move || {
        let _ = done_tx.send(());
    });
    // Ok(Err(_)), a sender dropped without a send, also means the drop has ended.
    tokio::time::timeout(within, done_rx).await.is_ok()
}

/// Drops `client`, then calls `done`, on a new thread. If `done` is dropped uncalled, the drop
/// has ended all the same: it panicked, or no thread could be spawned and it ran on this one.
fn drop_on_own_thread<T: Send + 'static>(client: T, done: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("sagaflow-close".into())
        .spawn(move || {
            drop(client);
            done();
        });
    // A failed spawn has already dropped the closure on this thread, the client and `done` with it.
    let _ = spawned;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver, Sender};

    /// Bounds every wait of these tests, so that a wrong close fails them instead of hanging.
    const BOUND: Duration = Duration::from_secs(60);

    /// A client whose close takes until the test releases it (or `BOUND`), and says it is done.
    struct Held {
        release: Receiver<()>,
        closed: Sender<()>,
    }

    impl Drop for Held {
        fn drop(&mut self) {
            let _ = self.release.recv_timeout(BOUND);
            let _ = self.closed.send(());
        }
    }

    fn held() -> (Held, Sender<()>, Receiver<()>) {
        let (release_tx, release) = channel();
        let (closed, closed_rx) = channel();
        (Held { release, closed }, release_tx, closed_rx)
    }

    #[test]
    fn a_close_that_does_not_finish_in_time_is_left_behind() {
        let (client, release, closed) = held();
        // A close_within that waited for the close would see it finish (after `BOUND`).
        assert!(!close_within(client, Duration::from_millis(50)));
        release.send(()).unwrap();
        closed
            .recv_timeout(BOUND)
            .expect("the client was closed afterwards");
    }

    #[test]
    fn a_close_that_finishes_is_waited_for() {
        let (client, release, closed) = held();
        release.send(()).unwrap();
        assert!(close_within(client, Duration::MAX));
        closed
            .try_recv()
            .expect("closed before close_within returned");
    }

    struct Panics;

    impl Drop for Panics {
        fn drop(&mut self) {
            panic!("this client's close fails");
        }
    }

    #[test]
    fn a_close_that_panics_has_ended() {
        assert!(close_within(Panics, BOUND));
    }

    #[tokio::test]
    async fn the_async_close_behaves_the_same() {
        let (client, release, closed) = held();
        assert!(!close_within_async(client, Duration::from_millis(50)).await);
        release.send(()).unwrap();
        closed
            .recv_timeout(BOUND)
            .expect("the client was closed afterwards");

        let (client, release, closed) = held();
        release.send(()).unwrap();
        assert!(close_within_async(client, BOUND).await);
        closed
            .try_recv()
            .expect("closed before close_within_async returned");
    }
}
