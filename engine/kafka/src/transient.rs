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

/// How to fix a client error that means no broker answered (it cannot be reached, or did not
/// answer in time), as the end of a sentence; empty for any other error, whose own message says
/// more than a guess would.
pub fn unreachable_hint(error: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as C;
    // rdkafka reports no code for a failed admin request, though it carries one.
    let code = match error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::BrokerNotAvailable,
        ) => "; check the bootstrap servers (--bootstrap, SAGAFLOW_BOOTSTRAP), that a broker is up, and the connection's security settings (SAGAFLOW_KAFKA_SECURITY_PROTOCOL and the rest)",
        _ => "",
    }
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
        assert!(
            unreachable_hint(&KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))
                .contains("--bootstrap")
        );
        assert_eq!(
            unreachable_hint(&KafkaError::MessageConsumption(
                RDKafkaErrorCode::TopicAuthorizationFailed
            )),
            ""
        );
    }
}
