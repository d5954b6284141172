//! The one DER (X.690) reader of isthmus, just enough to read certificates and keys
//! without a crypto library: a certificate's validity period and public key, and
//! the public half a private key carries (RSA modulus and exponent; the EC or
//! Ed25519 point of SEC1 and PKCS#8 keys when they include it), checked in TLS
//! Secrets; a certificate's subjectAltName entries ([`subject_alt_names`], [`San`]:
//! DNS, URI, e-mail, IP; the SPIFFE identity) and its encoded SubjectPublicKeyInfo
//! ([`subject_public_key_info`], what `verifyCertificateSpki` pins), read by the
//! engine from client certificates webpki has verified. Also UTC calendar
//! arithmetic for the certificate times. Malformed input gives `None`, never a
//! panic.

use std::fmt;
use std::net::IpAddr;

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
/// `[0]` constructed: the certificate version, SEC1's curve parameters.
const CONTEXT_0: u8 = 0xa0;
/// `[1]` constructed: SEC1's public key.
const CONTEXT_1: u8 = 0xa1;
/// `[1]` primitive (IMPLICIT BIT STRING): PKCS#8 v2's public key.
const CONTEXT_1_PRIMITIVE: u8 = 0x81;
/// `[3]` constructed: a certificate's extensions.
const CONTEXT_3: u8 = 0xa3;
/// GeneralName `[1] rfc822Name` (IMPLICIT IA5String).
const SAN_EMAIL: u8 = 0x81;
/// GeneralName `[2] dNSName` (IMPLICIT IA5String).
const SAN_DNS: u8 = 0x82;
/// GeneralName `[6] uniformResourceIdentifier` (IMPLICIT IA5String).
const SAN_URI: u8 = 0x86;
/// GeneralName `[7] iPAddress` (IMPLICIT OCTET STRING).
const SAN_IP: u8 = 0x87;

/// rsaEncryption 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// RSASSA-PSS 1.2.840.113549.1.1.10 (an RSA key restricted to PSS).
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// id-ecPublicKey 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// id-Ed25519 1.3.101.112.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// id-ce-subjectAltName 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// A reader over the concatenated elements of some DER contents.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(contents: &'a [u8]) -> Reader<'a> {
        Reader { rest: contents }
    }

    /// The tag and contents of the next element (definite lengths up to 4 bytes).
    fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, after_tag) = self.rest.split_first()?;
        let (&first, mut after_len) = after_tag.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_len.len() < count {
                return None;
            }
            let (digits, rest) = after_len.split_at(count);
            after_len = rest;
            digits
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if after_len.len() < len {
            return None;
        }
        let (contents, rest) = after_len.split_at(len);
        self.rest = rest;
        Some((tag, contents))
    }

    /// The next element's tag, contents and whole encoding (header included).
    fn any_whole(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let before = self.rest;
        let (tag, contents) = self.any()?;
        let whole = before.get(..before.len() - self.rest.len())?;
        Some((tag, contents, whole))
    }

    /// Whether every element has been read.
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The contents of the next element, which must have tag `tag`.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.any()? {
            (t, contents) if t == tag => Some(contents),
            _ => None,
        }
    }

    /// The contents of the next element when it has tag `tag`; else nothing is read.
    fn optional(&mut self, tag: u8) -> Option<&'a [u8]> {
        if self.rest.first() == Some(&tag) {
            self.take(tag)
        } else {
            None
        }
    }

    /// Skip elements up to the first with tag `tag` and read it.
    fn find(&mut self, tag: u8) -> Option<&'a [u8]> {
        loop {
            if let Some(c) = self.optional(tag) {
                return Some(c);
            }
            self.any()?;
        }
    }
}

/// The contents of `der` when it is exactly one element with tag `tag`.
fn whole(der: &[u8], tag: u8) -> Option<&[u8]> {
    let mut r = Reader::new(der);
    let contents = r.take(tag)?;
    r.rest.is_empty().then_some(contents)
}

/// An INTEGER's magnitude without its leading zero bytes (so 0x00 0x80 equals 0x80).
fn unsigned(int: &[u8]) -> &[u8] {
    let zeros = int.iter().take_while(|&&b| b == 0).count();
    int.get(zeros..).unwrap_or_default()
}

/// The bits of a BIT STRING with no unused bits (keys always are whole bytes).
fn bits(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first()? {
        (0, bits) => Some(bits),
        _ => None,
    }
}

/// A public key, as a certificate states it or a private key implies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey<'a> {
    /// Modulus and public exponent, without leading zeros.
    Rsa { n: &'a [u8], e: &'a [u8] },
    /// The curve's OID and the encoded point. A private key may not carry its point.
    Ec {
        curve: Option<&'a [u8]>,
        point: Option<&'a [u8]>,
    },
    /// The 32-byte public key; PKCS#8 v1 keys do not carry it.
    Ed25519(Option<&'a [u8]>),
    /// Another algorithm (its OID): compared by algorithm only.
    Other(&'a [u8]),
}

impl PublicKey<'_> {
    /// Whether a certificate's key (`self`) and a private key's are one key pair:
    /// `None` when the private key does not carry enough to tell.
    pub fn matches(&self, private: &PublicKey<'_>) -> Option<bool> {
        match (self, private) {
            (PublicKey::Rsa { n, e }, PublicKey::Rsa { n: pn, e: pe }) => Some(n == pn && e == pe),
            (
                PublicKey::Ec { curve, point },
                PublicKey::Ec {
                    curve: pc,
                    point: pp,
                },
            ) => {
                if let (Some(c), Some(pc)) = (curve, pc) {
                    if c != pc {
                        return Some(false);
                    }
                }
                Some(point.as_ref()? == pp.as_ref()?)
            }
            (PublicKey::Ed25519(k), PublicKey::Ed25519(pk)) => Some(k.as_ref()? == pk.as_ref()?),
            (PublicKey::Other(a), PublicKey::Other(b)) if a == b => None,
            _ => Some(false),
        }
    }
}

/// What isthmus reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate<'a> {
    /// `notBefore`, Unix seconds.
    pub not_before: i64,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    pub key: PublicKey<'a>,
}

/// Read a DER X.509 certificate: `None` when it is not one.
pub fn certificate(der: &[u8]) -> Option<Certificate<'_>> {
    let tbs = tbs(der)?;
    let mut validity = Reader::new(tbs.validity);
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    let key = spki(tbs.spki_contents)?;
    Some(Certificate {
        not_before,
        not_after,
        key,
    })
}

/// A certificate's `tbsCertificate`, read up to its key.
struct Tbs<'a> {
    /// The contents of `validity`.
    validity: &'a [u8],
    /// The `subjectPublicKeyInfo` element, header included.
    spki_whole: &'a [u8],
    /// Its contents.
    spki_contents: &'a [u8],
    /// What follows: `[1]` issuerUniqueID, `[2]` subjectUniqueID, `[3]` extensions.
    rest: Reader<'a>,
}

/// The `tbsCertificate` of a DER certificate, when it reads as one.
fn tbs(der: &[u8]) -> Option<Tbs<'_>> {
    let mut cert = Reader::new(whole(der, SEQUENCE)?);
    let mut tbs = Reader::new(cert.take(SEQUENCE)?);
    tbs.optional(CONTEXT_0); // version
    tbs.take(INTEGER)?; // serialNumber
    tbs.take(SEQUENCE)?; // signature
    tbs.take(SEQUENCE)?; // issuer
    let validity = tbs.take(SEQUENCE)?;
    tbs.take(SEQUENCE)?; // subject
    let (tag, spki_contents, spki_whole) = tbs.any_whole()?;
    (tag == SEQUENCE).then_some(Tbs {
        validity,
        spki_whole,
        spki_contents,
        rest: tbs,
    })
}

/// A certificate's DER `SubjectPublicKeyInfo`, header included: what
/// `verifyCertificateSpki` hashes (as `openssl pkey -pubout -outform DER` writes it).
pub fn subject_public_key_info(der: &[u8]) -> Option<&[u8]> {
    Some(tbs(der)?.spki_whole)
}

/// One subjectAltName entry of a certificate (the kinds isthmus checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum San<'a> {
    Dns(&'a str),
    Uri(&'a str),
    Email(&'a str),
    Ip(IpAddr),
}

impl San<'_> {
    /// Whether this SAN is the `subjectAltNames` entry `want` (Istio's
    /// `ServerTLSSettings`): equal (DNS names case-insensitively, IP addresses as
    /// addresses), or a `*.suffix` DNS SAN covering one label in front of `suffix`
    /// (as Envoy matches DNS SANs).
    pub fn matches(&self, want: &str) -> bool {
        match *self {
            San::Dns(dns) => {
                if dns.eq_ignore_ascii_case(want) {
                    return true;
                }
                let Some(suffix) = dns.strip_prefix('*') else {
                    return false;
                };
                let Some(label_len) = want.len().checked_sub(suffix.len()) else {
                    return false;
                };
                suffix.starts_with('.')
                    && label_len > 0
                    && want.is_char_boundary(label_len)
                    && !want[..label_len].contains('.')
                    && want[label_len..].eq_ignore_ascii_case(suffix)
            }
            San::Uri(uri) => uri == want,
            San::Email(email) => email == want,
            San::Ip(ip) => want.parse::<IpAddr>().is_ok_and(|w| w == ip),
        }
    }
}

impl fmt::Display for San<'_> {
    /// As OpenSSL names the kinds: `DNS:a.test`, `URI:...`, `email:...`, `IP:...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(v) => write!(f, "DNS:{v}"),
            San::Uri(v) => write!(f, "URI:{v}"),
            San::Email(v) => write!(f, "email:{v}"),
            San::Ip(v) => write!(f, "IP:{v}"),
        }
    }
}

/// The DNS, URI, e-mail and IP entries of a DER certificate's subjectAltName
/// extension, in order (other kinds are skipped); empty when it has none. `None`
/// when the certificate or the extension cannot be read.
pub fn subject_alt_names(der: &[u8]) -> Option<Vec<San<'_>>> {
    let mut rest = tbs(der)?.rest;
    let extensions = loop {
        if rest.is_empty() {
            return Some(Vec::new());
        }
        match rest.any()? {
            (CONTEXT_3, contents) => break contents,
            _ => continue, // issuerUniqueID, subjectUniqueID
        }
    };
    let mut extensions = Reader::new(whole(extensions, SEQUENCE)?);
    while !extensions.is_empty() {
        // extnID, critical (BOOLEAN DEFAULT FALSE), extnValue (OCTET STRING).
        let mut extension = Reader::new(extensions.take(SEQUENCE)?);
        if extension.take(OID)? != OID_SUBJECT_ALT_NAME {
            continue;
        }
        extension.optional(BOOLEAN);
        return general_names(extension.take(OCTET_STRING)?);
    }
    Some(Vec::new())
}

/// The entries of a DER `GeneralNames` this module knows.
fn general_names(der: &[u8]) -> Option<Vec<San<'_>>> {
    let mut names = Reader::new(whole(der, SEQUENCE)?);
    let mut out = Vec::new();
    while !names.is_empty() {
        let (tag, bytes) = names.any()?;
        let text = || std::str::from_utf8(bytes).ok();
        out.push(match tag {
            SAN_EMAIL => San::Email(text()?),
            SAN_DNS => San::Dns(text()?),
            SAN_URI => San::Uri(text()?),
            SAN_IP => San::Ip(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
                16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
                _ => return None,
            }),
            _ => continue,
        });
    }
    Some(out)
}

/// A `SubjectPublicKeyInfo`'s key (its contents given).
fn spki(contents: &[u8]) -> Option<PublicKey<'_>> {
    let mut r = Reader::new(contents);
    let mut alg = Reader::new(r.take(SEQUENCE)?);
    let oid = alg.take(OID)?;
    let key = bits(r.take(BIT_STRING)?)?;
    Some(match oid {
        OID_RSA | OID_RSA_PSS => {
            let mut k = Reader::new(whole(key, SEQUENCE)?);
            let n = unsigned(k.take(INTEGER)?);
            let e = unsigned(k.take(INTEGER)?);
            PublicKey::Rsa { n, e }
        }
        OID_EC => PublicKey::Ec {
            curve: alg.optional(OID),
            point: Some(key),
        },
        OID_ED25519 => PublicKey::Ed25519(Some(key)),
        other => PublicKey::Other(other),
    })
}

/// The public key a DER private key implies, by PEM label: `RSA PRIVATE KEY`
/// (PKCS#1), `EC PRIVATE KEY` (SEC1) or `PRIVATE KEY` (PKCS#8). `None` when it cannot
/// be read.
pub fn private_key<'a>(label: &str, der: &'a [u8]) -> Option<PublicKey<'a>> {
    match label {
        "RSA PRIVATE KEY" => rsa_private(der),
        "EC PRIVATE KEY" => ec_private(der, None),
        "PRIVATE KEY" => pkcs8(der),
        _ => None,
    }
}

/// PKCS#1 `RSAPrivateKey`: version, modulus, public exponent, ...
fn rsa_private(der: &[u8]) -> Option<PublicKey<'_>> {
    let mut k = Reader::new(whole(der, SEQUENCE)?);
    k.take(INTEGER)?;
    let n = unsigned(k.take(INTEGER)?);
    let e = unsigned(k.take(INTEGER)?);
    Some(PublicKey::Rsa { n, e })
}

/// SEC1 `ECPrivateKey`: version, key, `[0]` curve, `[1]` public key (both optional;
/// PKCS#8 states the curve outside, in `curve`).
fn ec_private<'a>(der: &'a [u8], curve: Option<&'a [u8]>) -> Option<PublicKey<'a>> {
    let mut k = Reader::new(whole(der, SEQUENCE)?);
    k.take(INTEGER)?;
    k.take(OCTET_STRING)?;
    let own_curve = k.optional(CONTEXT_0).and_then(|c| whole(c, OID));
    let point = match k.optional(CONTEXT_1) {
        Some(c) => Some(bits(whole(c, BIT_STRING)?)?),
        None => None,
    };
    Some(PublicKey::Ec {
        curve: own_curve.or(curve),
        point,
    })
}

/// PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey`: version, algorithm, key, `[0]`
/// attributes, `[1]` public key.
fn pkcs8(der: &[u8]) -> Option<PublicKey<'_>> {
    let mut k = Reader::new(whole(der, SEQUENCE)?);
    k.take(INTEGER)?;
    let mut alg = Reader::new(k.take(SEQUENCE)?);
    let oid = alg.take(OID)?;
    let inner = k.take(OCTET_STRING)?;
    match oid {
        OID_RSA | OID_RSA_PSS => rsa_private(inner),
        OID_EC => ec_private(inner, alg.optional(OID)),
        OID_ED25519 => {
            let public = k.find(CONTEXT_1_PRIMITIVE).and_then(bits);
            Some(PublicKey::Ed25519(public))
        }
        other => Some(PublicKey::Other(other)),
    }
}

/// The next UTCTime or GeneralizedTime (RFC 5280's `YYMMDDHHMMSSZ` and
/// `YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(r: &mut Reader<'_>) -> Option<i64> {
    let (tag, text) = r.any()?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let (yy, rest) = text.split_at_checked(2)?;
            let yy = digits(yy)?;
            // RFC 5280 4.1.2.5.1: 50-99 are 19xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        GENERALIZED_TIME => {
            let (yyyy, rest) = text.split_at_checked(4)?;
            (digits(yyyy)?, rest)
        }
        _ => return None,
    };
    let rest = rest.strip_suffix(b"Z")?;
    if rest.len() != 10 {
        return None;
    }
    let field = |i: usize| rest.get(i..i + 2).and_then(digits);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (60) is accepted as written.
    if second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// ASCII digits as a number.
fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds as RFC 3339 UTC: `2026-01-02T00:00:00Z` (as Kubernetes writes
/// times: certificate validity in findings, the certificate status files).
pub fn format_utc(secs: i64) -> String {
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_767_312_000), "2026-01-02T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        for days in [-800_000, -1, 0, 59, 60, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_utc(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    fn read_time(tag: u8, text: &str) -> Option<i64> {
        let mut der = vec![tag, u8::try_from(text.len()).ok()?];
        der.extend_from_slice(text.as_bytes());
        time(&mut Reader::new(&der))
    }

    #[test]
    fn certificate_times() {
        assert_eq!(read_time(UTC_TIME, "260102000000Z"), Some(1_767_312_000));
        assert_eq!(
            read_time(GENERALIZED_TIME, "20260102000000Z"),
            Some(1_767_312_000)
        );
        // 50-99 are the 1900s.
        assert_eq!(read_time(UTC_TIME, "700101000001Z"), Some(1));
        for bad in [
            "2601020000Z",
            "260102000000",
            "26010200000aZ",
            "261302000000Z",
        ] {
            assert_eq!(read_time(UTC_TIME, bad), None, "{bad}");
        }
        assert_eq!(read_time(OCTET_STRING, "260102000000Z"), None);
    }

    #[test]
    fn malformed_der_is_none_not_a_panic() {
        let inputs: [&[u8]; 7] = [
            &[],
            &[0x30],
            &[0x30, 0x81],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x80, 0, 0],
            &[0x30, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x82, 0xff, 0xff, 0x02],
        ];
        for der in inputs {
            assert_eq!(certificate(der), None, "{der:?}");
            assert_eq!(subject_alt_names(der), None, "{der:?}");
            assert_eq!(subject_public_key_info(der), None, "{der:?}");
            for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"] {
                assert_eq!(private_key(label, der), None, "{label} {der:?}");
            }
        }
    }

    #[test]
    fn key_comparison() {
        let rsa = |n: &'static [u8]| PublicKey::Rsa { n, e: &[1, 0, 1] };
        assert_eq!(rsa(&[9, 9]).matches(&rsa(&[9, 9])), Some(true));
        assert_eq!(rsa(&[9, 9]).matches(&rsa(&[9, 8])), Some(false));
        let ec = |curve: &'static [u8], point: Option<&'static [u8]>| PublicKey::Ec {
            curve: Some(curve),
            point,
        };
        assert_eq!(
            ec(&[1], Some(&[4, 1])).matches(&ec(&[1], Some(&[4, 1]))),
            Some(true)
        );
        assert_eq!(
            ec(&[1], Some(&[4, 1])).matches(&ec(&[1], Some(&[4, 2]))),
            Some(false)
        );
        assert_eq!(ec(&[1], Some(&[4, 1])).matches(&ec(&[1], None)), None);
        assert_eq!(
            ec(&[1], Some(&[4, 1])).matches(&ec(&[2], None)),
            Some(false)
        );
        assert_eq!(rsa(&[9]).matches(&ec(&[1], None)), Some(false));
        let ed = PublicKey::Ed25519(Some(&[7; 32]));
        assert_eq!(ed.matches(&PublicKey::Ed25519(None)), None);
        assert_eq!(ed.matches(&PublicKey::Ed25519(Some(&[7; 32]))), Some(true));
        assert_eq!(
            PublicKey::Other(&[1]).matches(&PublicKey::Other(&[1])),
            None
        );
        assert_eq!(
            PublicKey::Other(&[1]).matches(&PublicKey::Other(&[2])),
            Some(false)
        );
    }

    #[test]
    fn san_matching() {
        let dns = San::Dns("*.w.test");
        assert!(dns.matches("a.w.test") && dns.matches("A.W.TEST"));
        assert!(!dns.matches("w.test") && !dns.matches("a.b.w.test") && !dns.matches(".w.test"));
        assert!(
            !San::Dns("*w.test").matches("aw.test"),
            "only `*.` wildcards"
        );
        assert!(San::Dns("a.test").matches("A.test"));
        assert!(San::Ip("::1".parse().expect("ip")).matches("0:0::1"));
        assert!(!San::Ip("10.0.0.1".parse().expect("ip")).matches("10.0.0.2"));
        assert!(!San::Ip("10.0.0.1".parse().expect("ip")).matches("a.test"));
        assert!(San::Uri("spiffe://td/x").matches("spiffe://td/x"));
        assert!(!San::Uri("spiffe://td/x").matches("spiffe://td/X"));
        assert!(San::Email("o@p.test").matches("o@p.test"));
        assert!(!San::Email("o@p.test").matches("O@p.test"));
        assert!(!San::Dns("é.test").matches("x.test"));
        let shown: Vec<String> = [
            San::Dns("a.test"),
            San::Uri("spiffe://td/x"),
            San::Email("o@p.test"),
            San::Ip("::1".parse().expect("ip")),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            shown,
            [
                "DNS:a.test",
                "URI:spiffe://td/x",
                "email:o@p.test",
                "IP:::1"
            ]
        );
    }

    #[test]
    fn general_names_by_tag() {
        let names = [
            0x30, 20, // GeneralNames
            0x82, 3, b'a', b'.', b't', // dNSName
            0x88, 3, 0x2a, 0x03, 0x04, // registeredID: skipped
            0x87, 4, 10, 0, 0, 1, // iPAddress
            0x81, 2, b'o', b'@', // rfc822Name
        ];
        assert_eq!(
            general_names(&names),
            Some(vec![
                San::Dns("a.t"),
                San::Ip("10.0.0.1".parse().expect("ip")),
                San::Email("o@"),
            ])
        );
        // An address of another length, text that is not UTF-8, a short element.
        assert_eq!(general_names(&[0x30, 5, 0x87, 3, 1, 2, 3]), None);
        assert_eq!(general_names(&[0x30, 3, 0x86, 1, 0xff]), None);
        assert_eq!(general_names(&[0x30, 3, 0x86, 2, b'a']), None);
        assert_eq!(general_names(&[0x30, 0]), Some(Vec::new()));
    }
}
