//! Password to login key: the formula is [`wire::kdf`], shared with the
//! client and pinned there by a known-answer test. The node only runs it in
//! `vault-node user add` (and tests); at login it checks signatures against
//! the stored public key and never sees the password or the root.

use thiserror::Error;
use wire::KdfParams;

pub use wire::kdf::{
    derive_root, login_key_pair, login_public_key, login_seed, public_key_for_password,
    KdfError as FormulaError, DEFAULT_M_KIB, DEFAULT_P, DEFAULT_T, LOGIN_SEED_CONTEXT, SALT_LEN,
};

/// Failures of drawing parameters.
#[derive(Debug, Error)]
pub enum KdfError {
    /// The operating system's random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Fresh Argon2id parameters with the default costs and a random salt.
pub fn new_params() -> Result<KdfParams, KdfError> {
    let mut salt = vec![0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| KdfError::Random)?;
    Ok(KdfParams {
        salt,
        m_kib: DEFAULT_M_KIB,
        t: DEFAULT_T,
        p: DEFAULT_P,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_params_draw_fresh_salts_with_default_costs() {
        let (a, b) = (new_params().unwrap(), new_params().unwrap());
        assert_ne!(a.salt, b.salt);
        assert_eq!((a.m_kib, a.t, a.p, a.salt.len()), (65536, 3, 1, 16));
    }
}
