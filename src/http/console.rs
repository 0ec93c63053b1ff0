//! The console: a web page at `/ui` on the HTTP listener that shows a
//! running server to a person (overview with live charts, topics, a
//! partition's records, consumer groups and their lag). It is a static
//! single-page app, embedded in the binary: this module only serves its
//! files and its settings; the page itself reads the same HTTP API as
//! every other client (`/metrics`, `/topics`, `/groups`, fetches).
//!
//! Nothing is fetched from elsewhere at run time: the charting library
//! (uPlot, `console/vendor/uplot/`, with its licence and where it came
//! from) is embedded like the page's own files, and the Content Security
//! Policy lets the page load and connect to this server only. Record keys
//! and values are untrusted, so the page puts them into the document as
//! text, never as markup; the policy forbids inline scripts as a second
//! line of defence.
//!
//! The page is read-only unless the server was started with
//! `--console-writable`, which shows forms to create and delete topics.
//! That flag governs the page only: without `serve --users` the HTTP API
//! has no authentication, so anyone who reaches it can change topics with
//! any client. With it, the page is behind basic auth like every route
//! (`auth.rs`), and its requests carry the user the browser logged in as.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use super::error::{ApiError, code};

/// How the console behaves, from `seglog serve`'s command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Console {
    /// Whether the page offers to create and delete topics.
    pub writable: bool,
}

/// One embedded file of the page.
struct Asset {
    /// Its path below `/ui/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the page loads, embedded at build time.
const ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: HTML,
        body: include_bytes!("console/index.html"),
    },
    Asset {
        path: "console.css",
        content_type: CSS,
        body: include_bytes!("console/console.css"),
    },
    Asset {
        path: "app.js",
        content_type: JS,
        body: include_bytes!("console/app.js"),
    },
    Asset {
        path: "api.js",
        content_type: JS,
        body: include_bytes!("console/api.js"),
    },
    Asset {
        path: "dom.js",
        content_type: JS,
        body: include_bytes!("console/dom.js"),
    },
    Asset {
        path: "metrics.js",
        content_type: JS,
        body: include_bytes!("console/metrics.js"),
    },
    Asset {
        path: "charts.js",
        content_type: JS,
        body: include_bytes!("console/charts.js"),
    },
    Asset {
        path: "overview.js",
        content_type: JS,
        body: include_bytes!("console/overview.js"),
    },
    Asset {
        path: "topics.js",
        content_type: JS,
        body: include_bytes!("console/topics.js"),
    },
    Asset {
        path: "records.js",
        content_type: JS,
        body: include_bytes!("console/records.js"),
    },
    Asset {
        path: "groups.js",
        content_type: JS,
        body: include_bytes!("console/groups.js"),
    },
    Asset {
        path: "vendor/uplot/uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("console/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uplot/uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("console/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uplot/LICENSE",
        content_type: TEXT,
        body: include_bytes!("console/vendor/uplot/LICENSE"),
    },
];

/// What the page may load and where it may connect: this server only.
/// Styles set through the DOM (the charts size their canvases so) are not
/// inline styles and need no exception.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The console's routes: `/ui` (redirected to `/ui/`), `/ui/` (the page),
/// `/ui/config.json` (its settings) and `/ui/{file}`.
pub fn routes<S: Clone + Send + Sync + 'static>(console: Console) -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/config.json",
            get(move || async move {
                Json(json!({
                    "writable": console.writable,
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            }),
        )
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path) }),
        )
}

/// One embedded file, or a 404.
fn asset(path: &str) -> Response {
    let Some(found) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            code::NO_ROUTE,
            format!("the console has no file '{path}'"),
        )
        .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, found.content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The files change with the binary: a browser asks again
            // rather than keep an old page across an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        found.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            let text = std::str::from_utf8(asset.body).expect("UTF-8");
            // `src="..."`, `href="..."` and `from "./x.js"` of our files.
            for quoted in text.split('"').skip(1).step_by(2) {
                let name = quoted.trim_start_matches("./");
                let ours = name.ends_with(".js") || name.ends_with(".css");
                if ours && !name.contains('/') || name.starts_with("vendor/") {
                    assert!(
                        names.contains(&name),
                        "{} names {name}, which is not embedded",
                        asset.path
                    );
                }
            }
        }
    }
}
