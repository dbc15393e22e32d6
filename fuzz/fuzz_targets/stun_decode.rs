//! The STUN codec's reader: any datagram a STUN server (or anyone who guesses our socket) can
//! send back to the reachability self-test.
//!
//! `decode_message` must never panic, and every message it accepts re-encodes to bytes that
//! read back as the same message: same class, method and transaction id, and the same
//! attributes (FINGERPRINT recomputed, SOFTWARE and reason phrases cut at 763 bytes).

#![no_main]

use double_natpmp_codec::stun::{decode_message, encode_message, Attribute};
use libfuzzer_sys::fuzz_target;

/// Longest text the encoder writes (RFC 8489 §14.8, §14.14).
const MAX_TEXT: usize = 763;

fn same(read: &Attribute, again: &Attribute) -> bool {
    match (read, again) {
        (Attribute::Software(a), Attribute::Software(b)) => {
            a == b || (a.len() > MAX_TEXT && a.starts_with(b.as_str()))
        }
        (Attribute::ErrorCode(a), Attribute::ErrorCode(b)) => {
            a.code == b.code
                && (a.reason == b.reason
                    || (a.reason.len() > MAX_TEXT && a.reason.starts_with(b.reason.as_str())))
        }
        (a, b) => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode_message(data) else {
        return;
    };
    let bytes = encode_message(&message, message.has_fingerprint());
    assert_eq!(bytes.len() % 4, 0);
    let again = decode_message(&bytes).expect("our own encoding of an accepted message reads");
    assert_eq!(again.class, message.class);
    assert_eq!(again.method, message.method);
    assert_eq!(again.transaction_id, message.transaction_id);
    assert_eq!(again.has_fingerprint(), message.has_fingerprint());
    assert!(again.unknown_required.is_empty());
    let strip = |m: &[Attribute]| -> Vec<Attribute> {
        m.iter()
            .filter(|a| !matches!(a, Attribute::Fingerprint(_)))
            .cloned()
            .collect()
    };
    let (read, reread) = (strip(&message.attributes), strip(&again.attributes));
    assert_eq!(read.len(), reread.len());
    for (a, b) in read.iter().zip(&reread) {
        assert!(same(a, b), "{a:?} re-read as {b:?}");
    }
});
