//! Plain words for what serde says: a client reads "must be a whole number from 0 to 255, got
//! -1", never "invalid value: integer `-1`, expected u8". serde's data errors come in a few
//! fixed shapes (`serde::de::Error`'s provided methods); each is rewritten here, once, for the
//! JSON body, a kind's input and the query string alike. A message of another shape (a
//! custom one, already ours) passes through unchanged.

/// serde's message about a value, in plain words: the rule, then what was given.
pub fn plain_serde_message(message: &str) -> String {
    let message = without_position(message);
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        if let Some((unexpected, expected)) = rest.split_once(", expected ") {
            return format!(
                "must be {}, got {}",
                expected_words(expected),
                given(unexpected)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        if let Some((length, expected)) = rest.split_once(", expected ") {
            return format!("must have {expected}, got {length}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (variant, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!("must be {}, got {variant}", one_of(expected));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (_, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return match expected {
            "" | "there are no fields" => "is not a known field".to_owned(),
            expected => format!("is not a known field (known: {})", names(expected)),
        };
    }
    if message.starts_with("missing field ") {
        return "is required".to_owned();
    }
    if message.starts_with("duplicate field ") {
        return "is given twice".to_owned();
    }
    message.to_owned()
}

/// serde_json appends where in the text the error is; the field's path says it better.
fn without_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    }
}

/// What serde expected (a Rust type or a visitor's `expecting`), in words.
fn expected_words(expected: &str) -> String {
    let whole = |min: i128, max: i128| format!("a whole number from {min} to {max}");
    match expected {
        "u8" => whole(0, u8::MAX.into()),
        "u16" => whole(0, u16::MAX.into()),
        "u32" => whole(0, u32::MAX.into()),
        "u64" | "usize" | "u128" => "a whole number, 0 or more".to_owned(),
        "i8" => whole(i8::MIN.into(), i8::MAX.into()),
        "i16" => whole(i16::MIN.into(), i16::MAX.into()),
        "i32" => whole(i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" | "i128" => "a whole number".to_owned(),
        "f32" | "f64" | "a JSON number" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a map" | "map" => "an object".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a borrowed string" | "a string" => "a string".to_owned(),
        other if other.starts_with("struct ") => "an object".to_owned(),
        other if other.starts_with("a sequence") => other.replacen("a sequence", "an array", 1),
        other => other.to_owned(),
    }
}

/// What was given, from serde's `Unexpected`: the value itself where it has one.
fn given(unexpected: &str) -> String {
    let quoted = |rest: &str| rest.trim_matches('`').to_owned();
    if let Some(rest) = unexpected.strip_prefix("integer ") {
        return quoted(rest);
    }
    if let Some(rest) = unexpected.strip_prefix("floating point ") {
        return quoted(rest);
    }
    if let Some(rest) = unexpected.strip_prefix("boolean ") {
        return quoted(rest);
    }
    if let Some(rest) = unexpected.strip_prefix("string ") {
        return format!("the string {rest}");
    }
    match unexpected {
        "map" => "an object".to_owned(),
        "sequence" => "an array".to_owned(),
        "unit value" | "null" => "null".to_owned(),
        other => other.to_owned(),
    }
}

/// serde's "one of `a`, `b`" (or "`a`", or "there are no variants") as "one of a, b".
fn one_of(expected: &str) -> String {
    match expected.strip_prefix("one of ") {
        Some(list) => format!("one of {}", names(list)),
        None if expected.starts_with('`') => names(expected),
        None => "nothing (no value is accepted)".to_owned(),
    }
}

fn names(list: &str) -> String {
    list.strip_prefix("one of ")
        .unwrap_or(list)
        .replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::plain_serde_message as plain;

    #[test]
    fn serde_shapes_read_as_rules() {
        assert_eq!(
            plain("invalid value: integer `-1`, expected u32 at line 1 column 20"),
            "must be a whole number from 0 to 4294967295, got -1"
        );
        assert_eq!(
            plain("invalid type: string \"x\", expected u64"),
            "must be a whole number, 0 or more, got the string \"x\""
        );
        assert_eq!(
            plain("invalid type: floating point `1.5`, expected i32"),
            "must be a whole number from -2147483648 to 2147483647, got 1.5"
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected a string"),
            "must be a string, got 5"
        );
        assert_eq!(
            plain("invalid type: sequence, expected a map"),
            "must be an object, got an array"
        );
        assert_eq!(
            plain("invalid type: null, expected struct Backoff"),
            "must be an object, got null"
        );
        assert_eq!(plain("missing field `kind`"), "is required");
        assert_eq!(
            plain("unknown field `bogus`, expected one of `kind`, `input`"),
            "is not a known field (known: kind, input)"
        );
        assert_eq!(
            plain("unknown variant `done`, expected one of `queued`, `failed`"),
            "must be one of queued, failed, got `done`"
        );
        assert_eq!(plain("at most 32 labels"), "at most 32 labels");
    }
}
