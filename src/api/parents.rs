//! The dependency fields of a submission (`after`, `after_policy`, `input_from`), parsed
//! once at the edge: ids become `TaskId`s, `"$N"` an earlier item of the batch, and every
//! rule a client can break without the store is checked here, naming the field.

use super::error::ApiError;
use super::submit::invalid;
use crate::task::{AfterPolicy, MAX_PARENTS, ParentRef, TaskId};

/// A submission's parents, as parsed.
#[derive(Debug)]
pub struct Dependencies {
    pub after: Vec<ParentRef>,
    pub policy: AfterPolicy,
    pub input_from: Option<ParentRef>,
}

/// The dependencies of a submission of `kind`, as item `item` of a batch (`None`: a single
/// submit); `None` when it names no parents.
pub fn parse(
    kind: &str,
    after: Option<Vec<String>>,
    policy: Option<AfterPolicy>,
    input_from: Option<String>,
    item: Option<usize>,
) -> Result<Option<Dependencies>, ApiError> {
    let after = after.unwrap_or_default();
    if after.is_empty() {
        if policy.is_some() {
            return Err(invalid("after_policy", "needs parents in `after`"));
        }
        if input_from.is_some() {
            return Err(invalid("input_from", "needs parents in `after`"));
        }
        return Ok(None);
    }
    if after.len() > MAX_PARENTS {
        return Err(invalid(
            "after",
            format!("at most {MAX_PARENTS} parents, got {}", after.len()),
        ));
    }
    let mut parents: Vec<ParentRef> = Vec::with_capacity(after.len());
    for (i, text) in after.iter().enumerate() {
        let field = format!("after[{i}]");
        let parent = parent_ref(&field, text, item)?;
        if let Some(same) = parents.iter().position(|p| *p == parent) {
            return Err(invalid(
                &field,
                format!("names `{text}` again (as after[{same}] does); name each parent once"),
            ));
        }
        parents.push(parent);
    }
    let input_from = match input_from {
        None => None,
        Some(text) => {
            let parent = parent_ref("input_from", &text, item)?;
            if !parents.contains(&parent) {
                return Err(invalid(
                    "input_from",
                    format!("must be one of the parents named in `after`, got `{text}`"),
                ));
            }
            Some(parent)
        }
    };
    // A join's kind implies its policy: `any` runs on its first parent's success.
    let policy = policy.unwrap_or(match kind {
        "any" => AfterPolicy::AnySucceeded,
        _ => AfterPolicy::AllSucceeded,
    });
    Ok(Some(Dependencies {
        after: parents,
        policy,
        input_from,
    }))
}

/// One parent: a task id, or `"$N"` for item N of the batch, which must come before `item`
/// (so no cycle can form).
fn parent_ref(field: &str, text: &str, item: Option<usize>) -> Result<ParentRef, ApiError> {
    // What is echoed back of a value that is not a parent: enough to recognise it.
    let text: String = text.chars().take(64).collect();
    let text = text.as_str();
    if let Some(index) = text.strip_prefix('$') {
        let index: usize = index.parse().map_err(|_| {
            invalid(
                field,
                format!("`$` is followed by an item's index (`$0`, `$1`, …), got `{text}`"),
            )
        })?;
        return match item {
            None => Err(invalid(
                field,
                format!("`{text}` names an item of a batch; a single submit names parents by id"),
            )),
            Some(item) if index >= item => Err(invalid(
                field,
                format!(
                    "`{text}` names item {index}, but item {item} may only name an earlier item \
                     of its batch"
                ),
            )),
            Some(_) => Ok(ParentRef::Item(index)),
        };
    }
    let id: TaskId = text.parse().map_err(|_| {
        invalid(
            field,
            format!("must be a task id (a UUID) or `$N` for an earlier batch item, got `{text}`"),
        )
    })?;
    Ok(ParentRef::Task(id))
}
