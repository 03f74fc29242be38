//! Field paths and field errors, modelled on upstream `k8s.io/apimachinery/pkg/util/validation/field`.
//!
//! Validation functions return a list of [`FieldError`]s; the API server turns a non-empty list
//! into a `422 Invalid` Status whose `details.causes` carry one cause per error, and whose message
//! reads like upstream's (`Pod "x" is invalid: spec.containers[0].image: Required value`).

use std::fmt;

/// A path to a field, rendered like upstream: `spec.containers[0].image`, `metadata.labels[app]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    /// A root path such as `metadata` or `spec`.
    pub fn new(root: &str) -> Self {
        Path(root.to_owned())
    }

    /// The path of a child field.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_owned())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }

    /// The path of a list element.
    pub fn index(&self, index: usize) -> Self {
        Path(format!("{}[{}]", self.0, index))
    }

    /// The path of a map entry.
    pub fn key(&self, key: &str) -> Self {
        Path(format!("{}[{}]", self.0, key))
    }

    /// The rendered path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Upstream's `field.ErrorType`: the kind of problem, which also names the Status cause reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueNotFound`
    NotFound,
    /// `FieldValueRequired`
    Required,
    /// `FieldValueDuplicate`
    Duplicate,
    /// `FieldValueInvalid`
    Invalid,
    /// `FieldValueNotSupported`
    NotSupported,
    /// `FieldValueForbidden`
    Forbidden,
    /// `FieldValueTooLong`
    TooLong,
    /// `FieldValueTooMany`
    TooMany,
    /// `InternalError`
    Internal,
    /// `FieldValueTypeInvalid`
    TypeInvalid,
}

impl ErrorType {
    /// The Status cause `reason` string upstream uses.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The phrase upstream prints for this error type.
    pub fn phrase(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
            ErrorType::TypeInvalid => "Invalid value",
        }
    }
}

/// One validation failure at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub error_type: ErrorType,
    /// Where.
    pub field: Path,
    /// The offending value rendered as upstream does (strings quoted), if it is shown.
    pub bad_value: Option<String>,
    /// Extra explanation.
    pub detail: String,
}

impl FieldError {
    fn new(error_type: ErrorType, field: &Path, bad_value: Option<String>, detail: &str) -> Self {
        FieldError {
            error_type,
            field: field.clone(),
            bad_value,
            detail: detail.to_owned(),
        }
    }

    /// A required field is missing.
    pub fn required(field: &Path, detail: &str) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    /// A value is invalid; `value` is shown quoted when it is a string.
    pub fn invalid(field: &Path, value: impl Into<BadValue>, detail: &str) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value.into().0), detail)
    }

    /// A value is not one of the supported ones.
    pub fn not_supported(field: &Path, value: impl Into<BadValue>, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        let detail = format!("supported values: {}", quoted.join(", "));
        Self::new(
            ErrorType::NotSupported,
            field,
            Some(value.into().0),
            &detail,
        )
    }

    /// A value is duplicated.
    pub fn duplicate(field: &Path, value: impl Into<BadValue>) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value.into().0), "")
    }

    /// A field may not be set (or changed).
    pub fn forbidden(field: &Path, detail: &str) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    /// A referenced thing does not exist.
    pub fn not_found(field: &Path, value: impl Into<BadValue>) -> Self {
        Self::new(ErrorType::NotFound, field, Some(value.into().0), "")
    }

    /// A value is longer than allowed.
    pub fn too_long(field: &Path, max: usize) -> Self {
        let detail = format!("may not be more than {max} bytes");
        Self::new(ErrorType::TooLong, field, None, &detail)
    }

    /// A list has too many items.
    pub fn too_many(field: &Path, actual: usize, max: usize) -> Self {
        let detail = format!("must have at most {max} items");
        Self::new(ErrorType::TooMany, field, Some(actual.to_string()), &detail)
    }
}

impl fmt::Display for FieldError {
    /// Upstream's `field.Error.Error()`: `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error_type.phrase())?;
        if let Some(value) = &self.bad_value {
            write!(f, ": {value}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// A value as upstream renders it in a field error: strings quoted, numbers and booleans bare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

impl From<&str> for BadValue {
    fn from(value: &str) -> Self {
        BadValue(format!("\"{value}\""))
    }
}

impl From<&String> for BadValue {
    fn from(value: &String) -> Self {
        BadValue::from(value.as_str())
    }
}

impl From<String> for BadValue {
    fn from(value: String) -> Self {
        BadValue::from(value.as_str())
    }
}

macro_rules! bad_value_display {
    ($($t:ty),*) => {$(
        impl From<$t> for BadValue {
            fn from(value: $t) -> Self {
                BadValue(value.to_string())
            }
        }
    )*};
}
bad_value_display!(i32, i64, u32, u64, usize, bool);

/// Convenience alias for a list of field errors.
pub type ErrorList = Vec<FieldError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_upstream() {
        let path = Path::new("spec")
            .child("containers")
            .index(0)
            .child("image");
        assert_eq!(
            FieldError::required(&path, "").to_string(),
            "spec.containers[0].image: Required value"
        );
        let replicas = Path::new("spec").child("replicas");
        assert_eq!(
            FieldError::invalid(&replicas, -1i64, "must be greater than or equal to 0").to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let policy = Path::new("spec").child("restartPolicy");
        assert_eq!(
            FieldError::not_supported(&policy, "Sometimes", &["Always", "Never"]).to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\""
        );
    }
}
