//! Stored objects stay JSON (the store's and the wire's format); code that decides
//! something from an object reads it through its k8s-openapi type, decoded here, so a
//! misspelt field is a compile error rather than a silent `Null`.

use crate::error::ApiError;
use crate::resources::Resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A stored object (or part of one) as its type. Every stored object of a typed kind was
/// decoded on its way in (admission), so `None` means a kind or path mismatch, which the
/// callers treat as "nothing there".
pub fn view<T: DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

/// A request body as its kind's type; the error is the real server's decoder message.
pub fn decode<T: DeserializeOwned>(res: &Resource, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{ver}\" cannot be handled as a {kind}: {e}",
            kind = res.kind,
            ver = res.version
        ))
    })
}

/// Back to the stored form.
pub fn encode<T: Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::internal(e.to_string()))
}

/// An object's metadata alone: the rest (spec, status) is skipped, not decoded, for code
/// that reads only labels or names of objects it does not otherwise look at.
#[derive(serde::Deserialize, Default)]
struct Meta {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// A stored object's metadata, typed; empty if it has none.
pub fn meta(v: &Value) -> ObjectMeta {
    view::<Meta>(v).map(|m| m.metadata).unwrap_or_default()
}
