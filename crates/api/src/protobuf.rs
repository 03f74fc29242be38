//! Decoding the Kubernetes protobuf encoding into the JSON form of an object.
//!
//! client-go's generated clients send built-in kinds as `application/vnd.kubernetes.protobuf`
//! with no fallback to JSON, so `kubectl create configmap` and friends need the server to read
//! it. The body is the 4-byte magic `k8s\0` and a `runtime.Unknown` envelope whose `raw`
//! field holds the object's message (upstream:
//! k8s.io/apimachinery/pkg/runtime/serializer/protobuf). Field numbers, names and types come
//! from a table generated from upstream's `generated.proto` files (`tools/gen-protobuf.py`).
//!
//! The proto2 encoding Go produces writes non-pointer fields even when empty, where JSON
//! would omit them, so empty strings, zero numbers, `false` and empty messages are dropped;
//! a pointer field explicitly set to its zero value is therefore read as unset (the server's
//! defaulting then applies).

use base64::Engine;
use serde_json::{Map, Value};

#[rustfmt::skip]
mod generated;

/// Bytes that open every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Field value types.
#[derive(Debug, Clone, Copy)]
enum Type {
    Str,
    I32,
    I64,
    Bool,
    Bytes,
    F64,
    // No current Kubernetes message uses `float`; kept so the generator's
    // type map stays total when a future API adds one.
    #[allow(dead_code)]
    F32,
    Msg(&'static str),
}

/// Field cardinality.
#[derive(Debug, Clone, Copy)]
enum Card {
    One,
    Many,
    Map,
}

/// One message: its fully qualified name and fields `(number, json name, type, cardinality)`.
struct Message {
    name: &'static str,
    fields: &'static [(u32, &'static str, Type, Card)],
}

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with the Kubernetes magic.
    #[error("the body is not a Kubernetes protobuf object (missing the k8s\\0 prefix)")]
    NotKubernetes,
    /// The bytes are not valid protobuf.
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    /// The envelope names a kind without a known protobuf message.
    #[error("no protobuf message is known for {api_version}, Kind={kind}")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
}

fn message(name: &str) -> Option<&'static Message> {
    let all = generated::MESSAGES;
    all.binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &all[i])
}

/// The protobuf message of a built-in kind, e.g. `k8s.io.api.core.v1.ConfigMap`.
fn message_for_kind(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let definition = crate::listmeta::definition_for_kind(group, version, kind)?;
    let proto = format!(
        "k8s.io.{}",
        definition.strip_prefix("io.k8s.")?.replace('-', "_")
    );
    message(&proto).map(|m| m.name)
}

/// Decode a Kubernetes protobuf body into the object's JSON form (with `apiVersion` and
/// `kind` first).
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::NotKubernetes)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut reader = Reader(envelope);
    while let Some((number, wire)) = reader.key()? {
        match (number, wire) {
            (1, 2) => {
                let mut meta = Reader(reader.bytes()?);
                while let Some((n, w)) = meta.key()? {
                    match (n, w) {
                        (1, 2) => api_version = meta.string()?,
                        (2, 2) => kind = meta.string()?,
                        _ => meta.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = reader.bytes()?,
            _ => reader.skip(wire)?,
        }
    }
    let name = message_for_kind(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let decoded = decode_message(raw, name)?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    if let Value::Object(fields) = decoded {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}

/// A cursor over protobuf bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .0
                .split_first()
                .ok_or(ProtobufError::Malformed("truncated varint"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("varint too long"))
    }

    /// The next field's number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, ProtobufError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some(((key >> 3) as u32, (key & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if self.0.len() < n {
            return Err(ProtobufError::Malformed("truncated field"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtobufError> {
        let n = self.varint()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ProtobufError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| ProtobufError::Malformed("string is not UTF-8"))
    }

    fn fixed64(&mut self) -> Result<u64, ProtobufError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn fixed32(&mut self) -> Result<u32, ProtobufError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtobufError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            _ => Err(ProtobufError::Malformed("unsupported wire type")),
        }
    }
}

/// One scalar or message value of `typ`, read with wire type `wire`.
fn decode_value(reader: &mut Reader<'_>, typ: Type, wire: u8) -> Result<Value, ProtobufError> {
    Ok(match (typ, wire) {
        (Type::Str, 2) => Value::String(reader.string()?),
        (Type::Bytes, 2) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(reader.bytes()?))
        }
        (Type::I32, 0) => Value::from(reader.varint()? as i64 as i32),
        (Type::I64, 0) => Value::from(reader.varint()? as i64),
        (Type::Bool, 0) => Value::Bool(reader.varint()? != 0),
        (Type::F64, 1) => Value::from(f64::from_bits(reader.fixed64()?)),
        (Type::F32, 5) => Value::from(f64::from(f32::from_bits(reader.fixed32()?))),
        (Type::Msg(name), 2) => decode_message(reader.bytes()?, name)?,
        _ => {
            return Err(ProtobufError::Malformed(
                "wire type does not match the field",
            ));
        }
    })
}

/// Whether a value is what Go writes for an unset non-pointer field.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(m) => m.is_empty(),
        Value::Array(_) => false,
    }
}

fn decode_message(bytes: &[u8], name: &str) -> Result<Value, ProtobufError> {
    if let Some(special) = decode_special(bytes, name)? {
        return Ok(special);
    }
    let Some(message) = message(name) else {
        return Ok(Value::Object(Map::new()));
    };
    let mut out = Map::new();
    let mut reader = Reader(bytes);
    while let Some((number, wire)) = reader.key()? {
        let Some(&(_, json, typ, card)) = message.fields.iter().find(|f| f.0 == number) else {
            reader.skip(wire)?;
            continue;
        };
        match card {
            Card::One => {
                let value = decode_value(&mut reader, typ, wire)?;
                if is_zero(&value) {
                    out.remove(json);
                } else {
                    out.insert(json.to_owned(), value);
                }
            }
            Card::Many => {
                let list = out.entry(json).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = list else { continue };
                let packed = wire == 2 && !matches!(typ, Type::Str | Type::Bytes | Type::Msg(_));
                if packed {
                    let mut inner = Reader(reader.bytes()?);
                    let item_wire = match typ {
                        Type::F64 => 1,
                        Type::F32 => 5,
                        _ => 0,
                    };
                    while !inner.0.is_empty() {
                        items.push(decode_value(&mut inner, typ, item_wire)?);
                    }
                } else {
                    items.push(decode_value(&mut reader, typ, wire)?);
                }
            }
            Card::Map => {
                let mut entry = Reader(reader.bytes()?);
                let mut key = String::new();
                let mut value = Value::Null;
                while let Some((n, w)) = entry.key()? {
                    match n {
                        1 => key = entry.string()?,
                        2 => value = decode_value(&mut entry, typ, w)?,
                        _ => entry.skip(w)?,
                    }
                }
                if value.is_null() {
                    // An entry without a value holds the type's zero value.
                    value = match typ {
                        Type::Str | Type::Bytes => Value::String(String::new()),
                        Type::Msg(_) => Value::Object(Map::new()),
                        Type::Bool => Value::Bool(false),
                        _ => Value::from(0),
                    };
                }
                let map = out.entry(json).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Well-known apimachinery messages whose JSON form is not an object of their fields.
fn decode_special(bytes: &[u8], name: &str) -> Result<Option<Value>, ProtobufError> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let package = name.strip_suffix(short).unwrap_or("");
    let known = matches!(
        (package, short),
        (
            "k8s.io.apimachinery.pkg.apis.meta.v1.",
            "Time" | "MicroTime" | "Duration" | "FieldsV1"
        ) | ("k8s.io.apimachinery.pkg.api.resource.", "Quantity")
            | ("k8s.io.apimachinery.pkg.util.intstr.", "IntOrString")
            | ("k8s.io.apimachinery.pkg.runtime.", "RawExtension")
            | (
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.",
                "JSON"
            )
    );
    if !known {
        return Ok(None);
    }
    // Read every field as raw numbers or bytes; these messages have at most three fields.
    let mut ints = [0i64; 4];
    let mut blobs: [&[u8]; 4] = [&[]; 4];
    let mut reader = Reader(bytes);
    while let Some((n, w)) = reader.key()? {
        let slot = (n as usize).min(3);
        match w {
            0 => ints[slot] = reader.varint()? as i64,
            2 => blobs[slot] = reader.bytes()?,
            _ => reader.skip(w)?,
        }
    }
    let json_of = |raw: &[u8]| -> Value {
        if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(raw).unwrap_or(Value::Null)
        }
    };
    Ok(Some(match short {
        "Time" | "MicroTime" => {
            let (seconds, nanos) = (ints[1], ints[2]);
            if seconds == 0 && nanos == 0 {
                Value::Null
            } else {
                Value::String(rfc3339(
                    seconds,
                    (short == "MicroTime").then_some(nanos / 1000),
                ))
            }
        }
        "Duration" => Value::String(go_duration(ints[1])),
        "Quantity" => Value::String(String::from_utf8_lossy(blobs[1]).into_owned()),
        "IntOrString" => {
            if ints[1] == 1 {
                Value::String(String::from_utf8_lossy(blobs[3]).into_owned())
            } else {
                Value::from(ints[2] as i32)
            }
        }
        _ => json_of(blobs[1]),
    }))
}

/// `2006-01-02T15:04:05Z`, with microseconds for MicroTime.
fn rfc3339(seconds: i64, micros: Option<i64>) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match micros {
        Some(us) => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{us:06}Z"),
        None => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
    }
}

/// Go's `time.Duration.String()` for whole-second-or-finer durations, e.g. `1m30s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let total = nanos.unsigned_abs();
    let (h, rest) = (total / 3_600_000_000_000, total % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = rest as f64 / 1e9;
    let mut out = sign.to_owned();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn field_bytes(n: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(n) << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn field_varint(n: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(n) << 3, out);
        varint(v, out);
    }

    fn map_entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        field_bytes(1, key.as_bytes(), &mut e);
        field_bytes(2, value, &mut e);
        e
    }

    /// What client-go sends for `kubectl create configmap app --from-literal=color=blue`.
    fn configmap_body() -> Vec<u8> {
        let mut meta = Vec::new();
        field_bytes(1, b"app", &mut meta); // name
        field_bytes(2, b"", &mut meta); // generateName, written although empty
        let mut time = Vec::new();
        field_varint(1, 0, &mut time);
        field_bytes(8, &time, &mut meta); // creationTimestamp: zero Time
        field_bytes(11, &map_entry("tier", b"web"), &mut meta); // labels
        let mut cm = Vec::new();
        field_bytes(1, &meta, &mut cm);
        field_bytes(2, &map_entry("color", b"blue"), &mut cm);
        field_bytes(2, &map_entry("size", b"L"), &mut cm);
        let mut type_meta = Vec::new();
        field_bytes(1, b"v1", &mut type_meta);
        field_bytes(2, b"ConfigMap", &mut type_meta);
        let mut unknown = Vec::new();
        field_bytes(1, &type_meta, &mut unknown);
        field_bytes(2, &cm, &mut unknown);
        field_bytes(3, b"", &mut unknown);
        field_bytes(4, b"", &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        body
    }

    #[test]
    fn decodes_a_configmap_like_client_go_sends_it() {
        let value = decode_object(&configmap_body()).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "app", "labels": {"tier": "web"}},
                "data": {"color": "blue", "size": "L"},
            })
        );
    }

    #[test]
    fn well_known_types_take_their_json_forms() {
        let mut port = Vec::new();
        field_varint(1, 1, &mut port);
        field_bytes(3, b"http", &mut port);
        assert_eq!(
            decode_message(&port, "k8s.io.apimachinery.pkg.util.intstr.IntOrString").unwrap(),
            json!("http")
        );
        let mut time = Vec::new();
        field_varint(1, 1_700_000_000, &mut time);
        assert_eq!(
            decode_message(&time, "k8s.io.apimachinery.pkg.apis.meta.v1.Time").unwrap(),
            json!("2023-11-14T22:13:20Z")
        );
        let mut quantity = Vec::new();
        field_bytes(1, b"500m", &mut quantity);
        assert_eq!(
            decode_message(&quantity, "k8s.io.apimachinery.pkg.api.resource.Quantity").unwrap(),
            json!("500m")
        );
        assert_eq!(go_duration(90_000_000_000), "1m30s");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_object(b"{}"),
            Err(ProtobufError::NotKubernetes)
        ));
        let mut truncated = configmap_body();
        truncated.truncate(truncated.len() - 7);
        assert!(decode_object(&truncated).is_err());
        let mut body = MAGIC.to_vec();
        let mut type_meta = Vec::new();
        field_bytes(1, b"v1", &mut type_meta);
        field_bytes(2, b"Nope", &mut type_meta);
        field_bytes(1, &type_meta, &mut body);
        assert!(matches!(
            decode_object(&body),
            Err(ProtobufError::UnknownKind { .. })
        ));
    }
}
