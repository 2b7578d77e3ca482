//! The HTTP → oneM2M operation mapping (TS-0009 binding): which operation an HTTP request is,
//! and for a create the resource type its Content-Type names. The rules (`crate::rules`) and
//! the ingress and egress decisions read requests through it.

use crate::config::{Operation, ResourceType};
use crate::target::TargetError;

/// The operation and resource type of a request head, as names for traces and logs.
pub fn of_head(req: &pingora::http::RequestHeader) -> (Option<&'static str>, Option<u32>) {
    let (operation, resource_type) = http_operation(
        req.method.as_str(),
        req.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    (operation.map(|o| o.as_str()), resource_type.map(|t| t.0))
}

/// The operation (and for creates the resource type) of an HTTP request (TS-0009 binding).
pub fn http_operation(
    method: &str,
    content_type: Option<&str>,
) -> (Option<Operation>, Option<ResourceType>) {
    match method {
        "POST" => match content_type.map(content_type_ty) {
            None | Some(Ok(None)) => (Some(Operation::Notify), None),
            Some(Ok(ty)) => (Some(Operation::Create), ty),
            // a `ty` was given: a create, of no type a rule could name
            Some(Err(_)) => (Some(Operation::Create), None),
        },
        "GET" | "HEAD" => (Some(Operation::Retrieve), None),
        "PUT" => (Some(Operation::Update), None),
        "DELETE" => (Some(Operation::Delete), None),
        _ => (None, None),
    }
}

/// The `ty` parameter of a Content-Type: `Ok(None)` without one, `Err` when it is not a number
/// or given twice with different values (a CSE could read either; the caller may refuse).
pub fn content_type_ty(content_type: &str) -> Result<Option<ResourceType>, TargetError> {
    let mut found: Option<u32> = None;
    for param in content_type.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("ty") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // digits only: `u32::from_str` would also take `+16`
        let ty = value
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| value.parse::<u32>().ok())
            .flatten()
            .ok_or(TargetError("invalid ty"))?;
        if found.is_some_and(|f| f != ty) {
            return Err(TargetError("ambiguous ty"));
        }
        found = Some(ty);
    }
    Ok(found.map(ResourceType))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_operation_mapping() {
        use Operation::*;
        let ty = |n| Some(ResourceType(n));
        assert_eq!(http_operation("GET", None), (Some(Retrieve), None));
        assert_eq!(http_operation("HEAD", None), (Some(Retrieve), None));
        assert_eq!(
            http_operation("PUT", Some("application/json")),
            (Some(Update), None)
        );
        assert_eq!(http_operation("DELETE", None), (Some(Delete), None));
        assert_eq!(http_operation("POST", None), (Some(Notify), None));
        assert_eq!(
            http_operation("POST", Some("application/json")),
            (Some(Notify), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=16")),
            (Some(Create), ty(16))
        );
        assert_eq!(
            http_operation("POST", Some("application/vnd.onem2m-res+json; ty=16")),
            (Some(Create), ty(16))
        );
        assert_eq!(
            http_operation("POST", Some("application/json;TY=16")),
            (Some(Create), ty(16))
        );
        assert_eq!(
            http_operation("POST", Some("application/json ; charset=utf-8 ;  Ty = 4 ")),
            (Some(Create), ty(4))
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=\"3\"")),
            (Some(Create), ty(3))
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=abc")),
            (Some(Create), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=")),
            (Some(Create), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=+16")),
            (Some(Create), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=2;ty=16")),
            (Some(Create), None)
        );
        // `ty` only as a parameter, not inside another one's name
        assert_eq!(
            http_operation("POST", Some("application/json;xty=16")),
            (Some(Notify), None)
        );
        for m in ["PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "post", ""] {
            assert_eq!(
                http_operation(m, Some("application/json;ty=2")),
                (None, None),
                "{m}"
            );
        }
    }

    #[test]
    fn content_type_ty_reports_why() {
        assert_eq!(content_type_ty("application/json"), Ok(None));
        assert_eq!(
            content_type_ty("application/json;ty=2;ty=02"),
            Ok(Some(ResourceType(2)))
        );
        assert_eq!(
            content_type_ty("application/json;ty=2;ty=3"),
            Err(TargetError("ambiguous ty"))
        );
        assert_eq!(
            content_type_ty("application/json;ty=x"),
            Err(TargetError("invalid ty"))
        );
        assert_eq!(
            content_type_ty("application/json;ty=99999999999"),
            Err(TargetError("invalid ty"))
        );
    }
}
