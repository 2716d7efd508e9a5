//! Queue and kind names: short, printable, safe in URLs, logs and metric labels.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest name a queue or kind may have.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("may only contain letters, digits, '_', '-' and '.'")]
    BadCharacter,
}

fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check(&name)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::parse(name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a queue; queues come into being on first use.
    QueueName
);
name_type!(
    /// The name of a kind of task: which handler runs it.
    Kind
);

name_type!(
    /// The name of a schedule (`PUT /v1/schedules/{name}`).
    ScheduleName
);

impl Default for QueueName {
    fn default() -> Self {
        QueueName("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(QueueName::parse("emails.high-1_x").is_ok());
        assert_eq!(QueueName::parse(""), Err(NameError::Empty));
        assert_eq!(Kind::parse("a b"), Err(NameError::BadCharacter));
        assert_eq!(Kind::parse("x".repeat(65)), Err(NameError::TooLong));
    }
}
