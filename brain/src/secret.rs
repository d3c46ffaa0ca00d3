//! Tokens and digests: the one place secrets are hashed, parsed and
//! compared (constant time, by `subtle`; hex by the `hex` crate), used by
//! the API, the on-call links and the configuration checks alike.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether two digests are equal, in constant time.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// 64 hex digits as bytes.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

/// The SHA-256 of `token`, as hex (what `change_token_sha256` holds).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hashes_parses_back_and_compares() {
        let h = hash_token("s3cret");
        assert_eq!(h.len(), 64);
        let d = parse_sha256(&format!(" {h}\n")).unwrap();
        assert!(same(&d, &parse_sha256(&h).unwrap()));
        assert!(!same(&d, &parse_sha256(&hash_token("other")).unwrap()));
        assert!(parse_sha256("abc").is_none());
        assert!(parse_sha256(&"zz".repeat(32)).is_none());
    }
}
