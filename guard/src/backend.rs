//! The classifier backend trait and the types every backend shares.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::conversation::{to_guard_conversation, ChatMessage, ConversationError};
use crate::prompt::{CategorySet, GuardConversation};
use crate::rules::RuleMatch;
use crate::verdict::{Verdict, VerdictError};

/// A boxed, sendable future: what [`GuardBackend::classify`] returns, so
/// the trait can be used as `dyn GuardBackend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which kind of backend produced an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A model file run in-process through `warden-inference`.
    Local,
    /// An OpenAI-compatible server.
    Remote,
    /// Deterministic regex, keyword and PII detectors.
    Rules,
}

impl BackendKind {
    /// The backend's name in configuration and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Rules => "rules",
        }
    }
}

/// One thing to judge: a conversation mapped for a checkpoint, and the
/// categories the policy checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRequest {
    checkpoint: Checkpoint,
    conversation: GuardConversation,
    categories: CategorySet,
}

/// Why a request cannot be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The conversation's last turn is not the role the checkpoint judges.
    #[error("the {checkpoint} checkpoint judges a {expected} turn, but the conversation ends with a {found} turn")]
    RoleMismatch {
        /// The checkpoint asked for.
        checkpoint: Checkpoint,
        /// The role it judges.
        expected: crate::prompt::GuardRole,
        /// The role of the conversation's last turn.
        found: crate::prompt::GuardRole,
    },
    /// The chat could not be mapped.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
}

impl GuardRequest {
    /// A request; the conversation's last turn must be the checkpoint's role.
    pub fn new(
        checkpoint: Checkpoint,
        conversation: GuardConversation,
        categories: CategorySet,
    ) -> Result<Self, RequestError> {
        let (expected, found) = (checkpoint.judged_role(), conversation.judged_role());
        if expected != found {
            return Err(RequestError::RoleMismatch {
                checkpoint,
                expected,
                found,
            });
        }
        Ok(Self {
            checkpoint,
            conversation,
            categories,
        })
    }

    /// A request from OpenAI-shaped chat messages, mapped for `checkpoint`.
    pub fn from_chat(
        checkpoint: Checkpoint,
        messages: &[ChatMessage],
        categories: CategorySet,
    ) -> Result<Self, RequestError> {
        let conversation = to_guard_conversation(messages, checkpoint)?;
        Self::new(checkpoint, conversation, categories)
    }

    /// What is being judged.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// The conversation; its last turn is judged.
    pub fn conversation(&self) -> &GuardConversation {
        &self.conversation
    }

    /// The categories the policy checks.
    pub fn categories(&self) -> &CategorySet {
        &self.categories
    }
}

/// A backend's answer: a verdict, never a guess in place of an error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// P(unsafe), when the backend can compute it.
    pub unsafe_score: Option<f32>,
    /// Which backend answered.
    pub backend: BackendKind,
    /// The model that answered, for model backends.
    pub model: Option<String>,
    /// How long the backend took.
    #[serde(serialize_with = "serialize_millis")]
    pub latency: Duration,
    /// What the rules backend matched in the judged turn (empty otherwise).
    pub findings: Vec<RuleMatch>,
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why a backend gave no verdict. Callers apply the policy's fail mode;
/// none of these is ever a `Safe` verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The backend did not answer in time.
    #[error("the {backend} guard timed out after {after:?}")]
    Timeout {
        /// The backend that timed out.
        backend: BackendKind,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The backend could not be reached or the connection failed.
    #[error("the {} guard could not be reached: {message}", backend.as_str())]
    Transport {
        /// The backend that failed.
        backend: BackendKind,
        /// What went wrong.
        message: String,
    },
    /// The server answered with a non-success HTTP status.
    #[error("the guard server answered HTTP {status}: {body}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The server's response is not the expected JSON shape.
    #[error("the guard server's response is malformed: {0}")]
    InvalidResponse(String),
    /// The model's text is not a valid verdict.
    #[error("the guard output {output:?} is not a valid verdict: {source}")]
    UnparseableOutput {
        /// The raw model output.
        output: String,
        /// Why it was rejected.
        source: VerdictError,
    },
    /// The backend failed internally (e.g. the engine crashed).
    #[error("the {} guard failed: {message}", backend.as_str())]
    Crashed {
        /// The backend that failed.
        backend: BackendKind,
        /// What went wrong.
        message: String,
    },
    /// The model did not end its verdict (no end-of-turn token) within the
    /// token budget; a cut-off verdict could name too few categories.
    #[error("the guard output {output:?} did not end within {max_tokens} tokens")]
    Unfinished {
        /// The text generated before the budget ran out.
        output: String,
        /// The token budget.
        max_tokens: usize,
    },
    /// The guard prompt cannot be built for this conversation.
    #[error("the guard prompt cannot be built: {0}")]
    Prompt(#[from] crate::prompt::PromptError),
    /// The backend's configuration is unusable.
    #[error("invalid guard configuration: {0}")]
    Config(String),
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classifier backend. Dyn-compatible: use `Box<dyn GuardBackend>`.
pub trait GuardBackend: Send + Sync {
    /// Which kind of backend this is.
    fn kind(&self) -> BackendKind;

    /// The model name, for model backends.
    fn model(&self) -> Option<&str>;

    /// Judges the request's last turn.
    fn classify<'a>(
        &'a self,
        request: &'a GuardRequest,
    ) -> BoxFuture<'a, Result<GuardOutcome, GuardError>>;
}

/// Runs `backend.classify` with a deadline; running out of time is a
/// [`GuardError::Timeout`], never a verdict.
pub async fn classify_with_timeout(
    backend: &dyn GuardBackend,
    request: &GuardRequest,
    timeout: Duration,
) -> Result<GuardOutcome, GuardError> {
    match tokio::time::timeout(timeout, backend.classify(request)).await {
        Ok(result) => result,
        Err(_) => Err(GuardError::Timeout {
            backend: backend.kind(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{GuardMessage, GuardRole};
    use warden_policies::taxonomy::GuardVariant;

    /// A backend that answers safe after a delay, to exercise the deadline.
    struct SlowBackend(Duration);

    impl GuardBackend for SlowBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::Local
        }
        fn model(&self) -> Option<&str> {
            Some("slow")
        }
        fn classify<'a>(
            &'a self,
            _request: &'a GuardRequest,
        ) -> BoxFuture<'a, Result<GuardOutcome, GuardError>> {
            Box::pin(async move {
                tokio::time::sleep(self.0).await;
                Ok(GuardOutcome {
                    verdict: Verdict::Safe,
                    unsafe_score: None,
                    backend: BackendKind::Local,
                    model: Some("slow".into()),
                    latency: self.0,
                    findings: Vec::new(),
                })
            })
        }
    }

    fn request() -> GuardRequest {
        GuardRequest::from_chat(
            Checkpoint::Input,
            &[ChatMessage::user("hi")],
            CategorySet::standard(GuardVariant::LlamaGuard3_8b),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_deadline_is_an_error_not_a_verdict() {
        let slow: Box<dyn GuardBackend> = Box::new(SlowBackend(Duration::from_secs(5)));
        let err = classify_with_timeout(slow.as_ref(), &request(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            GuardError::Timeout {
                backend: BackendKind::Local,
                after: Duration::from_millis(50)
            }
        );
        let fast = SlowBackend(Duration::from_millis(1));
        let ok = classify_with_timeout(&fast, &request(), Duration::from_secs(5)).await;
        assert!(ok.unwrap().verdict.is_safe());
    }

    #[test]
    fn request_checks_the_judged_role() {
        let conv = GuardConversation::new(vec![GuardMessage::new(GuardRole::User, "x")]).unwrap();
        let err = GuardRequest::new(
            Checkpoint::Output,
            conv,
            CategorySet::standard(GuardVariant::LlamaGuard3_1b),
        )
        .unwrap_err();
        assert!(matches!(err, RequestError::RoleMismatch { .. }));
    }

    #[test]
    fn outcome_serialises_for_audit() {
        let outcome = GuardOutcome {
            verdict: Verdict::Safe,
            unsafe_score: Some(0.25),
            backend: BackendKind::Remote,
            model: Some("llama-guard3:1b".into()),
            latency: Duration::from_millis(12),
            findings: Vec::new(),
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["backend"], "remote");
        assert_eq!(json["verdict"]["verdict"], "safe");
        assert_eq!(json["latency"], 12.0);
    }
}
