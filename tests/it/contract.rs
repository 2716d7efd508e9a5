//! The contract as a machine holds it: `openapi.yaml` parsed once, and every JSON body a test
//! receives validated against the schema its operation documents for its status and content
//! type. OpenAPI 3.1 schemas are JSON Schema 2020-12, so the `jsonschema` crate validates them
//! as written; `$ref`s resolve inside the document.
//!
//! [`check_answer`] is called by the test client (`helpers::CheckedClient`) on every answer, and
//! by the openapi test's `assert_documented`, so a field the code sends and the spec does not
//! name (every response object says `additionalProperties: false`), or one the spec requires
//! and the code does not send, fails the test that received it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::StatusCode;
use serde_json::Value;

pub const SPEC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
pub const PROBLEM_JSON: &str = "application/problem+json";
/// The keys of a path item that are operations.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One documented operation: an upper-case method and a path in OpenAPI syntax.
pub type Operation = (String, String);

/// The parsed contract. YAML is read into JSON values: every key of an OpenAPI document is a
/// string, and a `$ref` is then a JSON pointer.
pub struct Contract(pub Value);

impl Contract {
    /// The contract, parsed once per test binary.
    pub fn get() -> &'static Contract {
        static CONTRACT: OnceLock<Contract> = OnceLock::new();
        CONTRACT.get_or_init(Contract::load)
    }

    pub fn load() -> Contract {
        let text = std::fs::read_to_string(SPEC_FILE).expect("openapi.yaml is readable");
        Contract(serde_yaml_ng::from_str(&text).expect("openapi.yaml parses"))
    }

    pub fn operations(&self) -> BTreeSet<Operation> {
        let paths = self.0["paths"].as_object().expect("`paths` is a mapping");
        paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS
                    .iter()
                    .filter(|method| item.get(**method).is_some())
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect()
    }

    /// The documented methods of `path`, upper case.
    pub fn methods_of(&self, path: &str) -> BTreeSet<String> {
        self.operations()
            .into_iter()
            .filter(|(_, documented)| documented == path)
            .map(|(method, _)| method)
            .collect()
    }

    /// The documented path template a concrete request path (without its query) falls under
    /// for `method`; the one with the most literal segments wins (`/v1/tasks/batch` over
    /// `/v1/tasks/{id}`).
    pub fn template_of(&self, method: &str, url_path: &str) -> Option<String> {
        let segments: Vec<&str> = url_path.split('/').collect();
        self.operations()
            .into_iter()
            .filter(|(documented, _)| documented.eq_ignore_ascii_case(method))
            .filter_map(|(_, template)| {
                let parts: Vec<&str> = template.split('/').collect();
                let fits = parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(part, segment)| part.starts_with('{') || part == segment);
                let literal = parts.iter().filter(|part| !part.starts_with('{')).count();
                fits.then_some((literal, template))
            })
            .max()
            .map(|(_, template)| template)
    }

    /// Follows `$ref`s within the document.
    pub fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $refs: {reference}"));
            value = self
                .0
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
        }
        value
    }

    /// The documented response of an operation for a status, resolved.
    pub fn response(&self, (method, path): (&str, &str), status: StatusCode) -> Option<&Value> {
        let operation = &self.0["paths"][path][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        operation["responses"]
            .get(status.as_str())
            .map(|response| self.resolve(response))
    }

    /// The problem codes a documented response allows (its `code` enum).
    pub fn codes(&self, response: &Value) -> Vec<String> {
        let schema = self.resolve(&response["content"][PROBLEM_JSON]["schema"]);
        let narrowings = schema["allOf"].as_array().cloned().unwrap_or_default();
        std::iter::once(schema)
            .chain(narrowings.iter())
            .map(|part| self.resolve(part))
            .filter_map(|part| part["properties"]["code"]["enum"].as_array())
            .flatten()
            .filter_map(|code| code.as_str().map(str::to_owned))
            .collect()
    }

    /// A validator for the schema at `pointer` (a JSON pointer into the document). The root
    /// is the whole document with a `$ref` to it, so its `#/components/…` refs resolve; the
    /// document's other keys are not schema keywords and are ignored.
    pub fn validator(&self, pointer: &str) -> Arc<jsonschema::Validator> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
            OnceLock::new();
        let cache = CACHE.get_or_init(Mutex::default);
        if let Some(validator) = cache.lock().expect("the cache").get(pointer) {
            return validator.clone();
        }
        let mut root = self.0.clone();
        // A `$ref` is a URI: the braces of a path template are percent-encoded.
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root["$ref"] = Value::String(format!("#{fragment}"));
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("the schema at {pointer} compiles: {e}"));
        let validator = Arc::new(validator);
        cache
            .lock()
            .expect("the cache")
            .insert(pointer.to_owned(), validator.clone());
        validator
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Is this media type a JSON one (`application/json`, `…+json`)?
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Holds one answer against the contract: a request to a documented operation must answer a
/// documented status, with a documented content type, and a JSON body must fit the schema
/// documented for them. Requests to undocumented paths (the router's own 404s and 405s) and
/// event streams (read by the tests that open them) pass unchecked.
#[track_caller]
pub fn check_answer(
    method: &str,
    url_path: &str,
    status: StatusCode,
    media_type: &str,
    body: &[u8],
) {
    let contract = Contract::get();
    let path = url_path.split('?').next().unwrap_or_default();
    let Some(template) = contract.template_of(method, path) else {
        return;
    };
    // 405 is the router's, documented once for all.
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return;
    }
    check_body((method, &template), status, media_type, body);
}

/// Holds an answer of a documented operation (`template` in OpenAPI syntax) against the
/// contract: its status and content type are documented, and a JSON body fits the schema.
#[track_caller]
pub fn check_body(
    (method, template): (&str, &str),
    status: StatusCode,
    media_type: &str,
    body: &[u8],
) {
    let contract = Contract::get();
    let method = method.to_uppercase();
    let url_path = template;
    let Some(response) = contract.response((&method, template), status) else {
        panic!(
            "{method} {template} answered {status}, which is not documented: {}",
            String::from_utf8_lossy(body)
        );
    };
    let Some(content) = response["content"].as_object() else {
        assert!(
            body.is_empty(),
            "{method} {url_path} {status} documents no body but sent {}",
            String::from_utf8_lossy(body)
        );
        return;
    };
    assert!(
        content.contains_key(media_type),
        "{method} {template} {status} answered {media_type:?}; documented: {:?}",
        content.keys().collect::<Vec<_>>()
    );
    if !is_json(media_type) {
        return;
    }
    let instance: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{method} {url_path} {status}: the {media_type} body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    if content[media_type].get("schema").is_none() {
        return;
    }
    // The status key may be documented directly or through a shared response's `$ref`: point
    // at the operation's own entry, whose `$ref` (if any) the validator follows.
    let entry = format!(
        "/paths/{}/{}/responses/{}",
        escape(template),
        method.to_lowercase(),
        status.as_str()
    );
    let entry_value = contract.0.pointer(&entry).expect("a documented status");
    let base = match entry_value.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference.trim_start_matches('#').to_owned(),
        None => entry,
    };
    let pointer = format!("{base}/content/{}/schema", escape(media_type));
    let validator = contract.validator(&pointer);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|error| format!("  at `{}`: {error}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {url_path} {status} ({media_type}) does not fit its schema in openapi.yaml:\n{}\nbody: {instance}",
        errors.join("\n")
    );
}

/// Holds one received SSE event against `StreamEvent`, the `x-itemSchema` of the event
/// streams (its `data` as the JSON document the data line holds).
#[track_caller]
pub fn check_stream_event(event: &str, id: Option<&str>, data: &Value) {
    let mut item = serde_json::json!({ "event": event, "data": data });
    if let Some(id) = id {
        item["id"] = Value::String(id.to_owned());
    }
    let validator = Contract::get().validator("/components/schemas/StreamEvent");
    let errors: Vec<String> = validator
        .iter_errors(&item)
        .map(|error| format!("  at `{}`: {error}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "an SSE event does not fit StreamEvent in openapi.yaml:\n{}\nevent: {item}",
        errors.join("\n")
    );
}
