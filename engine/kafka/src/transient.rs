//! Which client errors pass by themselves.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Whether `error` reports a state the client recovers from by itself (a broker that is down,
/// restarting or moving leadership), rather than a problem with the request.
///
/// librdkafka queues such errors on every consumer as events while it reconnects, and a poll
/// returns them long after the broker is back. A reader that gave up on the first one would
/// fail once per queued event: after a broker restart, restores failed again and again for
/// minutes this way.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::BrokerNotAvailable
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::KafkaStorageError
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_pass_and_bad_requests_do_not() {
        assert!(is_transient(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::AllBrokersDown
        )));
        assert!(is_transient(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
    }
}
