//! The shared login-key formula against a stored known answer, with the
//! real default costs: a change on either side (node or client) of how a
//! password becomes a login key shows up here, not as users locked out.

use wire::kdf::{self, DEFAULT_M_KIB, DEFAULT_P, DEFAULT_T};
use wire::KdfParams;

#[test]
fn login_key_known_answer() {
    let params = KdfParams {
        salt: vec![7; 16],
        m_kib: DEFAULT_M_KIB,
        t: DEFAULT_T,
        p: DEFAULT_P,
    };
    let key = kdf::public_key_for_password(b"Crimson33", &params).unwrap();
    assert_eq!(hex(&key), EXPECTED);
}

const EXPECTED: &str = "b14e888f03aa4abe37a50815c9822de2bfcc37da923facb3981fa6ea09bb79af";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
