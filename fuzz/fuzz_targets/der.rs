//! Fuzz target `der`: the model's own DER reader (`isthmus_model::der`) and the PEM
//! credential checks on top of it (`isthmus_model::pem`), which read every TLS
//! Secret, certificate file and client certificate isthmus sees.
//!
//! Input: any bytes, read both as DER (a certificate, and a private key under each
//! PEM label) and as PEM text (blocks, a certificate and key pair in one file, a
//! Secret whose keys all hold the input, a CA bundle); each PEM block's DER is then
//! read as a certificate or key by its label.
//!
//! Asserted: no panic; a certificate's validity is within the years DER times can
//! state and prints as RFC 3339; its key matches itself (or cannot tell); its
//! SubjectPublicKeyInfo is part of the input; every subjectAltName matches its own
//! value; PEM blocks are DER SEQUENCEs; a pair's `check_key` refuses exactly when
//! `key_matches` says no; the validity check agrees with the certificate's dates.

#![no_main]

use isthmus_model::der::{self, PublicKey, San};
use isthmus_model::pem;
use libfuzzer_sys::fuzz_target;

/// The PEM labels `der::private_key` reads (and one it does not).
const KEY_LABELS: [&str; 4] = [
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
];

/// 0000-01-01 and 9999-12-31T23:59:60 as Unix seconds: what the four-digit
/// years of DER times allow.
const EARLIEST: i64 = -62_167_219_200;
const LATEST: i64 = 253_402_300_800;

/// Times the validity checks are asked about: extremes, the epoch, and around now.
const NOWS: [i64; 5] = [i64::MIN, 0, 1_767_312_000, LATEST + 1, i64::MAX];

fuzz_target!(|data: &[u8]| {
    check_der(data, None);
    for label in KEY_LABELS {
        check_der(data, Some(label));
    }
    check_pem(data);
});

/// Read `der` as a certificate (`label` none) or as a private key with `label`.
fn check_der(der: &[u8], label: Option<&str>) {
    let Some(label) = label else {
        check_certificate(der);
        return;
    };
    let key = der::private_key(label, der);
    if let Some(key) = &key {
        assert!(
            KEY_LABELS[..3].contains(&label),
            "{label} is not a key label"
        );
        check_key(key);
    }
}

fn check_certificate(der: &[u8]) {
    let spki = der::subject_public_key_info(der);
    if let Some(spki) = spki {
        assert!(
            is_within(spki, der),
            "the SPKI is a part of the certificate"
        );
        assert_eq!(spki.first(), Some(&0x30), "the SPKI is a SEQUENCE");
    }
    if let Some(sans) = der::subject_alt_names(der) {
        assert!(spki.is_some(), "SANs of something that is no certificate");
        for san in &sans {
            check_san(san);
        }
    }
    let Some(cert) = der::certificate(der) else {
        return;
    };
    assert!(spki.is_some(), "a certificate without an SPKI");
    for t in [cert.not_before, cert.not_after] {
        assert!((EARLIEST..=LATEST).contains(&t), "time {t} out of range");
        let text = der::format_utc(t);
        assert_eq!(text.len(), 20, "{text}");
        assert!(text.ends_with('Z'), "{text}");
    }
    check_key(&cert.key);
    assert_ne!(
        cert.key.matches(&cert.key),
        Some(false),
        "a key does not match itself"
    );
}

fn check_key(key: &PublicKey<'_>) {
    match key {
        PublicKey::Rsa { n, e } => {
            assert!(
                n.first() != Some(&0) && e.first() != Some(&0),
                "leading zeros"
            );
        }
        PublicKey::Ec { .. } | PublicKey::Ed25519(_) | PublicKey::Other(_) => {}
    }
}

fn check_san(san: &San<'_>) {
    let own = match *san {
        San::Dns(v) | San::Uri(v) | San::Email(v) => v.to_string(),
        San::Ip(ip) => ip.to_string(),
    };
    assert!(san.matches(&own), "{san} does not match its own value");
    let shown = san.to_string();
    assert!(shown.ends_with(&own), "{shown}");
    // Some other names: no panic on any of them.
    for want in [
        "",
        "*",
        ".",
        "a.test",
        "x.a.test",
        "::1",
        "127.0.0.1",
        "é.test",
    ] {
        let _ = san.matches(want);
    }
    if let San::Dns(v) = san {
        let upper = v.to_ascii_uppercase();
        assert!(san.matches(&upper), "DNS SANs ignore case");
    }
}

fn check_pem(text: &[u8]) {
    let Ok(blocks) = pem::blocks(text) else {
        assert!(pem::check_certificates(text, "fuzz").is_err());
        return;
    };
    assert!(!blocks.is_empty());
    for block in &blocks {
        assert_eq!(block.der.first(), Some(&0x30), "block {block:?}");
        if block.label == "CERTIFICATE" {
            check_der(&block.der, None);
        } else {
            check_der(&block.der, Some(&block.label));
        }
    }
    let has_cert = blocks.iter().any(|b| b.label == "CERTIFICATE");
    assert_eq!(pem::check_certificates(text, "fuzz").is_ok(), has_cert);

    // The first readable certificate decides the validity of the chain.
    let first_cert = blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .find_map(|b| der::certificate(&b.der));
    for now in NOWS {
        let problem = pem::validity_problem(text, now);
        if let Some(cert) = &first_cert {
            let outside = now < cert.not_before || now > cert.not_after;
            if outside {
                assert!(problem.is_some(), "{now} is outside {cert:?}");
            }
        }
        if let Some(p) = problem {
            assert!(p.ends_with("; clients will refuse it"), "{p}");
        }
    }

    // One file holding the chain and the key (as a Secret can).
    match pem::parse_pair(text.to_vec(), text.to_vec(), "tls.crt", "tls.key") {
        Ok(pair) => {
            assert!(has_cert);
            let matches = pair.key_matches();
            assert_eq!(pair.check_key().is_err(), matches == Some(false));
            for now in NOWS {
                assert_eq!(pair.validity_problem(now), pem::validity_problem(text, now));
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }

    // A Secret whose every key holds the input, and one with empty `cert`/`key`.
    let all = |_: &str| Some(text.to_vec());
    let server = pem::server_pair(all);
    let first = pem::parse_pair(text.to_vec(), text.to_vec(), "\"cert\"", "\"key\"");
    assert_eq!(server.is_ok(), first.is_ok());
    let empty_first = |k: &str| match k {
        "cert" | "key" => Some(Vec::new()),
        _ => Some(text.to_vec()),
    };
    assert_eq!(pem::server_pair(empty_first).is_ok(), first.is_ok());
    assert_eq!(pem::ca_bundle(all).is_ok(), has_cert);
}

/// Whether `part` lies within `whole` (a subslice of it).
fn is_within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}
