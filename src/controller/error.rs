//! The controller's one error type, with the short label of the failure metric and the condition message.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("a cache of watched objects was closed before it was filled")]
    CacheClosed,
}

impl Error {
    /// Short label for the failure metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::MissingField(_) => "invalid_object",
            Error::CacheClosed => "cache",
        }
    }

    /// The error as a condition message: for a request the API server refused, its own message (which names
    /// the object) rather than the whole response.
    pub fn condition_message(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(status)) => format!(
                "the API server refused a request ({} {}): {}",
                status.code, status.reason, status.message
            ),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_reads_as_the_api_servers_message() {
        let status = kube::core::Status {
            code: 422,
            reason: "Invalid".into(),
            message: "deployments.apps \"iris-1\" is forbidden: frozen".into(),
            ..Default::default()
        };
        assert_eq!(
            Error::Kube(kube::Error::Api(Box::new(status))).condition_message(),
            "the API server refused a request (422 Invalid): deployments.apps \"iris-1\" is forbidden: frozen"
        );
    }
}
