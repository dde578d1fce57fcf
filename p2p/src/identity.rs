//! Node identity on the wire: the TLS certificate is made from the node's ed25519 key, and both
//! sides of a handshake pin the other's key against the cluster's membership. There is no
//! certificate authority: a certificate is only a carrier for the key, and possession of the key
//! is proven by the TLS 1.3 handshake signature, which we check ourselves with ed25519-dalek.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use kasane_model::{KeyPair, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// ALPN protocol id of kasane's p2p protocol; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"kasane-p2p/1";

/// The DER prefix of a PKCS#8 v1 ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The DER of an ed25519 SubjectPublicKeyInfo up to the key: SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) }. The 32 key bytes follow.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The node's certificate and private key, in the forms rustls wants.
#[derive(Debug)]
pub struct Identity {
    pub certificate: CertificateDer<'static>,
    pub private_key: PrivateKeyDer<'static>,
}

impl Identity {
    /// A self-signed certificate whose subject key is `key`.
    pub fn from_key(key: &KeyPair) -> Result<Identity, IdentityError> {
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&key.secret_bytes());
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
        let signing = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
        let params = rcgen::CertificateParams::new(vec!["kasane".to_string()])?;
        let certificate = params.self_signed(&signing)?;
        Ok(Identity {
            certificate: certificate.der().clone(),
            private_key: PrivateKeyDer::Pkcs8(pkcs8),
        })
    }
}

/// Reads one DER TLV: (tag, contents, rest). Lengths up to four bytes; anything else is refused.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | *byte as usize);
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The ed25519 key of a certificate's SubjectPublicKeyInfo, found by walking the DER structure
/// (Certificate -> TBSCertificate -> the seventh field, or sixth without a version). A key placed
/// anywhere else in the certificate is never picked up.
pub fn certificate_key(certificate: &[u8]) -> Option<PublicKey> {
    let (tag, certificate, _) = der_tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    // Optional [0] EXPLICIT version.
    let (tag, _, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for expected in [0x02, 0x30, 0x30, 0x30, 0x30] {
        let (tag, _, rest) = der_tlv(tbs)?;
        if tag != expected {
            return None;
        }
        tbs = rest;
    }
    let (tag, contents, _) = der_tlv(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let spki_length = 2 + contents.len();
    let spki = &tbs[..spki_length];
    let key = spki.strip_prefix(&SPKI_ED25519_PREFIX[..])?;
    Some(PublicKey(key.try_into().ok()?))
}

/// Who may connect: the cluster's validators and observers, fixed when the network starts
/// (membership changes on the ledger are not wired to the transport yet).
#[derive(Debug, Clone, Default)]
pub struct Membership(Arc<RwLock<BTreeSet<PublicKey>>>);

impl Membership {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Membership {
        Membership(Arc::new(RwLock::new(keys.into_iter().collect())))
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.read().map(|keys| keys.contains(key)).unwrap_or(false)
    }

    pub fn keys(&self) -> Vec<PublicKey> {
        self.0
            .read()
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn bad_certificate() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// Checks that a certificate carries an ed25519 key of a member (and, for an outgoing connection,
/// exactly the key we dialled).
fn check_certificate(
    membership: &Membership,
    expected: Option<&PublicKey>,
    certificate: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    let key = certificate_key(certificate).ok_or_else(bad_certificate)?;
    if !membership.contains(&key) || expected.is_some_and(|expected| *expected != key) {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ));
    }
    Ok(())
}

/// Verifies a TLS 1.3 handshake signature with the certificate's own ed25519 key.
fn check_handshake_signature(
    message: &[u8],
    certificate: &CertificateDer<'_>,
    signature: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if signature.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    let key = certificate_key(certificate).ok_or_else(bad_certificate)?;
    let verifying = key.to_verifying_key().map_err(|_| bad_certificate())?;
    let bytes: [u8; 64] = signature
        .signature()
        .try_into()
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    verifying
        .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

/// The dialling side's check of the server: the key we dialled, and a member.
#[derive(Debug)]
pub struct PinnedServer {
    pub membership: Membership,
    pub expected: PublicKey,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_certificate(&self.membership, Some(&self.expected), end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The accepting side's check of the client: a client certificate is mandatory and must carry a
/// member's key.
#[derive(Debug)]
pub struct PinnedClient {
    pub membership: Membership,
}

impl ClientCertVerifier for PinnedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_certificate(&self.membership, None, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration of a node: TLS 1.3 only, client certificates required and
/// pinned to the membership.
pub fn server_tls(identity: &Identity, membership: Membership) -> Result<rustls::ServerConfig, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PinnedClient { membership }))
        .with_single_cert(vec![identity.certificate.clone()], identity.private_key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The rustls client configuration for dialling `expected`.
pub fn client_tls(
    identity: &Identity,
    membership: Membership,
    expected: PublicKey,
) -> Result<rustls::ClientConfig, IdentityError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer { membership, expected }))
        .with_client_auth_cert(vec![identity.certificate.clone()], identity.private_key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_key() {
        let key = KeyPair::derive(b"identity", 1);
        let identity = Identity::from_key(&key).expect("certificate");
        assert_eq!(certificate_key(&identity.certificate), Some(key.public_key()));
    }

    #[test]
    fn truncated_or_garbage_certificates_have_no_key() {
        let key = KeyPair::derive(b"identity", 2);
        let identity = Identity::from_key(&key).expect("certificate");
        let der: &[u8] = &identity.certificate;
        for cut in 0..der.len() {
            assert_eq!(certificate_key(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(certificate_key(&[0xff; 64]), None);
        assert_eq!(certificate_key(&[]), None);
    }

    #[test]
    fn a_member_key_elsewhere_in_the_certificate_is_not_taken() {
        // A certificate for an outsider key whose subject alt name carries a member key's bytes.
        let outsider = KeyPair::derive(b"identity", 3);
        let member = KeyPair::derive(b"identity", 4).public_key();
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&outsider.secret_bytes());
        let signing =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &rcgen::PKCS_ED25519)
                .expect("key");
        let mut smuggled = SPKI_ED25519_PREFIX.to_vec();
        smuggled.extend_from_slice(&member.0);
        let mut params = rcgen::CertificateParams::new(vec!["kasane".to_string()]).expect("params");
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&[1, 2, 3, 4], smuggled));
        let certificate = params.self_signed(&signing).expect("certificate");
        assert_eq!(certificate_key(certificate.der()), Some(outsider.public_key()));
        let membership = Membership::new([member]);
        assert!(check_certificate(&membership, None, certificate.der()).is_err());
    }
}
