//! The OpenAPI v2 document in protobuf, the form kubectl asks for
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) when it validates
//! objects on the client, e.g. the items of a `kind: List` manifest.
//!
//! The wire format is that of gnostic's `openapi.v2.Document`. Only what a JSON Swagger 2.0
//! document built by [`crate::openapi`] contains is encoded, straight from the JSON (no
//! generated message types): `swagger`, `info`, an empty `paths` and `definitions`, with each
//! schema's `$ref`, type, format, description, required, items, properties,
//! additionalProperties, allOf, enum, default, numeric and size limits, and `x-` vendor
//! extensions (values as YAML text, which JSON is). `oneOf` has no place in Swagger 2.0 and is
//! left out; a lone `allOf: [{$ref}]` wrapper becomes the `$ref` itself, which is how upstream's
//! v2 document writes such fields.

use serde_json::{Map, Value};

/// Protobuf field numbers of gnostic's messages used here.
mod field {
    pub const DOC_SWAGGER: u32 = 1;
    pub const DOC_INFO: u32 = 2;
    pub const DOC_PATHS: u32 = 8;
    pub const DOC_DEFINITIONS: u32 = 9;
    pub const INFO_TITLE: u32 = 1;
    pub const INFO_VERSION: u32 = 2;
    /// `Definitions.additional_properties`, `Properties.additional_properties`.
    pub const NAMED_LIST: u32 = 1;
    pub const NAMED_NAME: u32 = 1;
    pub const NAMED_VALUE: u32 = 2;
    pub const ANY_YAML: u32 = 2;
    pub const SCHEMA_REF: u32 = 1;
    pub const SCHEMA_FORMAT: u32 = 2;
    pub const SCHEMA_TITLE: u32 = 3;
    pub const SCHEMA_DESCRIPTION: u32 = 4;
    pub const SCHEMA_DEFAULT: u32 = 5;
    pub const SCHEMA_MULTIPLE_OF: u32 = 6;
    pub const SCHEMA_MAXIMUM: u32 = 7;
    pub const SCHEMA_EXCLUSIVE_MAXIMUM: u32 = 8;
    pub const SCHEMA_MINIMUM: u32 = 9;
    pub const SCHEMA_EXCLUSIVE_MINIMUM: u32 = 10;
    pub const SCHEMA_MAX_LENGTH: u32 = 11;
    pub const SCHEMA_MIN_LENGTH: u32 = 12;
    pub const SCHEMA_PATTERN: u32 = 13;
    pub const SCHEMA_MAX_ITEMS: u32 = 14;
    pub const SCHEMA_MIN_ITEMS: u32 = 15;
    pub const SCHEMA_UNIQUE_ITEMS: u32 = 16;
    pub const SCHEMA_MAX_PROPERTIES: u32 = 17;
    pub const SCHEMA_MIN_PROPERTIES: u32 = 18;
    pub const SCHEMA_REQUIRED: u32 = 19;
    pub const SCHEMA_ENUM: u32 = 20;
    pub const SCHEMA_ADDITIONAL_PROPERTIES: u32 = 21;
    pub const SCHEMA_TYPE: u32 = 22;
    pub const SCHEMA_ITEMS: u32 = 23;
    pub const SCHEMA_ALL_OF: u32 = 24;
    pub const SCHEMA_PROPERTIES: u32 = 25;
    pub const SCHEMA_VENDOR_EXTENSION: u32 = 31;
    /// `AdditionalPropertiesItem` oneof: a schema or a boolean.
    pub const ADDITIONAL_SCHEMA: u32 = 1;
    pub const ADDITIONAL_BOOLEAN: u32 = 2;
    /// `TypeItem.value`, `ItemsItem.schema`.
    pub const REPEATED_VALUE: u32 = 1;
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, LEN);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn message(&mut self, field: u32, m: Message) {
        self.bytes(field, &m.0);
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// gnostic's `Any`: the value as YAML text.
fn any(value: &Value) -> Message {
    let mut m = Message::default();
    m.string(
        field::ANY_YAML,
        &serde_json::to_string(value).unwrap_or_default(),
    );
    m
}

fn named(name: &str, value: Message) -> Message {
    let mut m = Message::default();
    m.string(field::NAMED_NAME, name);
    m.message(field::NAMED_VALUE, value);
    m
}

/// A map of schemas (`Definitions`, `Properties`): ordered `NamedSchema` entries.
fn named_schemas(map: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    for (name, s) in map {
        m.message(field::NAMED_LIST, named(name, schema(s)));
    }
    m
}

/// A lone `allOf: [{"$ref": …}]` wrapper (how v3 documents attach a description to a
/// reference): the reference it stands for.
fn wrapped_ref(obj: &Map<String, Value>) -> Option<&str> {
    if obj.contains_key("$ref") {
        return None;
    }
    match obj.get("allOf")?.as_array()?.as_slice() {
        [only] => only.get("$ref")?.as_str(),
        _ => None,
    }
}

fn schema(value: &Value) -> Message {
    let mut m = Message::default();
    let Some(obj) = value.as_object() else {
        return m;
    };
    let str_of = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let int_of = |k: &str| obj.get(k).and_then(Value::as_i64).unwrap_or(0);
    let float_of = |k: &str| obj.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let wrapped = wrapped_ref(obj);
    m.string(field::SCHEMA_REF, wrapped.unwrap_or(str_of("$ref")));
    m.string(field::SCHEMA_FORMAT, str_of("format"));
    m.string(field::SCHEMA_TITLE, str_of("title"));
    m.string(field::SCHEMA_DESCRIPTION, str_of("description"));
    if let Some(default) = obj.get("default") {
        m.message(field::SCHEMA_DEFAULT, any(default));
    }
    m.double(field::SCHEMA_MULTIPLE_OF, float_of("multipleOf"));
    m.double(field::SCHEMA_MAXIMUM, float_of("maximum"));
    m.boolean(field::SCHEMA_EXCLUSIVE_MAXIMUM, flag("exclusiveMaximum"));
    m.double(field::SCHEMA_MINIMUM, float_of("minimum"));
    m.boolean(field::SCHEMA_EXCLUSIVE_MINIMUM, flag("exclusiveMinimum"));
    m.int64(field::SCHEMA_MAX_LENGTH, int_of("maxLength"));
    m.int64(field::SCHEMA_MIN_LENGTH, int_of("minLength"));
    m.string(field::SCHEMA_PATTERN, str_of("pattern"));
    m.int64(field::SCHEMA_MAX_ITEMS, int_of("maxItems"));
    m.int64(field::SCHEMA_MIN_ITEMS, int_of("minItems"));
    m.boolean(field::SCHEMA_UNIQUE_ITEMS, flag("uniqueItems"));
    m.int64(field::SCHEMA_MAX_PROPERTIES, int_of("maxProperties"));
    m.int64(field::SCHEMA_MIN_PROPERTIES, int_of("minProperties"));
    for r in obj
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        m.string(field::SCHEMA_REQUIRED, r);
    }
    for e in obj
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(field::SCHEMA_ENUM, any(e));
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Message::default();
            // A oneof member is present even when false.
            item.key(field::ADDITIONAL_BOOLEAN, VARINT);
            item.varint(u64::from(*b));
            m.message(field::SCHEMA_ADDITIONAL_PROPERTIES, item);
        }
        Some(s @ Value::Object(_)) => {
            let mut item = Message::default();
            item.message(field::ADDITIONAL_SCHEMA, schema(s));
            m.message(field::SCHEMA_ADDITIONAL_PROPERTIES, item);
        }
        _ => {}
    }
    let types: Vec<&str> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut item = Message::default();
        for t in types {
            item.string(field::REPEATED_VALUE, t);
        }
        m.message(field::SCHEMA_TYPE, item);
    }
    let items: Vec<&Value> = match obj.get("items") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    };
    if !items.is_empty() {
        let mut item = Message::default();
        for s in items {
            item.message(field::REPEATED_VALUE, schema(s));
        }
        m.message(field::SCHEMA_ITEMS, item);
    }
    if wrapped.is_none() {
        for s in obj
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            m.message(field::SCHEMA_ALL_OF, schema(s));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        m.message(field::SCHEMA_PROPERTIES, named_schemas(props));
    }
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        m.message(field::SCHEMA_VENDOR_EXTENSION, named(k, any(v)));
    }
    m
}

/// Encode a Swagger 2.0 JSON document as gnostic's `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut m = Message::default();
    m.string(
        field::DOC_SWAGGER,
        doc.get("swagger").and_then(Value::as_str).unwrap_or("2.0"),
    );
    let mut info = Message::default();
    let info_str = |k: &str| {
        doc.pointer(&format!("/info/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    info.string(field::INFO_TITLE, info_str("title"));
    info.string(field::INFO_VERSION, info_str("version"));
    m.message(field::DOC_INFO, info);
    m.message(field::DOC_PATHS, Message::default());
    let empty = Map::new();
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    m.message(field::DOC_DEFINITIONS, named_schemas(definitions));
    m.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal protobuf reader for the tests: (field, wire type, payload) triples.
    fn fields(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u32);
            let payload = match wire {
                VARINT => varint(&mut b).to_le_bytes().to_vec(),
                FIXED64 => {
                    let p = b[..8].to_vec();
                    b = &b[8..];
                    p
                }
                LEN => {
                    let n = varint(&mut b) as usize;
                    let p = b[..n].to_vec();
                    b = &b[n..];
                    p
                }
                other => panic!("unexpected wire type {other}"),
            };
            out.push((field, wire, payload));
        }
        out
    }

    fn get(msg: &[u8], field: u32) -> Vec<Vec<u8>> {
        fields(msg)
            .into_iter()
            .filter(|(f, _, _)| *f == field)
            .map(|(_, _, p)| p)
            .collect()
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn a_document_carries_its_definitions_with_types_properties_and_extensions() {
        let doc = json!({
            "swagger": "2.0",
            "info": { "title": "Kubernetes", "version": "v1.35.0" },
            "paths": {},
            "definitions": {
                "io.k8s.api.core.v1.ConfigMap": {
                    "type": "object",
                    "description": "holds data",
                    "required": ["metadata"],
                    "properties": {
                        "data": { "type": "object", "additionalProperties": { "type": "string" } },
                        "metadata": { "allOf": [{ "$ref": "#/definitions/ObjectMeta" }], "description": "meta" },
                        "keys": { "type": "array", "items": { "type": "string" }, "maxItems": 3 },
                        "either": { "oneOf": [{ "type": "string" }, { "type": "integer" }] },
                        "open": { "additionalProperties": false },
                    },
                    "x-kubernetes-group-version-kind": [{ "group": "", "kind": "ConfigMap", "version": "v1" }],
                },
            },
        });
        let bytes = encode(&doc);
        assert_eq!(text(&get(&bytes, field::DOC_SWAGGER)[0]), "2.0");
        let info = &get(&bytes, field::DOC_INFO)[0];
        assert_eq!(text(&get(info, field::INFO_TITLE)[0]), "Kubernetes");
        assert_eq!(get(&bytes, field::DOC_PATHS), vec![Vec::<u8>::new()]);
        let defs = &get(&bytes, field::DOC_DEFINITIONS)[0];
        let entries = get(defs, field::NAMED_LIST);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            text(&get(&entries[0], field::NAMED_NAME)[0]),
            "io.k8s.api.core.v1.ConfigMap"
        );
        let cm = &get(&entries[0], field::NAMED_VALUE)[0];
        let types = &get(cm, field::SCHEMA_TYPE)[0];
        assert_eq!(text(&get(types, field::REPEATED_VALUE)[0]), "object");
        assert_eq!(text(&get(cm, field::SCHEMA_REQUIRED)[0]), "metadata");
        let ext = &get(cm, field::SCHEMA_VENDOR_EXTENSION)[0];
        assert_eq!(
            text(&get(ext, field::NAMED_NAME)[0]),
            "x-kubernetes-group-version-kind"
        );
        let yaml = &get(&get(ext, field::NAMED_VALUE)[0], field::ANY_YAML)[0];
        let gvk: Value = serde_json::from_str(text(yaml)).unwrap();
        assert_eq!(gvk[0]["kind"], "ConfigMap");

        let props = &get(cm, field::SCHEMA_PROPERTIES)[0];
        let by_name: std::collections::BTreeMap<String, Vec<u8>> = get(props, field::NAMED_LIST)
            .iter()
            .map(|e| {
                (
                    text(&get(e, field::NAMED_NAME)[0]).to_owned(),
                    get(e, field::NAMED_VALUE)[0].clone(),
                )
            })
            .collect();
        // The allOf wrapper is the reference itself, description kept.
        let meta = &by_name["metadata"];
        assert_eq!(
            text(&get(meta, field::SCHEMA_REF)[0]),
            "#/definitions/ObjectMeta"
        );
        assert!(get(meta, field::SCHEMA_ALL_OF).is_empty());
        assert_eq!(text(&get(meta, field::SCHEMA_DESCRIPTION)[0]), "meta");
        // A map of strings.
        let data = &by_name["data"];
        let additional = &get(data, field::SCHEMA_ADDITIONAL_PROPERTIES)[0];
        let value_schema = &get(additional, field::ADDITIONAL_SCHEMA)[0];
        let t = &get(value_schema, field::SCHEMA_TYPE)[0];
        assert_eq!(text(&get(t, field::REPEATED_VALUE)[0]), "string");
        // `additionalProperties: false` is still present.
        let open = &by_name["open"];
        let additional = &get(open, field::SCHEMA_ADDITIONAL_PROPERTIES)[0];
        assert_eq!(
            get(additional, field::ADDITIONAL_BOOLEAN),
            vec![0u64.to_le_bytes().to_vec()]
        );
        // Arrays with limits.
        let keys = &by_name["keys"];
        assert_eq!(
            get(&get(keys, field::SCHEMA_ITEMS)[0], field::REPEATED_VALUE).len(),
            1
        );
        assert_eq!(
            get(keys, field::SCHEMA_MAX_ITEMS),
            vec![3u64.to_le_bytes().to_vec()]
        );
        // oneOf has no Swagger 2.0 field: an untyped (arbitrary) schema.
        assert!(get(&by_name["either"], field::SCHEMA_TYPE).is_empty());
    }

    #[test]
    fn varints_span_bytes_and_doubles_are_little_endian() {
        let mut m = Message::default();
        m.int64(3, 300);
        m.double(7, 1.5);
        assert_eq!(&m.0[..3], &[3 << 3, 0xac, 0x02]);
        assert_eq!(m.0[3], 7 << 3 | 1);
        assert_eq!(&m.0[4..], &1.5f64.to_le_bytes());
    }
}
