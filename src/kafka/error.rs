//! The broker's errors as Kafka error codes, in one place. A handler that
//! needs a different code in its context (a catalog refusal in
//! CreateTopics is about the topic) says so where it maps.

use kafka_protocol::ResponseError;

use crate::broker::Error;

/// The Kafka error code of a broker error.
pub fn code(error: &Error) -> i16 {
    match error {
        Error::TopicNotFound { .. } | Error::PartitionNotFound { .. } => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        Error::TopicExists { .. } => ResponseError::TopicAlreadyExists.code(),
        Error::Invalid(_) => ResponseError::InvalidRequest.code(),
        Error::TooLarge(_) => ResponseError::MessageTooLarge.code(),
        // Retriable: the client tries again shortly, or elsewhere.
        Error::Overloaded => ResponseError::RequestTimedOut.code(),
        // Kafka's answer for a log directory it cannot write to: clients
        // retry it, and the write resumes once space is back.
        Error::NoSpace(_) => ResponseError::KafkaStorageError.code(),
        // The client refreshes its metadata and sends to the leader.
        Error::ShuttingDown | Error::NotLeader(_) => ResponseError::NotLeaderOrFollower.code(),
        // Retriable: the cluster's metadata group elects a leader.
        Error::Unavailable { .. } => ResponseError::RequestTimedOut.code(),
        // Not retriable: trying again changes nothing.
        Error::Unsupported(_) => ResponseError::InvalidRequest.code(),
        // A failure of the server's own (a worker or the group commit
        // thread ended) is answered as a storage error too: clients retry
        // it, as they should a write whose outcome is unknown, where
        // UNKNOWN_SERVER_ERROR would make them give up.
        Error::Storage { .. } | Error::Internal(_) => ResponseError::KafkaStorageError.code(),
    }
}
