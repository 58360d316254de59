//! Incremental output checks of one windowed stream: a [`StreamGuard`] per
//! local guard backend, kept from window to window, so checking window k
//! costs that window plus the closing instructions rather than the whole
//! answer again. Backends that cannot check incrementally (remote, or a
//! conversation shape a session cannot hold) get whole checks.

use std::collections::HashMap;
use std::time::Duration;

use warden_guard::{
    classify_with_timeout, BackendKind, GuardError, GuardOutcome, GuardRequest, GuardRole,
    LocalBackend, StreamGuard,
};

/// The sessions of one stream, by configured backend name.
#[derive(Default)]
pub struct StreamSessions {
    sessions: HashMap<String, StreamGuard>,
    incremental: u64,
    whole: u64,
}

impl StreamSessions {
    /// Checks `request` (an output check: the conversation ends with the
    /// answer so far) on `local`, continuing this stream's session.
    pub async fn classify(
        &mut self,
        name: &str,
        local: &LocalBackend,
        request: &GuardRequest,
        timeout: Duration,
    ) -> Result<GuardOutcome, GuardError> {
        let messages = request.conversation().messages();
        // A session holds the turns before the answer and appends the answer;
        // the answer must be one Agent turn after a User turn (not joined to
        // an earlier assistant message).
        let fits = match messages.split_last() {
            Some((last, history)) => {
                last.role() == GuardRole::Agent
                    && last.parts().len() == 1
                    && history.last().is_some_and(|m| m.role() == GuardRole::User)
            }
            None => false,
        };
        if !fits {
            self.whole += 1;
            return classify_with_timeout(local, request, timeout).await;
        }
        let (last, history) = messages.split_last().expect("checked above");
        let answer = last.parts()[0].clone();
        let previous = self
            .sessions
            .remove(name)
            .filter(|s| answer.starts_with(s.answer()));
        let (local, history, categories) = (
            local.clone(),
            history.to_vec(),
            request.categories().clone(),
        );
        let work = async move {
            let mut session = match previous {
                Some(session) => session,
                // The first window prefills the prefix (cached) and the
                // conversation before the answer: blocking work.
                None => match tokio::task::spawn_blocking(move || {
                    StreamGuard::new(&local, history, categories)
                })
                .await
                {
                    Ok(Ok(session)) => session,
                    Ok(Err(e)) => return (None, Err(e)),
                    Err(e) => return (None, Err(crashed(e))),
                },
            };
            let new = answer[session.answer().len()..].to_owned();
            session.push(&new);
            session.check_async().await
        };
        self.incremental += 1;
        match tokio::time::timeout(timeout, work).await {
            Ok((session, result)) => {
                if let Some(session) = session {
                    self.sessions.insert(name.to_owned(), session);
                }
                result
            }
            // The session stays with the abandoned worker; a later window
            // starts a new one.
            Err(_) => Err(GuardError::Timeout {
                backend: BackendKind::Local,
                after: timeout,
            }),
        }
    }

    /// Checks run through a session, and whole checks made instead.
    pub fn counts(&self) -> (u64, u64) {
        (self.incremental, self.whole)
    }

    /// Positions the session of `name` holds between checks, if it has one.
    pub fn cached_tokens(&self, name: &str) -> Option<usize> {
        self.sessions.get(name).map(StreamGuard::cached_tokens)
    }
}

fn crashed(e: impl std::fmt::Display) -> GuardError {
    GuardError::Crashed {
        backend: BackendKind::Local,
        message: e.to_string(),
    }
}
