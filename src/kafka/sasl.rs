//! SASL on a Kafka connection, when `serve --users` is given:
//! SaslHandshake picks the mechanism; after a v1 handshake SaslAuthenticate
//! (v0-v2) carries its messages, after a v0 handshake they come as bare
//! size-prefixed frames (as Kafka before 1.0 had them): PLAIN (one
//! message: authzid, name, password) or SCRAM-SHA-256/512 (two round
//! trips, [`crate::auth::scram`]).
//!
//! Until the connection is authenticated it may send ApiVersions,
//! SaslHandshake and SaslAuthenticate only; anything else closes it, as
//! Kafka does (IllegalSaslStateException: "Unexpected Kafka request of
//! type ... during SASL handshake"). A mechanism not offered is answered
//! UNSUPPORTED_SASL_MECHANISM with the ones offered, a failed
//! authentication SASL_AUTHENTICATION_FAILED with a message; both then
//! close the connection, as Kafka does. No re-authentication (KIP-368):
//! the session has no lifetime, and a second handshake closes.
//! After a v0 handshake a failed token closes the connection without a
//! reply, as Kafka does (there is no frame for an error).

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

/// How long a connection stays open after a SASL refusal was sent, before
/// it closes: Kafka's `connection.failed.authentication.delay.ms` default.
/// A client reads the refusal before it sees the connection go (a close
/// right behind the reply lost it for kafka-python), and a client trying
/// passwords gets one try per connection and per delay.
pub const CLOSE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The mechanisms offered, in SaslHandshake's reply.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A mechanism a handshake picked.
#[derive(Clone, Copy, Debug)]
pub enum Picked {
    Plain,
    Scram(Mechanism),
}

/// How the SASL messages travel after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// In SaslAuthenticate requests (SaslHandshake v1).
    Authenticate,
    /// As bare size-prefixed frames, without a request header (SaslHandshake
    /// v0): a failure closes the connection without a reply.
    Raw,
}

/// Where a connection stands.
pub enum Session {
    /// No users configured: every request is served, as without SASL.
    Open,
    /// Waiting for SaslHandshake.
    Handshake,
    /// Handshake done: waiting for the mechanism's first message.
    Authenticate(Picked, Carrier),
    /// SCRAM's first round trip done: waiting for the client's proof.
    ScramFinal(Box<Exchange>, Carrier),
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

    /// How the next SASL message comes, if one is awaited.
    pub fn carrier(&self) -> Option<Carrier> {
        match self {
            Session::Authenticate(_, carrier) | Session::ScramFinal(_, carrier) => Some(*carrier),
            _ => None,
        }
    }

    /// Takes a SaslHandshake of `version` (0: bare tokens follow).
    pub fn handshake(&mut self, request: &SaslHandshakeRequest, version: i16) -> Step {
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect();
        if !matches!(self, Session::Handshake) {
            response.error_code = ResponseError::IllegalSaslState.code();
            return close_with(
                ResponseKind::SaslHandshake(response),
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
        let carrier = if version == 0 {
            Carrier::Raw
        } else {
            Carrier::Authenticate
        };
        *self = Session::Authenticate(picked, carrier);
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
        if self.carrier() != Some(Carrier::Authenticate) {
            let why = match self {
                Session::Handshake => "a SaslAuthenticate before SaslHandshake",
                Session::Authenticated(_) => {
                    "a SaslAuthenticate after authenticating (seglog does not re-authenticate)"
                }
                _ => "a SaslAuthenticate after a SaslHandshake v0 (bare tokens expected)",
            };
            return close_with(
                authenticate_response(ResponseError::IllegalSaslState.code(), None, Bytes::new()),
                why.into(),
            );
        }
        match self.take(ctx, request.auth_bytes).await {
            Ok(reply) => Step {
                response: authenticate_response(0, None, reply),
                close: None,
            },
            Err(reason) => close_with(
                authenticate_response(
                    ResponseError::SaslAuthenticationFailed.code(),
                    Some(reason.clone()),
                    Bytes::new(),
                ),
                format!("SASL authentication failed: {reason}"),
            ),
        }
    }

    /// Takes a bare SASL token (after a SaslHandshake v0): the server's
    /// token to send back as a bare frame, or why the connection closes.
    pub async fn raw_token(&mut self, ctx: &Arc<Context>, token: Bytes) -> Result<Bytes, String> {
        self.take(ctx, token)
            .await
            .map_err(|reason| format!("SASL authentication failed: {reason}"))
    }

    /// One message of the mechanism picked: the server's answer, and the
    /// session moved on (authenticated once the last message checks out);
    /// an error leaves the session waiting for a handshake that the closed
    /// connection will never send.
    async fn take(&mut self, ctx: &Arc<Context>, message: Bytes) -> Result<Bytes, String> {
        let Some(auth) = ctx.auth.as_ref().map(Arc::clone) else {
            return Err("SASL is not enabled".into());
        };
        if message.len() > SASL_MESSAGE_BYTES_MAX {
            *self = Session::Handshake;
            return Err(format!(
                "a SASL message of {} bytes, over the limit of {SASL_MESSAGE_BYTES_MAX}",
                message.len()
            ));
        }
        match std::mem::replace(self, Session::Handshake) {
            Session::Authenticate(Picked::Plain, _) => {
                let user = plain(auth, message).await?;
                *self = Session::Authenticated(Access::User(user));
                Ok(Bytes::new())
            }
            Session::Authenticate(Picked::Scram(mechanism), carrier) => {
                let (exchange, reply) = Exchange::first(
                    mechanism,
                    &message,
                    |name| auth.credential(mechanism, name),
                    |name| auth.decoy(mechanism, name),
                )
                .map_err(|scram::Failed(reason)| reason)?;
                *self = Session::ScramFinal(Box::new(exchange), carrier);
                Ok(Bytes::from(reply))
            }
            Session::ScramFinal(exchange, _) => {
                let (name, reply) = exchange
                    .last(&message)
                    .map_err(|scram::Failed(reason)| reason)?;
                let user = auth
                    .user(&name)
                    .ok_or_else(|| format!("user {name:?} is gone"))?;
                *self = Session::Authenticated(Access::User(Arc::clone(user)));
                Ok(Bytes::from(reply))
            }
            other => {
                *self = other;
                Err("no SASL message is expected now".into())
            }
        }
    }
}

/// A PLAIN message: `[authzid] NUL name NUL password`; the user, checked
/// by [`Authenticator::verify`] (off the reactor, a few at a time).
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
    match auth.verify(name, password.to_vec()).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => {
            Err("Authentication failed: Invalid username or password (SASL mechanism PLAIN)".into())
        }
        Err(busy) => Err(format!("Authentication failed: {busy}")),
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

fn close_with(response: ResponseKind, reason: String) -> Step {
    Step {
        response,
        close: Some(reason),
    }
}
