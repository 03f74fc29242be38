//! Column definitions and cells for `meta.k8s.io/v1` Table responses (server-side printing).
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
//! server's columns verbatim; columns with `priority > 0` are shown only with `-o wide`.

use std::borrow::Cow;

use serde_json::Value;

/// One Table column, as in upstream `TableColumnDefinition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header, e.g. `NAME` is rendered from `Name`.
    pub name: Cow<'static, str>,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: Cow<'static, str>,
    /// OpenAPI format, e.g. `name` for the name column.
    pub format: Cow<'static, str>,
    /// What the column shows.
    pub description: Cow<'static, str>,
    /// 0 for default columns, 1 for `-o wide` ones.
    pub priority: i32,
}

impl Column {
    /// A default-priority column.
    pub const fn new(name: &'static str, type_: &'static str, description: &'static str) -> Self {
        Column {
            name: Cow::Borrowed(name),
            type_: Cow::Borrowed(type_),
            format: Cow::Borrowed(""),
            description: Cow::Borrowed(description),
            priority: 0,
        }
    }

    /// The standard first column.
    pub const fn name() -> Self {
        Column {
            name: Cow::Borrowed("Name"),
            type_: Cow::Borrowed("string"),
            format: Cow::Borrowed("name"),
            description: Cow::Borrowed(
                "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
            ),
            priority: 0,
        }
    }

    /// The standard `Age` column (cells are rendered durations like `5m12s`).
    pub const fn age() -> Self {
        Column::new(
            "Age",
            "string",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        )
    }

    /// A column whose texts are only known at run time (custom resource printer columns).
    pub fn owned(
        name: String,
        type_: String,
        format: String,
        description: String,
        priority: i32,
    ) -> Self {
        Column {
            name: Cow::Owned(name),
            type_: Cow::Owned(type_),
            format: Cow::Owned(format),
            description: Cow::Owned(description),
            priority,
        }
    }

    /// The same column, shown only with `-o wide`.
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
}

/// One row's cells, in column order. Cells are JSON values (strings, integers, ...).
pub type Cells = Vec<Value>;

/// Render a duration in seconds the way upstream's `duration.HumanDuration` does (`5s`, `3m2s`,
/// `2d3h`, `400d`), used for the Age column and other age-like cells.
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24 % 365;
        if days == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, days);
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }
}
