//! RSA signature verification (RSASSA-PKCS1-v1_5 and RSASSA-PSS, RFC 8017).
//!
//! Inside a proxy-wasm VM the general-purpose `rsa` crate costs about a millisecond
//! per RS256 check. Verification only ever raises a public signature to a small
//! public exponent, so here `s^e mod n` is plain square-and-multiply over the
//! exponent's bits (16 squarings and one multiplication for 65537) in Montgomery
//! form, with 32-bit limbs (wasm has a native 32x32->64 multiply) and buffers
//! allocated once per check. Nothing here is secret, so nothing needs constant
//! time. `R^2 mod n` is computed once per key with crypto-bigint. The checks are
//! proven against the Wycheproof vectors in the tests below.

use crypto_bigint::{BoxedUint, NonZero, Resize};
use sha2::digest::{Digest, FixedOutputReset};
use subtle::ConstantTimeEq;

/// Largest modulus accepted, in bits.
pub const MAX_RSA_BITS: u32 = 8192;

/// A public key with its Montgomery parameters, ready to verify.
#[derive(Clone)]
pub struct RsaPublicKey {
    /// The modulus, little-endian 32-bit limbs.
    modulus: Vec<u32>,
    /// `-n^-1 mod 2^32`.
    n0: u32,
    /// `R^2 mod n` with `R = 2^(32 * limbs)`, little-endian limbs.
    r2: Vec<u32>,
    /// Length of the modulus in bytes (`k` in RFC 8017).
    size: usize,
    bits: u32,
    exponent: u64,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "RsaPublicKey({} bits, e={})",
            self.bits, self.exponent
        )
    }
}

/// The ASN.1 DigestInfo prefix that goes before the hash in PKCS#1 v1.5.
pub trait DigestInfo: Digest + FixedOutputReset {
    const PREFIX: &'static [u8];
}

impl DigestInfo for sha2::Sha256 {
    const PREFIX: &'static [u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
}

impl DigestInfo for sha2::Sha384 {
    const PREFIX: &'static [u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
}

impl DigestInfo for sha2::Sha512 {
    const PREFIX: &'static [u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[first..]
}

impl RsaPublicKey {
    /// A key from its big-endian modulus and exponent. The exponent must be odd,
    /// at least 3 and fit in 64 bits; the modulus odd and at most 8192 bits.
    pub fn new(modulus: &[u8], exponent: &[u8]) -> Result<Self, String> {
        let modulus = strip_zeros(modulus);
        let exponent = strip_zeros(exponent);
        if exponent.is_empty() || exponent.len() > 8 {
            return Err("RSA exponent out of range".into());
        }
        let exponent = exponent
            .iter()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
        if exponent < 3 || exponent % 2 == 0 {
            return Err("RSA exponent must be odd and at least 3".into());
        }
        let size = modulus.len();
        let bits = u32::try_from(size * 8).unwrap_or(u32::MAX)
            - modulus.first().map_or(8, |top| top.leading_zeros());
        if bits > MAX_RSA_BITS || size == 0 {
            return Err(format!("RSA modulus of {bits} bits"));
        }
        if modulus.last().is_none_or(|low| low % 2 == 0) {
            return Err("RSA modulus is even".into());
        }
        let limbs = to_limbs(modulus, size.div_ceil(4));
        let mut inverse: u32 = 1;
        for _ in 0..5 {
            // Newton's iteration doubles the correct low bits: 1, 2, 4, ... 32.
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(limbs[0].wrapping_mul(inverse)));
        }
        Ok(Self {
            r2: r_squared(modulus, limbs.len())?,
            n0: inverse.wrapping_neg(),
            modulus: limbs,
            size,
            bits,
            exponent,
        })
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// `signature^e mod n` as `k` bytes, or `None` for a signature of the wrong
    /// length or not below the modulus.
    fn open(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.size {
            return None;
        }
        let n = &self.modulus;
        let value = to_limbs(signature, n.len());
        if !less(&value, n) {
            return None;
        }
        let mut scratch = vec![0u32; n.len() + 2];
        let mut wide = vec![0u32; 2 * n.len() + 1];
        let mut base = vec![0u32; n.len()];
        montgomery_multiply(&value, &self.r2, n, self.n0, &mut scratch, &mut base);
        let mut power = base.clone();
        let mut next = vec![0u32; n.len()];
        let top = 63 - self.exponent.leading_zeros();
        for bit in (0..top).rev() {
            montgomery_square(&power, n, self.n0, &mut wide, &mut next);
            std::mem::swap(&mut power, &mut next);
            if self.exponent >> bit & 1 == 1 {
                montgomery_multiply(&power, &base, n, self.n0, &mut scratch, &mut next);
                std::mem::swap(&mut power, &mut next);
            }
        }
        let mut one = vec![0u32; n.len()];
        one[0] = 1;
        montgomery_multiply(&power, &one, n, self.n0, &mut scratch, &mut next);
        Some(to_bytes(&next, self.size))
    }

    /// RSASSA-PKCS1-v1_5 (RFC 8017 8.2.2): the opened signature must equal the one
    /// encoding of the message's hash, byte for byte.
    pub fn verify_pkcs1v15<D: DigestInfo>(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(opened) = self.open(signature) else {
            return false;
        };
        let hash = <D as Digest>::digest(message);
        let info_len = D::PREFIX.len() + hash.len();
        let Some(padding) = self
            .size
            .checked_sub(info_len + 3)
            .filter(|padding| *padding >= 8)
        else {
            return false;
        };
        let mut expected = Vec::with_capacity(self.size);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + padding, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(D::PREFIX);
        expected.extend_from_slice(&hash);
        bool::from(opened.ct_eq(&expected))
    }

    /// RSASSA-PSS (RFC 8017 8.1.2, EMSA-PSS-VERIFY 9.1.2) with MGF1 over the same
    /// hash and a salt of `salt_len` bytes (JWS uses the hash length).
    pub fn verify_pss<D: Digest + FixedOutputReset>(
        &self,
        message: &[u8],
        signature: &[u8],
        salt_len: usize,
    ) -> bool {
        let Some(opened) = self.open(signature) else {
            return false;
        };
        let em_bits = self.bits as usize - 1;
        let em_len = em_bits.div_ceil(8);
        // The opened value has k bytes; with emBits a multiple of 8 the first is zero.
        let (lead, em) = opened.split_at(self.size - em_len);
        if lead.iter().any(|byte| *byte != 0) {
            return false;
        }
        let hash_len = <D as Digest>::output_size();
        if em_len < hash_len + salt_len + 2 || em.last() != Some(&0xbc) {
            return false;
        }
        let (masked_db, rest) = em.split_at(em_len - hash_len - 1);
        let h = &rest[..hash_len];
        let unused_bits = 8 * em_len - em_bits;
        let top_mask = 0xffu8.checked_shr(unused_bits as u32).unwrap_or(0);
        if masked_db
            .first()
            .is_some_and(|first| first & !top_mask != 0)
        {
            return false;
        }
        let mut db = mgf1::<D>(h, masked_db.len());
        for (byte, masked) in db.iter_mut().zip(masked_db) {
            *byte ^= masked;
        }
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        let separator = em_len - hash_len - salt_len - 2;
        if db[..separator].iter().any(|byte| *byte != 0) || db[separator] != 0x01 {
            return false;
        }
        let salt = &db[db.len() - salt_len..];
        let mut check = <D as Digest>::new();
        Digest::update(&mut check, [0u8; 8]);
        Digest::update(&mut check, <D as Digest>::digest(message));
        Digest::update(&mut check, salt);
        bool::from(Digest::finalize(check).as_slice().ct_eq(h))
    }
}

/// Big-endian bytes to `count` little-endian 32-bit limbs (bytes must fit).
fn to_limbs(bytes: &[u8], count: usize) -> Vec<u32> {
    let mut limbs = vec![0u32; count];
    for (index, byte) in bytes.iter().rev().enumerate() {
        if let Some(limb) = limbs.get_mut(index / 4) {
            *limb |= u32::from(*byte) << (8 * (index % 4));
        }
    }
    limbs
}

/// Little-endian limbs to `size` big-endian bytes (higher bytes dropped: callers
/// only pass values below a `size`-byte modulus).
fn to_bytes(limbs: &[u32], size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    for (index, byte) in bytes.iter_mut().rev().enumerate() {
        if let Some(limb) = limbs.get(index / 4) {
            *byte = (limb >> (8 * (index % 4))) as u8;
        }
    }
    bytes
}

/// `a < b` for equal-length little-endian limbs.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `R^2 mod n`, computed once per key with crypto-bigint.
fn r_squared(modulus: &[u8], limbs: usize) -> Result<Vec<u32>, String> {
    let bits = u32::try_from(limbs * 32).map_err(|_| "modulus too large")?;
    let precision = 2 * bits + 64;
    let n = BoxedUint::from_be_slice_vartime(modulus).resize(precision);
    let n = Option::<NonZero<BoxedUint>>::from(NonZero::new(n)).ok_or("RSA modulus is zero")?;
    let r2 = BoxedUint::one_with_precision(precision)
        .shl_vartime(2 * bits)
        .ok_or("shift overflow")?
        .rem_vartime(&n);
    let bytes = r2.to_be_bytes();
    Ok(to_limbs(&bytes, limbs))
}

/// Montgomery multiplication (CIOS): `out = a * b * R^-1 mod n`, for `a, b < n`.
/// `scratch` has `n.len() + 2` limbs.
fn montgomery_multiply(
    a: &[u32],
    b: &[u32],
    n: &[u32],
    n0: u32,
    scratch: &mut [u32],
    out: &mut [u32],
) {
    let size = n.len();
    scratch.fill(0);
    for &word in b {
        // scratch += a * word
        let mut carry = 0u64;
        for (slot, &limb) in scratch.iter_mut().zip(a) {
            let sum = u64::from(*slot) + u64::from(limb) * u64::from(word) + carry;
            *slot = sum as u32;
            carry = sum >> 32;
        }
        let sum = u64::from(scratch[size]) + carry;
        scratch[size] = sum as u32;
        scratch[size + 1] = (sum >> 32) as u32;

        // scratch = (scratch + m * n) / 2^32, with m making the low limb zero
        let m = scratch[0].wrapping_mul(n0);
        let mut carry = (u64::from(scratch[0]) + u64::from(m) * u64::from(n[0])) >> 32;
        for index in 1..size {
            let sum = u64::from(scratch[index]) + u64::from(m) * u64::from(n[index]) + carry;
            scratch[index - 1] = sum as u32;
            carry = sum >> 32;
        }
        let sum = u64::from(scratch[size]) + carry;
        scratch[size - 1] = sum as u32;
        scratch[size] = scratch[size + 1] + (sum >> 32) as u32;
    }
    reduce_once(&mut scratch[..=size], n, out);
}

/// Writes `value mod n` to `out`, for a `value` below `2n` given as `n.len()` limbs
/// plus one overflow limb: at most one subtraction.
fn reduce_once(value: &mut [u32], n: &[u32], out: &mut [u32]) {
    let size = n.len();
    if value[size] != 0 || !less(&value[..size], n) {
        let mut borrow = 0i64;
        for (slot, &limb) in value[..size].iter_mut().zip(n) {
            let difference = i64::from(*slot) - i64::from(limb) - borrow;
            *slot = difference as u32;
            borrow = i64::from(difference < 0);
        }
    }
    out.copy_from_slice(&value[..size]);
}

/// Montgomery squaring: `out = a * a * R^-1 mod n`, for `a < n`. Each cross product
/// is computed once and doubled, then the square is reduced limb by limb; about a
/// quarter fewer multiplications than `montgomery_multiply(a, a)`. `wide` has
/// `2 * n.len() + 1` limbs.
fn montgomery_square(a: &[u32], n: &[u32], n0: u32, wide: &mut [u32], out: &mut [u32]) {
    let size = n.len();
    wide.fill(0);

    // Cross products a[i] * a[j] for i < j (slices and zips: no bounds checks).
    for (i, &limb) in a.iter().enumerate() {
        let limb = u64::from(limb);
        let mut carry = 0u64;
        for (slot, &other) in wide[2 * i + 1..i + size].iter_mut().zip(&a[i + 1..]) {
            let sum = u64::from(*slot) + limb * u64::from(other) + carry;
            *slot = sum as u32;
            carry = sum >> 32;
        }
        wide[i + size] = carry as u32;
    }

    // Double them, then add the squares a[i]^2.
    let mut top = 0u32;
    for limb in wide[..2 * size].iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | top;
        top = next;
    }
    let mut carry = 0u64;
    for (pair, &limb) in wide[..2 * size].chunks_exact_mut(2).zip(a) {
        let square = u64::from(limb) * u64::from(limb);
        let low = u64::from(pair[0]) + (square & 0xffff_ffff) + carry;
        pair[0] = low as u32;
        let high = u64::from(pair[1]) + (square >> 32) + (low >> 32);
        pair[1] = high as u32;
        carry = high >> 32;
    }
    wide[2 * size] = carry as u32 + top;

    // Montgomery reduction: clear one low limb per step.
    for i in 0..size {
        let m = u64::from(wide[i].wrapping_mul(n0));
        let mut carry = 0u64;
        for (slot, &limb) in wide[i..i + size].iter_mut().zip(n) {
            let sum = u64::from(*slot) + m * u64::from(limb) + carry;
            *slot = sum as u32;
            carry = sum >> 32;
        }
        for slot in wide[i + size..].iter_mut() {
            if carry == 0 {
                break;
            }
            let sum = u64::from(*slot) + carry;
            *slot = sum as u32;
            carry = sum >> 32;
        }
    }

    reduce_once(&mut wide[size..], n, out);
}

/// MGF1 (RFC 8017 B.2.1): `length` bytes of mask from `seed`.
fn mgf1<D: Digest>(seed: &[u8], length: usize) -> Vec<u8> {
    let mut mask = Vec::with_capacity(length + <D as Digest>::output_size());
    let mut counter: u32 = 0;
    while mask.len() < length {
        let mut hasher = D::new();
        hasher.update(seed);
        hasher.update(counter.to_be_bytes());
        mask.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    mask.truncate(length);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::rsa_pkcs1_verify as pkcs1;
    use wycheproof::rsa_pss_verify as pss;
    use wycheproof::{HashFunction, TestResult};

    fn key(n: &[u8], e: &[u8]) -> RsaPublicKey {
        RsaPublicKey::new(n, e).unwrap()
    }

    #[test]
    fn pkcs1v15_agrees_with_wycheproof() {
        let sets = [
            pkcs1::TestName::Rsa2048Sha256,
            pkcs1::TestName::Rsa3072Sha384,
            pkcs1::TestName::Rsa4096Sha512,
            pkcs1::TestName::Rsa2048Sha512,
        ];
        let mut checked = 0;
        for name in sets {
            let set = pkcs1::TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let key = key(&group.key.n, &group.key.e);
                for test in &group.tests {
                    let valid = match group.hash {
                        HashFunction::Sha2_256 => {
                            key.verify_pkcs1v15::<sha2::Sha256>(&test.msg, &test.sig)
                        }
                        HashFunction::Sha2_384 => {
                            key.verify_pkcs1v15::<sha2::Sha384>(&test.msg, &test.sig)
                        }
                        HashFunction::Sha2_512 => {
                            key.verify_pkcs1v15::<sha2::Sha512>(&test.msg, &test.sig)
                        }
                        other => panic!("unexpected hash {other:?}"),
                    };
                    let expected = test.result == TestResult::Valid;
                    assert_eq!(
                        valid, expected,
                        "{name:?} tc {} {}",
                        test.tc_id, test.comment
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn pss_agrees_with_wycheproof() {
        let sets = [
            pss::TestName::RsaPss2048Sha256Mgf1SaltLen32,
            pss::TestName::RsaPss4096Sha512Mgf1SaltLen64,
            pss::TestName::RsaPss2048Sha384Mgf1SaltLen48,
        ];
        let mut checked = 0;
        for name in sets {
            let set = pss::TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let key = key(&group.key.n, &group.key.e);
                assert_eq!(
                    group.mgf_hash,
                    Some(group.hash),
                    "{name:?}: MGF1 over the signature hash"
                );
                for test in &group.tests {
                    let valid = match group.hash {
                        HashFunction::Sha2_256 => {
                            key.verify_pss::<sha2::Sha256>(&test.msg, &test.sig, group.salt_size)
                        }
                        HashFunction::Sha2_384 => {
                            key.verify_pss::<sha2::Sha384>(&test.msg, &test.sig, group.salt_size)
                        }
                        HashFunction::Sha2_512 => {
                            key.verify_pss::<sha2::Sha512>(&test.msg, &test.sig, group.salt_size)
                        }
                        other => panic!("unexpected hash {other:?}"),
                    };
                    // "Acceptable" cases are legacy leniencies; this verifier refuses them.
                    let expected = test.result == TestResult::Valid;
                    assert_eq!(
                        valid, expected,
                        "{name:?} tc {} {}",
                        test.tc_id, test.comment
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    proptest::proptest! {
        #[test]
        fn squaring_agrees_with_multiplication(
            modulus in proptest::collection::vec(proptest::num::u32::ANY, 8..=64),
            value in proptest::collection::vec(proptest::num::u32::ANY, 64),
        ) {
            let mut n = modulus;
            n[0] |= 1;
            let size = n.len();
            let last = size - 1;
            n[last] |= 0x8000_0000;
            let mut a: Vec<u32> = value[..size].to_vec();
            a[last] &= 0x7fff_ffff; // below n
            let mut inverse: u32 = 1;
            for _ in 0..5 {
                inverse = inverse.wrapping_mul(2u32.wrapping_sub(n[0].wrapping_mul(inverse)));
            }
            let n0 = inverse.wrapping_neg();
            let (mut squared, mut multiplied) = (vec![0; size], vec![0; size]);
            montgomery_square(&a, &n, n0, &mut vec![0; 2 * size + 1], &mut squared);
            montgomery_multiply(&a, &a, &n, n0, &mut vec![0; size + 2], &mut multiplied);
            proptest::prop_assert_eq!(squared, multiplied);
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        let n = [0xffu8; 256];
        for e in [&[][..], &[1], &[2], &[0, 0, 4], &[1; 9]] {
            assert!(RsaPublicKey::new(&n, e).is_err(), "{e:?}");
        }
        let mut even = n;
        even[255] = 0xfe;
        assert!(RsaPublicKey::new(&even, &[1, 0, 1]).is_err());
        assert!(RsaPublicKey::new(&[0xff; 1025], &[1, 0, 1]).is_err());
        assert_eq!(RsaPublicKey::new(&n, &[1, 0, 1]).unwrap().bits(), 2048);
    }
}
