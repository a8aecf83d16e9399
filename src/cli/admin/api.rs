//! The admin API over HTTP: one request, and lists followed page by page.

use secrecy::ExposeSecret;
use serde_json::Value;

use super::output::clean;
use super::{Failure, Target, HINT, MAX_BODY, MAX_PAGE, MAX_PAGES};

pub(super) struct Api<'a> {
    pub(super) client: awc::Client,
    pub(super) target: &'a Target,
}

impl Api<'_> {
    /// One request; the JSON answer of a 2xx, or the failure its status means.
    /// `what` names the record asked for (in a 404's message).
    pub(super) async fn call(
        &self,
        method: awc::http::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        what: (&str, &str),
    ) -> Result<Value, Failure> {
        let url = self.target.url(segments, query);
        let shown = self.target.shown();
        let from = self.target.from;
        let unreachable = |e: &dyn std::fmt::Display| {
            Failure::Failed(format!(
                "cannot reach the admin API at {shown} ({e}); check {from} and that the service runs with \
                 OAUTH_PROXY_ADMIN_BIND set"
            ))
        };
        let mut response = self
            .client
            .request(method, url.as_str())
            .bearer_auth(self.target.token.expose_secret())
            .insert_header((awc::http::header::ACCEPT, "application/json"))
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = response.body().limit(MAX_BODY).await.map_err(|e| unreachable(&e))?;
        let answer: Option<Value> = serde_json::from_slice(&body).ok();
        let description = answer
            .as_ref()
            .and_then(|a| a["error_description"].as_str())
            .map(|d| format!(": {}", clean(d)))
            .unwrap_or_default();
        let error = answer.as_ref().and_then(|a| a["error"].as_str()).unwrap_or("");
        match status.as_u16() {
            200..=299 => answer.ok_or_else(|| {
                Failure::Failed(format!(
                    "the admin API at {shown} answered {status} without JSON; is {from} the admin listener?"
                ))
            }),
            401 => Err(Failure::Failed(format!(
                "the admin API at {shown} refused the token (401){description}; check OAUTH_PROXY_ADMIN_TOKEN \
                 (it must be the service's)"
            ))),
            403 => Err(Failure::Failed(format!(
                "the admin API at {shown} is off (403){description}; the service needs OAUTH_PROXY_ADMIN_TOKEN set"
            ))),
            404 if error == "not_found" && !what.1.is_empty() => Err(Failure::Failed(format!(
                "not found: no {} `{}` (404)",
                what.0,
                clean(what.1)
            ))),
            404 => Err(Failure::Failed(format!(
                "{shown} has no admin API (404 for {}); is {from} the admin listener (OAUTH_PROXY_ADMIN_BIND)?",
                url.path()
            ))),
            400 => Err(Failure::Usage(format!(
                "the admin API refused the request (400){description} {HINT}"
            ))),
            _ => Err(Failure::Failed(format!(
                "the admin API at {shown} answered {status}{description}"
            ))),
        }
    }

    /// Every item of a list, page after page (`next_cursor`), or the first
    /// `limit`; also the cursor of the page after the last item returned.
    pub(super) async fn list(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        limit: Option<usize>,
    ) -> Result<(Vec<Value>, Option<String>), Failure> {
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let wanted = limit.map_or(MAX_PAGE, |l| (l - items.len()).min(MAX_PAGE));
            let wanted = wanted.to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("limit", &wanted));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let page = self.call(awc::http::Method::GET, segments, &q, ("list", "")).await?;
            let Some(page_items) = page["items"].as_array() else {
                return Err(Failure::Failed(format!(
                    "the admin API at {} answered a list without `items`",
                    self.target.shown()
                )));
            };
            items.extend(page_items.iter().cloned());
            let next = page["next_cursor"].as_str().map(String::from);
            if let Some(limit) = limit {
                if items.len() >= limit {
                    items.truncate(limit);
                    return Ok((items, next));
                }
            }
            match next {
                None => return Ok((items, None)),
                Some(next) if page_items.is_empty() || cursor.as_deref() == Some(next.as_str()) => {
                    return Err(Failure::Failed(format!(
                        "the admin API at {} answered the same page twice (cursor {})",
                        self.target.shown(),
                        clean(&next)
                    )))
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(Failure::Failed(format!(
            "more than {MAX_PAGES} pages: stopped; use --limit or a narrower filter"
        )))
    }
}
