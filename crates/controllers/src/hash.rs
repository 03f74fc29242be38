//! Hashes that name things: `pod-template-hash` of ReplicaSets and the names of
//! ControllerRevisions. Like upstream, a 32-bit FNV-1a over the object (here its canonical
//! JSON) and an optional collision count, printed in decimal and mapped onto the
//! vowel-free alphabet upstream uses for generated names, so hashes never spell words.

use serde::Serialize;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// 32-bit FNV-1a.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Upstream `rand.SafeEncodeString` of the decimal form of `n`.
pub fn safe_encode(n: u32) -> String {
    n.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The hash of `value` with an optional collision count (upstream `ComputeHash`).
pub fn object_hash<T: Serialize>(value: &T, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(value).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(fnv32a(&data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn hashes_are_stable_vowel_free_and_change_with_the_collision_count() {
        let a = object_hash(&serde_json::json!({"x": 1}), None);
        assert_eq!(a, object_hash(&serde_json::json!({"x": 1}), None));
        assert_ne!(a, object_hash(&serde_json::json!({"x": 1}), Some(1)));
        assert!(a.chars().all(|c| !"aeiou013".contains(c)), "{a}");
    }
}
