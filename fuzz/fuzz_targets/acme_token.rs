//! Fuzz target `acme_token`: the ACME HTTP-01 checks of the gateway's plain-HTTP
//! request path (`isthmus_engine::acme_challenge`): the token and domain name
//! checks that guard the shared challenge directory (`valid_token`,
//! `valid_domain`, `ChallengeDir`), and `answer`, which every plain-HTTP request
//! passes through before routing.
//!
//! Input: `METHOD SP TARGET [LF NAME]`: a request line (its method and target as
//! the HTTP codec would hand them over) and a name to check as token and domain
//! (the target's last path segment when there is no second line).
//!
//! Asserted: no panic; a valid token or domain has no `/`, `\`, `..`, NUL or
//! leading dot, and its file in the shared directory is one plain name inside
//! the right subdirectory; `answer` gives a key authorization exactly for `GET` or
//! `HEAD` of `/.well-known/acme-challenge/<token>` over `http` with a pending
//! token (held in memory, or published by a replica in the shared directory), and
//! never the content of a file that is no published token; a token inserted is
//! answered until it is removed.

#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use isthmus_engine::acme_challenge::{
    answer, valid_domain, valid_token, ChallengeDir, ChallengeTokens, CHALLENGE_PREFIX,
};
use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;

/// A token pending in this process's map.
const HERE: (&str, &str) = ("here-Token_1", "here-Token_1.thumbprint");
/// A token only a replica holds: published in the shared directory.
const REPLICA: (&str, &str) = ("replica-token", "replica-token.thumbprint");
/// What every decoy file near the shared directory holds: never an answer.
const SECRET: &str = "SECRET, not a key authorization";

struct Fixture {
    /// The shared directory (`<tmp>/challenges`).
    root: PathBuf,
    tokens: ChallengeTokens,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let base = std::env::temp_dir().join(format!("isthmus-fuzz-acme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("challenges");
    // The replica publishes its token; this process then shares the directory.
    let replica = ChallengeTokens::default();
    replica.share_dir(&root);
    replica.insert(REPLICA.0, REPLICA.1);
    let tokens = ChallengeTokens::default();
    tokens.share_dir(&root);
    tokens.insert(HERE.0, HERE.1);
    // Decoys a path escaping the token directory could reach.
    let http01 = root.join("http-01");
    for file in [
        base.join("secret"),
        root.join("secret"),
        http01.join(".hidden"),
        http01.join("a.b"),
        root.join("tls-alpn-01").join("x.pem"),
    ] {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("decoy dir");
        }
        std::fs::write(&file, SECRET).expect("decoy");
    }
    Fixture { root, tokens }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let (line, name) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let (method, target) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (&b"GET"[..], line),
    };
    let name = name.unwrap_or_else(|| target.rsplit(|&b| b == b'/').next().unwrap_or_default());
    if let Ok(name) = std::str::from_utf8(name) {
        check_name(&fixture.root, name);
    }
    check_request(fixture, method, target);
});

/// The checks on a name as a token and as a domain, and its files.
fn check_name(root: &Path, name: &str) {
    let dir = ChallengeDir::new(root);
    let token_ok = valid_token(name);
    let domain_ok = valid_domain(name);
    for (ok, kind) in [(token_ok, "token"), (domain_ok, "domain")] {
        if ok {
            assert!(!name.is_empty(), "empty {kind}");
            for bad in ["/", "\\", "..", "\0"] {
                assert!(!name.contains(bad), "{kind} {name:?} contains {bad:?}");
            }
            assert!(!name.starts_with('.'), "{kind} {name:?}");
            assert!(name.len() <= 255, "{kind} of {} bytes", name.len());
        }
    }
    let token_file = dir.token_file(name);
    assert_eq!(token_file.is_some(), token_ok);
    if let Some(file) = token_file {
        assert_inside(&file, &root.join("http-01"), name);
    }
    let domain_file = dir.domain_file(name);
    assert_eq!(domain_file.is_some(), domain_ok);
    if let Some(file) = domain_file {
        assert_inside(&file, &root.join("tls-alpn-01"), &format!("{name}.pem"));
    }

    // A token of this process's own map: answered until removed (valid or not,
    // the map is in memory; only valid ones are shared).
    if !name.is_empty() {
        let tokens = ChallengeTokens::default();
        let pending = tokens.insert(name, "ka");
        assert_eq!(tokens.answer(name).as_deref(), Some("ka"));
        assert_eq!(pending.served_here(), 1);
        tokens.remove(name);
        assert_eq!(tokens.answer(name), None);
    }
}

/// `file` is `dir/<file_name>`, nothing else: no `..`, no further directory.
fn assert_inside(file: &Path, dir: &Path, file_name: &str) {
    assert_eq!(file.parent(), Some(dir), "{}", file.display());
    assert_eq!(
        file.file_name().and_then(|n| n.to_str()),
        Some(file_name),
        "{}",
        file.display()
    );
    let rest = file.strip_prefix(dir).expect("inside");
    assert!(
        rest.components().all(|c| matches!(c, Component::Normal(_))),
        "{}",
        file.display()
    );
}

/// `answer` on a request as the codec builds it, against what it must say.
fn check_request(fixture: &Fixture, method: &[u8], target: &[u8]) {
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let Ok(req) = RequestHeader::build(method.clone(), target, None) else {
        return;
    };
    let path = req.uri.path();
    let token = path.strip_prefix(CHALLENGE_PREFIX);
    for scheme in ["http", "https"] {
        let got = answer(scheme, &req, &fixture.tokens);
        let asks =
            scheme == "http" && (method == http::Method::GET || method == http::Method::HEAD);
        let expected = match token {
            Some(t) if asks && t == HERE.0 => Some(HERE.1),
            Some(t) if asks && t == REPLICA.0 => Some(REPLICA.1),
            _ => None,
        };
        if let Some(got) = &got {
            assert_ne!(got, SECRET, "a decoy file was read for {path:?}");
        }
        assert_eq!(got.as_deref(), expected, "{scheme} {method} {path:?}");
    }
}
