//! Query parameters a route does not take answer 400 `invalid_query`, on every route: a typo
//! (`?stat=failed`) or a filter the route lacks must not silently widen the answer (a
//! firehose that ignores `?bogus=1` streams everything). Each route names the parameters it
//! takes in its `Route` (see `super::Route::query`); a test holds that list against the
//! parameters openapi.yaml documents for the operation.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The answer to a request whose query names a parameter outside `known` (the route's
/// list); `None`: the query is fine.
pub(super) fn refusal(known: &[&str], request: &Request) -> Option<Response> {
    let name = unknown(request.uri().query()?, known)?;
    let takes = if known.is_empty() {
        "this route takes no query parameters".to_owned()
    } else {
        format!("this route takes: {}", known.join(", "))
    };
    Some(
        ApiError::InvalidQuery(format!("unknown query parameter `{name}`; {takes}"))
            .into_response(),
    )
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
