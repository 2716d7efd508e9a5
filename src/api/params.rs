//! Query parameters a route does not take answer 400 `invalid_query`, on every route: a typo
//! (`?stat=failed`) or a filter the route lacks must not silently widen the answer (a
//! firehose that ignores `?bogus=1` streams everything). Each route names the parameters it
//! takes in its `Route` (see `super::Route::query`); a test holds that list against the
//! parameters openapi.yaml documents for the operation.

use axum::extract::Request;
use axum::response::IntoResponse;

use super::error::ApiError;
use super::gate::{Entry, Gate};

/// Refuses a request whose query names a parameter outside the route's list (`None`: no
/// route of this method, whose answer is the router's 405 whatever the query).
#[derive(Clone, Copy)]
pub(super) struct RefuseUnknown(pub Option<&'static [&'static str]>);

impl Gate for RefuseUnknown {
    type Kept = ();

    fn enter(&self, request: Request) -> Entry<()> {
        let Some(known) = self.0 else {
            return Entry::Pass(request, ());
        };
        let Some(name) = request
            .uri()
            .query()
            .and_then(|query| unknown(query, known))
        else {
            return Entry::Pass(request, ());
        };
        let takes = if known.is_empty() {
            "this route takes no query parameters".to_owned()
        } else {
            format!("this route takes: {}", known.join(", "))
        };
        Entry::Answer(
            ApiError::InvalidQuery(format!("unknown query parameter `{name}`; {takes}"))
                .into_response(),
        )
    }
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
