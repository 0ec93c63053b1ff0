//! HTTP basic auth with the users of `serve --users`, and their topic
//! prefixes on the routes.
//!
//! Every route but `GET /health` asks for a user (the console's page and
//! `/metrics` too): a request without `Authorization: Basic ...`, or with
//! a wrong name or password, gets 401 with `WWW-Authenticate: Basic
//! realm="seglog"`, so a browser asks for them. A wrong password's 401
//! comes [`FAILED_PASSWORD_DELAY`] late, and passwords are salted a few
//! at a time ([`crate::auth::PASSWORD_CHECKS_AT_ONCE`]), so a flood of
//! guesses cannot take every core; when too many wait for their turn, a
//! request is answered 503 with code 50303 (overloaded) at once. `/health` stays open: a
//! load balancer or an orchestrator probes it without credentials, and it
//! tells only whether the store takes writes.
//!
//! A request's [`Access`] is put in its extensions for the handlers that
//! list or name topics in their bodies; the routes that name a topic in
//! their path are checked here (`topic_in_path`): GET needs reading it,
//! any other method writing it. A topic refused is 403 with code
//! [`code::TOPIC_FORBIDDEN`]. Without `--users` every request has
//! [`Access::Open`].

use std::sync::Arc;

use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::error::{ApiError, code, refuse_unread};
use super::relay::Relayed;
use crate::auth::{Access, Authenticator, FAILED_PASSWORD_DELAY};

/// Longest `Authorization` header taken: a name and a password within the
/// users file's limits, in base64, fit in well under this.
pub const AUTHORIZATION_BYTES_MAX: usize = 4096;

/// The realm browsers show when they ask for a name and password.
const CHALLENGE: &str = "Basic realm=\"seglog\", charset=\"UTF-8\"";

/// Puts the request's [`Access`] in its extensions: [`Access::Open`]
/// without users; else the user its basic auth names, or a 401.
pub(super) async fn authenticate(
    State(auth): State<Option<Arc<Authenticator>>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Relayed by another node of the cluster, which checked the client's
    // user (the peer link proved that node knows the cluster's secret).
    if request.extensions().get::<Relayed>().is_some() {
        request.extensions_mut().insert(Access::Open);
        return next.run(request).await;
    }
    let Some(auth) = auth else {
        request.extensions_mut().insert(Access::Open);
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let Some((name, password)) = basic_credentials(request.headers().get(header::AUTHORIZATION))
    else {
        let refusal =
            unauthorized("this server asks for a user: send HTTP basic auth (curl -u NAME)");
        return refuse_unread(request, refusal).await;
    };
    let user = match auth.verify(name, password.into_bytes()).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            tokio::time::sleep(FAILED_PASSWORD_DELAY).await;
            return refuse_unread(request, unauthorized("wrong user name or password")).await;
        }
        Err(busy) => {
            let refusal = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::OVERLOADED,
                busy.to_string(),
            );
            return refuse_unread(request, refusal.into_response()).await;
        }
    };
    request.extensions_mut().insert(Access::User(user));
    next.run(request).await
}

/// Name and password of a `Basic` authorization header, if it is one.
fn basic_credentials(value: Option<&HeaderValue>) -> Option<(String, String)> {
    let value = value?.as_bytes();
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, code::UNAUTHENTICATED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    response
}

/// 403 for a topic the request's user may not read (or write).
pub(super) fn forbidden(topic: &str, write: bool) -> ApiError {
    let what = if write { "write" } else { "read" };
    ApiError::new(
        StatusCode::FORBIDDEN,
        code::TOPIC_FORBIDDEN,
        format!("this user may not {what} topic '{topic}' (its prefixes in the users file)"),
    )
}

/// Checks the `{topic}` of a route's path against the request's access:
/// reading for GET and HEAD, writing for any other method.
pub(super) async fn topic_in_path(params: RawPathParams, request: Request, next: Next) -> Response {
    let topic = params
        .iter()
        .find(|(name, _)| *name == "topic")
        .map(|(_, value)| value.to_string());
    if let Some(topic) = topic {
        let write = !matches!(*request.method(), Method::GET | Method::HEAD);
        let allowed = match request.extensions().get::<Access>() {
            Some(access) if write => access.may_write(&topic),
            Some(access) => access.may_read(&topic),
            None => false,
        };
        if !allowed {
            return forbidden(&topic, write).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_and_others_are_not() {
        let header = |text: &str| HeaderValue::from_str(text).expect("header");
        let alice = format!("Basic {}", BASE64.encode("alice:pa:ss"));
        assert_eq!(
            basic_credentials(Some(&header(&alice))),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials(Some(&header("Bearer xyz"))), None);
        assert_eq!(basic_credentials(Some(&header("Basic !!!"))), None);
        let no_colon = format!("Basic {}", BASE64.encode("alice"));
        assert_eq!(basic_credentials(Some(&header(&no_colon))), None);
        assert_eq!(basic_credentials(None), None);
    }
}
