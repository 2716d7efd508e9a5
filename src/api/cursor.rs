//! The cursor of `GET /v1/tasks`: opaque to clients, it carries the last id of a page *and*
//! the filters the page was listed with, so `?cursor=…` alone goes on with the same listing
//! (a cursor that dropped the filters once handed out other states and kinds). A request may
//! repeat the cursor's filters; naming a different one is 400 `invalid_query`.
//!
//! On the wire: base64url (no padding) of a small JSON object. Not signed: a client that
//! forges one only lists what its own filters and scope would list anyway.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The filters of a listing, as the query gave them (raw: both sides are parsed alike later).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// Where the next page starts (only tasks older than `before`), and under which filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cursor {
    pub before: String,
    #[serde(flatten)]
    pub filters: Filters,
}

impl Cursor {
    pub fn encode(&self) -> String {
        // A struct of strings always serializes.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Result<Cursor, String> {
        let bad = || "not a cursor this server handed out (pass `next_cursor` as it is)".to_owned();
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

impl Filters {
    /// The filters of a request that brings `cursor`: each one the request leaves out is the
    /// cursor's; one it names must be the cursor's.
    pub fn continue_from(self, cursor: Filters) -> Result<Filters, String> {
        let merge =
            |name: &str, asked: Option<String>, carried: Option<String>| match (asked, carried) {
                (None, carried) => Ok(carried),
                (Some(asked), Some(carried)) if asked == carried => Ok(Some(asked)),
                (Some(asked), carried) => Err(format!(
                    "the cursor continues a listing with {name} {}, not `{asked}`: leave {name} \
                 out, or start again without the cursor",
                    carried.map_or("unset".to_owned(), |c| format!("`{c}`"))
                )),
            };
        Ok(Filters {
            state: merge("state", self.state, cursor.state)?,
            kind: merge("kind", self.kind, cursor.kind)?,
            queue: merge("queue", self.queue, cursor.queue)?,
            label: merge("label", self.label, cursor.label)?,
            parent: merge("parent", self.parent, cursor.parent)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(state: Option<&str>, kind: Option<&str>) -> Filters {
        Filters {
            state: state.map(str::to_owned),
            kind: kind.map(str::to_owned),
            ..Filters::default()
        }
    }

    #[test]
    fn a_cursor_round_trips_with_its_filters() {
        let cursor = Cursor {
            before: "0193a000-0000-7000-8000-000000000000".to_owned(),
            filters: filters(Some("succeeded"), Some("sha256")),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        assert!(Cursor::decode("x").is_err());
        assert!(Cursor::decode("0193a000-0000-7000-8000-000000000000").is_err());
    }

    #[test]
    fn a_request_may_repeat_or_omit_the_cursors_filters_but_not_change_them() {
        let carried = filters(Some("succeeded"), Some("sha256"));
        assert_eq!(
            Filters::default().continue_from(carried.clone()),
            Ok(carried.clone())
        );
        let same = filters(Some("succeeded"), None);
        assert_eq!(same.continue_from(carried.clone()), Ok(carried.clone()));
        assert!(
            filters(Some("failed"), None)
                .continue_from(carried.clone())
                .is_err()
        );
        let widened = Filters {
            queue: Some("q".to_owned()),
            ..Filters::default()
        };
        assert!(widened.continue_from(carried).is_err());
    }
}
