//! JSON values printed as Go's `fmt` prints the decoded `interface{}` values, for error
//! messages that upstream builds with `%v` (e.g. `map: map[image:nginx] does not contain
//! declared merge key: name`).

use serde_json::Value;

/// Go's `%v` of a JSON value decoded into `interface{}`: maps as `map[k:v ...]` with sorted
/// keys, lists as `[a b]`, strings bare, numbers as `float64`, null as `<nil>`.
pub(super) fn go_fmt(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or_default()),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_fmt).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_fmt(v)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// Go's name for the type a JSON value decodes to, as `reflect.TypeOf` prints it.
pub(super) fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's `%v` of a float64: the shortest representation, in exponent form (`1e+06`) when the
/// decimal exponent is below -4 or at least 6 (strconv's `'g'` with precision -1).
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".to_owned();
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".to_owned()
        } else if f > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("exponent form");
    let exponent: i32 = exponent.parse().expect("integer exponent");
    if (-4..6).contains(&exponent) {
        f.to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prints_like_go() {
        assert_eq!(
            go_fmt(&json!({"name": "c", "image": "nginx", "ports": [80, 443]})),
            "map[image:nginx name:c ports:[80 443]]"
        );
        assert_eq!(go_fmt(&json!([true, null, "x", 1.5])), "[true <nil> x 1.5]");
        assert_eq!(go_fmt(&json!(1_000_000)), "1e+06");
        assert_eq!(go_fmt(&json!(123_456)), "123456");
        assert_eq!(go_fmt(&json!(1_234_567)), "1.234567e+06");
        assert_eq!(go_fmt(&json!(0.00001)), "1e-05");
        assert_eq!(go_fmt(&json!(0.0001)), "0.0001");
        assert_eq!(go_fmt(&json!(-8080)), "-8080");
        assert_eq!(go_fmt(&json!(0)), "0");
    }
}
