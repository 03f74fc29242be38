//! The JSONPath subset used by CRD printer columns and selectable fields
//! (`.spec.replicas`, `.status.conditions[0].type`, `.status.conditions[?(@.type=="Ready")].status`).

use serde_json::Value;

/// Evaluate a path, returning every matched value.
pub fn eval<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut current = vec![obj];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            rest = &after[end..];
            if field.is_empty() {
                continue;
            }
            current = current.into_iter().filter_map(|v| v.get(field)).collect();
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(close) = find_close(after) else {
                return Vec::new();
            };
            let inner = &after[..close];
            rest = &after[close + 1..];
            current = step_bracket(current, inner);
        } else {
            return Vec::new();
        }
    }
    current
}

fn find_close(text: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('[', None) => depth += 1,
            (']', None) if depth == 0 => return Some(i),
            (']', None) => depth -= 1,
            _ => {}
        }
    }
    None
}

fn step_bracket<'a>(current: Vec<&'a Value>, inner: &str) -> Vec<&'a Value> {
    let inner = inner.trim();
    if inner == "*" {
        return current
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                Value::Object(m) => m.values().collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    if let Ok(i) = inner.parse::<i64>() {
        return current
            .into_iter()
            .filter_map(|v| {
                let a = v.as_array()?;
                let idx = if i < 0 { a.len() as i64 + i } else { i };
                a.get(usize::try_from(idx).ok()?)
            })
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let Some((lhs, rhs)) = filter.split_once("==") else {
            return Vec::new();
        };
        let field = lhs.trim().trim_start_matches('@');
        let wanted = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
        return current
            .into_iter()
            .flat_map(|v| {
                v.as_array()
                    .map(|a| a.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .filter(|item| {
                eval(item, field).first().is_some_and(|x| {
                    x.as_str().map_or_else(|| x.to_string(), str::to_owned) == wanted
                })
            })
            .collect();
    }
    let key = inner.trim_matches(|c| c == '"' || c == '\'');
    current.into_iter().filter_map(|v| v.get(key)).collect()
}

#[cfg(test)]
mod tests {
    use super::eval;
    use serde_json::json;

    #[test]
    fn evaluates_the_common_forms() {
        let obj = json!({ "spec": { "replicas": 3 }, "status": { "conditions": [
            { "type": "Ready", "status": "True" }, { "type": "Synced", "status": "False" } ] } });
        assert_eq!(eval(&obj, ".spec.replicas"), vec![&json!(3)]);
        assert_eq!(
            eval(&obj, ".status.conditions[1].type"),
            vec![&json!("Synced")]
        );
        assert_eq!(
            eval(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(eval(&obj, "{.status.conditions[*].type}").len(), 2);
        assert!(eval(&obj, ".spec.missing").is_empty());
    }
}
