//! The NUL rule of every JSON body: no string, key or value, at any depth, may contain
//! U+0000.
//!
//! Why at the edge: PostgreSQL's `text` cannot hold U+0000, so such a string fails the
//! statement that stores it, while SQLite stores it. Refusing it here, before any route sees
//! the body, makes both backends answer the same 422 and keeps the poison out of the stores'
//! combined writes. Only the JSON extractor calls this; it knows no route.

use serde_json::Value;

use super::error::ApiError;

/// The escape JSON must use for U+0000 (a raw control byte inside a string is a syntax error).
const ESCAPED_NUL: &[u8] = b"\\u0000";

/// Refuses a body holding U+0000 in any string, naming the first such field by its path
/// (`callback.secret`, `tasks[3].input.name`). Most bodies never spell the escape, so only
/// those that do are parsed twice.
pub fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if !bytes
        .windows(ESCAPED_NUL.len())
        .any(|window| window == ESCAPED_NUL)
    {
        return Ok(());
    }
    // A syntax error is the typed parse's to report; `\\u0000` (an escaped backslash) is no NUL.
    let Ok(document) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    match find_nul(&document, &mut String::new()) {
        None => Ok(()),
        Some(found) => Err(ApiError::InvalidField {
            field: if found.path.is_empty() {
                "body".to_owned()
            } else {
                found.path
            },
            message: found.message,
        }),
    }
}

struct Found {
    path: String,
    message: String,
}

fn message(what: &str, text: &str) -> String {
    let at = text.chars().take_while(|&c| c != '\0').count();
    format!(
        "must not contain the NUL character (U+0000, `\\u0000`): this {what} has one at \
         character {at} of {}",
        text.chars().count()
    )
}

/// A key in a path: bare if it reads as a name, else quoted (with the NUL spelled `\u0000`).
fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        path.push_str(key);
    } else {
        path.push_str(&serde_json::to_string(key).unwrap_or_default());
    }
}

/// The first string holding U+0000, depth first, in document order.
fn find_nul(value: &Value, path: &mut String) -> Option<Found> {
    match value {
        Value::String(text) if text.contains('\0') => Some(Found {
            path: path.clone(),
            message: message("value", text),
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let len = path.len();
            path.push_str(&format!("[{index}]"));
            let found = find_nul(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let len = path.len();
            push_key(path, key);
            let found = if key.contains('\0') {
                Some(Found {
                    path: path.clone(),
                    message: message("key", key),
                })
            } else {
                find_nul(item, path)
            };
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn refused(body: &str) -> (String, String) {
        match refuse_nul(body.as_bytes()) {
            Err(ApiError::InvalidField { field, message }) => (field, message),
            other => panic!("refused: {body} gave {other:?}"),
        }
    }

    #[test]
    fn a_nul_anywhere_is_named_by_its_path() {
        let (field, message) = refused(r#"{"callback":{"url":"x","secret":"ab\u0000c"}}"#);
        assert_eq!(field, "callback.secret");
        assert!(message.contains("at character 2 of 4"), "{message}");
        let body = r#"{"tasks":[{},{},{},{"input":{"name":["ok","\u0000"]}}]}"#;
        assert_eq!(refused(body).0, "tasks[3].input.name[1]");
        let (field, message) = refused(r#"{"input":{"a\u0000b":1}}"#);
        assert_eq!(field, r#"input."a\u0000b""#);
        assert!(message.contains("this key"), "{message}");
        assert_eq!(refused(r#""\u0000""#).0, "body");
    }

    #[test]
    fn bodies_without_a_nul_pass() {
        for body in [
            r#"{"kind":"echo","input":"plain"}"#,
            r#"{"input":"an escaped backslash: \\u0000"}"#,
            r#"{"broken": "\u0000"#,
            r#"{"input":"\u0001"}"#,
        ] {
            assert!(refuse_nul(body.as_bytes()).is_ok(), "{body}");
        }
    }
}
