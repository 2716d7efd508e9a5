//! The API's rejections in plain words: a JSON syntax error says where and what in a
//! sentence, and a query parameter that does not parse names itself, the rule and the value
//! given. What serde says about values is rewritten by [`crate::task::plain_serde_message`].

use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::task::plain_serde_message;

/// Why a body is not JSON, in words, with where (line and column) it went wrong.
pub fn syntax_message(error: &serde_json::Error) -> String {
    let (line, column) = (error.line(), error.column());
    if error.is_eof() && line == 1 && column == 0 {
        return "the body is empty".to_owned();
    }
    let said = error.to_string();
    let said = said
        .rfind(" at line ")
        .map_or(said.as_str(), |at| &said[..at]);
    let what = if let Some(inside) = said.strip_prefix("EOF while parsing ") {
        format!("it ends too early, inside {inside}")
    } else {
        match said {
            "expected value" | "expected ident" => "a JSON value was expected".to_owned(),
            "trailing characters" => "something follows the JSON document".to_owned(),
            "key must be a string" => "an object's key must be a string".to_owned(),
            other => other.to_owned(),
        }
    };
    format!("{what} (line {line}, column {column})")
}

/// Reads a query string into `T`; a parameter that does not fit is 400 `invalid_query`,
/// naming the parameter, its rule and the value given.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    let deserializer = serde_urlencoded::Deserializer::new(pairs);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let said = error.into_inner().to_string();
        let field = if path.is_empty() || path == "." {
            named_field(&said).unwrap_or_default().to_owned()
        } else {
            path
        };
        let given = form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.into_owned());
        ApiError::InvalidQuery(query_message(&field, &said, given.as_deref()))
    })
}

/// "`wait`: must be a number, got `abc`".
fn query_message(field: &str, said: &str, given: Option<&str>) -> String {
    let rule = match said {
        "invalid float literal" => "must be a number".to_owned(),
        "invalid digit found in string" | "cannot parse integer from empty string" => {
            "must be a whole number".to_owned()
        }
        "number too large to fit in target type" => "must be a smaller whole number".to_owned(),
        "number too small to fit in target type" => "must be a larger whole number".to_owned(),
        "provided string was not `true` or `false`" => "must be true or false".to_owned(),
        other => plain_serde_message(other).replace("known field", "known parameter"),
    };
    match given {
        Some(value) if !rule.contains(", got ") => format!("`{field}`: {rule}, got `{value}`"),
        _ if field.is_empty() => rule,
        _ => format!("`{field}`: {rule}"),
    }
}

/// The field serde names in "missing field `x`", "unknown field `x`, …", "duplicate field `x`".
fn named_field(said: &str) -> Option<&str> {
    let (_, rest) = said.split_once(" field `")?;
    rest.split('`').next()
}

/// A JSON number as the client wrote it, so that a range check can answer "must be a whole
/// number from 1 to 100, got -1" for `-1`, `1.5` and `1e30` alike, where a `u32` field would
/// leave serde to say "invalid value: integer `-1`, expected u32".
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Number {
    Whole(i64),
    Other(f64),
}

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Whole(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
                Ok(i64::try_from(v).map_or(Number::Other(v as f64), Number::Whole))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Other(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Number {
    /// The number if it is whole and within `min..=max`; else the rule and what was given.
    pub fn whole_in(self, min: i64, max: i64) -> Result<i64, String> {
        match self {
            Number::Whole(n) if (min..=max).contains(&n) => Ok(n),
            Number::Whole(n) => Err(format!(
                "must be a whole number from {min} to {max}, got {n}"
            )),
            Number::Other(x) => Err(format!(
                "must be a whole number from {min} to {max}, got {x}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        wait: Option<f64>,
        limit: Option<u32>,
        follow: Option<bool>,
    }

    fn message(query: &str) -> String {
        match parse_query::<Params>(query) {
            Err(ApiError::InvalidQuery(message)) => message,
            other => panic!("{query}: not an invalid query: {other:?}"),
        }
    }

    #[test]
    fn query_errors_name_the_parameter_rule_and_value() {
        assert_eq!(message("wait=abc"), "`wait`: must be a number, got `abc`");
        assert_eq!(
            message("limit=-1"),
            "`limit`: must be a whole number, got `-1`"
        );
        assert_eq!(
            message("follow=yes"),
            "`follow`: must be true or false, got `yes`"
        );
        assert!(message("bogus=1").starts_with("`bogus`: is not a known parameter"));
        assert!(parse_query::<Params>("wait=1.5&limit=3").is_ok());
    }

    #[test]
    fn numbers_say_what_they_got() {
        let read = |text: &str| serde_json::from_str::<Number>(text).unwrap();
        assert_eq!(read("7").whole_in(1, 100), Ok(7));
        assert_eq!(
            read("-1").whole_in(1, 100).unwrap_err(),
            "must be a whole number from 1 to 100, got -1"
        );
        assert_eq!(
            read("1.5").whole_in(1, 100).unwrap_err(),
            "must be a whole number from 1 to 100, got 1.5"
        );
        assert!(read("18446744073709551615").whole_in(0, 10).is_err());
        assert_eq!(serde_json::to_string(&read("7")).unwrap(), "7");
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        let said = |text: &str| {
            syntax_message(&serde_json::from_str::<serde_json::Value>(text).unwrap_err())
        };
        assert_eq!(said(""), "the body is empty");
        assert_eq!(
            said("{\"kind\":"),
            "it ends too early, inside a value (line 1, column 8)"
        );
        assert_eq!(
            said("{} x"),
            "something follows the JSON document (line 1, column 4)"
        );
        assert_eq!(said("nope"), "a JSON value was expected (line 1, column 2)");
    }
}
