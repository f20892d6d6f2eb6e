//! The connection policy until identities exist: deny by default, allow
//! anonymous clients only where the config (or demo mode) says so.

use gantry_broker::hooks::{AuthDecision, Authenticator, BoxFuture, ConnectRequest};
use gantry_codec::ReasonCode;

pub struct AnonymousPolicy {
    pub allow_anonymous: bool,
    /// Demo mode: anonymous access only from the loopback interface.
    pub loopback_only: bool,
}

impl Authenticator for AnonymousPolicy {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest) -> BoxFuture<'a, AuthDecision> {
        let decision = if !self.allow_anonymous {
            AuthDecision::Deny(
                ReasonCode::NOT_AUTHORIZED,
                format!(
                    "client {:?}: anonymous access is disabled and no identities are configured ([auth] allow_anonymous = false)",
                    request.client_id
                ),
            )
        } else if self.loopback_only && !request.peer.is_none_or(|p| p.ip().is_loopback()) {
            AuthDecision::Deny(
                ReasonCode::NOT_AUTHORIZED,
                format!(
                    "client {:?}: demo mode accepts loopback connections only",
                    request.client_id
                ),
            )
        } else {
            AuthDecision::Allow
        };
        Box::pin(async move { decision })
    }
}
