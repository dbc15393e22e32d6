//! The RouterOS API framing, fed a byte stream as a router (or anything on port 8728) could
//! send it.
//!
//! `decode_sentence` is called in a loop over the buffer, and each sentence is read again in
//! pieces by a `SentenceDecoder`, like the connection reader does;
//! each complete sentence goes through `Reply::from_words` and `Command::from_words`. Nothing
//! may panic or loop forever, and what decodes re-encodes to a stream that decodes the same.

#![no_main]

use double_natpmp_codec::routeros::wire::{
    decode_sentence, encode_sentence, Command, Reply, SentenceDecoder,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    while pos < data.len() {
        let (words, used) = match decode_sentence(&data[pos..]) {
            Ok(Some(sentence)) => sentence,
            Ok(None) | Err(_) => return,
        };
        assert!(used > 0, "a decoded sentence consumes bytes");
        assert!(pos + used <= data.len());
        // The same bytes fed in pieces (as reads deliver them) give the same sentence.
        let mut decoder = SentenceDecoder::default();
        let piece = 1 + usize::from(data[pos] % 7);
        let mut end = pos;
        let resumed = loop {
            end = (end + piece).min(pos + used);
            match decoder.decode(&data[pos..end]) {
                Ok(Some(sentence)) => break sentence,
                Ok(None) => assert!(end < pos + used, "complete before its end"),
                Err(e) => panic!("in pieces: {e}, whole: ok"),
            }
        };
        assert_eq!(resumed, (words.clone(), used));
        pos += used;

        // Word framing round trip.
        let mut buf = Vec::new();
        encode_sentence(&words, &mut buf);
        assert_eq!(decode_sentence(&buf), Ok(Some((words.clone(), buf.len()))));

        if words.is_empty() {
            continue;
        }
        if let Ok(reply) = Reply::from_words(&words) {
            // A reply we read, re-encoded by the emulator, reads back the same.
            let mut buf = Vec::new();
            reply.encode(&mut buf);
            let again = decode_sentence(&buf)
                .ok()
                .flatten()
                .map(|(w, _)| Reply::from_words(&w));
            assert_eq!(again, Some(Ok(reply)));
        }
        if let Ok(cmd) = Command::from_words(&words) {
            let mut buf = Vec::new();
            cmd.encode(&mut buf);
            let again = decode_sentence(&buf).ok().flatten();
            assert!(again.is_some_and(|(w, _)| Command::from_words(&w).is_ok()));
        }
    }
});
