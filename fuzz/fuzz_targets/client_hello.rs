//! Fuzz target `client_hello`: the TLS ClientHello peek of HTTPS listeners
//! (`isthmus_engine::tls::ClientHelloReader`), fed the bytes of a connection in
//! pieces as a socket would return them.
//!
//! Input: `[piece size - 1] [repeat] bytes...`. The bytes are fed in pieces of the
//! first byte + 1; then, when `repeat` is not 0, the last piece is fed again up to
//! `repeat * 32` times (so a small input can reach the size limit, e.g. with many
//! small handshake records).
//!
//! Asserted: no panic; while undecided at most `MAX_BYTES` are held, and never more
//! than that plus one piece; a whole hello replays exactly the bytes fed; its SNI is
//! a valid DNS name, lower-case; what is written back on a refusal is the plain-HTTP
//! 400 (only for bytes that start like an HTTP request), one TLS alert record, or
//! nothing.

#![no_main]

use isthmus_engine::tls::{ClientHelloReader, Hello};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::DnsName;

/// Methods the plain-HTTP check knows (and the HTTP/2 preface).
const PLAIN_HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * ",
];

fuzz_target!(|data: &[u8]| {
    let [size, repeat, bytes @ ..] = data else {
        return;
    };
    let size = usize::from(*size) + 1;
    let last = bytes.chunks(size).last().unwrap_or_default();
    let pieces = bytes
        .chunks(size)
        .chain(std::iter::repeat_n(last, usize::from(*repeat) * 32));

    let mut reader = ClientHelloReader::new();
    let mut fed: Vec<u8> = Vec::new();
    for piece in pieces {
        fed.extend_from_slice(piece);
        let answer = reader.feed(piece);
        match answer {
            Ok(None) => {
                assert!(reader.buffered() <= ClientHelloReader::MAX_BYTES);
                assert_eq!(reader.buffered(), fed.len());
            }
            Ok(Some(hello)) => {
                check_hello(&hello, &fed, piece.len());
                return;
            }
            Err(bad) => {
                assert!(
                    reader.buffered() <= ClientHelloReader::MAX_BYTES + piece.len(),
                    "{} bytes held",
                    reader.buffered()
                );
                if bad.alert.starts_with(b"HTTP/") {
                    assert!(bad.alert.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
                    assert!(
                        PLAIN_HTTP_STARTS.iter().any(|m| fed.starts_with(m)),
                        "a 400 for bytes that are no HTTP request"
                    );
                } else if !bad.alert.is_empty() {
                    // One alert record: content type 21, two bytes of level and
                    // description.
                    assert_eq!(bad.alert.len(), 7, "{:?}", bad.alert);
                    assert_eq!(bad.alert[0], 0x15);
                    assert_eq!(&bad.alert[3..5], &[0, 2]);
                }
                assert!(!bad.reason.is_empty());
                return;
            }
        }
    }
});

fn check_hello(hello: &Hello, fed: &[u8], piece: usize) {
    assert_eq!(hello.bytes, fed, "the replay is every byte read");
    assert!(hello.bytes.len() <= ClientHelloReader::MAX_BYTES + piece);
    assert_eq!(
        fed.first(),
        Some(&0x16),
        "a ClientHello is a handshake record"
    );
    if let Some(sni) = &hello.sni {
        assert!(DnsName::try_from(sni.as_str()).is_ok(), "SNI {sni:?}");
        assert!(!sni.is_empty() && sni.len() <= 253, "SNI {sni:?}");
        assert!(
            sni.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "SNI {sni:?}"
        );
        assert!(!sni.contains(".."), "SNI {sni:?}");
    }
}
