//! Framing: `version: u16 BE | length: u32 BE | CBOR body`.
//!
//! A reader first reads [`FRAME_PREFIX_LEN`] bytes and calls
//! [`decode_frame_header`], which rejects unknown versions and bodies over
//! [`MAX_FRAME_BODY_LEN`] before anything is allocated; then it reads exactly the
//! announced number of bytes and calls [`decode_request`] or
//! [`decode_response`].

use serde::{de::DeserializeOwned, Serialize};

use crate::{DecodeError, Request, Response, MAX_FRAME_BODY_LEN, PROTOCOL_VERSION};

/// Bytes before the CBOR body: version (2) and length (4).
pub const FRAME_PREFIX_LEN: usize = 6;

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_PREFIX_LEN];
    ciborium::into_writer(msg, &mut out).expect("writing CBOR to a Vec cannot fail");
    let body_len = out.len() - FRAME_PREFIX_LEN;
    assert!(
        body_len <= MAX_FRAME_BODY_LEN,
        "message of {body_len} bytes exceeds MAX_FRAME_BODY_LEN; callers bound their fields"
    );
    out[..2].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out[2..6].copy_from_slice(&(body_len as u32).to_be_bytes());
    out
}

/// Encodes a request as a complete frame.
pub fn encode_request(req: &Request) -> Vec<u8> {
    encode(req)
}

/// Encodes a response as a complete frame.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    encode(resp)
}

/// Checks a frame prefix and returns the body length that follows it.
pub fn decode_frame_header(prefix: &[u8; FRAME_PREFIX_LEN]) -> Result<usize, DecodeError> {
    let version = u16::from_be_bytes([prefix[0], prefix[1]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let len = u32::from_be_bytes([prefix[2], prefix[3], prefix[4], prefix[5]]) as usize;
    if len > MAX_FRAME_BODY_LEN {
        return Err(DecodeError::TooLarge(len as u64));
    }
    Ok(len)
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if body.len() > MAX_FRAME_BODY_LEN {
        return Err(DecodeError::TooLarge(body.len() as u64));
    }
    let mut reader = body;
    let value: T = ciborium::from_reader(&mut reader).map_err(|e| match e {
        ciborium::de::Error::Io(_) => DecodeError::Truncated,
        ciborium::de::Error::RecursionLimitExceeded => {
            DecodeError::Malformed("nesting too deep".into())
        }
        other => DecodeError::Malformed(other.to_string()),
    })?;
    if !reader.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(value)
}

/// Decodes and validates a request body (the bytes after the prefix).
pub fn decode_request(body: &[u8]) -> Result<Request, DecodeError> {
    let req: Request = decode_body(body)?;
    req.validate()?;
    Ok(req)
}

/// Decodes and validates a response body (the bytes after the prefix).
pub fn decode_response(body: &[u8]) -> Result<Response, DecodeError> {
    let resp: Response = decode_body(body)?;
    resp.validate()?;
    Ok(resp)
}

/// Splits a complete frame held in memory into its body, checking the
/// prefix and that nothing follows. Convenience for tests and small peers.
pub fn split_frame(frame: &[u8]) -> Result<&[u8], DecodeError> {
    let prefix: &[u8; FRAME_PREFIX_LEN] = frame
        .get(..FRAME_PREFIX_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or(DecodeError::Truncated)?;
    let len = decode_frame_header(prefix)?;
    let rest = &frame[FRAME_PREFIX_LEN..];
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(DecodeError::Truncated),
        std::cmp::Ordering::Greater => Err(DecodeError::Trailing),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}
