//! Label selectors: upstream k8s.io/apimachinery/pkg/labels/selector.go (grammar, lexer,
//! requirement validation, canonical string) and the `metav1.LabelSelector` conversion of
//! k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go (`LabelSelectorAsSelector`).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use super::{Expected, FieldErrors, RequirementError, SelectorError, go_quote, label_key_error};
use crate::field::{BadValue, ErrorList, FieldError, Path};

/// A requirement's operator (upstream `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`
    NotIn,
    /// `key=a`
    Equals,
    /// `key==a`
    DoubleEquals,
    /// `key!=a`
    NotEquals,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>1`
    GreaterThan,
    /// `key<1`
    LessThan,
}

/// One requirement: a key, an operator and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// A validated requirement (upstream `NewRequirement`): the key must be a qualified name,
    /// `in`/`notin` need values, `=`/`==`/`!=` exactly one, exists/does-not-exist none, `>`/`<`
    /// one integer; every value must be a valid label value.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, FieldErrors> {
        let (errs, requirement) = Self::validated(key, operator, values, true);
        if errs.is_empty() {
            Ok(requirement)
        } else {
            Err(FieldErrors(errs))
        }
    }

    /// `nil_values` renders an empty value list as upstream renders a nil slice (`null`)
    /// rather than an empty one (`[]`).
    fn validated(
        key: &str,
        operator: Operator,
        values: Vec<String>,
        nil_values: bool,
    ) -> (ErrorList, Self) {
        let mut errs = ErrorList::new();
        if let Some(err) = label_key_error(key, &Path::new("key")) {
            errs.push(err);
        }
        let values_path = Path::new("values");
        let rendered = || {
            if values.is_empty() && nil_values {
                BadValue("null".to_owned())
            } else {
                BadValue(serde_json::to_string(&values).unwrap_or_default())
            }
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(FieldError::invalid(
                &values_path,
                rendered(),
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(FieldError::invalid(
                    &values_path,
                    rendered(),
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(FieldError::invalid(
                    &values_path,
                    rendered(),
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(FieldError::invalid(
                        &values_path,
                        rendered(),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            &values_path.index(i),
                            go_quote(value),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, value) in values.iter().enumerate() {
            let problems = super::validate_label_value(value);
            if !problems.is_empty() {
                let path = values_path.index(i).key(key);
                errs.push(FieldError::invalid(
                    &path,
                    go_quote(value),
                    &problems.join("; "),
                ));
            }
        }
        (
            errs,
            Requirement {
                key: key.to_owned(),
                operator,
                values,
            },
        )
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, in the order given (the canonical string sorts them).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether labels satisfy this requirement (upstream `Requirement.Matches`). A missing
    /// key fails `in`, `=`, `exists`, `>` and `<`, and satisfies `notin`, `!=` and `!key`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key).map(String::as_str);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), [wanted]) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.as_slice(),
                ) else {
                    return false;
                };
                let Ok(wanted) = wanted.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > wanted
                } else {
                    actual < wanted
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Upstream `Requirement.String()`: `!k`, `k`, `k=v`, `k in (a,b)` with sorted values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            Operator::DoesNotExist => return write!(f, "!{}", self.key),
            Operator::Exists => return f.write_str(&self.key),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        let values = values.join(",");
        match self.operator {
            Operator::In | Operator::NotIn => write!(f, "{}{op}({values})", self.key),
            _ => write!(f, "{}{op}{values}", self.key),
        }
    }
}

/// A parsed label selector: the AND of its requirements, sorted by key.
///
/// Two selectors select everything or nothing without requirements, as upstream: an empty
/// selector ([`LabelSelector::everything`], the empty string, an empty `metav1.LabelSelector`)
/// matches every object, while [`LabelSelector::nothing`] (what upstream makes of a nil
/// `metav1.LabelSelector`, see [`LabelSelector::from_k8s_opt`]) matches none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// The selector that matches nothing (upstream `labels.Nothing()`); it prints as "".
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// A selector from requirements (sorted by key, as upstream's `Add`).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// `key=value` for every entry, unvalidated (upstream `SelectorFromValidatedSet`, used for
    /// map selectors such as a Service's or a ReplicationController's); an empty map selects
    /// everything.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// Convert a `metav1.LabelSelector` (upstream `LabelSelectorAsSelector`): `matchLabels`
    /// become `key=value`, `matchExpressions` use In/NotIn/Exists/DoesNotExist. A selector
    /// with neither matches everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let labels = selector.match_labels.as_ref();
        let expressions = selector.match_expressions.as_deref().unwrap_or_default();
        if labels.is_none_or(BTreeMap::is_empty) && expressions.is_empty() {
            return Ok(LabelSelector::everything());
        }
        let mut requirements = Vec::new();
        for (key, value) in labels.into_iter().flatten() {
            let requirement = Requirement::new(key, Operator::Equals, vec![value.clone()])
                .map_err(SelectorError::InvalidRequirement)?;
            requirements.push(requirement);
        }
        for expr in expressions {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        operator: other.to_owned(),
                    });
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            let (errs, requirement) = Requirement::validated(&expr.key, operator, values, true);
            if !errs.is_empty() {
                return Err(SelectorError::InvalidRequirement(FieldErrors(errs)));
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// Convert an optional `metav1.LabelSelector`: absent (nil) selects nothing, as upstream
    /// (e.g. a PodDisruptionBudget without selector covers no pods).
    pub fn from_k8s_opt(selector: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        selector.map_or_else(|| Ok(LabelSelector::nothing()), LabelSelector::from_k8s)
    }

    /// Whether the selector restricts nothing (upstream `Empty()`): true for
    /// [`LabelSelector::everything`], false for [`LabelSelector::nothing`].
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether this is [`LabelSelector::nothing`].
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The single value `label` must have, if the selector requires one (`label=v`,
    /// `label==v` or `label in (v)`), as upstream's `RequiresExactMatch`.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == label)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string (upstream `String()`): requirements joined by `,`.
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

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_label_selector(s)
    }
}

/// Parse a label selector string with upstream's grammar (upstream `labels.Parse`):
///
/// ```text
/// <selector>    ::= <requirement> | <requirement> "," <selector>
/// <requirement> ::= [!] KEY [ <set-based> | <exact-match> ]
/// <set-based>   ::= "" | ("in" | "notin") "(" VALUE ["," VALUE]* ")"
/// <exact-match> ::= ("=" | "==" | "!=" | ">" | "<") VALUE
/// ```
///
/// Whitespace separates tokens and is otherwise ignored; the empty string selects everything.
pub fn parse_label_selector(selector: &str) -> Result<LabelSelector, SelectorError> {
    let tokens = lex(selector);
    let mut parser = Parser {
        tokens,
        position: 0,
    };
    let requirements = parser.parse()?;
    Ok(LabelSelector::from_requirements(requirements))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

/// Upstream's lexer: identifiers run until whitespace or a special character; special
/// characters form the longest operator they can. Every single special character is a token,
/// so lexing never fails.
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            tokens.push((Token::EndOfString, String::new()));
            return tokens;
        }
        let start = pos;
        if is_special(b[pos]) {
            let mut last = None;
            while pos < b.len() && is_special(b[pos]) {
                match symbol(&s[start..=pos]) {
                    Some(token) => last = Some((token, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            let (token, end) = last.expect("every special character is a token");
            pos = end;
            tokens.push((token, s[start..end].to_owned()));
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let literal = &s[start..pos];
            let token = match symbol(literal) {
                Some(token @ (Token::In | Token::NotIn)) => token,
                _ => Token::Identifier,
            };
            tokens.push((token, literal.to_owned()));
        }
    }
}

/// Whether `in`/`notin` may be read as identifiers (they can be keys and values).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<(Token, String)>,
    position: usize,
}

type ReqResult<T> = Result<T, RequirementError>;

fn unexpected<T>(found: &str, expected: Expected) -> ReqResult<T> {
    Err(RequirementError::UnexpectedToken {
        found: found.to_owned(),
        expected,
    })
}

impl Parser {
    fn token(&self, index: usize, context: Context) -> (Token, String) {
        let (token, literal) = self.tokens[index.min(self.tokens.len() - 1)].clone();
        match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => (Token::Identifier, literal),
            _ => (token, literal),
        }
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.token(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.token(self.position, context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(
                        self.parse_requirement()
                            .map_err(SelectorError::ParseRequirement)?,
                    );
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::UnexpectedToken {
                                    found: next_literal,
                                    expected: "identifier after ','",
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::UnexpectedToken {
                                found: literal,
                                expected: "',' or 'end of string'",
                            });
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::UnexpectedToken {
                        found: literal,
                        expected: "!, identifier, or 'end of string'",
                    });
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> ReqResult<Requirement> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = inferred {
            return new_requirement(&key, operator, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(&key, operator, values)
    }

    /// The key, and `Exists`/`DoesNotExist` when no operator follows (`key`, `!key`).
    fn parse_key_and_infer_operator(&mut self) -> ReqResult<(String, Option<Operator>)> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return unexpected(&literal, Expected::Identifier);
        }
        // Upstream validates the key here with a nil field path, which prints as "<nil>".
        if let Some(err) = label_key_error(&literal, &Path::new("<nil>")) {
            return Err(RequirementError::Invalid(FieldErrors(vec![err])));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> ReqResult<Operator> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return unexpected(&literal, Expected::Operator),
        })
    }

    /// `(a,b)`; values form a set, so they come back sorted and deduplicated.
    fn parse_values(&mut self) -> ReqResult<Vec<String>> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return unexpected(&literal, Expected::OpenParen);
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                // Upstream reports the literal seen after `(`, not the one that failed.
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    return unexpected(&literal, Expected::CloseParen);
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => unexpected(&literal, Expected::ValueStart),
        }
    }

    /// A possibly empty list of possibly empty values: `(a,,b)`, `(,a)`, `(a,)`.
    fn parse_identifiers_list(&mut self) -> ReqResult<Vec<String>> {
        let mut values = std::collections::BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(literal);
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values.into_iter().collect()),
                        _ => return unexpected(&next_literal, Expected::CommaOrCloseParen),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new());
                        return Ok(values.into_iter().collect());
                    }
                    if next == Token::Comma {
                        self.consume(Context::Values);
                        values.insert(String::new());
                    }
                }
                _ => return unexpected(&literal, Expected::CommaOrIdentifier),
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing before `,` or the end means "".
    fn parse_exact_value(&mut self) -> ReqResult<Vec<String>> {
        let (next, _) = self.lookahead(Context::Values);
        if next == Token::EndOfString || next == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(vec![literal])
        } else {
            unexpected(&literal, Expected::Identifier)
        }
    }
}

fn new_requirement(key: &str, operator: Operator, values: Vec<String>) -> ReqResult<Requirement> {
    let (errs, requirement) = Requirement::validated(key, operator, values, false);
    if errs.is_empty() {
        Ok(requirement)
    } else {
        Err(RequirementError::Invalid(FieldErrors(errs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(s: &str) -> LabelSelector {
        parse_label_selector(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn error(s: &str) -> String {
        parse_label_selector(s).expect_err(s).to_string()
    }

    // Examples from upstream's documentation ("Labels and Selectors") and selector_test.go.
    #[test]
    fn parses_and_prints_canonically() {
        let cases = [
            ("", ""),
            ("x=a", "x=a"),
            ("x==a", "x==a"),
            ("x!=a", "x!=a"),
            ("environment = production", "environment=production"),
            ("tier != frontend", "tier!=frontend"),
            (
                "environment in (production, qa)",
                "environment in (production,qa)",
            ),
            (
                "tier notin (frontend,backend)",
                "tier notin (backend,frontend)",
            ),
            ("partition", "partition"),
            ("!partition", "!partition"),
            ("x>1", "x>1"),
            ("x<1", "x<1"),
            ("z,y,x=a", "x=a,y,z"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("x in (,a)", "x in (,a)"),
            ("x in (a,)", "x in (,a)"),
            ("x=", "x="),
            ("x==", "x=="),
            ("x= ,y", "x=,y"),
            ("in in (in)", "in in (in)"),
            ("  x  =  a  ,  !y  ", "x=a,!y"),
            ("x in (b,a,b)", "x in (a,b)"),
            ("a.b/c-d=e_f.g", "a.b/c-d=e_f.g"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "{input:?}");
        }
    }

    #[test]
    fn matches_like_upstream() {
        let l = labels(&[
            ("environment", "production"),
            ("tier", "frontend"),
            ("n", "5"),
        ]);
        let yes = [
            "",
            "environment=production",
            "environment==production",
            "tier!=backend",
            "environment in (production,qa)",
            "tier notin (backend)",
            "missing notin (x)",
            "missing!=x",
            "environment",
            "!missing",
            "n>4",
            "n<6",
            "environment=production,tier=frontend",
        ];
        for s in yes {
            assert!(parse(s).matches(&l), "{s:?} should match");
        }
        let no = [
            "environment=qa",
            "tier!=frontend",
            "environment in (qa)",
            "tier notin (frontend)",
            "missing",
            "!environment",
            "missing in (x)",
            "n>5",
            "n<5",
            "tier>1",
            "environment=production,tier=backend",
        ];
        for s in no {
            assert!(!parse(s).matches(&l), "{s:?} should not match");
        }
    }

    #[test]
    fn syntax_errors_read_like_upstream() {
        assert_eq!(error("x=a,"), "found '', expected: identifier after ','");
        assert_eq!(error("x=a,,y"), "found ',', expected: identifier after ','");
        assert_eq!(
            error(",x"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            error("x=a b"),
            "found 'b', expected: ',' or 'end of string'"
        );
        assert_eq!(
            error("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            error("x in a"),
            "unable to parse requirement: found 'a' expected: '('"
        );
        assert_eq!(
            error("x in (a b)"),
            "unable to parse requirement: found 'b', expected: ',' or ')'"
        );
        assert_eq!(
            error("x in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            error("x in (a,=)"),
            "unable to parse requirement: found '=', expected: ',', or identifier"
        );
        assert_eq!(
            error("x=(a)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            error("!=a"),
            "found '!=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            error("!!a"),
            "unable to parse requirement: found '!', expected: identifier"
        );
        assert_eq!(error("!x=a"), "found '=', expected: ',' or 'end of string'");
    }

    #[test]
    fn invalid_keys_and_values_read_like_upstream() {
        assert_eq!(
            error("a/b/c=d"),
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        );
        assert_eq!(
            error("app=a@b"),
            "unable to parse requirement: values[0][app]: Invalid value: \"a@b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let long = format!("app={}", "v".repeat(64));
        assert_eq!(
            error(&long),
            format!(
                "unable to parse requirement: values[0][app]: Invalid value: \"{}\": must be no more than 63 bytes",
                "v".repeat(64)
            )
        );
        assert_eq!(
            error("x>a"),
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn exact_match_is_introspectable() {
        let s = parse("app=web,tier in (db),env in (a,b),x!=y");
        assert_eq!(s.requires_exact_match("app"), Some("web"));
        assert_eq!(s.requires_exact_match("tier"), Some("db"));
        assert_eq!(s.requires_exact_match("env"), None);
        assert_eq!(s.requires_exact_match("x"), None);
        assert_eq!(s.requires_exact_match("other"), None);
    }

    fn expr(
        key: &str,
        operator: &str,
        values: Option<&[&str]>,
    ) -> metav1::LabelSelectorRequirement {
        metav1::LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn converts_metav1_label_selectors() {
        let k8s = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", Some(&["frontend", "cache"])),
                expr("env", "NotIn", Some(&["dev"])),
                expr("canary", "DoesNotExist", None),
                expr("team", "Exists", Some(&[])),
            ]),
        };
        let selector = LabelSelector::from_k8s(&k8s).unwrap();
        assert_eq!(
            selector.to_string(),
            "app=web,!canary,env notin (dev),team,tier in (cache,frontend)"
        );
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "cache"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "cache")])));
    }

    #[test]
    fn empty_selects_everything_and_nil_selects_nothing() {
        let any = labels(&[("a", "b")]);
        let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
        assert!(empty.is_empty() && empty.matches(&any) && empty.matches(&BTreeMap::new()));
        let nil = LabelSelector::from_k8s_opt(None).unwrap();
        assert!(!nil.is_empty() && nil.is_nothing());
        assert!(!nil.matches(&any) && !nil.matches(&BTreeMap::new()));
        assert_eq!(nil.to_string(), "");
        assert!(LabelSelector::from_map(&BTreeMap::new()).matches(&any));
        assert_eq!(
            LabelSelector::from_map(&labels(&[("b", "2"), ("a", "1")])).to_string(),
            "a=1,b=2"
        );
    }

    #[test]
    fn metav1_validation_errors_read_like_upstream() {
        let with = |e: metav1::LabelSelectorRequirement| metav1::LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        let err = |s: metav1::LabelSelector| LabelSelector::from_k8s(&s).unwrap_err().to_string();
        assert_eq!(
            err(with(expr("a", "In", None))),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(with(expr("a", "Exists", Some(&["x"])))),
            "values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(with(expr("a", "Gt", Some(&["1"])))),
            "\"Gt\" is not a valid label selector operator"
        );
        assert_eq!(
            err(with(expr("a b", "Exists", None))),
            "key: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        let bad_label = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "a b")])),
            ..Default::default()
        };
        assert!(
            err(bad_label)
                .starts_with("values[0][app]: Invalid value: \"a b\": a valid label must be")
        );
    }
}
