//! Label and field selectors: parsing with upstream's grammar, canonical printing and matching.
//!
//! - [`LabelSelector`]: upstream k8s.io/apimachinery/pkg/labels/selector.go
//!   (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`), and the
//!   conversion of a `metav1.LabelSelector` (k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go).
//! - [`FieldSelector`]: upstream k8s.io/apimachinery/pkg/fields/selector.go (`k=v`, `k==v`,
//!   `k!=v`, backslash escapes in values).
//!
//! Errors print as upstream's do, since the API server returns them verbatim in `400
//! BadRequest` Status messages (kubectl shows them to users).

mod field;
mod label;

pub use field::{
    FieldOperator, FieldRequirement, FieldSelector, escape_value, parse_field_selector,
};
pub use label::{LabelSelector, Operator, Requirement, parse_label_selector};

use std::fmt;

use crate::field::{BadValue, ErrorList, FieldError, Path};

/// Why a selector could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector's top level has an unexpected token.
    #[error("found '{found}', expected: {expected}")]
    UnexpectedToken {
        /// The literal found ("" at the end of the string).
        found: String,
        /// What the grammar allows here.
        expected: &'static str,
    },
    /// One requirement of a label selector does not parse or is invalid.
    #[error("unable to parse requirement: {0}")]
    ParseRequirement(RequirementError),
    /// A requirement built from structured input (`metav1.LabelSelector`) is invalid.
    #[error("{0}")]
    InvalidRequirement(FieldErrors),
    /// A `metav1.LabelSelectorRequirement` has an operator other than In, NotIn, Exists and
    /// DoesNotExist.
    #[error("\"{operator}\" is not a valid label selector operator")]
    UnknownOperator {
        /// The operator given.
        operator: String,
    },
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    SplitFieldTerm {
        /// The whole selector.
        selector: String,
        /// The term that failed.
        term: String,
    },
    /// A field selector value has a backslash before a character other than `\`, `,` and `=`,
    /// or ends in a lone backslash.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape {
        /// The offending sequence.
        sequence: String,
    },
    /// A field selector value has an unescaped `,` or `=`. Upstream prints the character's
    /// code point (Go's `%v` of a rune).
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.character))]
    UnescapedCharacter {
        /// The character.
        character: char,
    },
    /// A field selector key the kind does not support, for a kind that supports only
    /// `metadata.name` and `metadata.namespace` (upstream
    /// `runtime.DefaultMetaV1FieldSelectorConversion`).
    #[error(
        "\"{key}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    )]
    UnknownFieldKey {
        /// The key.
        key: String,
    },
    /// A field selector key the kind does not support, for a kind with its own field label
    /// conversion (upstream's per-kind `AddFieldLabelConversionFunc`, e.g. for pods).
    #[error("field label not supported: {key}")]
    UnsupportedFieldLabel {
        /// The key.
        key: String,
    },
}

/// What went wrong inside one label selector requirement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// An unexpected token.
    #[error("found '{found}'{expected}")]
    UnexpectedToken {
        /// The literal found.
        found: String,
        /// What the grammar allows, with upstream's punctuation.
        expected: Expected,
    },
    /// The key or the values are invalid.
    #[error("{0}")]
    Invalid(FieldErrors),
}

/// What a requirement's grammar expected, printed with upstream's exact punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A key or value.
    Identifier,
    /// An operator.
    Operator,
    /// `(` after `in`/`notin` (upstream prints this one without a comma).
    OpenParen,
    /// `)` closing a value set.
    CloseParen,
    /// A value, `,` or `)` after `(`.
    ValueStart,
    /// `,` or `)` after a value.
    CommaOrCloseParen,
    /// `,` or a value inside a value set.
    CommaOrIdentifier,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Identifier => ", expected: identifier",
            Expected::Operator => ", expected: in, notin, =, ==, !=, gt, lt",
            Expected::OpenParen => " expected: '('",
            Expected::CloseParen => ", expected: ')'",
            Expected::ValueStart => ", expected: ',', ')' or identifier",
            Expected::CommaOrCloseParen => ", expected: ',' or ')'",
            Expected::CommaOrIdentifier => ", expected: ',', or identifier",
        })
    }
}

/// Field errors printed as upstream's aggregate: one error alone, several as `[a, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub ErrorList);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // upstream: k8s.io/apimachinery/pkg/util/errors.aggregate.Error() (duplicates dropped).
        let mut messages: Vec<String> = Vec::new();
        for err in &self.0 {
            let message = err.to_string();
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        if messages.len() == 1 {
            f.write_str(&messages[0])
        } else {
            write!(f, "[{}]", messages.join(", "))
        }
    }
}

const LABEL_KEY_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_KEY_REGEX: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_REGEX: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const SUBDOMAIN_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Upstream's `RegexError`: the message, examples and the regex.
fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    let mut out = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{regex}')"));
    out
}

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} bytes")
}

/// `[A-Za-z0-9]` at both ends, `[-A-Za-z0-9_.]` inside.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: u8| c.is_ascii_alphanumeric();
    let inner = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty() && edge(b[0]) && edge(b[b.len() - 1]) && b.iter().all(|&c| inner(c))
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && edge(b[0]) && edge(b[b.len() - 1]) && b.iter().all(|&c| edge(c) || c == b'-')
}

/// Upstream's `IsDNS1123Subdomain`: problems with `value` as a lowercase RFC 1123 subdomain.
pub fn validate_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !value.split('.').all(is_dns1123_label) {
        errs.push(regex_error(
            SUBDOMAIN_MESSAGE,
            SUBDOMAIN_REGEX,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream's `IsQualifiedName`/`IsLabelKey`: problems with `value` as a label key
/// (`[prefix/]name`), each an upstream message.
pub fn validate_label_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    validate_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            let regex = regex_error(
                LABEL_KEY_MESSAGE,
                LABEL_KEY_REGEX,
                &["MyName", "my.name", "123-abc"],
            );
            errs.push(format!(
                "a valid label key {regex} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_label_name(name) {
        let regex = regex_error(
            LABEL_KEY_MESSAGE,
            LABEL_KEY_REGEX,
            &["MyName", "my.name", "123-abc"],
        );
        errs.push(format!("name part {regex}"));
    }
    errs
}

/// Upstream's `IsValidLabelValue`: problems with `value` as a label value.
pub fn validate_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !is_label_name(value) {
        errs.push(regex_error(
            LABEL_VALUE_MESSAGE,
            LABEL_VALUE_REGEX,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A key's problems as one field error at `path`, as upstream's `validateLabelKey`.
fn label_key_error(key: &str, path: &Path) -> Option<FieldError> {
    let errs = validate_label_key(key);
    (!errs.is_empty()).then(|| FieldError::invalid(path, go_quote(key), &errs.join("; ")))
}

/// A string as Go's `%q` prints it (how upstream shows string values in field errors).
fn go_quote(s: &str) -> BadValue {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    BadValue(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_key_validation_matches_upstream_messages() {
        assert!(validate_label_key("app").is_empty());
        assert!(validate_label_key("app.kubernetes.io/name").is_empty());
        assert!(validate_label_key("a-b_c.d").is_empty());
        assert_eq!(
            validate_label_key("-app"),
            [
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ]
        );
        assert_eq!(
            validate_label_key("/app"),
            ["prefix part must be non-empty"]
        );
        assert_eq!(
            validate_label_key("Example.com/app"),
            [
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        let errs = validate_label_key("a/b/c");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("a valid label key must consist of"));
        assert!(errs[0].ends_with(
            "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
        let long = "a".repeat(64);
        assert_eq!(
            validate_label_key(&long),
            ["name part must be no more than 63 bytes"]
        );
        assert_eq!(
            validate_label_key("x/").len(),
            2,
            "empty name: non-empty and regex messages"
        );
    }

    #[test]
    fn label_value_validation_matches_upstream_messages() {
        assert!(validate_label_value("").is_empty());
        assert!(validate_label_value("v1.2_3-4").is_empty());
        assert_eq!(
            validate_label_value(&"a".repeat(64)),
            ["must be no more than 63 bytes"]
        );
        assert_eq!(
            validate_label_value("a b"),
            [
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
    }

    #[test]
    fn aggregates_print_like_upstream() {
        let path = Path::new("values");
        let one = FieldErrors(vec![FieldError::invalid(&path, "x", "bad")]);
        assert_eq!(one.to_string(), "values: Invalid value: \"x\": bad");
        let two = FieldErrors(vec![
            FieldError::invalid(&path, "x", "bad"),
            FieldError::invalid(&path, "y", "bad"),
            FieldError::invalid(&path, "x", "bad"),
        ]);
        assert_eq!(
            two.to_string(),
            "[values: Invalid value: \"x\": bad, values: Invalid value: \"y\": bad]"
        );
    }
}
