//! Query parameters a route does not take answer 400 `invalid_query`, on every route: a typo
//! (`?stat=failed`) or a filter the route lacks must not silently widen the answer (a
//! firehose that ignores `?bogus=1` streams everything). Each route names the parameters it
//! takes in its `Route` (see `super::Route::query`); a test holds that list against the
//! parameters openapi.yaml documents for the operation.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Refuses a request whose query names a parameter outside `known`.
pub(super) async fn refuse_unknown(
    State(known): State<&'static [&'static str]>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(name) = request
        .uri()
        .query()
        .and_then(|query| unknown(query, known))
    {
        let takes = if known.is_empty() {
            "this route takes no query parameters".to_owned()
        } else {
            format!("this route takes: {}", known.join(", "))
        };
        return ApiError::InvalidQuery(format!("unknown query parameter `{name}`; {takes}"))
            .into_response();
    }
    next.run(request).await
}

/// The first parameter name of `query` that is not in `known`, decoded.
fn unknown(query: &str, known: &[&str]) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !known.contains(&name.as_ref()))
        .map(|name| name.into_owned())
}

#[cfg(test)]
mod tests {
    use super::unknown;

    #[test]
    fn only_known_names_pass() {
        assert_eq!(unknown("wait=1", &["wait"]), None);
        assert_eq!(unknown("", &[]), None);
        assert_eq!(unknown("bogus=1", &[]).as_deref(), Some("bogus"));
        assert_eq!(
            unknown("state=x&bogus", &["state"]).as_deref(),
            Some("bogus")
        );
        assert_eq!(unknown("st%61te=x", &["state"]), None);
    }
}
