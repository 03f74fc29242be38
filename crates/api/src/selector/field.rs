//! Field selectors: upstream k8s.io/apimachinery/pkg/fields/selector.go.
//!
//! A selector is comma-separated terms `key=value`, `key==value` or `key!=value`, ANDed.
//! Values may escape `\`, `,` and `=` with a backslash (upstream `EscapeValue`); keys are taken
//! literally up to the first operator. Whitespace is not trimmed. A missing field compares as
//! the empty string.

use std::fmt;

use super::SelectorError;

/// A field requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field key, e.g. `metadata.name`, `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

impl FieldRequirement {
    /// Whether a field value (`None` when the object has no such field, compared as "")
    /// satisfies the term.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let equal = actual.unwrap_or("") == self.value;
        match self.operator {
            FieldOperator::Equals => equal,
            FieldOperator::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A parsed field selector: the AND of its terms. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// A selector of one `field=value` term (upstream `OneTermEqualSelector`).
    pub fn one_term_equal(field: &str, value: &str) -> Self {
        FieldSelector {
            requirements: vec![FieldRequirement {
                field: field.to_owned(),
                operator: FieldOperator::Equals,
                value: value.to_owned(),
            }],
        }
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms, in canonical order.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The keys of the terms, for checking each is supported by the kind.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether an object matches: `lookup` gives the value of a field key (`None` when the
    /// object has no value for it, compared as the empty string, as upstream's `Fields.Get`).
    pub fn matches(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(lookup(&r.field).as_deref()))
    }

    /// The value `field` must equal, if a `field=value` term requires one (upstream
    /// `RequiresExactMatch`); lets the server narrow a list, e.g. by `metadata.name`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Check every key is `metadata.name`, `metadata.namespace` or one of `extra`, failing
    /// with upstream's message for the first unsupported key: kinds without field selectors
    /// of their own answer `"k" is not a known field selector: only "metadata.name",
    /// "metadata.namespace"`, kinds with some answer `field label not supported: k`.
    pub fn check_keys(&self, extra: &[&str]) -> Result<(), SelectorError> {
        for key in self.keys() {
            if key == "metadata.name" || key == "metadata.namespace" || extra.contains(&key) {
                continue;
            }
            return Err(if extra.is_empty() {
                SelectorError::UnknownFieldKey {
                    key: key.to_owned(),
                }
            } else {
                SelectorError::UnsupportedFieldLabel {
                    key: key.to_owned(),
                }
            });
        }
        Ok(())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string: terms joined by `,`, values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_field_selector(s)
    }
}

/// Escape a value for use in a field selector (upstream `EscapeValue`).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parse a field selector (upstream `fields.ParseSelector`). Terms are sorted as strings
/// before parsing, so the canonical order is that of the raw terms; empty terms are skipped.
pub fn parse_field_selector(selector: &str) -> Result<FieldSelector, SelectorError> {
    let mut terms = split_terms(selector);
    terms.sort_unstable();
    let mut requirements = Vec::new();
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let Some((field, operator, raw)) = split_term(term) else {
            return Err(SelectorError::SplitFieldTerm {
                selector: selector.to_owned(),
                term: term.to_owned(),
            });
        };
        let value = unescape_value(raw)?;
        requirements.push(FieldRequirement {
            field: field.to_owned(),
            operator,
            value,
        });
    }
    Ok(FieldSelector { requirements })
}

/// Split on commas not preceded by a backslash escape; the escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// The key, operator and raw value at the first `!=`, `==` or `=` (checked in that order at
/// each position, so `a==b` is `a` `==` `b`, not `a` `=` `=b`).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// Undo [`escape_value`]; unescaped `,`/`=` and unknown escapes are errors.
fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape {
                    sequence: format!("\\{c}"),
                });
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter { character: c }),
            c => out.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::InvalidEscape {
            sequence: "\\".to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> FieldSelector {
        parse_field_selector(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn object<'a>(fields: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    // Examples from upstream's "Field Selectors" documentation and selector_test.go.
    #[test]
    fn parses_and_prints_canonically() {
        let cases = [
            ("", ""),
            ("metadata.name=my-service", "metadata.name=my-service"),
            ("metadata.namespace!=default", "metadata.namespace!=default"),
            ("status.phase==Pending", "status.phase=Pending"),
            (
                "status.phase!=Running,spec.restartPolicy=Always",
                "spec.restartPolicy=Always,status.phase!=Running",
            ),
            ("x=a,,y=b,", "x=a,y=b"),
            ("x=", "x="),
            ("x=a\\,b", "x=a\\,b"),
            ("x=a\\=b\\\\c", "x=a\\=b\\\\c"),
            ("x!=a!b", "x!=a!b"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "{input:?}");
        }
        assert_eq!(parse("x=a\\,b").requirements()[0].value, "a,b");
        assert_eq!(parse("x=a\\=b\\\\c").requirements()[0].value, "a=b\\c");
    }

    #[test]
    fn splits_at_the_first_operator() {
        let r = parse("a==b").requirements()[0].clone();
        assert_eq!(
            (r.field.as_str(), r.operator, r.value.as_str()),
            ("a", FieldOperator::Equals, "b")
        );
        let r = parse("a!b!=c").requirements()[0].clone();
        assert_eq!(
            (r.field.as_str(), r.operator, r.value.as_str()),
            ("a!b", FieldOperator::NotEquals, "c")
        );
        let r = parse(" a = b").requirements()[0].clone();
        assert_eq!(
            (r.field.as_str(), r.value.as_str()),
            (" a ", " b"),
            "whitespace is kept, as upstream"
        );
    }

    #[test]
    fn errors_read_like_upstream() {
        let err = |s: &str| parse_field_selector(s).unwrap_err().to_string();
        assert_eq!(err("x"), "invalid selector: 'x'; can't understand 'x'");
        assert_eq!(
            err("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
        assert_eq!(
            err("x=a=b"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err("x=a\\b"),
            "invalid field selector: invalid escape sequence: \\b"
        );
        assert_eq!(
            err("x=a\\"),
            "invalid field selector: invalid escape sequence: \\"
        );
    }

    #[test]
    fn matches_with_missing_fields_as_empty() {
        let pod = object(&[("metadata.name", "web"), ("status.phase", "Running")]);
        assert!(parse("").matches(&pod));
        assert!(parse("metadata.name=web").matches(&pod));
        assert!(parse("status.phase!=Pending,metadata.name==web").matches(&pod));
        assert!(!parse("status.phase!=Running").matches(&pod));
        assert!(parse("spec.nodeName=").matches(&pod));
        assert!(!parse("spec.nodeName!=").matches(&pod));
        assert!(parse("spec.nodeName!=node-1").matches(&pod));
    }

    #[test]
    fn unsupported_keys_are_reported_like_upstream() {
        let selector = parse("metadata.name=a,spec.foo=b");
        assert_eq!(
            selector.check_keys(&[]).unwrap_err().to_string(),
            "\"spec.foo\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            selector
                .check_keys(&["spec.nodeName"])
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.foo"
        );
        assert!(selector.check_keys(&["spec.foo"]).is_ok());
        assert_eq!(
            selector.keys().collect::<Vec<_>>(),
            ["metadata.name", "spec.foo"]
        );
    }

    #[test]
    fn exact_match_is_introspectable() {
        let s = parse("spec.nodeName=n1,metadata.name!=x");
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(s.requires_exact_match("metadata.name"), None);
        assert_eq!(
            FieldSelector::one_term_equal("metadata.name", "a,b").to_string(),
            "metadata.name=a\\,b"
        );
    }
}
