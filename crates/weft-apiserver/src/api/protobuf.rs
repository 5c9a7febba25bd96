//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! turned into the JSON the rest of the server works on.
//!
//! kubectl sends its imperative commands this way (`kubectl create namespace`, `create
//! deployment`, `create service nodeport`, ...). A body is the magic `k8s\0` and a
//! `runtime.Unknown`: the object's apiVersion and kind, and the object's own message. The
//! messages are decoded by the field table in `protobuf_schema`, which covers the kinds such
//! commands create. A field the table does not know is refused with 415 naming it, never
//! dropped: a silently lost field would be worse than a clear "send YAML instead".
//!
//! The Go side marshals every non-pointer field, zero or not, so zero scalars and empty
//! messages are left out of the JSON (as Go's `omitempty` would) unless the table marks the
//! field as a pointer, where zero is a value (`replicas: 0`).

use super::protobuf_schema::{message, Field, Ty};
use crate::error::ApiError;
use base64::Engine;
use serde_json::{Map, Value};

const MAGIC: &[u8] = b"k8s\0";

/// Decodes one object; the error says which kind or field could not be read.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the protobuf body does not start with the k8s magic"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    let mut r = Reader::new(rest);
    while let Some((num, wire)) = r.key()? {
        match (num, wire) {
            (1, 2) => {
                let mut tm = Reader::new(r.bytes()?);
                while let Some((n, w)) = tm.key()? {
                    match (n, w) {
                        (1, 2) => api_version = tm.string()?,
                        (2, 2) => kind = tm.string()?,
                        _ => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = Some(r.bytes()?),
            (3 | 4, 2) => {
                let v = r.string()?;
                if !v.is_empty() && num == 3 {
                    return Err(unsupported(format!("content encoding {v:?}")));
                }
            }
            _ => r.skip(wire)?,
        }
    }
    let raw = raw.ok_or_else(|| bad("the protobuf envelope carries no object"))?;
    let fields = message(&kind).ok_or_else(|| {
        unsupported(format!(
            "protobuf bodies of kind {kind:?} (weft decodes Namespace, ConfigMap, Secret, ServiceAccount, Service, Deployment, Pod and Ingress)"
        ))
    })?;
    let mut obj = decode_message(raw, &kind, fields)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

fn decode_message(
    bytes: &[u8],
    name: &str,
    fields: &'static [Field],
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let mut r = Reader::new(bytes);
    while let Some((num, wire)) = r.key()? {
        let f = fields.iter().find(|f| f.num == num).ok_or_else(|| {
            unsupported(format!(
                "field {num} of protobuf message {name} (send this object as JSON or YAML, e.g. kubectl apply -f)"
            ))
        })?;
        if let Ty::Map(value_ty) = f.ty {
            if wire != 2 {
                return Err(bad(format!(
                    "map field {} of {name} is not length-delimited",
                    f.name
                )));
            }
            let (k, val) = map_entry(r.bytes()?, value_ty)?;
            let m = out
                .entry(f.name)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = m {
                m.insert(k, val);
            }
            continue;
        }
        let v = decode_value(&mut r, wire, f, name)?;
        if f.name.is_empty() {
            // An inline (embedded) struct: its fields are the parent's in JSON.
            if let Value::Object(m) = v {
                out.extend(m);
            }
            continue;
        }
        if f.repeated {
            let arr = out
                .entry(f.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = arr {
                a.push(v);
            }
        } else {
            out.insert(f.name.to_string(), v);
        }
    }
    out.retain(|k, v| {
        let keep_zero = fields.iter().any(|f| f.name == k && f.pointer);
        keep_zero || !is_zero(v)
    });
    Ok(out)
}

fn decode_value(r: &mut Reader, wire: u8, f: &Field, parent: &str) -> Result<Value, ApiError> {
    let want = |w: u8| -> Result<(), ApiError> {
        if wire == w {
            Ok(())
        } else {
            Err(bad(format!(
                "field {} ({}) of {parent} has wire type {wire}, expected {w}",
                f.num, f.name
            )))
        }
    };
    Ok(match f.ty {
        Ty::Str => {
            want(2)?;
            Value::String(r.string()?)
        }
        Ty::Bytes => {
            want(2)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
        }
        Ty::Bool => {
            want(0)?;
            Value::Bool(r.varint()? != 0)
        }
        // Two's complement in a varint: the low 32 bits are the int32.
        Ty::I32 => {
            want(0)?;
            Value::from(r.varint()? as u32 as i32)
        }
        Ty::I64 => {
            want(0)?;
            Value::from(r.varint()? as i64)
        }
        Ty::Time => {
            want(2)?;
            time(r.bytes()?)?
        }
        Ty::Quantity => {
            want(2)?;
            let mut q = Reader::new(r.bytes()?);
            let mut s = String::new();
            while let Some((n, w)) = q.key()? {
                match (n, w) {
                    (1, 2) => s = q.string()?,
                    _ => q.skip(w)?,
                }
            }
            Value::String(s)
        }
        Ty::IntOrString => {
            want(2)?;
            int_or_string(r.bytes()?)?
        }
        Ty::Msg(name) => {
            want(2)?;
            let fields = message(name).ok_or_else(|| bad(format!("no schema for {name}")))?;
            Value::Object(decode_message(r.bytes()?, name, fields)?)
        }
        Ty::Map(_) => return Err(bad(format!("map field {} of {parent}", f.name))),
    })
}

/// A map entry is a message { key = 1; value = 2 }.
fn map_entry(bytes: &[u8], value_ty: &'static Ty) -> Result<(String, Value), ApiError> {
    let (mut key, mut val) = (String::new(), None);
    let mut r = Reader::new(bytes);
    let value_field = Field {
        num: 2,
        name: "value",
        ty: *value_ty,
        repeated: false,
        pointer: true,
    };
    while let Some((n, w)) = r.key()? {
        match n {
            1 if w == 2 => key = r.string()?,
            2 => val = Some(decode_value(&mut r, w, &value_field, "map entry")?),
            _ => r.skip(w)?,
        }
    }
    let default = match value_ty {
        Ty::Str | Ty::Bytes | Ty::Quantity => Value::String(String::new()),
        _ => Value::Null,
    };
    Ok((key, val.unwrap_or(default)))
}

fn time(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut r = Reader::new(bytes);
    let mut secs: i64 = 0;
    while let Some((n, w)) = r.key()? {
        match (n, w) {
            (1, 0) => secs = r.varint()? as i64,
            _ => r.skip(w)?,
        }
    }
    // Go's zero Time marshals as seconds -62135596800 (year 1) or is absent: both "unset".
    Ok(match u64::try_from(secs) {
        Ok(s) if s > 0 => Value::String(crate::meta::format_rfc3339(s)),
        _ => Value::Null,
    })
}

fn int_or_string(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut r = Reader::new(bytes);
    let (mut is_string, mut int, mut string) = (false, 0i32, String::new());
    while let Some((n, w)) = r.key()? {
        match (n, w) {
            (1, 0) => is_string = r.varint()? == 1,
            (2, 0) => int = r.varint()? as u32 as i32,
            (3, 2) => string = r.string()?,
            _ => r.skip(w)?,
        }
    }
    Ok(if is_string {
        Value::String(string)
    } else {
        Value::from(int)
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(format!("error decoding protobuf: {}", msg.into()))
}

fn unsupported(what: String) -> ApiError {
    ApiError::unsupported_protobuf(&what)
}

/// Protocol buffers wire format, just what Kubernetes objects use.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type, or None at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, ApiError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        let num = u32::try_from(k >> 3).map_err(|_| bad("field number out of range"))?;
        if num == 0 {
            return Err(bad("field number 0"));
        }
        Ok(Some((num, (k & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = usize::try_from(self.varint()?).map_err(|_| bad("length out of range"))?;
        if len > self.buf.len() {
            return Err(bad("length past the end of the body"));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, ApiError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| bad("a string field is not UTF-8"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), ApiError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.advance(8),
            2 => self.bytes().map(drop),
            5 => self.advance(4),
            w => Err(bad(format!("unsupported wire type {w}"))),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ApiError> {
        if n > self.buf.len() {
            return Err(bad("fixed-width field past the end of the body"));
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoding, for building test bodies.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(num: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(num) << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn field_varint(num: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(num) << 3, out);
        varint(v, out);
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        field_bytes(1, api_version.as_bytes(), &mut tm);
        field_bytes(2, kind.as_bytes(), &mut tm);
        let mut out = MAGIC.to_vec();
        field_bytes(1, &tm, &mut out);
        field_bytes(2, raw, &mut out);
        out
    }
    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        field_bytes(1, k.as_bytes(), &mut e);
        field_bytes(2, v, &mut e);
        e
    }

    #[test]
    fn a_configmap_with_labels_and_zero_fields_decodes_as_kubectl_meant_it() {
        let mut meta = Vec::new();
        field_bytes(1, b"cfg", &mut meta);
        field_bytes(2, b"", &mut meta); // generateName "": Go sends zero values
        field_varint(7, 0, &mut meta); // generation 0
        field_bytes(8, &[], &mut meta); // creationTimestamp: zero Time
        field_bytes(11, &entry("app", b"web"), &mut meta);
        let mut cm = Vec::new();
        field_bytes(1, &meta, &mut cm);
        field_bytes(2, &entry("greeting", b"hello"), &mut cm);
        field_bytes(2, &entry("empty", b""), &mut cm);
        field_varint(4, 0, &mut cm); // immutable: false, but a pointer: kept
        let v = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "labels": {"app": "web"}},
                "data": {"greeting": "hello", "empty": ""},
                "immutable": false
            })
        );
    }

    #[test]
    fn int_or_string_and_negative_int32_decode() {
        let mut tp = Vec::new();
        field_varint(1, 1, &mut tp);
        field_bytes(3, b"http", &mut tp);
        let mut port = Vec::new();
        field_varint(3, 80, &mut port);
        field_bytes(4, &tp, &mut port);
        field_varint(5, (-1i64) as u64, &mut port); // an int32 sent as a 10-byte varint
        let mut spec = Vec::new();
        field_bytes(1, &port, &mut spec);
        let mut svc = Vec::new();
        field_bytes(2, &spec, &mut svc);
        let v = decode(&envelope("v1", "Service", &svc)).unwrap();
        let p = &v["spec"]["ports"][0];
        assert_eq!(p["targetPort"], "http");
        assert_eq!(p["port"], 80);
        assert_eq!(p["nodePort"], -1);
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused_by_name() {
        let mut meta = Vec::new();
        field_bytes(1, b"x", &mut meta);
        field_bytes(17, b"", &mut meta); // managedFields: not in weft's table
        let mut ns = Vec::new();
        field_bytes(1, &meta, &mut ns);
        let e = decode(&envelope("v1", "Namespace", &ns)).unwrap_err();
        assert_eq!(e.code, axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(
            e.message
                .contains("field 17 of protobuf message ObjectMeta"),
            "{}",
            e.message
        );

        let e = decode(&envelope("scheduling.k8s.io/v1", "PriorityClass", b"")).unwrap_err();
        assert!(e.message.contains("PriorityClass"), "{}", e.message);
    }

    #[test]
    fn malformed_bodies_are_bad_requests_not_panics() {
        let good = {
            let mut meta = Vec::new();
            field_bytes(1, b"name", &mut meta);
            let mut ns = Vec::new();
            field_bytes(1, &meta, &mut ns);
            envelope("v1", "Namespace", &ns)
        };
        assert!(decode(&good).is_ok());
        assert!(decode(b"{}").is_err());
        // Every truncation and every single-byte corruption: an error or a value, never a panic.
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        for i in 0..good.len() {
            for b in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode(&bad);
            }
        }
        // Deterministic random mutations (xorshift): flips, inserts, deletes, repeats.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut m = good.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len().max(1);
                match next() % 4 {
                    0 if !m.is_empty() => m[i] = next() as u8,
                    1 => m.insert(i.min(m.len()), next() as u8),
                    2 if !m.is_empty() => {
                        m.remove(i);
                    }
                    _ => {
                        let tail = m[i.min(m.len())..].to_vec();
                        m.extend_from_slice(&tail);
                    }
                }
            }
            let _ = decode(&m);
        }
    }
}
