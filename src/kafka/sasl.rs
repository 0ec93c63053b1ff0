//! SASL on a Kafka connection, when `serve --users` is given:
//! SaslHandshake (v1) picks the mechanism, SaslAuthenticate (v0-v2)
//! carries its messages: PLAIN (one message: authzid, name, password) or
//! SCRAM-SHA-256/512 (two round trips, [`crate::auth::scram`]).
//!
//! Until the connection is authenticated it may send ApiVersions,
//! SaslHandshake and SaslAuthenticate only; anything else closes it, as
//! Kafka does (IllegalSaslStateException: "Unexpected Kafka request of
//! type ... during SASL handshake"). A mechanism not offered is answered
//! UNSUPPORTED_SASL_MECHANISM with the ones offered, a failed
//! authentication SASL_AUTHENTICATION_FAILED with a message; both then
//! close the connection, as Kafka does. No re-authentication (KIP-368):
//! the session has no lifetime, and a second handshake closes.
//!
//! SaslHandshake v0, after which a client sends bare SASL tokens instead
//! of SaslAuthenticate requests, is not served: Kafka 4.0 removed it
//! (KIP-896), and every client that sees SaslAuthenticate in ApiVersions
//! uses v1.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::auth::scram::{self, Exchange, Mechanism};
use crate::auth::{Access, Authenticator};

/// Largest SASL message taken (SaslAuthenticate's `auth_bytes`): a PLAIN
/// message carries a name and a password within the users file's limits
/// (255 and 1,024 bytes); SCRAM's are under 300 bytes.
pub const SASL_MESSAGE_BYTES_MAX: usize = 4096;

/// Largest request of a connection not yet authenticated: Kafka's
/// `sasl.server.max.receive.size` default. A client must not make the
/// server read `--max-request-bytes` before it has said who it is.
pub const UNAUTHENTICATED_REQUEST_BYTES_MAX: usize = 512 << 10;

/// Longest a connection may take from its start to being authenticated:
/// a client does it in a few round trips; one that never does must not
/// hold one of the connection slots.
pub const AUTHENTICATE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The mechanisms offered, in SaslHandshake's reply.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A mechanism a handshake picked.
#[derive(Clone, Copy, Debug)]
pub enum Picked {
    Plain,
    Scram(Mechanism),
}

/// Where a connection stands.
pub enum Session {
    /// No users configured: every request is served, as without SASL.
    Open,
    /// Waiting for SaslHandshake.
    Handshake,
    /// Handshake done: waiting for the mechanism's first message.
    Authenticate(Picked),
    /// SCRAM's first round trip done: waiting for the client's proof.
    ScramFinal(Box<Exchange>),
    /// Authenticated as a user: every request is served, within its access.
    Authenticated(Access),
}

/// What a SASL request gives: the reply, and whether the connection
/// closes after it (and why).
pub struct Step {
    pub response: ResponseKind,
    pub close: Option<String>,
}

impl Session {
    pub fn new(ctx: &Context) -> Session {
        match ctx.auth {
            Some(_) => Session::Handshake,
            None => Session::Open,
        }
    }

    /// The access of a connection that may send any request; `None`
    /// while it has yet to authenticate.
    pub fn access(&self) -> Option<Access> {
        match self {
            Session::Open => Some(Access::Open),
            Session::Authenticated(access) => Some(access.clone()),
            _ => None,
        }
    }

    /// Whether the connection has yet to authenticate.
    pub fn pending(&self) -> bool {
        self.access().is_none()
    }

    /// Takes a SaslHandshake.
    pub fn handshake(&mut self, request: &SaslHandshakeRequest) -> Step {
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect();
        if !matches!(self, Session::Handshake) {
            return close_with(
                ResponseKind::SaslHandshake(
                    response.with_error_code(ResponseError::IllegalSaslState.code()),
                ),
                "a second SaslHandshake (seglog does not re-authenticate)".into(),
            );
        }
        let name = request.mechanism.as_str();
        let picked = match name {
            "PLAIN" => Picked::Plain,
            other => match Mechanism::from_name(other) {
                Some(mechanism) => Picked::Scram(mechanism),
                None => {
                    response.error_code = ResponseError::UnsupportedSaslMechanism.code();
                    return close_with(
                        ResponseKind::SaslHandshake(response),
                        format!("SASL mechanism {name:?} asked, which is not offered"),
                    );
                }
            },
        };
        *self = Session::Authenticate(picked);
        Step {
            response: ResponseKind::SaslHandshake(response),
            close: None,
        }
    }

    /// Takes a SaslAuthenticate: one message of the mechanism picked.
    pub async fn authenticate(
        &mut self,
        ctx: &Arc<Context>,
        request: SaslAuthenticateRequest,
    ) -> Step {
        let Some(auth) = ctx.auth.as_ref().map(Arc::clone) else {
            return failed("SASL is not enabled".into());
        };
        let message = request.auth_bytes;
        if message.len() > SASL_MESSAGE_BYTES_MAX {
            *self = Session::Handshake;
            return failed(format!(
                "a SASL message of {} bytes, over the limit of {SASL_MESSAGE_BYTES_MAX}",
                message.len()
            ));
        }
        match std::mem::replace(self, Session::Handshake) {
            Session::Authenticate(Picked::Plain) => match plain(auth, message).await {
                Ok(user) => {
                    *self = Session::Authenticated(Access::User(user));
                    succeeded(Bytes::new())
                }
                Err(reason) => failed(reason),
            },
            Session::Authenticate(Picked::Scram(mechanism)) => {
                let first = Exchange::first(
                    mechanism,
                    &message,
                    |name| auth.credential(mechanism, name),
                    |name| auth.decoy(mechanism, name),
                );
                match first {
                    Ok((exchange, reply)) => {
                        *self = Session::ScramFinal(Box::new(exchange));
                        succeeded(Bytes::from(reply))
                    }
                    Err(scram::Failed(reason)) => failed(reason),
                }
            }
            Session::ScramFinal(exchange) => match exchange.last(&message) {
                Ok((name, reply)) => match auth.user(&name) {
                    Some(user) => {
                        *self = Session::Authenticated(Access::User(Arc::clone(user)));
                        succeeded(Bytes::from(reply))
                    }
                    None => failed(format!("user {name:?} is gone")),
                },
                Err(scram::Failed(reason)) => failed(reason),
            },
            Session::Handshake => close_with(
                authenticate_response(ResponseError::IllegalSaslState.code(), None, Bytes::new()),
                "a SaslAuthenticate before SaslHandshake".into(),
            ),
            other => {
                *self = other;
                close_with(
                    authenticate_response(
                        ResponseError::IllegalSaslState.code(),
                        None,
                        Bytes::new(),
                    ),
                    "a SaslAuthenticate after authenticating (seglog does not re-authenticate)"
                        .into(),
                )
            }
        }
    }
}

/// A PLAIN message: `[authzid] NUL name NUL password`; the user, checked
/// off the reactor (the password is salted again: a millisecond of work).
async fn plain(
    auth: Arc<Authenticator>,
    message: Bytes,
) -> Result<Arc<crate::auth::users::User>, String> {
    let mut fields = message.split(|&b| b == 0);
    let (authzid, name, password) =
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(authzid), Some(name), Some(password), None) => (authzid, name, password),
            _ => {
                return Err(
                    "a SASL/PLAIN message that is not [authzid] NUL name NUL password".into(),
                );
            }
        };
    let name = std::str::from_utf8(name)
        .map_err(|_| "a SASL/PLAIN user name that is not UTF-8".to_string())?
        .to_string();
    if !authzid.is_empty() && authzid != name.as_bytes() {
        return Err("a SASL/PLAIN authorization id other than the user name".into());
    }
    let password = password.to_vec();
    let checked = tokio::task::spawn_blocking(move || auth.check_password(&name, &password)).await;
    match checked {
        Ok(Some(user)) => Ok(user),
        Ok(None) => {
            Err("Authentication failed: Invalid username or password (SASL mechanism PLAIN)".into())
        }
        Err(e) => Err(format!("checking the password failed: {e}")),
    }
}

fn authenticate_response(code: i16, message: Option<String>, bytes: Bytes) -> ResponseKind {
    let mut response = SaslAuthenticateResponse::default();
    response.error_code = code;
    response.error_message = message.map(StrBytes::from_string);
    response.auth_bytes = bytes;
    // No lifetime: the session lasts as long as the connection.
    response.session_lifetime_ms = 0;
    ResponseKind::SaslAuthenticate(response)
}

fn succeeded(bytes: Bytes) -> Step {
    Step {
        response: authenticate_response(0, None, bytes),
        close: None,
    }
}

/// SASL_AUTHENTICATION_FAILED with `reason`, then the connection closes.
fn failed(reason: String) -> Step {
    close_with(
        authenticate_response(
            ResponseError::SaslAuthenticationFailed.code(),
            Some(reason.clone()),
            Bytes::new(),
        ),
        format!("SASL authentication failed: {reason}"),
    )
}

fn close_with(response: ResponseKind, reason: String) -> Step {
    Step {
        response,
        close: Some(reason),
    }
}
