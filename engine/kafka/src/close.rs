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
    let spawned = std::thread::Builder::new()
        .name("sagaflow-close".into())
        .spawn(move || {
            drop(client);
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(_) => done_rx.recv_timeout(within).is_ok(),
        // No thread to spare: the closure, and the client with it, was dropped by the failed
        // spawn, on this thread.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow(Duration);

    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
        }
    }

    #[test]
    fn a_close_that_takes_too_long_is_left_behind() {
        let started = std::time::Instant::now();
        assert!(!close_within(
            Slow(Duration::from_secs(30)),
            Duration::from_millis(100)
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(close_within(
            Slow(Duration::from_millis(10)),
            Duration::from_secs(10)
        ));
    }
}
