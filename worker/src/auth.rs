//! Bearer-token authentication of `tts.v1.Tts` calls: the token in the
//! `authorization` metadata must equal the configured one, compared in
//! constant time so that its prefix cannot be found by timing.

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The check; lets every call through when no token is configured.
#[derive(Clone)]
pub(crate) struct Check {
    token: Option<Vec<u8>>,
}

impl Check {
    pub(crate) fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(String::into_bytes),
        }
    }
}

impl Interceptor for Check {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes)
            .unwrap_or_default();
        if bool::from(presented.ct_eq(expected)) {
            Ok(request)
        } else {
            let mut status = Status::unauthenticated("a valid bearer token is required");
            status.metadata_mut().insert(
                tts_proto::ERROR_CODE_HEADER,
                tonic::metadata::MetadataValue::from_static("worker_unavailable"),
            );
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(check: &mut Check, header: Option<&str>) -> bool {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().expect("ascii"));
        }
        check.call(request).is_ok()
    }

    #[test]
    fn only_the_configured_token_passes() {
        let mut open = Check::new(None);
        assert!(call(&mut open, None));
        let mut check = Check::new(Some("s3cret".into()));
        assert!(call(&mut check, Some("Bearer s3cret")));
        assert!(!call(&mut check, None));
        assert!(!call(&mut check, Some("Bearer s3cre")));
        assert!(!call(&mut check, Some("Bearer s3cret2")));
        assert!(!call(&mut check, Some("s3cret")));
    }
}
